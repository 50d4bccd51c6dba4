#pragma once
// What training.cpp (one process) and distributed_training.cpp (the exchanges of a distributed
// fit) share: the running sums behind the logs, a slice of a step, and the peers of a fit.

#include <cstddef>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model_internals.hpp"
#include "xtnn/autodiff.hpp"
#include "xtnn/distributed.hpp"
#include "xtnn/ops.hpp"

namespace xtnn {

// Sums of the loss and metrics over the samples seen, and their means as logs.
class Model::Totals {
public:
    // What one batch, or one slice of a batch, adds: each output's loss and the weighted total, as
    // means over its rows, and the sums of the metrics over its rows.
    struct Batch {
        std::size_t rows = 0;
        std::vector<double> losses;
        double total = 0;
        std::vector<std::vector<double>> metrics;
    };

    explicit Totals(const std::vector<std::unique_ptr<Head>>& heads) : heads_(heads) {
        for (const auto& head : heads) metric_totals_.emplace_back(head->metrics.size(), 0.0);
        head_losses_.assign(heads.size(), 0.0);
    }

    // The weighted total of the outputs' losses: the first output's loss itself when it is the only one, weighted 1.
    static Tensor weighted_total(const std::vector<std::unique_ptr<Head>>& heads, const std::vector<Tensor>& losses) {
        if (losses.size() == 1 && heads[0]->weight == 1.0) return losses[0];
        Tensor total;
        for (std::size_t o = 0; o < losses.size(); ++o) {
            Tensor weighted = heads[o]->weight == 1.0 ? losses[o] : ops::scale(losses[o], float(heads[o]->weight));
            total = o == 0 ? weighted : total + weighted;
        }
        return total;
    }

    // Reads a batch's figures off its outputs and losses; safe on any thread.
    static Batch measure(const std::vector<std::unique_ptr<Head>>& heads, std::size_t rows, const std::vector<Tensor>& losses,
                         const Tensor& total, const std::vector<SplitOutput>& outputs,
                         const std::vector<xt::xarray<float>>& targets) {
        Batch batch;
        batch.rows = rows;
        batch.total = double(total.item());
        for (const auto& loss : losses) batch.losses.push_back(double(loss.item()));
        NoGradGuard no_grad;
        for (std::size_t o = 0; o < heads.size(); ++o) {
            batch.metrics.emplace_back();
            if (heads[o]->metrics.empty()) continue;
            const xt::xarray<float> predictions = SplitOutput{outputs[o].pre_activation.detach(), outputs[o].activation}.activated().value();
            for (const auto& metric : heads[o]->metrics) batch.metrics[o].push_back(metric->batch_total(predictions, targets[o]));
        }
        return batch;
    }

    void add(const Batch& batch) {
        for (std::size_t o = 0; o < batch.losses.size(); ++o) head_losses_[o] += batch.losses[o] * double(batch.rows);
        loss_total_ += batch.total * double(batch.rows);
        seen_ += batch.rows;
        for (std::size_t o = 0; o < batch.metrics.size(); ++o) {
            for (std::size_t m = 0; m < batch.metrics[o].size(); ++m) metric_totals_[o][m] += batch.metrics[o][m];
        }
    }

    // The sums behind the logs (samples, weighted loss, each output's loss, each metric), to add
    // those of other ranks with add_sums().
    std::vector<double> sums() const {
        std::vector<double> values{double(seen_), loss_total_};
        values.insert(values.end(), head_losses_.begin(), head_losses_.end());
        for (const auto& totals : metric_totals_) values.insert(values.end(), totals.begin(), totals.end());
        return values;
    }

    void add_sums(std::span<const double> values) {
        seen_ += std::size_t(values[0]);
        loss_total_ += values[1];
        std::size_t next = 2;
        for (auto& loss : head_losses_) loss += values[next++];
        for (auto& totals : metric_totals_) {
            for (auto& total : totals) total += values[next++];
        }
    }

    void write(Logs& logs) const {
        logs["loss"] = loss_total_ / double(seen_);
        const bool several = heads_.size() > 1;
        for (std::size_t o = 0; o < heads_.size(); ++o) {
            const std::string prefix = several ? heads_[o]->output_name + "_" : "";
            if (several) logs[prefix + "loss"] = head_losses_[o] / double(seen_);
            for (std::size_t m = 0; m < heads_[o]->metrics.size(); ++m) {
                logs[prefix + heads_[o]->metrics[m]->name()] = metric_totals_[o][m] / double(seen_);
            }
        }
    }

private:
    const std::vector<std::unique_ptr<Head>>& heads_;
    double loss_total_ = 0;
    std::size_t seen_ = 0;
    std::vector<double> head_losses_;
    std::vector<std::vector<double>> metric_totals_;
};

// A distributed fit's session, and what its steps exchange with the other ranks.
struct Model::Peers {
    const distributed::Session& session;
    /// Weights that training changes without a gradient (BatchNormalization's moving
    /// statistics): averaged over the ranks after every step, as Keras's multi-worker strategy
    /// averages them when they are read.
    std::vector<std::size_t> averaged_state = {};
    /// The weights that record gradients, fixed for the whole fit (so that with
    /// Reduction::ring every rank updates the same elements of them at every step).
    std::vector<std::size_t> trained = {};
    /// One step's gradients of `trained`, then the state to average, in one buffer for
    /// MPI_Allreduce or the fixed-order sum (the ring sums them where they are).
    std::vector<float> fused = {};

    /// This rank's share of n rows, [n r / N, n (r + 1) / N): where as many threads of one process
    /// would cut them.
    std::pair<std::size_t, std::size_t> share(std::size_t n) const {
        const auto rank = std::size_t(session.rank()), ranks = std::size_t(session.size());
        return {rank * n / ranks, (rank + 1) * n / ranks};
    }

    std::size_t fused_length(const std::vector<Tensor>& weights) const {
        std::size_t length = 0;
        for (const std::size_t w : trained) length += weights[w].size();
        for (const std::size_t w : averaged_state) length += weights[w].size();
        return length;
    }
};

// What one slice of a training step computes, kept for the thread that sums the slices.
struct Model::BatchSlice {
    /// Where the slice's weight gradients go; none for the first slice, which adds to the weights'.
    std::unique_ptr<LeafGradients> gradients;
    Totals::Batch figures;
};

// Before the ranks fit or evaluate together: a rank whose own checks failed (`local_error`), or
// ranks that disagree on a setting ("what", value), stop every rank with the same error naming
// the rank or the setting and both values, none left waiting in a collective.
void join_ranks(const distributed::Session& session, std::string_view method, std::string_view stage,
                const std::exception_ptr& local_error, const std::vector<std::pair<std::string, std::string>>& settings);

}  // namespace xtnn
