#include "xtnn/callbacks.hpp"

#include <cmath>

#include <fmt/format.h>

#include "xtnn/model.hpp"

namespace xtnn {

EarlyStopping::EarlyStopping(EarlyStoppingOptions options) : options_(std::move(options)) {
    if (options_.mode == "auto") {
        maximize_ = options_.monitor.find("acc") != std::string::npos || options_.monitor.find("auc") != std::string::npos;
    } else if (options_.mode == "max" || options_.mode == "min") {
        maximize_ = options_.mode == "max";
    } else {
        throw ValueError("EarlyStopping: mode must be 'auto', 'min' or 'max', got '" + options_.mode + "'");
    }
    if (options_.patience < 0) throw ValueError("EarlyStopping: patience must not be negative");
}

bool EarlyStopping::improved(double value, double reference) const {
    const double delta = std::abs(options_.min_delta);
    return maximize_ ? value - delta > reference : value + delta < reference;
}

void EarlyStopping::on_train_begin(const Logs&) {
    wait_ = 0;
    stopped_epoch_ = -1;
    best_epoch_ = -1;
    best_ = maximize_ ? -INFINITY : INFINITY;
    best_weights_.clear();
}

void EarlyStopping::on_epoch_end(int epoch, const Logs& logs) {
    auto found = logs.find(options_.monitor);
    if (found == logs.end()) {
        std::string available;
        for (const auto& [name, value] : logs) available += (available.empty() ? "" : ", ") + name;
        throw ValueError("EarlyStopping: monitored value '" + options_.monitor + "' is not logged; available: " + available);
    }
    if (epoch < options_.start_from_epoch) return;
    const double value = found->second;
    if (options_.restore_best_weights && best_weights_.empty()) best_weights_ = model->get_weights();
    ++wait_;
    if (improved(value, best_)) {
        best_ = value;
        best_epoch_ = epoch;
        if (options_.restore_best_weights) best_weights_ = model->get_weights();
        // A baseline must be beaten before improvements reset the patience.
        if (!options_.baseline || improved(value, *options_.baseline)) wait_ = 0;
        return;
    }
    if (wait_ >= options_.patience && epoch > 0) {
        stopped_epoch_ = epoch;
        model->stop_training = true;
    }
}

void EarlyStopping::on_train_end(const Logs&) {
    if (stopped_epoch_ > 0 && options_.verbose > 0 && out) *out << "Epoch " << stopped_epoch_ + 1 << ": early stopping\n";
    if (options_.restore_best_weights && !best_weights_.empty()) {
        if (options_.verbose > 0 && out) {
            *out << "Restoring model weights from the end of the best epoch: " << best_epoch_ + 1 << ".\n";
        }
        model->set_weights(best_weights_);
    }
}

void TerminateOnNaN::on_train_batch_end(int batch, const Logs& logs) {
    auto loss = logs.find("loss");
    if (loss == logs.end() || std::isfinite(loss->second)) return;
    message_ = fmt::format("Epoch {}, batch {}: invalid loss {}, terminating training", epoch_ + 1, batch, loss->second);
    if (out) *out << message_ << '\n';
    model->stop_training = true;
}

CSVLogger::CSVLogger(std::string filename, char separator, bool append)
    : filename_(std::move(filename)), separator_(separator), append_(append) {}

void CSVLogger::on_train_begin(const Logs&) {
    file_.open(filename_, append_ ? std::ios::app : std::ios::trunc);
    if (!file_) throw IoError("CSVLogger: cannot open '" + filename_ + "' for writing");
    columns_.clear();
}

void CSVLogger::on_epoch_end(int epoch, const Logs& logs) {
    if (columns_.empty()) {
        for (const auto& [name, value] : logs) columns_.push_back(name);
        const bool file_has_rows = append_ && file_.tellp() > 0;
        if (!file_has_rows) {
            file_ << "epoch";
            for (const auto& name : columns_) file_ << separator_ << name;
            file_ << '\n';
        }
    }
    file_ << epoch;
    for (const auto& name : columns_) {
        auto found = logs.find(name);
        file_ << separator_;
        if (found != logs.end()) file_ << fmt::format("{}", found->second);
    }
    file_ << '\n' << std::flush;
}

void CSVLogger::on_train_end(const Logs&) { file_.close(); }

LearningRateScheduler::LearningRateScheduler(Schedule schedule, int verbose)
    : schedule_(std::move(schedule)), verbose_(verbose) {
    if (!schedule_) throw ValueError("LearningRateScheduler: empty schedule");
}

void LearningRateScheduler::on_epoch_begin(int epoch, const Logs&) {
    Optimizer* optimizer = model->optimizer();
    const double rate = schedule_(epoch, optimizer->learning_rate());
    if (!std::isfinite(rate) || rate <= 0) {
        throw ValueError(fmt::format("LearningRateScheduler: the schedule gave learning rate {} for epoch {}", rate, epoch));
    }
    optimizer->set_learning_rate(rate);
    if (verbose_ > 0 && out) *out << fmt::format("\nEpoch {}: LearningRateScheduler setting learning rate to {}.\n", epoch + 1, rate);
}

}  // namespace xtnn
