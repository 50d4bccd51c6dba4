#pragma once
// Keras's pooling layers: MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D,
// GlobalMaxPooling2D (channels-last images).

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "xtnn/layer.hpp"
#include "xtnn/ops.hpp"

namespace xtnn {

struct Pooling2DOptions {
    ops::Window2D pool_size = {2, 2};
    /// Defaults to pool_size, as in Keras.
    std::optional<ops::Window2D> strides = std::nullopt;
    std::string padding = "valid";
    Shape input_shape = {};
};

/// Max or average over windows of each channel (MaxPooling2D, AveragePooling2D).
class Pooling2D : public Layer {
public:
    enum class Kind { max, average };
    Pooling2D(Kind kind, Pooling2DOptions options);

    std::string class_name() const override { return kind_ == Kind::max ? "MaxPooling2D" : "AveragePooling2D"; }
    Shape output_shape(const Shape& input_shape) const override;
    Tensor call(const Tensor& x, bool training) override;
    nlohmann::json config() const override;

private:
    Kind kind_;
    Pooling2DOptions options_;
    ops::Window2D strides_;
    ops::Padding padding_;
};

class MaxPooling2D : public Pooling2D {
public:
    explicit MaxPooling2D(std::size_t pool_size = 2) : MaxPooling2D(Pooling2DOptions{.pool_size = {pool_size, pool_size}}) {}
    explicit MaxPooling2D(Pooling2DOptions options) : Pooling2D(Kind::max, std::move(options)) {}
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }
};

class AveragePooling2D : public Pooling2D {
public:
    explicit AveragePooling2D(std::size_t pool_size = 2)
        : AveragePooling2D(Pooling2DOptions{.pool_size = {pool_size, pool_size}}) {}
    explicit AveragePooling2D(Pooling2DOptions options) : Pooling2D(Kind::average, std::move(options)) {}
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }
};

/// (batch, height, width, channels) -> (batch, channels): the mean over each channel's image.
class GlobalAveragePooling2D : public Layer {
public:
    explicit GlobalAveragePooling2D(Shape input_shape = {});

    std::string class_name() const override { return "GlobalAveragePooling2D"; }
    Shape output_shape(const Shape& input_shape) const override;
    Tensor call(const Tensor& x, bool training) override;
    nlohmann::json config() const override;
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }
};

/// The maximum of each channel over height and width: (N, H, W, C) -> (N, C), as Keras's
/// GlobalMaxPooling2D (the first maximum gets the gradient; a NaN wins).
class GlobalMaxPooling2D : public Layer {
public:
    explicit GlobalMaxPooling2D(Shape input_shape = {});

    std::string class_name() const override { return "GlobalMaxPooling2D"; }
    Shape output_shape(const Shape& input_shape) const override;
    Tensor call(const Tensor& x, bool training) override;
    nlohmann::json config() const override;
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }
};

}  // namespace xtnn
