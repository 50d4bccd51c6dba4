#pragma once
// ZIP archives in memory, over libzip: what a Keras 3 `.keras` file is. Reading checks every
// entry's name, size and CRC and caps what it inflates; writing stores entries uncompressed with
// a fixed date, as Keras does, so the same model gives the same bytes.

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace xtnn::zip {

/// True when `bytes` start with a ZIP local file header.
bool has_signature(std::span<const std::uint8_t> bytes);

struct Entry {
    std::string name;
    std::uint64_t size = 0;
    std::uint64_t compressed_size = 0;
};

class Reader {
public:
    /// Opens the archive and checks its directory; `what` names the file in errors. An entry
    /// named like a path out of the archive (absolute, "..", backslashes) is refused.
    Reader(std::span<const std::uint8_t> bytes, std::string what);
    ~Reader();
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;

    const std::vector<Entry>& entries() const { return entries_; }
    bool contains(const std::string& name) const;
    /// An entry's bytes. Refused before inflating: a size over `max_size`, a method other than
    /// stored or deflate, a size out of proportion to the compressed size (a zip bomb).
    /// Refused after: a CRC or length that disagrees with the directory.
    std::vector<std::uint8_t> read(const std::string& name, std::uint64_t max_size) const;

private:
    std::string what_;
    struct Archive;
    Archive* archive_ = nullptr;
    std::vector<Entry> entries_;
};

/// An archive of `entries` (name, bytes) in that order, stored uncompressed.
std::vector<std::uint8_t> write(const std::vector<std::pair<std::string, std::span<const std::uint8_t>>>& entries);

}  // namespace xtnn::zip
