#pragma once
// The part of HDF5 that Keras's weight files use, over the HDF5 C library: groups, float
// datasets and string attributes, read from and written to memory (HDF5's "core" driver with a
// file image), so no file is ever opened on a shared or guessable path. Every failure is an
// IoError naming the file, the object and what HDF5 said.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace xtnn::hdf5 {

using Shape = std::vector<std::size_t>;

/// True when `bytes` start with HDF5's signature (at offset 0, where Keras's files have it).
bool has_signature(std::span<const std::uint8_t> bytes);

/// An HDF5 file image opened read-only.
class Reader {
public:
    /// `what` names the file in errors ("'mnist.keras' model.weights.h5").
    Reader(std::span<const std::uint8_t> image, std::string what);
    ~Reader();
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;

    const std::string& what() const { return what_; }
    bool has_group(const std::string& path) const;
    bool has_dataset(const std::string& path) const;
    /// The names of a group's members, in name order.
    std::vector<std::string> members(const std::string& group) const;
    /// A string attribute (fixed or variable length), nullopt when absent.
    std::optional<std::string> string_attribute(const std::string& object, const std::string& name) const;
    /// A list of strings attribute; an empty attribute of any type is an empty list. Keras 2
    /// splits long lists over `name0`, `name1`, ...: those are joined.
    std::optional<std::vector<std::string>> string_list_attribute(const std::string& object, const std::string& name) const;
    /// A dataset's shape, checked to be a simple floating-point array of rank <= 8.
    Shape float_dataset_shape(const std::string& path) const;
    /// A floating-point dataset (16, 32 or 64 bits) as floats; its shape must be `expected`.
    std::vector<float> read_floats(const std::string& path, const Shape& expected) const;
    /// A scalar integer dataset (Keras's optimizer step count).
    std::int64_t read_integer(const std::string& path) const;

private:
    std::string what_;
    std::int64_t file_ = -1;
};

/// Builds an HDF5 file in memory: groups are made as paths need them.
class Writer {
public:
    Writer();
    ~Writer();
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;

    void create_group(const std::string& path);
    /// A little-endian float32 dataset; the parent groups are created.
    void write_floats(const std::string& path, const Shape& shape, std::span<const float> values);
    /// A scalar little-endian int64 dataset.
    void write_integer(const std::string& path, std::int64_t value);
    /// Closes the file and returns its bytes.
    std::vector<std::uint8_t> finish();

private:
    void ensure_parents(const std::string& path);
    std::int64_t file_ = -1;
};

}  // namespace xtnn::hdf5
