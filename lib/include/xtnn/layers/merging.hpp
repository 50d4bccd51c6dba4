#pragma once
// Keras's merging layers: several inputs, one output. Add, Subtract, Multiply, Average, Maximum
// and Minimum combine inputs element by element, broadcasting extents of 1 as Keras does (a
// squeeze-and-excitation block multiplies (H, W, C) by (1, 1, C)); Concatenate joins them along
// an axis.

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "xtnn/layer.hpp"

namespace xtnn {

/// What the merging layers share: they take a list of inputs, never one tensor.
class Merge : public Layer {
public:
    Shape output_shape(const Shape& input_shape) const override;
    Tensor call(const Tensor& x, bool training) override;
    Shape compute_output_shape(const std::vector<Shape>& input_shapes) const override;
    Tensor call_inputs(const std::vector<Tensor>& inputs, bool training) override;

protected:
    Merge() = default;
    /// The inputs' merged shape; a ShapeError naming the layer and every shape when they do not
    /// broadcast together.
    virtual Shape merged_shape(const std::vector<Shape>& input_shapes) const;
    /// The inputs, checked against each other and the layer's shapes, with axes of 1 after the
    /// batch axis where one has fewer axes than another.
    std::vector<Tensor> aligned(const std::vector<Tensor>& inputs) const;
    virtual Tensor merge(const std::vector<Tensor>& inputs) const = 0;
    /// The fewest inputs the layer takes (Subtract: exactly 2).
    virtual std::size_t min_inputs() const { return 2; }
    virtual std::size_t max_inputs() const { return 1024; }
};

/// The element-wise sum of its inputs: the join of a residual connection.
class Add : public Merge {
public:
    std::string class_name() const override { return "Add"; }
    /// Two inputs of one shape: relu(a + b) as one op (add_relu).
    bool fuses_relu() const override { return true; }
    Tensor call_then_relu(const std::vector<Tensor>& inputs, bool training) override;
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }

protected:
    Tensor merge(const std::vector<Tensor>& inputs) const override;
};

/// The first of exactly two inputs minus the second.
class Subtract : public Merge {
public:
    std::string class_name() const override { return "Subtract"; }
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }

protected:
    Tensor merge(const std::vector<Tensor>& inputs) const override;
    std::size_t max_inputs() const override { return 2; }
};

/// The element-wise product of its inputs.
class Multiply : public Merge {
public:
    std::string class_name() const override { return "Multiply"; }
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }

protected:
    Tensor merge(const std::vector<Tensor>& inputs) const override;
};

/// The element-wise mean of its inputs.
class Average : public Merge {
public:
    std::string class_name() const override { return "Average"; }
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }

protected:
    Tensor merge(const std::vector<Tensor>& inputs) const override;
};

/// The element-wise maximum of its inputs (the first maximum gets the gradient; a NaN wins).
class Maximum : public Merge {
public:
    std::string class_name() const override { return "Maximum"; }
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }

protected:
    Tensor merge(const std::vector<Tensor>& inputs) const override;
};

/// The element-wise minimum of its inputs (the first minimum gets the gradient; a NaN wins).
class Minimum : public Merge {
public:
    std::string class_name() const override { return "Minimum"; }
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }

protected:
    Tensor merge(const std::vector<Tensor>& inputs) const override;
};

/// Its inputs joined along `axis` (-1, the last, by default; counted without the batch axis when
/// positive, as Keras counts with it: axis 1 is the first axis after the batch). The other
/// extents must agree.
class Concatenate : public Merge {
public:
    explicit Concatenate(int axis = -1);

    std::string class_name() const override { return "Concatenate"; }
    nlohmann::json config() const override;
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }
    int axis() const { return axis_; }

protected:
    Shape merged_shape(const std::vector<Shape>& input_shapes) const override;
    Tensor merge(const std::vector<Tensor>& inputs) const override;

private:
    /// The axis within a sample (batch excluded) for inputs of `rank` axes; throws when out of range.
    std::size_t sample_axis(std::size_t rank) const;
    int axis_;
};

}  // namespace xtnn
