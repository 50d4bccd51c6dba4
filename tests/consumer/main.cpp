#include <xtnn/xtnn.hpp>

#include <iostream>

int main() {
    xtnn::Tensor w = xtnn::Tensor::parameter(xt::xarray<float>{{0.5f, -0.2f}, {0.1f, 0.3f}});
    xtnn::Tensor x = xtnn::Tensor::constant(xt::xarray<float>{{1.0f, 2.0f}});
    xtnn::Tensor loss = xtnn::ops::mean(xtnn::ops::sigmoid(xtnn::ops::matmul(x, w)));
    loss.backward();
    std::cout << "loss " << loss.item() << " dw(0,0) " << w.grad()(0, 0) << "\n";
    return w.grad().size() == 4 ? 0 : 1;
}
