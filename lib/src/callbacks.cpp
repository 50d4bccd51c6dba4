#include "xtnn/callbacks.hpp"

#include <cctype>
#include <cmath>

#include <fmt/args.h>
#include <fmt/format.h>

#include "xtnn/model.hpp"

namespace xtnn {

namespace {

// Whether larger values of `monitor` are better, as Keras decides for mode "auto".
bool maximizes(const std::string& callback, const std::string& monitor, const std::string& mode) {
    if (mode == "auto") return monitor.find("acc") != std::string::npos || monitor.find("auc") != std::string::npos;
    if (mode == "max" || mode == "min") return mode == "max";
    throw ValueError(callback + ": mode must be 'auto', 'min' or 'max', got '" + mode + "'");
}

double monitored_value(const std::string& callback, const std::string& monitor, const Logs& logs) {
    const auto found = logs.find(monitor);
    if (found == logs.end()) {
        std::string available;
        for (const auto& [name, value] : logs) available += (available.empty() ? "" : ", ") + name;
        throw ValueError(callback + ": monitored value '" + monitor + "' is not logged; available: " + available);
    }
    return found->second;
}

// fmt pads to any width it is given: "{epoch:>1000000000}" would allocate a gigabyte per save.
constexpr std::size_t max_field_width = 255;

void check_filepath_fields(const std::string& filepath) {
    for (std::size_t i = 0; i < filepath.size(); ++i) {
        if (filepath[i] != '{') continue;
        if (i + 1 < filepath.size() && filepath[i + 1] == '{') {
            ++i;
            continue;
        }
        const std::size_t close = filepath.find('}', i);
        const std::size_t nested = filepath.find('{', i + 1);
        if (close == std::string::npos) return;  // fmt reports the unclosed field when the path is filled in
        if (nested < close) {
            throw ValueError("ModelCheckpoint: filepath '" + filepath + "': nested fields (dynamic widths) are not supported");
        }
        const std::string field = filepath.substr(i, close - i + 1);
        for (std::size_t at = field.find(':'); at != std::string::npos && at < field.size(); ++at) {
            if (!std::isdigit(static_cast<unsigned char>(field[at]))) continue;
            std::size_t end = at;
            while (end < field.size() && std::isdigit(static_cast<unsigned char>(field[end]))) ++end;
            if (end - at > 3 || std::stoul(field.substr(at, end - at)) > max_field_width) {
                throw ValueError(fmt::format("ModelCheckpoint: filepath field '{}' asks for a width or precision of {}; "
                                             "at most {} is allowed", field, field.substr(at, std::min<std::size_t>(end - at, 20)),
                                             max_field_width));
            }
            at = end;
        }
        i = close;
    }
}

}  // namespace

EarlyStopping::EarlyStopping(EarlyStoppingOptions options)
    : options_(std::move(options)), maximize_(maximizes("EarlyStopping", options_.monitor, options_.mode)) {
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
    const double value = monitored_value("EarlyStopping", options_.monitor, logs);
    if (epoch < options_.start_from_epoch) return;
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

ModelCheckpoint::ModelCheckpoint(std::string filepath, ModelCheckpointOptions options)
    : filepath_(std::move(filepath)),
      options_(std::move(options)),
      maximize_(maximizes("ModelCheckpoint", options_.monitor, options_.mode)),
      best_(maximize_ ? -INFINITY : INFINITY) {
    if (filepath_.empty()) throw ValueError("ModelCheckpoint: filepath must not be empty");
    check_filepath_fields(filepath_);
}

void ModelCheckpoint::on_epoch_end(int epoch, const Logs& logs) {
    fmt::dynamic_format_arg_store<fmt::format_context> fields;
    fields.push_back(fmt::arg("epoch", epoch + 1));
    for (const auto& [name, value] : logs) fields.push_back(fmt::arg(name.c_str(), value));
    std::string path;
    try {
        path = fmt::vformat(filepath_, fields);
    } catch (const fmt::format_error& e) {
        throw ValueError("ModelCheckpoint: cannot fill in filepath '" + filepath_ + "': " + e.what() +
                         " (fields: epoch and the logged values)");
    }
    if (const auto problem = model->non_finite_weight()) {
        if (out) *out << fmt::format("\nEpoch {}: not saving model to {}: its {}\n", epoch + 1, path, *problem);
        return;
    }
    if (options_.save_best_only) {
        const double value = monitored_value("ModelCheckpoint", options_.monitor, logs);
        const bool improved = maximize_ ? value > best_ : value < best_;
        if (!improved) {
            if (options_.verbose > 0 && out) {
                *out << fmt::format("\nEpoch {}: {} did not improve from {:.5f}\n", epoch + 1, options_.monitor, best_);
            }
            return;
        }
        if (options_.verbose > 0 && out) {
            *out << fmt::format("\nEpoch {}: {} improved from {:.5f} to {:.5f}, saving model to {}\n", epoch + 1,
                                options_.monitor, best_, value, path);
        }
        best_ = value;
    } else if (options_.verbose > 0 && out) {
        *out << fmt::format("\nEpoch {}: saving model to {}\n", epoch + 1, path);
    }
    if (options_.save_weights_only) {
        model->save_weights(path);
    } else {
        model->save(path);
    }
}

void TerminateOnNaN::on_train_batch_end(int batch, const Logs& logs) {
    // A NaN in the data can reach the weights while the loss stays finite (a layer that maps NaN
    // to a number), so the weights are watched as well as the loss.
    auto loss = logs.find("loss");
    if (loss != logs.end() && !std::isfinite(loss->second)) {
        message_ = fmt::format("Epoch {}, batch {}: invalid loss {}, terminating training", epoch_ + 1, batch, loss->second);
    } else if (const auto problem = model->non_finite_weight()) {
        message_ = fmt::format("Epoch {}, batch {}: the model's {}, terminating training", epoch_ + 1, batch, *problem);
    } else {
        return;
    }
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
