#pragma once
// The parts of Model that its source files share and its users need not see.

#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "xtnn/losses.hpp"
#include "xtnn/metrics.hpp"
#include "xtnn/model.hpp"

namespace xtnn {

/// The most layers one model holds: a larger count is a mistake in a config or a loop.
inline constexpr std::size_t max_model_layers = 1024;

/// How a model runs: every layer call as a step over numbered value slots (one per call, inputs
/// first), in an order where each step comes after the steps it reads.
struct Model::Plan {
    struct Step {
        Layer* layer = nullptr;
        std::vector<std::size_t> inputs;
        std::size_t output = 0;
        /// The step runs layer->call_then_relu: a relu Activation, the only reader of the
        /// layer's output, folded into it (the Activation's own step is gone).
        bool then_relu = false;
        /// The step is a Rescaling of a model input that gathering a batch applies as it turns
        /// the rows into floats (input_scales); run() skips it for inputs gathered that way.
        bool done_by_gather = false;
        /// At inference with no graph recorded (predict, evaluate), this Conv2D step also runs the
        /// BatchNormalization step of this index, the only reader of its output, in the
        /// convolution's epilogue (BatchNormalization::call_after_convolution).
        std::optional<std::size_t> normalized_by;
        /// This BatchNormalization step is then done by the Conv2D step before it.
        bool done_by_convolution = false;
        /// Slots no later step reads: freed after this step, so inference keeps little alive.
        std::vector<std::size_t> release;
    };
    std::vector<std::shared_ptr<const LayerCall>> calls;
    std::size_t slot_count = 0;
    std::vector<std::size_t> input_slots;
    std::vector<Step> steps;
    std::vector<std::size_t> output_slots;
    /// Whether some step reads the slot, and whether it is one of the model's outputs.
    std::vector<bool> read;
    std::vector<bool> is_output;
    /// Per model input, the factor gathering a batch scales its rows by: a Rescaling's (offset 0)
    /// that is the input's only reader, 1 when there is none.
    std::vector<float> input_scales;

    /// How many steps read each slot.
    std::vector<std::size_t> reader_counts() const;
    /// The step that writes each slot (none for the model's inputs).
    std::vector<std::optional<std::size_t>> producer_steps() const;
    /// Folds each relu Activation whose input only it reads, and that a layer which fuses_relu()
    /// produces, into that layer's step; the model's outputs stay as they are.
    void fold_relu_activations();
    /// Marks each Rescaling without offset that alone reads a model input as done_by_gather and
    /// records its factor: a batch then goes from bytes to scaled floats in one pass, with the
    /// same floats (one multiplication each).
    void fold_input_rescaling();
    /// Pairs each BatchNormalization that alone reads the output of a Conv2D without activation
    /// (neither being a model output) with that Conv2D, for inference (Step::normalized_by).
    void fold_batch_norm_into_convolutions();
};

/// One output's training settings: its loss, the weight of that loss in the total, its metrics.
struct Model::Head {
    std::string output_name;
    std::unique_ptr<Loss> loss;
    double weight = 1.0;
    std::vector<std::unique_ptr<Metric>> metrics;
};

/// Which call of its layer each call is, counted within the model (Keras's node_index): what
/// configs and the summary name a layer's output by, "dense[1][0]".
inline std::map<const LayerCall*, std::size_t> node_indices(const std::vector<std::shared_ptr<const LayerCall>>& calls) {
    std::map<const Layer*, std::size_t> counts;
    std::map<const LayerCall*, std::size_t> indices;
    for (const auto& call : calls) indices[call.get()] = counts[call->layer.get()]++;
    return indices;
}

}  // namespace xtnn
