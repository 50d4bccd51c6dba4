// The exchanges of a distributed fit (README "Training on several machines"): the ranks' figures
// and gradients each step, the optimizer's slots at each epoch's end, the agreement on settings
// and rank 0's state before training; the agreement before a distributed fit or evaluate.

#include <algorithm>
#include <functional>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "training_internals.hpp"
#include "xtnn/array_pool.hpp"
#include "parallel.hpp"

namespace xtnn {

void Model::exchange_step(Peers& peers, std::size_t rows, std::vector<BatchSlice>& slices, std::size_t count,
                          std::vector<Tensor>& weights, Totals& totals) {
    const distributed::Session& session = peers.session;
    const auto ranks = std::size_t(session.size());
    // Slice 0's gradients are the weights' own; the other slices hold theirs apart.
    const auto slice_gradient = [&](std::size_t w, std::size_t k) -> const float* {
        if (k == 0) return weights[w].has_grad() ? weights[w].node()->grad.data() : nullptr;
        const xt::xarray<float>* gradient = slices[k].gradients->gradient(w);
        return gradient ? gradient->data() : nullptr;
    };
    // One message per rank: its slices' figures, then which weights its slices reached.
    Totals own(heads_);
    for (std::size_t k = 0; k < count; ++k) own.add(slices[k].figures);
    std::vector<double> message = own.sums();
    const std::size_t figure_count = message.size();
    for (std::size_t w = 0; w < weights.size(); ++w) {
        bool reached = false;
        for (std::size_t k = 0; k < count && !reached; ++k) reached = slice_gradient(w, k) != nullptr;
        message.push_back(reached ? 1.0 : 0.0);
    }
    // Every rank's message: the step's figures, and the weights that some rank's slices reached.
    std::vector<double> all;
    std::vector<bool> has_gradient(weights.size(), false);
    const auto read_messages = [&] {
        for (std::size_t w = 0; w < weights.size(); ++w) {
            for (std::size_t r = 0; r < ranks && !has_gradient[w]; ++r) has_gradient[w] = all[r * message.size() + figure_count + w] != 0.0;
        }
        for (std::size_t r = 0; r < ranks; ++r) totals.add_sums({all.data() + r * message.size(), figure_count});
    };

    if (session.options().reduction == distributed::Reduction::ring) {
        // The sums are made where the gradients are, in slice 0's (the weights' own; zeros where
        // no slice arrived) after this rank's other slices are added to them in slice order, as
        // one process sums its threads' slices; the state to average is summed in place.
        std::vector<std::span<float>> summed;
        for (const std::size_t w : peers.trained) {
            xt::xarray<float>& gradient = grad_buffer(*weights[w].node());
            for (std::size_t k = 1; k < count; ++k) {
                const xt::xarray<float>* addend = slices[k].gradients->gradient(w);
                if (!addend) continue;
                const float* other = addend->data();
                float* sum = gradient.data();
                for (std::size_t j = 0; j < gradient.size(); ++j) sum[j] += other[j];
            }
            summed.emplace_back(gradient.data(), gradient.size());
        }
        std::vector<std::span<float>> values;
        for (const std::size_t w : peers.trained) values.emplace_back(weights[w].mutable_value().data(), weights[w].size());
        for (const std::size_t w : peers.averaged_state) {
            summed.emplace_back(weights[w].mutable_value().data(), weights[w].size());
            values.push_back(summed.back());
        }
        // Each rank updates the values whose sums it holds, then all take every rank's: one
        // optimizer update per weight element in the whole job, not one per rank.
        const auto owned = session.sum_scatter(summed, message, all);
        read_messages();
        std::vector<const float*> gradients(weights.size(), nullptr);
        for (const std::size_t w : peers.trained) {
            if (has_gradient[w]) gradients[w] = weights[w].node()->grad.data();
        }
        std::vector<Optimizer::Segment> segments;
        std::size_t offset = 0;
        for (std::size_t i = 0; i < summed.size(); ++i) {
            const std::size_t n = summed[i].size();
            for (const auto& [first, last] : owned) {
                const std::size_t begin = std::max(first, offset), end = std::min(last, offset + n);
                if (begin >= end) continue;
                if (i < peers.trained.size()) {
                    segments.push_back({peers.trained[i], begin - offset, end - offset});
                } else {
                    for (std::size_t j = begin - offset; j < end - offset; ++j) summed[i][j] /= float(ranks);
                }
            }
            offset += n;
        }
        optimizer_->apply_segments(weights, gradients, segments);
        session.allgather_owned(values);
    } else {
        all = session.allgather(message);
        read_messages();
        // One buffer for MPI: every trained weight's gradient, summed over this rank's slices in
        // slice order (zeros where none arrived), then the state to average.
        peers.fused.resize(peers.fused_length(weights));
        float* cursor = peers.fused.data();
        for (const std::size_t w : peers.trained) {
            const std::size_t n = weights[w].size();
            bool written = false;
            for (std::size_t k = 0; k < count; ++k) {
                const float* gradient = slice_gradient(w, k);
                if (!gradient) continue;
                if (written) {
                    for (std::size_t j = 0; j < n; ++j) cursor[j] += gradient[j];
                } else {
                    std::copy(gradient, gradient + n, cursor);
                    written = true;
                }
            }
            if (!written) std::fill(cursor, cursor + n, 0.0f);
            cursor += n;
        }
        for (const std::size_t w : peers.averaged_state) {
            const auto& value = weights[w].value();
            cursor = std::copy(value.begin(), value.end(), cursor);
        }
        session.allreduce_sum(std::span<float>(peers.fused));
        cursor = peers.fused.data();
        for (const std::size_t w : peers.trained) {
            if (has_gradient[w]) {
                xt::xarray<float>& gradient = grad_buffer(*weights[w].node());
                std::copy(cursor, cursor + gradient.size(), gradient.data());
            }
            cursor += weights[w].size();
        }
        for (const std::size_t w : peers.averaged_state) {
            for (float& value : weights[w].mutable_value()) value = *cursor++ / float(ranks);
        }
        optimizer_->apply(weights, slices.size(), detail::run_tasks);
    }
    // A batch of fewer rows than ranks leaves the first ranks without rows, and so without the
    // step's random draws: they continue from the last rank's stream, which had rows.
    if (rows < ranks) {
        const std::string state = thread_generator().state();
        std::vector<std::uint8_t> bytes(state.begin(), state.end());
        session.broadcast(bytes, int(ranks - 1));
        thread_generator().set_state(std::string(bytes.begin(), bytes.end()));
    }
}

void Model::gather_optimizer_slots(Peers& peers, const std::vector<Tensor>& weights) {
    const std::size_t slot_count = optimizer_->slot_names().size();
    if (peers.session.options().reduction != distributed::Reduction::ring || slot_count == 0) return;
    auto& slots = optimizer_->slots();
    const auto has_slots = [&](std::size_t w) { return w < slots.size() && slots[w].size() == slot_count; };
    // The same length as the fused gradients, so that every rank owns the same ranges of it.
    std::vector<float> buffer(peers.fused_length(weights), 0.0f);
    for (std::size_t slot = 0; slot < slot_count; ++slot) {
        float* cursor = buffer.data();
        for (const std::size_t w : peers.trained) {
            if (has_slots(w)) std::copy(slots[w][slot].begin(), slots[w][slot].end(), cursor);
            cursor += weights[w].size();
        }
        peers.session.allgather_owned(buffer);
        cursor = buffer.data();
        for (const std::size_t w : peers.trained) {
            if (has_slots(w)) std::copy(cursor, cursor + weights[w].size(), slots[w][slot].begin());
            cursor += weights[w].size();
        }
    }
}

namespace {

// What the ranks of a distributed fit must agree on, one "what: value" line each.
std::vector<std::pair<std::string, std::string>> fit_settings(const Model& model, const std::vector<InputRows>& x,
                                                              const FitOptions& options,
                                                              const distributed::Session& session) {
    std::vector<std::pair<std::string, std::string>> settings;
    std::string inputs, layers;
    for (const auto& rows : x) inputs += (inputs.empty() ? "" : ", ") + shape_to_string(rows.shape());
    settings.emplace_back("the input shapes", inputs);
    for (const auto& layer : model.layers()) {
        layers += (layers.empty() ? "" : ", ") + layer->class_name() + (layer->trainable ? "" : " (frozen)");
        for (const auto& weight : layer->weights()) layers += fmt::format(" {}", shape_to_string(weight.shape()));
    }
    settings.emplace_back("the layers and weight shapes", layers);
    const auto& compiled = model.compile_options();
    settings.emplace_back("the losses", fmt::format("{} {}", fmt::join(compiled.loss, ","), fmt::join(compiled.loss_by_output, ",")));
    settings.emplace_back("the loss weights", fmt::format("{} {}", fmt::join(compiled.loss_weights, ","),
                                                          fmt::join(compiled.loss_weights_by_output, ",")));
    settings.emplace_back("the metrics", fmt::format("{} {}", fmt::join(compiled.metrics, ","),
                                                     fmt::join(compiled.metrics_by_output, ",")));
    settings.emplace_back("the optimizer", model.optimizer()->name());
    settings.emplace_back("batch_size", std::to_string(options.batch_size));
    settings.emplace_back("epochs", std::to_string(options.epochs));
    settings.emplace_back("initial_epoch", std::to_string(options.initial_epoch));
    settings.emplace_back("shuffle", options.shuffle ? "true" : "false");
    settings.emplace_back("validation_split", fmt::format("{}", options.validation_split));
    settings.emplace_back("the validation samples",
                          options.validation_data ? shape_to_string(options.validation_data->rows()[0].shape()) : "none");
    settings.emplace_back("the gradient reduction", std::string(distributed::reduction_name(session.options().reduction)));
    settings.emplace_back("shared_memory", session.options().shared_memory ? "true" : "false");
    return settings;
}

}  // namespace

void join_ranks(const distributed::Session& session, std::string_view method, std::string_view stage,
                const std::exception_ptr& local_error, const std::vector<std::pair<std::string, std::string>>& settings) {
    std::string report = "ok\n";
    if (local_error) {
        try {
            std::rethrow_exception(local_error);
        } catch (const std::exception& e) {
            report = std::string("error\n") + e.what();
        }
    } else {
        for (const auto& [what, value] : settings) report += what + "\n" + value + "\n";
    }
    const std::vector<std::string> reports = session.allgather(report);
    if (local_error) std::rethrow_exception(local_error);
    const std::string prefix = std::string(method) + ": ";
    for (std::size_t r = 0; r < reports.size(); ++r) {
        if (reports[r].starts_with("error\n")) {
            std::string error = reports[r].substr(6);
            if (error.starts_with(prefix)) error.erase(0, prefix.size());
            throw ValueError(fmt::format("{}: {} failed before {}: {}", method, session.describe(int(r)), stage, error));
        }
    }
    const auto lines = [](const std::string& text) {
        std::vector<std::string> parts;
        for (std::size_t first = 0; first < text.size();) {
            const std::size_t end = std::min(text.find('\n', first), text.size());
            parts.push_back(text.substr(first, end - first));
            first = end + 1;
        }
        return parts;
    };
    const auto chief = lines(reports[0]);
    for (std::size_t r = 1; r < reports.size(); ++r) {
        const auto other = lines(reports[r]);
        for (std::size_t i = 1; i + 1 < std::max(chief.size(), other.size()); i += 2) {
            const std::string mine = i + 1 < chief.size() ? chief[i + 1] : "(nothing)";
            const std::string theirs = i + 1 < other.size() ? other[i + 1] : "(nothing)";
            if (mine != theirs) {
                const std::string& what = i < chief.size() ? chief[i] : other[i];
                throw ValueError(fmt::format("{}: the ranks disagree on {}: {} has {}, {} has {}", method, what,
                                             session.describe(0), mine, session.describe(int(r)), theirs));
            }
        }
    }
}

void Model::join_peers(const Peers& peers, const std::exception_ptr& local_error, const std::vector<InputRows>& x,
                       const FitOptions& options) const {
    join_ranks(peers.session, "fit", "training", local_error,
               local_error ? std::vector<std::pair<std::string, std::string>>{} : fit_settings(*this, x, options, peers.session));
}

void Model::share_chief_state(const Peers& peers) {
    const distributed::Session& session = peers.session;
    std::vector<Tensor> all = weights();
    auto& slots = optimizer_->slots();
    const std::size_t slot_count = optimizer_->slot_names().size();
    // What rank 0 has besides the values: its step count, learning rate, random state, and which
    // weights have optimizer slots yet.
    nlohmann::json header;
    if (session.is_chief()) {
        std::vector<bool> has_slots(all.size(), false);
        for (std::size_t w = 0; w < all.size() && w < slots.size(); ++w) has_slots[w] = slot_count > 0 && slots[w].size() == slot_count;
        header = {{"iterations", optimizer_->iterations()},
                  {"learning_rate", optimizer_->learning_rate()},
                  {"generator", thread_generator().state()},
                  {"slots", has_slots}};
    }
    const std::string text = header.dump();
    std::vector<std::uint8_t> bytes(text.begin(), text.end());
    session.broadcast(bytes);
    header = nlohmann::json::parse(bytes.begin(), bytes.end());
    const auto has_slots = header.at("slots").get<std::vector<bool>>();
    if (!session.is_chief()) {
        optimizer_->set_iterations(header.at("iterations").get<std::int64_t>());
        optimizer_->set_learning_rate(header.at("learning_rate").get<double>());
        thread_generator().set_state(header.at("generator").get<std::string>());
        slots.resize(std::max(slots.size(), all.size()));
        for (std::size_t w = 0; w < all.size(); ++w) {
            if (has_slots[w]) slots[w].assign(slot_count, xt::xarray<float>(xt::zeros<float>(all[w].shape())));
        }
    }
    std::vector<float*> arrays;
    std::vector<std::size_t> sizes;
    for (auto& weight : all) {
        arrays.push_back(weight.mutable_value().data());
        sizes.push_back(weight.size());
    }
    for (std::size_t w = 0; w < all.size(); ++w) {
        if (!has_slots[w]) continue;
        for (auto& slot : slots[w]) {
            arrays.push_back(slot.data());
            sizes.push_back(slot.size());
        }
    }
    std::size_t length = 0;
    for (const std::size_t size : sizes) length += size;
    std::vector<float> values(length);
    float* cursor = values.data();
    for (std::size_t i = 0; i < arrays.size(); ++i) cursor = std::copy(arrays[i], arrays[i] + sizes[i], cursor);
    session.broadcast(std::span<float>(values));
    cursor = values.data();
    for (std::size_t i = 0; i < arrays.size(); ++i) {
        std::copy(cursor, cursor + sizes[i], arrays[i]);
        cursor += sizes[i];
    }
}

}  // namespace xtnn
