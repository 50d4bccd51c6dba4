// fit, evaluate and predict: one training loop for every model, any number of inputs and
// outputs.

#include <algorithm>
#include <malloc.h>
#include <optional>
#include <span>
#include <tuple>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "model_internals.hpp"
#include "training_internals.hpp"
#include "xtnn/array_pool.hpp"
#include "xtnn/autodiff.hpp"
#include "xtnn/data.hpp"
#include "xtnn/distributed.hpp"
#include "xtnn/ops.hpp"
#include "parallel.hpp"

namespace xtnn {

namespace {

Shape sample_shape(const InputRows& x) {
    const Shape shape = x.shape();
    return Shape(shape.begin() + 1, shape.end());
}

// Every step allocates and frees buffers of the same sizes (batches, activations, gradients), many
// above glibc's 128 KiB mmap threshold: each would be mapped, page-faulted and unmapped again on
// every step (about 1 ms for a 784x256 gradient). With higher thresholds, freed blocks stay on the
// heap and the next step reuses them. The trim threshold must exceed one step's graph too: the
// tiny ResNet of bench/ (W6) frees about 100 MB at the end of each step, and with glibc trimming
// above 64 MB every step faulted its pages in again (46 s an epoch instead of 7.6 s). The memory
// stays with the process for its next step, as PyTorch's caching allocator keeps it. Done once per
// process, on the first fit/evaluate/predict.
void keep_freed_buffers_on_heap() {
#ifdef __GLIBC__
    static const bool once = [] {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, 1 << 30);
        return true;
    }();
    (void)once;
#endif
}

// Batch arithmetic that cannot overflow, whatever batch_size a caller passes (SIZE_MAX included).
std::size_t batch_count(std::size_t samples, std::size_t batch_size) {
    return samples / batch_size + (samples % batch_size != 0 ? 1 : 0);
}

std::size_t batch_end(std::size_t begin, std::size_t batch_size, std::size_t samples) {
    return samples - begin <= batch_size ? samples : begin + batch_size;
}

std::vector<std::size_t> iota(std::size_t n) {
    std::vector<std::size_t> indices(n);
    for (std::size_t i = 0; i < n; ++i) indices[i] = i;
    return indices;
}

}  // namespace

std::vector<Tensor> Model::gather_inputs(const std::vector<InputRows>& x, const std::vector<std::size_t>& order,
                                         std::size_t begin, std::size_t end) const {
    std::vector<Tensor> batch;
    for (std::size_t i = 0; i < x.size(); ++i) {
        batch.push_back(Tensor::constant(x[i].gather(order, begin, end, plan_->input_scales[i])));
    }
    return batch;
}

void Model::require_ready(const char* method) const {
    if (layers_.empty()) throw ValueError(std::string(method) + ": model '" + name_ + "' has no layers");
    if (!compiled()) throw ValueError(std::string(method) + ": call compile() before " + method + "()");
}

void Model::check_inputs(const char* method, const std::vector<InputRows>& x) const {
    const auto expected = input_shapes();
    if (x.size() != expected.size()) {
        throw ValueError(fmt::format("{}: model '{}' has {} input{} ({}), got {} array{}", method, name_, expected.size(),
                                     expected.size() == 1 ? "" : "s", fmt::join(input_names(), ", "), x.size(),
                                     x.size() == 1 ? "" : "s"));
    }
    for (std::size_t i = 0; i < x.size(); ++i) {
        if (x[i].count() == 0) {
            throw ValueError(std::string(method) + ": no samples (x has shape " + shape_to_string(x[i].shape()) + ")");
        }
        if (sample_shape(x[i]) != expected[i]) {
            const std::string which = x.size() == 1 ? "" : " '" + inputs_[i].name() + "'";
            throw ShapeError(std::string(method) + ": model '" + name_ + "' expects input" + which + " of shape " +
                             batch_shape_to_string(expected[i]) + ", got x of shape " + shape_to_string(x[i].shape()));
        }
        if (x[i].count() != x[0].count()) {
            throw ShapeError(fmt::format("{}: the inputs have different numbers of samples: {} has {}, {} has {}", method,
                                         inputs_[0].name(), x[0].count(), inputs_[i].name(), x[i].count()));
        }
    }
}

std::vector<xt::xarray<float>> Model::prepare_targets(const char* method, const std::vector<InputRows>& x,
                                                      const std::vector<xt::xarray<float>>& y) const {
    if (y.size() != heads_.size()) {
        throw ValueError(fmt::format("{}: model '{}' has {} output{} ({}), got {} target array{}", method, name_,
                                     heads_.size(), heads_.size() == 1 ? "" : "s", fmt::join(output_names(), ", "), y.size(),
                                     y.size() == 1 ? "" : "s"));
    }
    const auto shapes = output_shapes();
    std::vector<xt::xarray<float>> targets;
    for (std::size_t o = 0; o < y.size(); ++o) {
        if (y[o].dimension() == 0 || y[o].shape()[0] != x[0].count()) {
            throw ShapeError(std::string(method) + ": x has " + std::to_string(x[0].count()) + " samples but y" +
                             (y.size() == 1 ? "" : " for '" + heads_[o]->output_name + "'") + " has shape " +
                             shape_to_string(y[o].shape()));
        }
        targets.push_back(heads_[o]->loss->prepare_targets(y[o], shapes[o]));
    }
    return targets;
}

std::vector<Tensor> Model::head_losses(const std::vector<SplitOutput>& outputs, const std::vector<xt::xarray<float>>& targets) const {
    std::vector<Tensor> losses;
    for (std::size_t o = 0; o < heads_.size(); ++o) losses.push_back(heads_[o]->loss->compute(outputs[o], targets[o]));
    return losses;
}

namespace {

// predict and evaluate run a batch through the model in chunks whose widest activation takes at
// most this many bytes, the chunks spread over xtnn's threads. The book's CNN (W4) predicting a
// batch of 1000 images would otherwise hold 147 MB for one activation and 86 MB for the one
// before (peak RSS of its benchmark: 519 MB); an MLP's batch of 1000 stays in one piece.
constexpr std::size_t inference_chunk_bytes = std::size_t(8) << 20;

// Rows [begin, end) cut into chunks of at most `rows`.
std::vector<std::pair<std::size_t, std::size_t>> chunks(std::size_t begin, std::size_t end, std::size_t rows) {
    std::vector<std::pair<std::size_t, std::size_t>> pieces;
    for (std::size_t first = begin; first < end; first = batch_end(first, rows, end)) {
        pieces.emplace_back(first, batch_end(first, rows, end));
    }
    return pieces;
}

}  // namespace

std::size_t Model::inference_chunk_rows() const {
    std::size_t widest = 1;
    for (const auto& call : plan_->calls) {
        std::size_t elements = 1;
        for (auto extent : call->output_shape) elements *= extent;
        widest = std::max(widest, elements);
    }
    return std::max<std::size_t>(1, inference_chunk_bytes / (widest * sizeof(float)));
}

std::map<std::string, double> Model::run_evaluation(const std::vector<InputRows>& x,
                                                     const std::vector<xt::xarray<float>>& targets, std::size_t batch_size,
                                                     Progbar* progress, const Peers* peers) {
    std::size_t n = x[0].count(), own_begin = 0;
    if (peers) std::tie(own_begin, n) = peers->share(n);
    const auto order = iota(n);
    const std::size_t chunk_rows = inference_chunk_rows();
    Totals totals(heads_);
    Logs logs;
    for (std::size_t begin = own_begin, step = 1; begin < n; begin = batch_end(begin, batch_size, n), ++step) {
        const auto pieces = chunks(begin, batch_end(begin, batch_size, n), chunk_rows);
        std::vector<Totals::Batch> figures(pieces.size());
        detail::run_indices(pieces.size(), [&](std::size_t i) {
            NoGradGuard no_grad;
            const auto [first, last] = pieces[i];
            const auto outputs = run(gather_inputs(x, order, first, last), false, true, true);
            std::vector<xt::xarray<float>> chunk_targets;
            for (const auto& target : targets) chunk_targets.push_back(gather_rows(target, order, first, last));
            const auto losses = head_losses(outputs, chunk_targets);
            figures[i] = Totals::measure(heads_, last - first, losses, Totals::weighted_total(heads_, losses), outputs, chunk_targets);
        });
        for (const auto& chunk : figures) totals.add(chunk);
        totals.write(logs);
        if (progress) progress->update(step, logs, pieces.back().second == n);
    }
    if (peers) {
        // Every rank's sums, added in rank order: the same figures on every rank.
        const std::vector<double> own = totals.sums();
        const std::vector<double> all = peers->session.allgather(own);
        Totals everyone(heads_);
        for (std::size_t first = 0; first < all.size(); first += own.size()) everyone.add_sums({all.data() + first, own.size()});
        everyone.write(logs);
    }
    return logs;
}


namespace {

// A slice of fewer rows costs more in handing over and in fixed costs per op than it saves: W1
// (784-32-32-10, batch 32) trains 1.25x slower in two slices of 16 rows than in one piece.
constexpr std::size_t min_rows_per_slice = 32;

}  // namespace

std::vector<Model::BatchSlice> Model::make_batch_slices(const std::vector<Tensor>& weights) const {
    std::size_t count = std::size_t(ops::num_threads());
    for (const auto& layer : layers_) {
        if (!layer->trains_on_batch_slices()) count = 1;
    }
    std::vector<BatchSlice> slices(count);
    for (std::size_t k = 1; k < count; ++k) slices[k].gradients = std::make_unique<LeafGradients>(weights);
    return slices;
}

void Model::train_step(const std::vector<InputRows>& x, const std::vector<xt::xarray<float>>& targets,
                       const std::vector<std::size_t>& order, std::size_t begin, std::size_t end,
                       std::vector<BatchSlice>& slices, std::vector<Tensor>& weights, Totals& totals, Peers* peers) {
    const std::size_t rows = end - begin;
    // This rank's rows.
    std::size_t own_begin = begin, own_end = end;
    if (peers) {
        const auto [first, last] = peers->share(rows);
        own_begin = begin + first;
        own_end = begin + last;
    }
    const std::size_t own_rows = own_end - own_begin;
    const std::size_t count = own_rows == 0 ? 0 : std::clamp<std::size_t>(own_rows / min_rows_per_slice, 1, slices.size());
    // Every slice draws its random values (dropout keys) from the generator as the step found it,
    // so all draw the same keys, and the caller's generator ends as after one slice's draws.
    const std::optional<Generator> step_generator = count > 1 ? std::optional(thread_generator()) : std::nullopt;
    for (auto& weight : weights) weight.zero_grad();
    const auto slice_first = [&](std::size_t k) { return own_begin + k * own_rows / count; };
    const auto run_slice = [&](std::size_t k) {
        BatchSlice& slice = slices[k];
        const std::size_t first = slice_first(k), last = slice_first(k + 1);
        std::optional<LeafGradients::Redirect> redirect;
        if (k > 0) {
            thread_generator() = *step_generator;
            slice.gradients->clear();
            redirect.emplace(*slice.gradients);
        }
        const BatchSliceScope scope(first - begin);
        const std::size_t slice_rows = last - first;
        std::vector<xt::xarray<float>> slice_targets;
        for (const auto& target : targets) slice_targets.push_back(gather_rows(target, order, first, last));
        const auto outputs = run(gather_inputs(x, order, first, last), true, true, true);
        const auto losses = head_losses(outputs, slice_targets);
        const Tensor total = Totals::weighted_total(heads_, losses);
        if (slice_rows == rows) {
            total.backward();
        } else {
            // Each slice's loss is its own mean: weighted by its share of the rows, the slices'
            // gradients sum to the gradient of the batch's mean.
            xt::xarray<float> share = xt::empty<float>(total.shape());
            share.fill(float(slice_rows) / float(rows));
            total.backward(share);
        }
        // The slice's graph is freed here, on the thread that allocated it.
        slice.figures = Totals::measure(heads_, slice_rows, losses, total, outputs, slice_targets);
    };
    // The slices run as a team: a layer whose weights are larger than the activations crossing
    // between the cores shares its product out by the weights (ops_sharded.hpp).
    std::vector<std::size_t> slice_rows(count);
    for (std::size_t k = 0; k < count; ++k) slice_rows[k] = slice_first(k + 1) - slice_first(k);
    detail::Team team(std::move(slice_rows));
    detail::run_team(team, run_slice);
    if (peers) {
        exchange_step(*peers, rows, slices, count, weights, totals);
        return;
    }
    // The other slices' gradients are added to slice 0's, in slice order, each thread a share of
    // every weight's elements, which the same thread then updates while the sum is in its cache.
    // The shares are the optimizer's parts: elements [n * part / count, n * (part + 1) / count).
    for (std::size_t w = 0; w < weights.size(); ++w) {
        for (std::size_t k = 1; k < count && !weights[w].has_grad(); ++k) {
            if (slices[k].gradients->gradient(w)) grad_buffer(*weights[w].node());
        }
    }
    const auto add_then_update = [&](std::size_t parts, const std::function<void(std::size_t)>& update) {
        detail::run_tasks(parts, [&](std::size_t part) {
            for (std::size_t w = 0; w < weights.size() && count > 1; ++w) {
                if (!weights[w].has_grad()) continue;
                float* sum = weights[w].node()->grad.data();
                const std::size_t n = weights[w].size(), first = n * part / parts, last = n * (part + 1) / parts;
                for (std::size_t k = 1; k < count; ++k) {
                    const xt::xarray<float>* gradient = slices[k].gradients->gradient(w);
                    if (!gradient) continue;
                    const float* addend = gradient->data();
                    for (std::size_t j = first; j < last; ++j) sum[j] += addend[j];
                }
            }
            update(part);
        });
    };
    optimizer_->apply(weights, count, add_then_update);
    for (std::size_t k = 0; k < count; ++k) totals.add(slices[k].figures);
}

History Model::fit_rows(const std::vector<InputRows>& x, const std::vector<xt::xarray<float>>& y, const FitOptions& options) {
    keep_freed_buffers_on_heap();
    std::optional<Peers> peers;
    if (options.distributed && options.distributed->get().size() > 1) peers.emplace(Peers{.session = options.distributed->get()});
    std::vector<xt::xarray<float>> targets;
    // A rank whose checks fail must not leave the others waiting: every rank learns of it first.
    std::exception_ptr local_error;
    try {
        targets = check_fit(x, y, options);
    } catch (...) {
        if (!peers) throw;
        local_error = std::current_exception();
    }
    if (!peers) return train(x, targets, options, nullptr);
    join_peers(*peers, local_error, x, options);
    share_chief_state(*peers);
    try {
        return train(x, targets, options, &*peers);
    } catch (const std::exception& e) {
        peers->session.abort(std::string("fit failed: ") + e.what() + "; ending the job");
    }
}

std::vector<xt::xarray<float>> Model::check_fit(const std::vector<InputRows>& x, const std::vector<xt::xarray<float>>& y,
                                                const FitOptions& options) {
    require_ready("fit");
    if (options.batch_size == 0) throw ValueError("fit: batch_size must be positive, got 0");
    if (options.epochs < 0) throw ValueError("fit: epochs must not be negative, got " + std::to_string(options.epochs));
    if (options.initial_epoch < 0 || options.initial_epoch > options.epochs) {
        throw ValueError("fit: initial_epoch must be in [0, epochs], got " + std::to_string(options.initial_epoch));
    }
    if (!(options.validation_split >= 0.0 && options.validation_split < 1.0)) {
        throw ValueError("fit: validation_split must be in [0, 1), got " + std::to_string(options.validation_split));
    }
    for (std::size_t i = 0; i < options.callbacks.size(); ++i) {
        if (!options.callbacks[i]) throw ValueError("fit: callback " + std::to_string(i) + " is null");
    }
    if (!built() && x.size() == 1 && x[0].dimension() > 0) connect_stack(sample_shape(x[0]), thread_generator());
    check_inputs("fit", x);
    auto targets = prepare_targets("fit", x, y);
    if (options.validation_data) {
        const auto validation_x = options.validation_data->rows();
        check_inputs("fit (validation_data)", validation_x);
        prepare_targets("fit (validation_data)", validation_x, options.validation_data->y);
    }
    return targets;
}

History Model::train(const std::vector<InputRows>& x, const std::vector<xt::xarray<float>>& targets, const FitOptions& options,
                     Peers* peers) {
    const std::size_t n = x[0].count();

    std::vector<std::size_t> train_indices = iota(n);
    // The validation samples: the caller's (they outlive fit) or rows held out here.
    std::vector<InputRows> validation_x;
    std::vector<xt::xarray<float>> held_out_x, validation_targets;
    if (options.validation_data) {
        const auto& data = *options.validation_data;
        validation_x = data.rows();
        validation_targets = prepare_targets("fit (validation_data)", validation_x, data.y);
    } else if (options.validation_split > 0.0) {
        IndexSplit split = random_split(n, options.validation_split);
        train_indices = std::move(split.train);
        const std::size_t held_out = split.validation.size();
        held_out_x.reserve(x.size());
        for (const auto& rows : x) held_out_x.push_back(rows.gather(split.validation, 0, held_out));
        for (const auto& rows : held_out_x) validation_x.push_back(InputRows(rows));
        for (const auto& target : targets) validation_targets.push_back(gather_rows(target, split.validation, 0, held_out));
    }

    // Only rank 0 of a distributed fit reports; the other ranks run the same callbacks (so that
    // all decide alike) with their output discarded, and skip those that write files.
    const bool chief = !peers || peers->session.is_chief();
    std::ostream discarded(nullptr);
    std::ostream& out = !chief ? discarded : options.output ? *options.output : std::cout;
    const int verbose = chief ? options.verbose : 0;
    std::vector<std::shared_ptr<Callback>> callbacks;
    for (const auto& callback : options.callbacks) {
        if (chief || !callback->chief_only()) callbacks.push_back(callback);
    }
    // A callback may stop training on one rank: all stop at the same step.
    const auto agree_to_stop = [&] {
        if (peers) stop_training = peers->session.any(stop_training);
    };
    const bool dynamic = is_terminal(out);
    const std::size_t train_count = train_indices.size();
    const std::size_t steps = batch_count(train_count, options.batch_size);
    // The optimizer sees every weight, so its slots keep their place when a layer is frozen or
    // thawed between fits; weights that record no gradient (frozen, moving statistics) are skipped.
    for (auto& layer : layers_) layer->prepare_gradients();
    std::vector<Tensor> all_weights = weights();
    std::vector<BatchSlice> slices = make_batch_slices(all_weights);
    if (peers) {
        for (std::size_t w = 0; w < all_weights.size(); ++w) {
            if (all_weights[w].requires_grad()) peers->trained.push_back(w);
        }
        std::size_t index = 0;
        for (const auto& layer : layers_) {
            for (const bool created_trainable : layer->weights_created_trainable()) {
                if (!created_trainable && layer->trainable) peers->averaged_state.push_back(index);
                ++index;
            }
        }
    }

    History history;
    stop_training = false;
    for (const auto& callback : callbacks) {
        callback->model = this;
        callback->out = &out;
    }
    for (const auto& callback : callbacks) callback->on_train_begin({});

    for (int epoch = options.initial_epoch; epoch < options.epochs && !stop_training; ++epoch) {
        for (const auto& callback : callbacks) callback->on_epoch_begin(epoch, {});
        if (verbose >= 1 && options.epochs > 1) out << "Epoch " << epoch + 1 << "/" << options.epochs << "\n";
        std::vector<std::size_t> order = train_indices;
        if (options.shuffle) {
            const auto permutation = thread_generator().permutation(train_count);
            for (std::size_t i = 0; i < train_count; ++i) order[i] = train_indices[permutation[i]];
        }
        Progbar progress(steps, verbose, out, dynamic);
        Totals totals(heads_);
        std::size_t steps_done = 0;
        Logs logs;
        for (std::size_t step = 0; step < steps && !stop_training; ++step) {
            for (const auto& callback : callbacks) callback->on_train_batch_begin(int(step), {});
            const std::size_t begin = step * options.batch_size;
            try {
                train_step(x, targets, order, begin, batch_end(begin, options.batch_size, train_count), slices, all_weights,
                           totals, peers);
            } catch (const NumericError& e) {
                throw NumericError(fmt::format("fit: epoch {}, batch {}: {}", epoch + 1, step, e.what()));
            }
            steps_done = step + 1;
            totals.write(logs);
            for (const auto& callback : callbacks) callback->on_train_batch_end(int(step), logs);
            agree_to_stop();
            progress.update(steps_done, logs);
        }
        if (!validation_x.empty()) {
            for (const auto& [name, value] : run_evaluation(validation_x, validation_targets, options.batch_size, nullptr, peers)) {
                logs["val_" + name] = value;
            }
        }
        if (peers) gather_optimizer_slots(*peers, all_weights);
        progress.update(steps_done, logs, true);
        history.epoch.push_back(epoch);
        for (const auto& [name, value] : logs) history.history[name].push_back(value);
        for (const auto& callback : callbacks) callback->on_epoch_end(epoch, logs);
        agree_to_stop();
    }
    // The steps' buffers go back to the system, from every thread that ran slices or an op's share.
    detail::run_tasks(std::size_t(ops::num_threads()), [](std::size_t) {
        detail::release_pooled_arrays<float>();
        detail::release_team_scratch();
    });
    for (const auto& callback : callbacks) callback->on_train_end({});
    return history;
}

std::map<std::string, double> Model::evaluate_rows(const std::vector<InputRows>& x, const std::vector<xt::xarray<float>>& y,
                                                   const EvaluateOptions& options) {
    keep_freed_buffers_on_heap();
    std::optional<Peers> peers;
    if (options.distributed && options.distributed->get().size() > 1) peers.emplace(Peers{.session = options.distributed->get()});
    std::vector<xt::xarray<float>> targets;
    std::exception_ptr local_error;
    try {
        require_ready("evaluate");
        if (options.batch_size == 0) throw ValueError("evaluate: batch_size must be positive, got 0");
        check_inputs("evaluate", x);
        targets = prepare_targets("evaluate", x, y);
    } catch (...) {
        if (!peers) throw;
        local_error = std::current_exception();
    }
    std::size_t own_rows = x.empty() ? 0 : x[0].count();
    if (peers) {
        join_ranks(peers->session, "evaluate", "evaluating", local_error, {{"the samples", std::to_string(own_rows)}});
        const auto [first, last] = peers->share(own_rows);
        own_rows = last - first;
    }
    const bool chief = !peers || peers->session.is_chief();
    std::ostream discarded(nullptr);
    std::ostream& out = !chief ? discarded : options.output ? *options.output : std::cout;
    Progbar progress(batch_count(own_rows, options.batch_size), chief ? options.verbose : 0, out, is_terminal(out));
    return run_evaluation(x, targets, options.batch_size, &progress, peers ? &*peers : nullptr);
}

std::vector<xt::xarray<float>> Model::predict(const std::vector<InputRows>& x, std::size_t batch_size) const {
    keep_freed_buffers_on_heap();
    if (batch_size == 0) throw ValueError("predict: batch_size must be positive, got 0");
    if (layers_.empty()) throw ValueError("predict: model '" + name_ + "' has no layers");
    check_inputs("predict", x);
    NoGradGuard no_grad;
    const std::size_t n = x[0].count();
    const auto order = iota(n);
    std::vector<xt::xarray<float>> results;
    for (const auto& per_sample : output_shapes()) {
        Shape shape{n};
        shape.insert(shape.end(), per_sample.begin(), per_sample.end());
        checked_element_count(shape, "predict: the output for " + std::to_string(n) + " samples has shape");
        results.push_back(xt::empty<float>(shape));
    }
    const std::size_t chunk_rows = inference_chunk_rows();
    for (std::size_t begin = 0; begin < n; begin = batch_end(begin, batch_size, n)) {
        const auto pieces = chunks(begin, batch_end(begin, batch_size, n), chunk_rows);
        detail::run_indices(pieces.size(), [&](std::size_t i) {
            NoGradGuard no_grad;
            const auto [first, last] = pieces[i];
            const auto outputs = run(gather_inputs(x, order, first, last), false, false, true);
            for (std::size_t o = 0; o < outputs.size(); ++o) {
                const auto& value = outputs[o].pre_activation.value();
                std::copy(value.begin(), value.end(), results[o].data() + first * (results[o].size() / n));
            }
        });
    }
    return results;
}

std::map<std::string, xt::xarray<float>> Model::predict(const Named<InputRows>& x, std::size_t batch_size) const {
    auto outputs = predict(by_name("predict", x, input_names(), "input"), batch_size);
    std::map<std::string, xt::xarray<float>> named;
    const auto names = output_names();
    for (std::size_t o = 0; o < outputs.size(); ++o) named.emplace(names[o], std::move(outputs[o]));
    return named;
}

xt::xarray<float> Model::predict_one(const InputRows& x, std::size_t batch_size) {
    if (!built() && x.dimension() > 0 && !layers_.empty()) connect_stack(sample_shape(x), thread_generator());
    if (built() && outputs_.size() != 1) {
        throw ValueError("predict: model '" + name_ + "' has " + std::to_string(outputs_.size()) +
                         " outputs; predict({x, ...}) returns them all");
    }
    auto results = predict(std::vector<InputRows>{x}, batch_size);
    return std::move(results[0]);
}

Tensor Model::call(const Tensor& x, bool training) {
    if (!built() && x.dimension() > 0 && !layers_.empty()) connect_stack(Shape(x.shape().begin() + 1, x.shape().end()), thread_generator());
    const auto results = call(std::vector<Tensor>{x}, training);
    if (results.size() != 1) throw ValueError("call: model '" + name_ + "' has " + std::to_string(results.size()) + " outputs");
    return results[0];
}

std::vector<Tensor> Model::call(const std::vector<Tensor>& inputs, bool training) {
    if (!built()) throw ValueError("call: model '" + name_ + "' is not built");
    if (inputs.size() != inputs_.size()) {
        throw ValueError(fmt::format("call: model '{}' has {} inputs, got {} tensors", name_, inputs_.size(), inputs.size()));
    }
    std::vector<Tensor> results;
    for (auto& output : run(inputs, training, false)) results.push_back(output.pre_activation);
    return results;
}

}  // namespace xtnn
