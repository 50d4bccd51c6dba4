#pragma once
// Hooks into fit(), as Keras's callbacks: override the events you need.

#include <cstddef>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>

#include "xtnn/progress.hpp"

namespace xtnn {

class Model;

/// Per-epoch values recorded by fit(): history["loss"][e], history["val_accuracy"][e], ...
struct History {
    std::map<std::string, std::vector<double>> history;
    std::vector<int> epoch;
};

class Callback {
public:
    virtual ~Callback() = default;
    virtual void on_train_begin(const Logs&) {}
    virtual void on_train_end(const Logs&) {}
    virtual void on_epoch_begin(int /*epoch*/, const Logs&) {}
    virtual void on_epoch_end(int /*epoch*/, const Logs&) {}
    virtual void on_train_batch_begin(int /*batch*/, const Logs&) {}
    virtual void on_train_batch_end(int /*batch*/, const Logs&) {}
    /// True for callbacks that write files: a distributed fit runs them on rank 0 only (and the
    /// others on every rank, with their output discarded on all but rank 0).
    virtual bool chief_only() const { return false; }

    /// Set by fit() before on_train_begin: the model being trained and where to report.
    Model* model = nullptr;
    std::ostream* out = nullptr;
};

struct EarlyStoppingOptions {
    std::string monitor = "val_loss";
    double min_delta = 0.0;
    int patience = 0;
    int verbose = 0;
    /// "min", "max", or "auto" (max for names containing "acc", min otherwise).
    std::string mode = "auto";
    std::optional<double> baseline = std::nullopt;
    bool restore_best_weights = false;
    int start_from_epoch = 0;
};

/// Stops training when `monitor` has not improved by min_delta for `patience` epochs.
class EarlyStopping : public Callback {
public:
    explicit EarlyStopping(EarlyStoppingOptions options = {});
    void on_train_begin(const Logs&) override;
    void on_epoch_end(int epoch, const Logs& logs) override;
    void on_train_end(const Logs&) override;
    /// The epoch (0-based) at which training was stopped, or -1.
    int stopped_epoch() const { return stopped_epoch_; }
    int best_epoch() const { return best_epoch_; }

private:
    bool improved(double value, double reference) const;

    EarlyStoppingOptions options_;
    bool maximize_ = false;
    int wait_ = 0;
    int stopped_epoch_ = -1;
    int best_epoch_ = -1;
    double best_ = 0;
    std::vector<xt::xarray<float>> best_weights_;
};

struct ModelCheckpointOptions {
    std::string monitor = "val_loss";
    int verbose = 0;
    /// Save only when `monitor` improves on the best value seen (across fit() calls, as Keras).
    bool save_best_only = false;
    /// save_weights() instead of save().
    bool save_weights_only = false;
    /// "min", "max", or "auto" (max for names containing "acc", min otherwise).
    std::string mode = "auto";
};

/// Saves the model after each epoch. The path may name the epoch (from 1) and logged values as
/// Python/fmt fields, as in Keras: "checkpoints/model-{epoch:02d}-{val_loss:.3f}.xtnn" (widths
/// and precisions up to 255). An epoch that ends with NaN or infinite weights is not saved (a
/// message says so): the last good file stays in place.
class ModelCheckpoint : public Callback {
public:
    explicit ModelCheckpoint(std::string filepath, ModelCheckpointOptions options = {});
    void on_epoch_end(int epoch, const Logs& logs) override;
    bool chief_only() const override { return true; }
    /// The best monitored value so far (infinite before the first save with save_best_only).
    double best() const { return best_; }

private:
    std::string filepath_;
    ModelCheckpointOptions options_;
    bool maximize_ = false;
    double best_ = 0;
};

/// Stops training at the first batch whose loss, or any weight, is NaN or infinite, naming epoch,
/// batch and what was not finite.
class TerminateOnNaN : public Callback {
public:
    void on_epoch_begin(int epoch, const Logs&) override { epoch_ = epoch; }
    void on_train_batch_end(int batch, const Logs& logs) override;
    /// Empty until training was terminated; then the message that was reported.
    const std::string& message() const { return message_; }

private:
    int epoch_ = 0;
    std::string message_;
};

/// Writes one CSV row per epoch: epoch, then every logged value in name order.
class CSVLogger : public Callback {
public:
    explicit CSVLogger(std::string filename, char separator = ',', bool append = false);
    void on_train_begin(const Logs&) override;
    void on_epoch_end(int epoch, const Logs& logs) override;
    void on_train_end(const Logs&) override;
    bool chief_only() const override { return true; }

private:
    std::string filename_;
    char separator_;
    bool append_;
    std::ofstream file_;
    std::vector<std::string> columns_;
};

/// Sets the optimizer's learning rate at each epoch's start: schedule(epoch, current_rate).
class LearningRateScheduler : public Callback {
public:
    using Schedule = std::function<double(int epoch, double learning_rate)>;
    explicit LearningRateScheduler(Schedule schedule, int verbose = 0);
    void on_epoch_begin(int epoch, const Logs&) override;

private:
    Schedule schedule_;
    int verbose_;
};

}  // namespace xtnn
