#include "xtnn/safetensors.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <set>

#include <fmt/format.h>
#include <xtensor/xtensor.hpp>

#include "xtnn/error.hpp"
#include "xtnn/json.hpp"

namespace xtnn::safetensors {

namespace {

[[noreturn]] void fail(const std::string& what, const std::string& problem) { throw IoError(what + ": " + problem); }

const std::map<std::string, std::size_t>& dtype_sizes() {
    static const std::map<std::string, std::size_t> sizes = {
        {"BOOL", 1}, {"U8", 1}, {"I8", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
        {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4}, {"I64", 8}, {"U64", 8}, {"F64", 8},
    };
    return sizes;
}

std::string known_dtypes() {
    std::string names;
    for (const auto& [name, size] : dtype_sizes()) names += (names.empty() ? "" : ", ") + name;
    return names;
}

std::uint64_t little_endian_u64(const std::uint8_t* p) {
    std::uint64_t value = 0;
    for (int i = 7; i >= 0; --i) value = (value << 8) | p[i];
    return value;
}

std::size_t unsigned_field(const nlohmann::json& value, const std::string& what, const std::string& field) {
    if (!value.is_number_unsigned()) fail(what, fmt::format("{} must be a non-negative integer, got {}", field, value.dump()));
    const auto number = value.get<std::uint64_t>();
    if (number > std::numeric_limits<std::size_t>::max()) fail(what, fmt::format("{} = {} is too large", field, number));
    return static_cast<std::size_t>(number);
}

TensorInfo parse_tensor(const std::string& name, const nlohmann::json& entry, const std::string& what) {
    const std::string field = "tensor '" + name + "'";
    if (!entry.is_object() || entry.size() != 3 || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
        fail(what, field + ": expected exactly {\"dtype\", \"shape\", \"data_offsets\"}, got " + entry.dump().substr(0, 200));
    }
    TensorInfo info{name, {}, {}, 0, 0};
    if (!entry["dtype"].is_string()) fail(what, field + ": dtype must be a string");
    info.dtype = entry["dtype"].get<std::string>();
    const auto size = dtype_sizes().find(info.dtype);
    if (size == dtype_sizes().end()) {
        fail(what, fmt::format("{}: unknown dtype '{}'; known: {}", field, info.dtype, known_dtypes()));
    }
    const auto& shape = entry["shape"];
    if (!shape.is_array() || shape.size() > max_rank) {
        fail(what, fmt::format("{}: shape must be a list of at most {} extents, got {}", field, max_rank, shape.dump().substr(0, 200)));
    }
    std::size_t bytes = size->second;
    for (const auto& extent : shape) {
        const std::size_t value = unsigned_field(extent, what, field + " shape extent");
        if (value != 0 && bytes > std::numeric_limits<std::size_t>::max() / value) {
            fail(what, fmt::format("{}: the byte size of shape {} overflows", field, shape.dump()));
        }
        bytes *= value;
        info.shape.push_back(value);
    }
    const auto& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2) fail(what, field + ": data_offsets must be [begin, end], got " + offsets.dump());
    info.begin = unsigned_field(offsets[0], what, field + " data_offsets[0]");
    info.end = unsigned_field(offsets[1], what, field + " data_offsets[1]");
    if (info.end < info.begin) fail(what, fmt::format("{}: data_offsets [{}, {}] end before they begin", field, info.begin, info.end));
    if (info.end - info.begin != bytes) {
        fail(what, fmt::format("{}: dtype {} and shape {} need {} bytes, data_offsets [{}, {}] hold {}", field, info.dtype,
                               shape_to_string(info.shape), bytes, info.begin, info.end, info.end - info.begin));
    }
    if (bytes == 0) fail(what, field + ": has no elements; empty tensors are not accepted");
    return info;
}

}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& what) {
    try {
        return json::parse(text, what);
    } catch (const ValueError& e) {
        throw IoError(e.what());
    }
}

const TensorInfo* ParsedFile::find(const std::string& name) const {
    for (const auto& tensor : tensors) {
        if (tensor.name == name) return &tensor;
    }
    return nullptr;
}

xt::xarray<float> ParsedFile::to_float(const TensorInfo& tensor, const std::string& what) const {
    if (tensor.dtype != "F32") fail(what, fmt::format("tensor '{}' has dtype {}; xtnn reads F32", tensor.name, tensor.dtype));
    xt::xarray<float> array = xt::empty<float>(tensor.shape);
    const std::uint8_t* bytes = data.data() + tensor.begin;
    for (std::size_t i = 0; i < array.size(); ++i) {
        std::uint32_t word = 0;
        for (int b = 3; b >= 0; --b) word = (word << 8) | bytes[4 * i + static_cast<std::size_t>(b)];
        array.data()[i] = std::bit_cast<float>(word);
    }
    return array;
}

ParsedFile parse(std::span<const std::uint8_t> bytes, const std::string& what) {
    if (bytes.size() < 8) {
        fail(what, fmt::format("truncated: {} bytes, the file starts with an 8-byte header length", bytes.size()));
    }
    const std::uint64_t header_length = little_endian_u64(bytes.data());
    if (header_length > max_header_bytes) {
        fail(what, fmt::format("header length {} exceeds the limit of {} bytes", header_length, max_header_bytes));
    }
    if (header_length > bytes.size() - 8) {
        fail(what, fmt::format("truncated: the header length is {} but only {} bytes follow", header_length, bytes.size() - 8));
    }
    const std::string_view text(reinterpret_cast<const char*>(bytes.data() + 8), static_cast<std::size_t>(header_length));
    const nlohmann::json header = parse_json(text, what + " header");
    if (!header.is_object()) fail(what, "the header must be a JSON object");
    if (header.size() > max_tensors + 1) fail(what, fmt::format("more than {} tensors", max_tensors));

    ParsedFile file;
    file.data = bytes.subspan(8 + static_cast<std::size_t>(header_length));
    for (const auto& [key, value] : header.items()) {
        if (key == "__metadata__") {
            if (!value.is_object()) fail(what, "__metadata__ must be an object of strings");
            for (const auto& [name, text_value] : value.items()) {
                if (!text_value.is_string()) fail(what, "__metadata__ value '" + name + "' must be a string");
                file.metadata[name] = text_value.get<std::string>();
            }
            continue;
        }
        file.tensors.push_back(parse_tensor(key, value, what));
    }
    std::sort(file.tensors.begin(), file.tensors.end(),
              [](const TensorInfo& a, const TensorInfo& b) { return a.begin < b.begin || (a.begin == b.begin && a.end < b.end); });
    std::size_t expected_begin = 0;
    for (std::size_t i = 0; i < file.tensors.size(); ++i) {
        const TensorInfo& tensor = file.tensors[i];
        if (tensor.begin != expected_begin) {
            const std::string previous = i == 0 ? "the start of the data" : "tensor '" + file.tensors[i - 1].name + "'";
            fail(what, fmt::format("tensor '{}' starts at byte {} but {} ends at byte {} ({})", tensor.name, tensor.begin,
                                   previous, expected_begin, tensor.begin > expected_begin ? "a gap" : "overlapping ranges"));
        }
        expected_begin = tensor.end;
    }
    if (expected_begin != file.data.size()) {
        fail(what, fmt::format("the tensors hold {} bytes of data but the file has {} after the header ({})", expected_begin,
                               file.data.size(), expected_begin > file.data.size() ? "truncated" : "trailing bytes"));
    }
    return file;
}

std::vector<std::uint8_t> serialize(const std::vector<std::pair<std::string, std::string>>& metadata,
                                    const std::vector<std::pair<std::string, xt::xarray<float>>>& tensors) {
    nlohmann::ordered_json metadata_json = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) metadata_json[key] = value;
    std::string header = "{\"__metadata__\":" + metadata_json.dump();
    std::size_t offset = 0;
    for (const auto& [name, array] : tensors) {
        nlohmann::ordered_json entry = {{"dtype", "F32"}, {"shape", array.shape()}, {"data_offsets", {offset, offset + 4 * array.size()}}};
        header += ',';
        header += nlohmann::json(name).dump();
        header += ':';
        header += entry.dump();
        offset += 4 * array.size();
    }
    header += "}";
    // Padding with spaces keeps the data 8-byte aligned, as the safetensors writer does.
    header.append((8 - header.size() % 8) % 8, ' ');

    std::vector<std::uint8_t> bytes(8 + header.size() + offset);
    std::uint64_t length = header.size();
    for (int i = 0; i < 8; ++i, length >>= 8) bytes[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(length & 0xff);
    std::memcpy(bytes.data() + 8, header.data(), header.size());
    std::uint8_t* out = bytes.data() + 8 + header.size();
    for (const auto& [name, array] : tensors) {
        for (const float value : array) {
            auto word = std::bit_cast<std::uint32_t>(value);
            for (int b = 0; b < 4; ++b, word >>= 8) *out++ = static_cast<std::uint8_t>(word & 0xff);
        }
    }
    return bytes;
}

}  // namespace xtnn::safetensors
