#pragma once
// Reading IDX files (the MNIST format), plain or gzip-compressed. gzip is recognised by its
// magic bytes, not by the file name. Every size comes from the header and is checked before use:
// the reader never holds more than the data actually present plus a small constant, and rejects
// missing or trailing bytes.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>

#include "xtnn/tensor.hpp"

namespace xtnn::io {

enum class IdxType : std::uint8_t {
    ubyte = 0x08,
    byte = 0x09,
    int16 = 0x0B,
    int32 = 0x0C,
    float32 = 0x0D,
    float64 = 0x0E,
};

/// The size in bytes of one element of `type`.
std::size_t element_size(IdxType type);

struct IdxArray {
    IdxType type = IdxType::ubyte;
    Shape shape;
    std::vector<std::uint8_t> payload;  // big-endian elements, as in the file

    std::size_t size() const;
    /// The elements as floats (integers above 2^24 and doubles are rounded).
    xt::xarray<float> to_float() const;
    /// The elements of a ubyte array, unconverted.
    xt::xarray<std::uint8_t> to_bytes() const;
};

/// Largest rank accepted (MNIST needs 3).
constexpr std::size_t max_idx_rank = 8;

/// Parses a whole IDX file held in memory (not compressed); `name` is used in errors.
IdxArray parse_idx(std::span<const std::uint8_t> bytes, const std::string& name = "<memory>");

/// Reads an IDX file, gzip-compressed or not.
IdxArray read_idx(const std::string& path);

}  // namespace xtnn::io
