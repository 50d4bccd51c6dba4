#pragma once
// The parts of Model that its source files share and its users need not see.

#include <memory>
#include <string>
#include <vector>

#include "xtnn/losses.hpp"
#include "xtnn/metrics.hpp"
#include "xtnn/model.hpp"

namespace xtnn {

/// How a model runs: every layer call as a step over numbered value slots (one per call, inputs
/// first), in an order where each step comes after the steps it reads.
struct Model::Plan {
    struct Step {
        Layer* layer;
        std::vector<std::size_t> inputs;
        std::size_t output;
        /// Slots no later step reads: freed after this step, so inference keeps little alive.
        std::vector<std::size_t> release;
    };
    std::vector<std::shared_ptr<const LayerCall>> calls;
    std::size_t slot_count = 0;
    std::vector<std::size_t> input_slots;
    std::vector<Step> steps;
    std::vector<std::size_t> output_slots;
    /// Whether some step reads the slot.
    std::vector<bool> read;
};

/// One output's training settings: its loss, the weight of that loss in the total, its metrics.
struct Model::Head {
    std::string output_name;
    std::unique_ptr<Loss> loss;
    double weight = 1.0;
    std::vector<std::unique_ptr<Metric>> metrics;
};

}  // namespace xtnn
