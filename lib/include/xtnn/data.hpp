#pragma once
// Preparing data: one-hot labels, scaling, seeded splits, and the bundled and standard datasets.

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>

#include "xtnn/io.hpp"
#include "xtnn/random.hpp"
#include "xtnn/tensor.hpp"

namespace xtnn {

/// Class labels (N,) -> one-hot rows (N, num_classes). Labels must be whole numbers in range.
xt::xarray<float> to_categorical(const xt::xarray<float>& labels, std::size_t num_classes);

/// Bytes 0..255 -> floats in [0, 1]: byte * float(1 / 255), the same floats as a
/// Rescaling(1.0 / 255) layer gives bytes fed to a model.
xt::xarray<float> scale_to_unit(const xt::xarray<std::uint8_t>& bytes);

/// Rows `indices[begin, end)` of x (batch axis first) as a new float array; bytes are cast to
/// float without scaling.
xt::xarray<float> gather_rows(const xt::xarray<float>& x, const std::vector<std::size_t>& indices, std::size_t begin,
                              std::size_t end);
xt::xarray<float> gather_rows(const xt::xarray<std::uint8_t>& x, const std::vector<std::size_t>& indices,
                              std::size_t begin, std::size_t end);

/// The samples a model reads: floats, or bytes cast to float one batch at a time, as Keras casts
/// uint8 inputs (no scaling: put a Rescaling layer first). Images kept as bytes take a quarter of
/// the memory and of the memory traffic; images in a memory-mapped IDX file (io::MappedIdx) are
/// read from disk only as their rows are gathered. Refers to the array or file it was made from.
class InputRows {
public:
    InputRows(const xt::xarray<float>& values) : values_(&values) {}
    InputRows(const xt::xarray<std::uint8_t>& bytes)
        : bytes_(bytes.data()), bytes_shape_(bytes.shape().begin(), bytes.shape().end()) {}
    InputRows(const io::MappedIdx& file) : bytes_(file.data()), bytes_shape_(file.shape()) {}

    std::size_t dimension() const { return values_ ? values_->dimension() : bytes_shape_.size(); }
    Shape shape() const;
    /// The number of samples (the first extent; 0 for a scalar).
    std::size_t count() const;
    /// Rows indices[begin..end) as floats, each value times `scale`.
    xt::xarray<float> gather(const std::vector<std::size_t>& indices, std::size_t begin, std::size_t end,
                             float scale = 1.0f) const;

private:
    const xt::xarray<float>* values_ = nullptr;
    const std::uint8_t* bytes_ = nullptr;
    Shape bytes_shape_;
};

struct IndexSplit {
    std::vector<std::size_t> train;       // ascending
    std::vector<std::size_t> validation;  // ascending
};

/// Holds out floor(n * validation_fraction) samples chosen at random by `generator`.
IndexSplit random_split(std::size_t n, double validation_fraction, Generator& generator = thread_generator());

/// A labelled set: x of shape (N, ...), y of shape (N,) holding class labels.
struct Dataset {
    xt::xarray<float> x;
    xt::xarray<float> y;
};

/// The same with the images as the files hold them, bytes 0..255 (Keras's load_data()).
struct ByteDataset {
    xt::xarray<std::uint8_t> x;
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

/// The same sets with the images kept as bytes: a quarter of the memory; feed them to a model
/// that starts with Rescaling(1.0 / 255) to get the same values as load_mnist() gives.
std::pair<ByteDataset, ByteDataset> load_mnist_bytes(const std::string& directory = "datasets/mnist-10k");
std::pair<ByteDataset, ByteDataset> load_fashion_mnist_bytes(
    const std::string& directory = "/usr/share/datasets/fashion-mnist");

}  // namespace datasets
}  // namespace xtnn
