#include "xtnn/io.hpp"

#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <memory>
#include <string_view>
#include <utility>

#include <cctype>
#include <cerrno>
#include <filesystem>

#include <climits>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "xtnn/error.hpp"

namespace xtnn::io {

namespace {

struct FileDescriptor {
    int fd = -1;
    FileDescriptor() = default;
    explicit FileDescriptor(int descriptor) : fd(descriptor) {}
    FileDescriptor(FileDescriptor&& other) noexcept : fd(other.release()) {}
    FileDescriptor& operator=(FileDescriptor&&) = delete;
    ~FileDescriptor() {
        if (fd >= 0) ::close(fd);
    }
    int release() { return std::exchange(fd, -1); }
};

const char* file_kind(mode_t mode) {
    return S_ISDIR(mode)    ? "a folder"
           : S_ISFIFO(mode) ? "a FIFO"
           : S_ISCHR(mode)  ? "a character device"
           : S_ISBLK(mode)  ? "a block device"
           : S_ISSOCK(mode) ? "a socket"
           : S_ISLNK(mode)  ? "a symbolic link"
                            : "a regular file";
}

// Opens `path` for reading only if it is a regular file. O_NONBLOCK makes the open of a FIFO
// return at once (a blocking open would wait forever for a writer); the type is then checked on
// the descriptor itself, so nothing can be swapped in between.
FileDescriptor open_regular_file(const std::string& path, const std::string& what) {
    FileDescriptor file(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
    if (file.fd < 0) throw IoError(fmt::format("{} '{}': cannot open: {}", what, path, std::strerror(errno)));
    struct stat info {};
    if (::fstat(file.fd, &info) != 0) throw IoError(fmt::format("{} '{}': cannot stat: {}", what, path, std::strerror(errno)));
    if (!S_ISREG(info.st_mode)) {
        throw IoError(fmt::format("{} '{}': not a regular file ({}); only regular files are read", what, path,
                                  file_kind(info.st_mode)));
    }
    const int flags = ::fcntl(file.fd, F_GETFL);
    if (flags < 0 || ::fcntl(file.fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        throw IoError(fmt::format("{} '{}': cannot clear O_NONBLOCK: {}", what, path, std::strerror(errno)));
    }
    return file;
}

// Growth step while reading a payload whose size comes from an untrusted header.
constexpr std::size_t read_chunk = std::size_t(1) << 20;

[[noreturn]] void fail(const std::string& name, const std::string& problem) {
    throw IoError("IDX file '" + name + "': " + problem);
}

bool known_type(std::uint8_t code) {
    switch (code) {
        case 0x08: case 0x09: case 0x0B: case 0x0C: case 0x0D: case 0x0E: return true;
        default: return false;
    }
}

std::uint32_t big_endian_u32(const std::uint8_t* p) {
    return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | std::uint32_t(p[3]);
}

struct Header {
    IdxType type;
    Shape shape;
    std::size_t header_bytes;
    std::size_t payload_bytes;
};

// Validates the 4-byte magic; returns the rank.
std::size_t parse_magic(const std::uint8_t* magic, const std::string& name) {
    if (magic[0] == 0x1f && magic[1] == 0x8b) fail(name, "the data looks gzip-compressed (starts with 1f 8b) where raw IDX was expected");
    if (magic[0] != 0 || magic[1] != 0) {
        fail(name, fmt::format("bad magic: first two bytes are {:02x} {:02x}, expected 00 00", magic[0], magic[1]));
    }
    if (!known_type(magic[2])) {
        fail(name, fmt::format("unknown element type code 0x{:02x}; supported: 0x08 ubyte, 0x09 byte, 0x0B short, "
                               "0x0C int, 0x0D float, 0x0E double", magic[2]));
    }
    const std::size_t rank = magic[3];
    if (rank == 0 || rank > max_idx_rank) fail(name, fmt::format("rank {} is not in [1, {}]", rank, max_idx_rank));
    return rank;
}

Header parse_dimensions(const std::uint8_t* magic, const std::uint8_t* dims, const std::string& name) {
    Header header{static_cast<IdxType>(magic[2]), {}, 4 + 4 * std::size_t(magic[3]), 0};
    std::size_t bytes = element_size(header.type);
    for (std::size_t i = 0; i < magic[3]; ++i) {
        const std::uint32_t extent = big_endian_u32(dims + 4 * i);
        if (extent == 0) fail(name, fmt::format("dimension {} is 0", i));
        if (bytes > std::numeric_limits<std::size_t>::max() / extent) {
            fail(name, "the dimensions' product overflows: the header describes more data than can exist");
        }
        bytes *= extent;
        header.shape.push_back(extent);
    }
    header.payload_bytes = bytes;
    return header;
}

struct GzFile {
    gzFile handle;
    // Takes over `fd`.
    explicit GzFile(int fd) : handle(gzdopen(fd, "rb")) {
        if (!handle) ::close(fd);
    }
    ~GzFile() {
        if (handle) gzclose(handle);
    }
    // Reads up to `count` bytes; returns how many arrived. Throws on a corrupt stream.
    std::size_t read(std::uint8_t* into, std::size_t count, const std::string& name) {
        std::size_t total = 0;
        while (total < count) {
            const auto want = static_cast<unsigned>(std::min<std::size_t>(count - total, 1u << 30));
            const int got = gzread(handle, into + total, want);
            if (got < 0) {
                int code = 0;
                const char* message = gzerror(handle, &code);
                fail(name, std::string("corrupt gzip stream: ") + (message ? message : "unknown zlib error"));
            }
            if (got == 0) break;
            total += static_cast<std::size_t>(got);
        }
        if (total < count) {
            int code = 0;
            gzerror(handle, &code);
            if (code != Z_OK && code != Z_BUF_ERROR) fail(name, "corrupt gzip stream");
        }
        return total;
    }
};

IdxArray read_gzip(FileDescriptor descriptor, const std::string& path) {
    GzFile file(descriptor.release());
    if (!file.handle) fail(path, "cannot open");
    std::array<std::uint8_t, 4> magic{};
    if (file.read(magic.data(), 4, path) < 4) fail(path, "truncated header: fewer than 4 bytes after decompression");
    const std::size_t rank = parse_magic(magic.data(), path);
    std::vector<std::uint8_t> dims(4 * rank);
    if (file.read(dims.data(), dims.size(), path) < dims.size()) {
        fail(path, fmt::format("truncated header: expected {} bytes of dimensions", dims.size()));
    }
    const Header header = parse_dimensions(magic.data(), dims.data(), path);
    IdxArray array{header.type, header.shape, {}};
    // Grow with the data that actually arrives, so a header claiming billions of elements in a
    // small (or bomb) file cannot force a giant allocation.
    while (array.payload.size() < header.payload_bytes) {
        const std::size_t offset = array.payload.size();
        const std::size_t step = std::min(read_chunk, header.payload_bytes - offset);
        array.payload.resize(offset + step);
        const std::size_t got = file.read(array.payload.data() + offset, step, path);
        if (got < step) {
            fail(path, fmt::format("payload truncated: the header promises {} bytes of data, found {}", header.payload_bytes,
                                   offset + got));
        }
    }
    std::uint8_t extra = 0;
    if (file.read(&extra, 1, path) != 0) {
        fail(path, fmt::format("trailing data after the {} bytes the header describes", header.payload_bytes));
    }
    return array;
}

IdxArray read_raw(FileDescriptor descriptor, const std::string& path) {
    std::unique_ptr<FILE, int (*)(FILE*)> file(::fdopen(descriptor.fd, "rb"), &std::fclose);
    if (!file) fail(path, "cannot open");
    descriptor.release();
    struct stat info {};
    ::fstat(fileno(file.get()), &info);
    const auto file_size = static_cast<std::size_t>(info.st_size);
    std::array<std::uint8_t, 4 + 4 * max_idx_rank> head{};
    const std::size_t got = std::fread(head.data(), 1, std::min(head.size(), file_size), file.get());
    if (got < 4) fail(path, fmt::format("truncated header: {} bytes, an IDX header needs at least 4", got));
    const std::size_t rank = parse_magic(head.data(), path);
    if (got < 4 + 4 * rank) {
        fail(path, fmt::format("truncated header: {} bytes, a rank-{} header needs {}", got, rank, 4 + 4 * rank));
    }
    const Header header = parse_dimensions(head.data(), head.data() + 4, path);
    const std::size_t expected = header.header_bytes + header.payload_bytes;
    if (header.payload_bytes > file_size || file_size != expected) {
        fail(path, fmt::format("the header describes {} bytes of data ({} in all), but the file has {} bytes{}",
                               header.payload_bytes, expected, file_size,
                               file_size < expected ? " (truncated)" : " (trailing data)"));
    }
    IdxArray array{header.type, header.shape, std::vector<std::uint8_t>(header.payload_bytes)};
    std::fseek(file.get(), static_cast<long>(header.header_bytes), SEEK_SET);
    if (std::fread(array.payload.data(), 1, array.payload.size(), file.get()) != array.payload.size()) {
        fail(path, "read error");
    }
    return array;
}

// A training set is read in shuffled rows, each on a different 4 KiB page: with the array on
// 2 MiB pages instead, gathering a batch stops missing the TLB on every row (W1's batch gather
// took 45% less time). Asked before the first write, so the kernel backs the pages with huge
// ones as they are touched; a kernel without transparent huge pages ignores it.
template <class T>
xt::xarray<T> empty_on_huge_pages(const Shape& shape) {
    xt::xarray<T> values = xt::empty<T>(shape);
#ifdef MADV_HUGEPAGE
    constexpr std::uintptr_t huge_page = std::uintptr_t(2) << 20;
    const auto begin = reinterpret_cast<std::uintptr_t>(values.data());
    const std::uintptr_t first = (begin + huge_page - 1) / huge_page * huge_page;
    const std::uintptr_t last = (begin + values.size() * sizeof(T)) / huge_page * huge_page;
    if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
    return values;
}

}  // namespace

std::size_t element_size(IdxType type) {
    switch (type) {
        case IdxType::ubyte: case IdxType::byte: return 1;
        case IdxType::int16: return 2;
        case IdxType::int32: case IdxType::float32: return 4;
        case IdxType::float64: return 8;
    }
    return 1;
}

std::size_t IdxArray::size() const { return payload.size() / element_size(type); }

xt::xarray<float> IdxArray::to_float() const {
    xt::xarray<float> values = empty_on_huge_pages<float>(shape);
    const std::uint8_t* p = payload.data();
    const std::size_t n = size();
    auto read_be = [p](std::size_t offset, std::size_t width) {
        std::uint64_t v = 0;
        for (std::size_t b = 0; b < width; ++b) v = (v << 8) | p[offset + b];
        return v;
    };
    for (std::size_t i = 0; i < n; ++i) {
        float& out = values.data()[i];
        switch (type) {
            case IdxType::ubyte: out = p[i]; break;
            case IdxType::byte: out = static_cast<std::int8_t>(p[i]); break;
            case IdxType::int16: out = static_cast<std::int16_t>(read_be(2 * i, 2)); break;
            case IdxType::int32: out = static_cast<float>(static_cast<std::int32_t>(read_be(4 * i, 4))); break;
            case IdxType::float32: out = std::bit_cast<float>(static_cast<std::uint32_t>(read_be(4 * i, 4))); break;
            case IdxType::float64: out = static_cast<float>(std::bit_cast<double>(read_be(8 * i, 8))); break;
        }
    }
    return values;
}

xt::xarray<std::uint8_t> IdxArray::to_bytes() const {
    if (type != IdxType::ubyte) throw ValueError("IdxArray::to_bytes: the array's elements are not unsigned bytes");
    xt::xarray<std::uint8_t> values = empty_on_huge_pages<std::uint8_t>(shape);
    std::memcpy(values.data(), payload.data(), payload.size());
    return values;
}

namespace {

// The header of a whole uncompressed IDX file in memory, checked against the bytes that follow it.
Header parse_whole_header(std::span<const std::uint8_t> bytes, const std::string& name) {
    if (bytes.size() < 4) fail(name, fmt::format("truncated header: {} bytes, an IDX header needs at least 4", bytes.size()));
    const std::size_t rank = parse_magic(bytes.data(), name);
    if (bytes.size() < 4 + 4 * rank) {
        fail(name, fmt::format("truncated header: {} bytes, a rank-{} header needs {}", bytes.size(), rank, 4 + 4 * rank));
    }
    const Header header = parse_dimensions(bytes.data(), bytes.data() + 4, name);
    const std::size_t available = bytes.size() - header.header_bytes;
    if (available != header.payload_bytes) {
        fail(name, fmt::format("the header describes {} bytes of data, but {} follow it", header.payload_bytes, available));
    }
    return header;
}

}  // namespace

IdxArray parse_idx(std::span<const std::uint8_t> bytes, const std::string& name) {
    const Header header = parse_whole_header(bytes, name);
    return {header.type, header.shape, std::vector<std::uint8_t>(bytes.begin() + std::ptrdiff_t(header.header_bytes), bytes.end())};
}

MappedIdx::MappedIdx(const std::string& path) {
    FileDescriptor file = open_regular_file(path, "IDX file");
    struct stat info {};
    if (::fstat(file.fd, &info) != 0) fail(path, std::string("cannot stat: ") + std::strerror(errno));
    const auto file_size = static_cast<std::size_t>(info.st_size);
    if (file_size < 4) fail(path, fmt::format("truncated header: {} bytes, an IDX header needs at least 4", file_size));
    void* mapping = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, file.fd, 0);
    if (mapping == MAP_FAILED) fail(path, std::string("cannot map into memory: ") + std::strerror(errno));
    mapping_ = mapping;
    mapped_bytes_ = file_size;
    // Destroys the mapping if a check below throws.
    MappedIdx& self = *this;
    struct Unmap {
        MappedIdx& mapped;
        bool keep = false;
        ~Unmap() {
            if (!keep) mapped.unmap();
        }
    } unmap_on_error{self};
    const auto* bytes = static_cast<const std::uint8_t*>(mapping);
    const Header header = parse_whole_header({bytes, file_size}, path);
    if (header.type != IdxType::ubyte) {
        fail(path, fmt::format("holds elements of type 0x{:02x}; only unsigned bytes (0x08) can be mapped: read it with "
                               "read_idx()", static_cast<unsigned>(header.type)));
    }
    // Training visits shuffled rows: read-ahead of neighbouring pages would fetch rows no one asked for.
    ::madvise(mapping, file_size, MADV_RANDOM);
    shape_ = header.shape;
    data_ = bytes + header.header_bytes;
    unmap_on_error.keep = true;
}

MappedIdx::MappedIdx(MappedIdx&& other) noexcept
    : mapping_(std::exchange(other.mapping_, nullptr)),
      mapped_bytes_(std::exchange(other.mapped_bytes_, 0)),
      shape_(std::move(other.shape_)),
      data_(std::exchange(other.data_, nullptr)) {}

MappedIdx::~MappedIdx() { unmap(); }

void MappedIdx::unmap() noexcept {
    if (mapping_) ::munmap(mapping_, mapped_bytes_);
    mapping_ = nullptr;
    data_ = nullptr;
}

IdxArray read_idx(const std::string& path) {
    FileDescriptor file = open_regular_file(path, "IDX file");
    std::array<std::uint8_t, 2> start{};
    if (::pread(file.fd, start.data(), 2, 0) < 2) fail(path, "truncated header: the file has fewer than 2 bytes");
    const bool gzip = start[0] == 0x1f && start[1] == 0x8b;
    return gzip ? read_gzip(std::move(file), path) : read_raw(std::move(file), path);
}

namespace {

// Reads the whitespace- and comment-separated fields of a Netpbm header and P2 pixels.
class PgmReader {
public:
    PgmReader(std::span<const std::uint8_t> bytes, const std::string& name) : bytes_(bytes), name_(name) {}

    [[noreturn]] void fail(const std::string& problem) const { throw IoError("PGM file '" + name_ + "': " + problem); }

    void skip_separators() {
        while (at_ < bytes_.size()) {
            if (bytes_[at_] == '#') {
                while (at_ < bytes_.size() && bytes_[at_] != '\n') ++at_;
            } else if (std::isspace(bytes_[at_])) {
                ++at_;
            } else {
                return;
            }
        }
    }

    std::size_t number(const char* field, std::size_t max) {
        skip_separators();
        if (at_ >= bytes_.size()) fail(fmt::format("truncated: expected the {}", field));
        if (!std::isdigit(bytes_[at_])) fail(fmt::format("expected the {} as a decimal number, found byte 0x{:02x}", field, bytes_[at_]));
        std::size_t value = 0;
        while (at_ < bytes_.size() && std::isdigit(bytes_[at_])) {
            value = value * 10 + std::size_t(bytes_[at_++] - '0');
            if (value > max) fail(fmt::format("the {} exceeds {}", field, max));
        }
        return value;
    }

    void advance(std::size_t count) { at_ += count; }
    std::size_t remaining() const { return bytes_.size() - at_; }
    const std::uint8_t* here() const { return bytes_.data() + at_; }
    bool at_separator() const { return at_ < bytes_.size() && std::isspace(bytes_[at_]); }

private:
    std::span<const std::uint8_t> bytes_;
    std::string name_;
    std::size_t at_ = 0;
};

}  // namespace

xt::xarray<float> parse_pgm(std::span<const std::uint8_t> bytes, const std::string& name) {
    PgmReader reader(bytes, name);
    if (bytes.size() < 2 || bytes[0] != 'P' || (bytes[1] != '5' && bytes[1] != '2')) {
        reader.fail(fmt::format("not a grayscale PGM image: it should start with P5 or P2, starts with {}",
                                bytes.size() < 2 ? std::string("fewer than 2 bytes")
                                                 : fmt::format("{:02x} {:02x}", bytes[0], bytes[1])));
    }
    const bool binary = bytes[1] == '5';
    reader.advance(2);
    const std::size_t width = reader.number("width", max_pgm_side);
    const std::size_t height = reader.number("height", max_pgm_side);
    const std::size_t maxval = reader.number("maxval", 65535);
    if (width == 0 || height == 0) reader.fail(fmt::format("the image is {}x{}: both sides must be positive", width, height));
    if (maxval == 0) reader.fail("maxval is 0; it must be in [1, 65535]");
    const std::size_t pixels = width * height;
    if (binary) {
        if (!reader.at_separator()) reader.fail("expected one whitespace byte after maxval");
        reader.advance(1);
        const std::size_t sample_bytes = maxval < 256 ? 1 : 2;
        if (reader.remaining() != pixels * sample_bytes) {
            reader.fail(fmt::format("a {}x{} image with maxval {} needs {} bytes of pixels, found {}", width, height, maxval,
                                    pixels * sample_bytes, reader.remaining()));
        }
        xt::xarray<float> image = xt::empty<float>({height, width});
        const std::uint8_t* data = reader.here();
        for (std::size_t i = 0; i < pixels; ++i) {
            const std::size_t value = sample_bytes == 1 ? data[i] : (std::size_t(data[2 * i]) << 8) | data[2 * i + 1];
            if (value > maxval) reader.fail(fmt::format("pixel {} is {}, above maxval {}", i, value, maxval));
            image.data()[i] = static_cast<float>(double(value) / double(maxval));
        }
        return image;
    }
    // Each text pixel takes at least a digit and a separator: check before allocating.
    if (reader.remaining() < 2 * pixels - 1) {
        reader.fail(fmt::format("a {}x{} image needs {} pixel values; the {} bytes left cannot hold them", width, height, pixels,
                                reader.remaining()));
    }
    xt::xarray<float> image = xt::empty<float>({height, width});
    for (std::size_t i = 0; i < pixels; ++i) {
        const std::size_t value = reader.number("pixel value", maxval);
        image.data()[i] = static_cast<float>(double(value) / double(maxval));
    }
    reader.skip_separators();
    if (reader.remaining() != 0) reader.fail(fmt::format("trailing data after the {} pixels", pixels));
    return image;
}

xt::xarray<float> read_pgm(const std::string& path) { return parse_pgm(read_file(path, "PGM file"), path); }

std::vector<std::uint8_t> read_file(const std::string& path, const std::string& what) {
    const FileDescriptor file = open_regular_file(path, what);
    const int fd = file.fd;
    struct stat info {};
    if (::fstat(fd, &info) != 0) throw IoError(fmt::format("{} '{}': cannot stat: {}", what, path, std::strerror(errno)));
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(info.st_size));
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t got = ::read(fd, bytes.data() + done, bytes.size() - done);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) throw IoError(fmt::format("{} '{}': read error: {}", what, path, std::strerror(errno)));
        if (got == 0) throw IoError(fmt::format("{} '{}': the file shrank while being read", what, path));
        done += static_cast<std::size_t>(got);
    }
    return bytes;
}

namespace {

std::function<void(WriteStep)>& write_step_hook() {
    static std::function<void(WriteStep)> hook;
    return hook;
}

void reached(WriteStep step) {
    if (write_step_hook()) write_step_hook()(step);
}

[[noreturn]] void write_failed(const std::string& path, const std::string& problem) {
    throw IoError(fmt::format("cannot write '{}': {}: {}", path, problem, std::strerror(errno)));
}

void write_all(int fd, const std::uint8_t* data, std::size_t size, const std::string& path) {
    while (size > 0) {
        const ssize_t wrote = ::write(fd, data, size);
        if (wrote < 0 && errno == EINTR) continue;
        if (wrote < 0) write_failed(path, "write to the temporary file failed");
        data += wrote;
        size -= static_cast<std::size_t>(wrote);
    }
}

// Removes the temporary file unless the rename succeeded.
struct TemporaryFile {
    std::string path;
    int fd = -1;
    bool renamed = false;
    ~TemporaryFile() {
        if (fd >= 0) ::close(fd);
        if (!renamed) ::unlink(path.c_str());
    }
};

// At most 40 links in a chain, as the kernel allows (ELOOP).
constexpr int max_symlink_hops = 40;

// The file a save really replaces: the end of a chain of symbolic links (the link stays a link
// and its target gets the new contents, as when a program writes through it). Anything there that
// is not a regular file (a folder, a device, a FIFO, a socket) is refused: a rename would replace
// a device node such as /dev/stdout with a regular file.
std::filesystem::path writable_target(const std::string& path) {
    if (path.empty()) throw IoError("cannot write '': the path is empty");
    std::filesystem::path current(path);
    for (int hops = 0;; ++hops) {
        struct stat info {};
        if (::lstat(current.c_str(), &info) != 0) {
            if (errno == ENOENT) return current;  // a new file (or a link to one not yet made)
            write_failed(path, "cannot inspect '" + current.string() + "'");
        }
        if (S_ISREG(info.st_mode)) return current;
        if (!S_ISLNK(info.st_mode)) {
            throw IoError(fmt::format("cannot write '{}': '{}' is not a regular file ({}); only regular files are replaced",
                                      path, current.string(), file_kind(info.st_mode)));
        }
        if (hops == max_symlink_hops) {
            throw IoError(fmt::format("cannot write '{}': more than {} symbolic links in a chain", path, max_symlink_hops));
        }
        std::error_code error;
        const std::filesystem::path link = std::filesystem::read_symlink(current, error);
        if (error) throw IoError(fmt::format("cannot write '{}': cannot read the link '{}': {}", path, current.string(), error.message()));
        current = link.is_absolute() ? link : current.parent_path() / link;
    }
}

// ".NAME.tmp-XXXXXX" beside the target, cut so that it fits in NAME_MAX bytes however long the
// target's own name is.
std::string temporary_name(const std::string& target_name) {
    constexpr std::string_view suffix = ".tmp-XXXXXX";
    const std::size_t kept = std::min(target_name.size(), std::size_t(NAME_MAX) - 1 - suffix.size());
    std::string name(".");
    name.append(target_name, 0, kept);
    name.append(suffix);
    return name;
}

mode_t new_file_mode(const std::filesystem::path& path) {
    struct stat info {};
    if (::stat(path.c_str(), &info) == 0) return info.st_mode & 07777;
    const mode_t mask = ::umask(0);
    ::umask(mask);
    return 0666 & ~mask;
}

}  // namespace

void set_write_step_hook(std::function<void(WriteStep)> hook) { write_step_hook() = std::move(hook); }

void write_file_atomically(const std::string& path, std::span<const std::uint8_t> bytes) {
    const std::filesystem::path target = writable_target(path);
    const std::filesystem::path folder = target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
    TemporaryFile temp;
    temp.path = (folder / temporary_name(target.filename().string())).string();
    temp.fd = ::mkostemp(temp.path.data(), O_CLOEXEC);
    if (temp.fd < 0) {
        temp.renamed = true;  // nothing was created
        write_failed(path, "cannot create a temporary file in '" + folder.string() + "'");
    }
    reached(WriteStep::temp_created);
    const std::size_t half = bytes.size() / 2;
    write_all(temp.fd, bytes.data(), half, path);
    reached(WriteStep::half_written);
    write_all(temp.fd, bytes.data() + half, bytes.size() - half, path);
    if (::fchmod(temp.fd, new_file_mode(target)) != 0) write_failed(path, "cannot set the file mode");
    if (::fsync(temp.fd) != 0) write_failed(path, "fsync failed");
    reached(WriteStep::synced);
    const int fd = temp.fd;
    temp.fd = -1;
    if (::close(fd) != 0) write_failed(path, "close failed");
    if (::rename(temp.path.c_str(), target.c_str()) != 0) write_failed(path, "rename of the temporary file failed");
    temp.renamed = true;
    reached(WriteStep::renamed);
    const FileDescriptor folder_file{::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
    if (folder_file.fd < 0) write_failed(path, "cannot open the folder to flush the rename");
    if (::fsync(folder_file.fd) != 0) write_failed(path, "fsync of the folder failed");
}

}  // namespace xtnn::io
