#pragma once
// The safetensors layout (huggingface/safetensors): an 8-byte little-endian header length, a JSON
// header giving each tensor's dtype, shape and byte range, then the tensors' packed little-endian
// bytes. The parser trusts nothing in the file: every length, rank, product and offset is checked
// against explicit limits and the bytes actually present before anything is allocated.

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <xtensor/xarray.hpp>

#include "xtnn/tensor.hpp"

namespace xtnn::safetensors {

/// Largest JSON header accepted (a model's config is a few kilobytes).
constexpr std::size_t max_header_bytes = std::size_t(16) << 20;
constexpr std::size_t max_tensors = std::size_t(1) << 16;
constexpr std::size_t max_rank = 8;

struct TensorInfo {
    std::string name;
    std::string dtype;
    Shape shape;
    /// Byte range within the data section.
    std::size_t begin = 0;
    std::size_t end = 0;
};

struct ParsedFile {
    /// The header's "__metadata__": string keys to string values.
    std::map<std::string, std::string> metadata;
    /// Every tensor, in the order of their bytes.
    std::vector<TensorInfo> tensors;
    /// The data section: the tensors' bytes, exactly.
    std::span<const std::uint8_t> data;

    const TensorInfo* find(const std::string& name) const;
    /// A tensor of dtype F32 as an array (`what` names the file in errors).
    xt::xarray<float> to_float(const TensorInfo& tensor, const std::string& what) const;
};

/// Checks the whole layout: header length, JSON without duplicate keys, known dtypes, shapes whose
/// byte size matches their range, ranges that tile the data section with no gap, overlap or
/// trailing byte. Throws IoError naming `what`, the field and the values seen.
ParsedFile parse(std::span<const std::uint8_t> bytes, const std::string& what);

/// json::parse, with its errors as IoError: `what` names the text.
nlohmann::json parse_json(std::string_view text, const std::string& what);

/// Writes tensors (F32) with `metadata` first in the header, in the given orders.
std::vector<std::uint8_t> serialize(const std::vector<std::pair<std::string, std::string>>& metadata,
                                    const std::vector<std::pair<std::string, xt::xarray<float>>>& tensors);

}  // namespace xtnn::safetensors
