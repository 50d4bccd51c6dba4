#pragma once
// Reading IDX files (the MNIST format), plain or gzip-compressed. gzip is recognised by its
// magic bytes, not by the file name. Every size comes from the header and is checked before use:
// the reader never holds more than the data actually present plus a small constant, and rejects
// missing or trailing bytes.

#include <cstddef>
#include <cstdint>
#include <functional>
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

/// An uncompressed IDX file of unsigned bytes (images) mapped into memory instead of read: a page
/// is read from disk when a row on it is first touched, and the system may drop it again under
/// memory pressure, so a dataset larger than memory trains (fit over InputRows(mapped); each rank
/// of a distributed fit touches only the rows of its shares). The header is checked as read_idx
/// checks it; the file must not be changed while it is mapped. Compressed files must be read
/// with read_idx (or unpacked with gunzip first).
class MappedIdx {
public:
    explicit MappedIdx(const std::string& path);
    MappedIdx(MappedIdx&& other) noexcept;
    MappedIdx& operator=(MappedIdx&&) = delete;
    MappedIdx(const MappedIdx&) = delete;
    ~MappedIdx();

    const Shape& shape() const { return shape_; }
    /// The elements, row after row (the file's payload).
    const std::uint8_t* data() const { return data_; }

private:
    void unmap() noexcept;

    void* mapping_ = nullptr;
    std::size_t mapped_bytes_ = 0;
    Shape shape_;
    const std::uint8_t* data_ = nullptr;
};

/// Largest width or height read_pgm accepts.
constexpr std::size_t max_pgm_side = 16384;

/// A grayscale PGM image (binary P5 or text P2, maxval up to 65535) as a (height, width) array of
/// values in [0, 1]: pixel / maxval. Comments and any whitespace between header fields are read
/// as the Netpbm specification allows.
xt::xarray<float> read_pgm(const std::string& path);
/// The same from bytes in memory; `name` is used in errors.
xt::xarray<float> parse_pgm(std::span<const std::uint8_t> bytes, const std::string& name = "<memory>");

/// The whole of a regular file; `what` names the kind of file in errors ("model file").
std::vector<std::uint8_t> read_file(const std::string& path, const std::string& what = "file");

/// Replaces `path` with `bytes` so that a crash at any moment leaves either the old file or the
/// new one, never a mix: the bytes go to a temporary file in the same folder, which is flushed to
/// disk (fsync), renamed over `path`, and the folder is flushed so the rename itself survives.
/// On failure the temporary file is removed and `path` is untouched.
void write_file_atomically(const std::string& path, std::span<const std::uint8_t> bytes);

/// The steps of write_file_atomically, for tests that simulate a crash between them.
enum class WriteStep { temp_created, half_written, synced, renamed };
/// Called at each step when set (tests only); it may throw or end the process.
void set_write_step_hook(std::function<void(WriteStep)> hook);

}  // namespace xtnn::io
