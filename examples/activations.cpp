// The book's pictures: sigmoid, relu and tanh with the derivatives the autodiff computes, and
// the softmax of [1, 2, 5] as a bar chart. Writes activations.svg and softmax.svg.

#include <fmt/format.h>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xsort.hpp>
#include <xtnn/xtnn.hpp>

#include "svg_plot.hpp"

int main() {
    const xt::xarray<float> grid = xt::linspace<float>(-5.0f, 5.0f, 201);
    const std::vector<double> x(grid.begin(), grid.end());
    svg_plot::Chart chart{"Activations and their derivatives (from backward())", "x", "value", {}};
    for (const std::string name : {"sigmoid", "relu", "tanh"}) {
        xtnn::Tensor input = xtnn::Tensor::parameter(grid);
        xtnn::Tensor output = xtnn::get_activation(name)(input);
        output.backward(xt::ones<float>(grid.shape()));  // elementwise: the gradient is the derivative
        chart.series.push_back({name, x, {output.value().begin(), output.value().end()}});
        chart.series.push_back({name + "'", x, {input.grad().begin(), input.grad().end()}, true});
    }
    svg_plot::write_line_chart("activations.svg", chart);

    const auto p = xtnn::ops::softmax(xtnn::Tensor::constant(xt::xarray<float>{1.0f, 2.0f, 5.0f})).value();
    svg_plot::write_bar_chart("softmax.svg", {"softmax([1, 2, 5])", "", "probability", {}}, {"1", "2", "5"},
                              {p(0), p(1), p(2)});
    fmt::print("softmax([1, 2, 5]) = [{:.4f}, {:.4f}, {:.4f}], sum {:.4f}, argmax {}\n", p(0), p(1), p(2),
               p(0) + p(1) + p(2), xt::argmax(p)());
    fmt::print("Wrote activations.svg and softmax.svg\n");
}
