// libFuzzer target for the IDX reader, in memory and through a file (plain or gzip-compressed,
// recognised by its first bytes), the memory-mapped IDX reader (whose rows are then all read),
// and the PGM reader.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include <sys/mman.h>
#include <unistd.h>

#include <xtnn/xtnn.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::uint8_t> bytes(data, size);
    try {
        xtnn::io::parse_idx(bytes, "fuzz");
    } catch (const xtnn::Error&) {
    }
    try {
        xtnn::io::parse_pgm(bytes, "fuzz");
    } catch (const xtnn::Error&) {
    }
    // read_idx takes a path: an in-memory file gives it one without touching the disk.
    const int fd = ::memfd_create("fuzz-idx", MFD_CLOEXEC);
    if (fd < 0) return 0;
    if (::write(fd, data, size) == static_cast<ssize_t>(size)) {
        try {
            xtnn::io::read_idx("/proc/self/fd/" + std::to_string(fd));
        } catch (const xtnn::Error&) {
        }
        try {
            const xtnn::io::MappedIdx mapped("/proc/self/fd/" + std::to_string(fd));
            std::size_t elements = 1;
            for (auto extent : mapped.shape()) elements *= extent;
            unsigned sum = 0;
            for (std::size_t i = 0; i < elements; ++i) sum += mapped.data()[i];
            volatile unsigned keep = sum;
            (void)keep;
        } catch (const xtnn::Error&) {
        }
    }
    ::close(fd);
    return 0;
}
