#pragma once
// Model files. A model file is a safetensors file (so any safetensors reader gets the weights)
// whose "__metadata__" comes first and holds the Keras-style config, the compile settings, the
// optimizer's step count, the random generator's state and a checksum; its tensors are the
// weights, the optimizer's slots and one check input with the output it must give. Loading runs
// no code and opens no other file. docs/model-format.md describes the format.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "xtnn/sequential.hpp"

namespace xtnn {

/// The format version this build writes and reads.
inline constexpr int model_format_version = 1;

struct LoadOptions {
    /// Also set thread_generator() to its state when the file was saved, so a resumed fit()
    /// shuffles and drops out exactly as the uninterrupted run would have (xtnn files only).
    bool restore_random_state = false;
    /// Compile the model as the file says (loss, metrics, optimizer); false loads it
    /// uncompiled, as Keras's load_model(compile=False), for a file whose settings xtnn lacks.
    bool compile = true;
};

/// The model file's bytes: what Model::save() writes.
std::vector<std::uint8_t> model_to_bytes(Model& model);

/// The `.keras` archive of `model` (Keras 3's format): what Model::save() writes to a path
/// ending in ".keras". docs/keras-files.md says what Keras reads of it.
std::vector<std::uint8_t> model_to_keras_bytes(Model& model);

/// Reads a model file, whatever its name: xtnn's own (written by Model::save(): architecture,
/// weights and, when the model was compiled, loss, metrics and optimizer with its state, ready
/// for fit() to continue), a Keras 3 `.keras` archive or a Keras 2 `.h5` file (architecture,
/// weights, and compile settings when the file has them). The format is told by the bytes.
Model load_model(const std::string& path, const LoadOptions& options = {});
/// The same from bytes in memory; `name` is used in errors.
Model load_model_from_bytes(std::span<const std::uint8_t> bytes, const std::string& name = "<memory>",
                                 const LoadOptions& options = {});

/// The same file with its checksum recomputed, for tools that edit a model file's metadata or
/// tensors on purpose (the layout is still checked).
std::vector<std::uint8_t> reseal_model_file(std::span<const std::uint8_t> bytes);

}  // namespace xtnn
