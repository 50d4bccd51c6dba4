#pragma once
// The Sequential model: a stack of layers, each fed the previous one's output. It is a Model (one
// graph, one training loop) with Keras's add() and the Sequential config form; it may be built
// late, when the input shape is first known.

#include <concepts>
#include <memory>
#include <string>
#include <type_traits>

#include <nlohmann/json_fwd.hpp>

#include "xtnn/layers.hpp"
#include "xtnn/model.hpp"

namespace xtnn {

class Sequential : public Model {
public:
    explicit Sequential(std::string name = "sequential");
    /// A model that is a stack of layers (as load_model returns for a Sequential file); a
    /// ValueError for a functional model.
    Sequential(Model&& model);

    /// Appends a layer; the first one must know its input shape (or call build()).
    template <class L>
        requires std::derived_from<std::decay_t<L>, Layer>
    void add(L&& layer) {
        add(std::shared_ptr<Layer>(std::make_shared<std::decay_t<L>>(std::forward<L>(layer))));
    }
    /// Appends a layer made elsewhere; a first layer that knows its input shape is built at once,
    /// its initial weights drawn from `generator`.
    void add(std::shared_ptr<Layer> layer, Generator& generator = thread_generator()) {
        append_layer(std::move(layer), generator);
    }
    /// A layer by name and Keras-style config: add("dense", {{"units", 32}, {"activation", "relu"}})
    /// (building a config needs <nlohmann/json.hpp>).
    void add(const std::string& class_name, const nlohmann::json& config);
    /// A layer by name with its default config: add("flatten").
    void add(const std::string& class_name);

    /// Creates every layer's weights for inputs of `input_shape` (batch axis excluded), drawing
    /// initial values from `generator`.
    void build(const Shape& input_shape, Generator& generator = thread_generator());

    /// The stack a Sequential config describes; a ValueError for any other config.
    static Sequential from_config(const nlohmann::json& config, const FromConfigOptions& options = {});
    static Sequential from_json(const std::string& text);
};

}  // namespace xtnn
