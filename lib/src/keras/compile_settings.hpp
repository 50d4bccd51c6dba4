#pragma once
// Compile settings between Keras's forms and xtnn's: Keras 3's compile_config and Keras 2's
// training_config (losses, metrics, loss weights, optimizer with its hyper-parameters) to a
// compiled Model, and a compiled Model to Keras 3's compile_config. A setting xtnn lacks is an
// IoError naming it.

#include <string>

#include <nlohmann/json.hpp>

#include "xtnn/model.hpp"

namespace xtnn::keras {

/// Compiles `model` with the settings of a Keras file: Keras 3's compile_config (the optimizer
/// under "optimizer") or Keras 2's training_config ("optimizer_config"); `what` names the file.
void compile_from_keras(Model& model, const nlohmann::json& settings, const char* optimizer_field, const std::string& what);

/// The compile_config Keras 3 writes for `model`, which must be compiled.
nlohmann::json keras3_compile_config(const Model& model);

}  // namespace xtnn::keras
