#include "xtnn/data.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <type_traits>

#include <fmt/format.h>
#include <xtensor/xbuilder.hpp>

#include "xtnn/array_pool.hpp"
#include "xtnn/error.hpp"
#include "xtnn/io.hpp"

namespace xtnn {

xt::xarray<float> to_categorical(const xt::xarray<float>& labels, std::size_t num_classes) {
    if (num_classes == 0) throw ValueError("to_categorical: num_classes must be positive");
    const std::size_t n = labels.size();
    checked_element_count(std::array{n, num_classes}, "to_categorical: the one-hot array of shape");
    for (std::size_t i = 0; i < n; ++i) {
        const float label = labels.data()[i];
        if (!(label >= 0.0f && label < static_cast<float>(num_classes)) || label != std::floor(label)) {
            throw ValueError(fmt::format("to_categorical: label {} at index {} is not a class in [0, {}]", label, i,
                                         num_classes - 1));
        }
    }
    xt::xarray<float> one_hot = xt::zeros<float>({n, num_classes});
    for (std::size_t i = 0; i < n; ++i) one_hot(i, static_cast<std::size_t>(labels.data()[i])) = 1.0f;
    return one_hot;
}

namespace {

// A multiplication, not a division by 255: Rescaling(1.0 / 255) multiplies, and bytes scaled here
// or in a model must give the same floats.
constexpr float unit_per_byte = 1.0f / 255.0f;

float pixel_to_unit(std::uint8_t b) { return float(b) * unit_per_byte; }

template <class T>
xt::xarray<float> copy_rows(const T* data, Shape shape, const std::vector<std::size_t>& indices, std::size_t begin,
                         std::size_t end, float scale = 1.0f) {
    std::size_t row_size = 1;
    for (std::size_t axis = 1; axis < shape.size(); ++axis) row_size *= shape[axis];
    shape[0] = end - begin;
    xt::xarray<float> rows = pooled_empty<float>(shape);
    // Shuffled rows of a large dataset come from memory, not cache, and are too short for the
    // hardware prefetcher to ramp up: fetching a few rows ahead hides most of the latency. The rows
    // written are fetched for writing as far ahead: when fit's threads share a step, the other
    // core read half of this buffer in the last step, and each store would wait for its copy to
    // be dropped (W2 on two threads with slow exchanges between the cores: 0.256 -> 0.251 s an
    // epoch, medians of 4; bench/core_to_core).
    constexpr std::size_t rows_ahead = 4, cache_line = 64;
    for (std::size_t i = begin; i < end; ++i) {
        if (i + rows_ahead < end) {
            const char* ahead = reinterpret_cast<const char*>(data + indices[i + rows_ahead] * row_size);
            for (std::size_t offset = 0; offset < row_size * sizeof(T); offset += cache_line) {
                __builtin_prefetch(ahead + offset);
            }
            const char* written = reinterpret_cast<const char*>(rows.data() + (i + rows_ahead - begin) * row_size);
            for (std::size_t offset = 0; offset < row_size * sizeof(float); offset += cache_line) {
                __builtin_prefetch(written + offset, 1);
            }
        }
        const T* source = data + indices[i] * row_size;
        float* row = rows.data() + (i - begin) * row_size;
        if (scale == 1.0f) {
            std::copy(source, source + row_size, row);
        } else {
            for (std::size_t j = 0; j < row_size; ++j) row[j] = float(source[j]) * scale;
        }
    }
    return rows;
}

}  // namespace

xt::xarray<float> scale_to_unit(const xt::xarray<std::uint8_t>& bytes) {
    xt::xarray<float> values = xt::empty<float>(bytes.shape());
    std::transform(bytes.begin(), bytes.end(), values.begin(), pixel_to_unit);
    return values;
}

xt::xarray<float> gather_rows(const xt::xarray<float>& x, const std::vector<std::size_t>& indices, std::size_t begin,
                              std::size_t end) {
    return copy_rows(x.data(), Shape(x.shape().begin(), x.shape().end()), indices, begin, end);
}

xt::xarray<float> gather_rows(const xt::xarray<std::uint8_t>& x, const std::vector<std::size_t>& indices,
                              std::size_t begin, std::size_t end) {
    return copy_rows(x.data(), Shape(x.shape().begin(), x.shape().end()), indices, begin, end);
}

Shape InputRows::shape() const { return values_ ? Shape(values_->shape().begin(), values_->shape().end()) : bytes_shape_; }

std::size_t InputRows::count() const {
    if (dimension() == 0) return 0;
    return values_ ? values_->shape()[0] : bytes_shape_[0];
}

xt::xarray<float> InputRows::gather(const std::vector<std::size_t>& indices, std::size_t begin, std::size_t end,
                                    float scale) const {
    if (values_) return copy_rows(values_->data(), shape(), indices, begin, end, scale);
    return copy_rows(bytes_, bytes_shape_, indices, begin, end, scale);
}

IndexSplit random_split(std::size_t n, double validation_fraction, Generator& generator) {
    if (!(validation_fraction > 0.0 && validation_fraction < 1.0)) {
        throw ValueError(fmt::format("random_split: the validation fraction must be in (0, 1), got {}", validation_fraction));
    }
    const auto held_out = static_cast<std::size_t>(std::floor(double(n) * validation_fraction));
    if (held_out == 0 || held_out == n) {
        throw ValueError(fmt::format("random_split: a fraction of {} of {} samples leaves an empty training or "
                                     "validation set", validation_fraction, n));
    }
    auto order = generator.permutation(n);
    IndexSplit split{{order.begin(), order.end() - std::ptrdiff_t(held_out)}, {order.end() - std::ptrdiff_t(held_out), order.end()}};
    std::sort(split.train.begin(), split.train.end());
    std::sort(split.validation.begin(), split.validation.end());
    return split;
}

namespace datasets {

namespace {

namespace fs = std::filesystem;

constexpr std::size_t classes = 10;

// "name" or "name.gz", whichever exists.
std::string find_file(const fs::path& directory, const std::string& name) {
    for (const auto& candidate : {name, name + ".gz"}) {
        if (fs::exists(directory / candidate)) return (directory / candidate).string();
    }
    return {};
}

// An image file and its label file, checked against each other; the images stay as the file's
// payload until the caller converts them.
struct ImagesAndLabels {
    io::IdxArray images;
    xt::xarray<float> labels;
};

ImagesAndLabels read_pair(const std::string& images_path, const std::string& labels_path) {
    io::IdxArray images = io::read_idx(images_path);
    const io::IdxArray labels = io::read_idx(labels_path);
    if (images.type != io::IdxType::ubyte || images.shape.size() != 3) {
        throw IoError("'" + images_path + "': expected unsigned-byte images of rank 3 (N, rows, columns), got rank " +
                      std::to_string(images.shape.size()));
    }
    if (labels.type != io::IdxType::ubyte || labels.shape.size() != 1) {
        throw IoError("'" + labels_path + "': expected unsigned-byte labels of rank 1, got rank " +
                      std::to_string(labels.shape.size()));
    }
    if (images.shape[0] != labels.shape[0]) {
        throw IoError(fmt::format("'{}' holds {} images but '{}' holds {} labels", images_path, images.shape[0],
                                  labels_path, labels.shape[0]));
    }
    for (std::size_t i = 0; i < labels.payload.size(); ++i) {
        if (labels.payload[i] >= classes) {
            throw IoError(fmt::format("'{}': label {} at index {} is not a class in [0, {}]", labels_path, labels.payload[i], i,
                                      classes - 1));
        }
    }
    return {std::move(images), labels.to_float()};
}

// Scaled straight from the file's bytes: no intermediate byte array, so the peak memory is the
// payload plus the floats.
Dataset to_unit_floats(ImagesAndLabels&& pair) {
    xt::xarray<float> pixels = xt::empty<float>(pair.images.shape);
    std::transform(pair.images.payload.begin(), pair.images.payload.end(), pixels.begin(), pixel_to_unit);
    return {std::move(pixels), std::move(pair.labels)};
}

ByteDataset to_bytes(ImagesAndLabels&& pair) { return {pair.images.to_bytes(), std::move(pair.labels)}; }

template <class Set>
Set rows(const Set& data, std::size_t begin, std::size_t end) {
    auto slice = [&](const auto& a) {
        using Element = typename std::decay_t<decltype(a)>::value_type;
        Shape shape(a.shape().begin(), a.shape().end());
        const std::size_t row = a.size() / shape[0];
        shape[0] = end - begin;
        xt::xarray<Element> out = xt::empty<Element>(shape);
        std::copy(a.data() + begin * row, a.data() + end * row, out.data());
        return out;
    };
    return {slice(data.x), slice(data.y)};
}

template <class Set, class Convert>
std::pair<Set, Set> load_standard_layout(const fs::path& directory, Convert convert) {
    auto required = [&](const std::string& name) {
        std::string path = find_file(directory, name);
        if (path.empty()) throw IoError("dataset folder '" + directory.string() + "': missing " + name + "[.gz]");
        return path;
    };
    Set train = convert(read_pair(required("train-images-idx3-ubyte"), required("train-labels-idx1-ubyte")));
    return {std::move(train), convert(read_pair(required("t10k-images-idx3-ubyte"), required("t10k-labels-idx1-ubyte")))};
}

template <class Set, class Convert>
std::pair<Set, Set> load_mnist_as(const std::string& directory, Convert convert) {
    const fs::path folder(directory);
    if (!fs::is_directory(folder)) throw IoError("dataset folder '" + directory + "' does not exist");
    if (!find_file(folder, "train-images-idx3-ubyte").empty()) return load_standard_layout<Set>(folder, convert);
    const std::string images = find_file(folder, "images-idx3-ubyte");
    const std::string labels = find_file(folder, "labels-idx1-ubyte");
    if (images.empty() || labels.empty()) {
        throw IoError("dataset folder '" + directory + "' holds neither train-images-idx3-ubyte[.gz] (the standard "
                      "layout) nor images-idx3-ubyte[.gz] with labels-idx1-ubyte[.gz] (the bundled digits)");
    }
    // The bundled digits are shuffled once; the first four fifths train, the rest test.
    const Set all = convert(read_pair(images, labels));
    const std::size_t n = all.y.size();
    const std::size_t train_count = n - n / 5;
    return {rows(all, 0, train_count), rows(all, train_count, n)};
}

template <class Set, class Convert>
std::pair<Set, Set> load_fashion_mnist_as(const std::string& directory, Convert convert) {
    const fs::path folder(directory);
    if (!fs::is_directory(folder)) {
        throw IoError("dataset folder '" + directory + "' does not exist (Debian: apt-get install dataset-fashion-mnist)");
    }
    return load_standard_layout<Set>(folder, convert);
}

}  // namespace

std::pair<Dataset, Dataset> load_mnist(const std::string& directory) {
    return load_mnist_as<Dataset>(directory, to_unit_floats);
}

std::pair<Dataset, Dataset> load_fashion_mnist(const std::string& directory) {
    return load_fashion_mnist_as<Dataset>(directory, to_unit_floats);
}

std::pair<ByteDataset, ByteDataset> load_mnist_bytes(const std::string& directory) {
    return load_mnist_as<ByteDataset>(directory, to_bytes);
}

std::pair<ByteDataset, ByteDataset> load_fashion_mnist_bytes(const std::string& directory) {
    return load_fashion_mnist_as<ByteDataset>(directory, to_bytes);
}

}  // namespace datasets
}  // namespace xtnn
