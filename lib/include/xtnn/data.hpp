#pragma once
// Preparing data: one-hot labels, scaling, seeded splits, and the bundled and standard datasets.

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>

#include "xtnn/random.hpp"

namespace xtnn {

/// Class labels (N,) -> one-hot rows (N, num_classes). Labels must be whole numbers in range.
xt::xarray<float> to_categorical(const xt::xarray<float>& labels, std::size_t num_classes);

/// Bytes 0..255 -> floats in [0, 1].
xt::xarray<float> scale_to_unit(const xt::xarray<std::uint8_t>& bytes);

struct IndexSplit {
    std::vector<std::size_t> train;       // ascending
    std::vector<std::size_t> validation;  // ascending
};

/// Holds out floor(n * validation_fraction) samples chosen at random by `generator`.
IndexSplit random_split(std::size_t n, double validation_fraction, Generator& generator = global_generator());

/// A labelled set: x of shape (N, ...), y of shape (N,) holding class labels.
struct Dataset {
    xt::xarray<float> x;
    xt::xarray<float> y;
};

namespace datasets {

/// MNIST digits as (train, test); x in [0, 1] with shape (N, 28, 28), y class labels.
/// `directory` holds either the bundled 10,000 digits (images-idx3-ubyte[.gz],
/// labels-idx1-ubyte[.gz]: the first 8,000 train, the last 2,000 test) or the standard
/// four-file layout (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...).
std::pair<Dataset, Dataset> load_mnist(const std::string& directory = "datasets/mnist-10k");

/// Fashion-MNIST in the standard layout; by default from Debian's dataset-fashion-mnist package.
std::pair<Dataset, Dataset> load_fashion_mnist(const std::string& directory = "/usr/share/datasets/fashion-mnist");

}  // namespace datasets
}  // namespace xtnn
