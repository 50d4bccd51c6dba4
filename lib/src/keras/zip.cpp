#include "keras/zip.hpp"

#include <cstring>
#include <memory>

#include <fmt/format.h>
#include <zip.h>

#include "xtnn/error.hpp"

namespace xtnn::zip {

namespace {

constexpr std::string_view signature = "PK\x03\x04";
constexpr std::uint64_t max_entries = 4096;
// Deflate cannot shrink data more than about 1032 times; a larger ratio is a lie in the
// directory or a bomb, refused before anything is inflated.
constexpr std::uint64_t max_inflate_ratio = 1100;
// Keras writes its entries at the DOS epoch (1980-01-01 00:00).
constexpr time_t fixed_time = 315532800;

[[noreturn]] void fail(const std::string& what, const std::string& problem) { throw IoError(what + ": " + problem); }

std::string error_text(zip_error_t* error) { return zip_error_strerror(error); }

// An entry name that extracting would turn into a path outside the archive's folder.
bool is_path_like(const std::string& name) {
    if (name.empty() || name[0] == '/' || name.find('\\') != std::string::npos || name.find('\0') != std::string::npos) {
        return true;
    }
    if (name.size() >= 2 && name[1] == ':') return true;
    std::size_t start = 0;
    while (start <= name.size()) {
        const std::size_t end = std::min(name.find('/', start), name.size());
        if (name.compare(start, end - start, "..") == 0 && end - start == 2) return true;
        start = end + 1;
    }
    return false;
}

}  // namespace

struct Reader::Archive {
    zip_t* handle = nullptr;
};

bool has_signature(std::span<const std::uint8_t> bytes) {
    return bytes.size() >= signature.size() && std::memcmp(bytes.data(), signature.data(), signature.size()) == 0;
}

Reader::Reader(std::span<const std::uint8_t> bytes, std::string what) : what_(std::move(what)) {
    zip_error_t error;
    zip_error_init(&error);
    zip_source_t* source = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
    if (!source) {
        const std::string text = error_text(&error);
        zip_error_fini(&error);
        fail(what_, "cannot read it as a ZIP archive: " + text);
    }
    zip_t* handle = zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error);
    if (!handle) {
        zip_source_free(source);
        const std::string text = error_text(&error);
        zip_error_fini(&error);
        fail(what_, fmt::format("not a readable ZIP archive ({} bytes): {}", bytes.size(), text));
    }
    zip_error_fini(&error);
    archive_ = new Archive{handle};
    try {
        const zip_int64_t count = zip_get_num_entries(handle, 0);
        if (count < 0 || static_cast<std::uint64_t>(count) > max_entries) {
            fail(what_, fmt::format("the archive lists {} entries; at most {} are read", count, max_entries));
        }
        for (zip_int64_t i = 0; i < count; ++i) {
            zip_stat_t stat;
            zip_stat_init(&stat);
            if (zip_stat_index(handle, static_cast<zip_uint64_t>(i), 0, &stat) != 0 || !(stat.valid & ZIP_STAT_NAME) ||
                !(stat.valid & ZIP_STAT_SIZE) || !(stat.valid & ZIP_STAT_COMP_SIZE)) {
                fail(what_, fmt::format("entry {} of the archive's directory cannot be read", i));
            }
            const std::string name = stat.name;
            if (is_path_like(name)) {
                fail(what_, fmt::format("entry '{}' is named like a path out of the archive; refused", name.substr(0, 200)));
            }
            entries_.push_back({name, stat.size, stat.comp_size});
        }
    } catch (...) {
        zip_discard(handle);
        delete archive_;
        archive_ = nullptr;
        throw;
    }
}

Reader::~Reader() {
    if (archive_) {
        zip_discard(archive_->handle);
        delete archive_;
    }
}

bool Reader::contains(const std::string& name) const {
    for (const auto& entry : entries_) {
        if (entry.name == name) return true;
    }
    return false;
}

std::vector<std::uint8_t> Reader::read(const std::string& name, std::uint64_t max_size) const {
    const zip_int64_t index = zip_name_locate(archive_->handle, name.c_str(), ZIP_FL_ENC_GUESS);
    if (index < 0) fail(what_, "the archive has no entry '" + name + "'");
    zip_stat_t stat;
    zip_stat_init(&stat);
    zip_stat_index(archive_->handle, static_cast<zip_uint64_t>(index), 0, &stat);
    if (stat.size > max_size) {
        fail(what_, fmt::format("entry '{}' would inflate to {} bytes, more than the {} allowed for it", name, stat.size, max_size));
    }
    if (stat.comp_method != ZIP_CM_STORE && stat.comp_method != ZIP_CM_DEFLATE) {
        fail(what_, fmt::format("entry '{}' uses compression method {}; Keras files use stored (0) or deflate (8)", name,
                                stat.comp_method));
    }
    if (stat.comp_method == ZIP_CM_DEFLATE && stat.size > max_inflate_ratio * stat.comp_size + 1024) {
        fail(what_, fmt::format("entry '{}' claims {} bytes from {} compressed: a ratio no deflate stream reaches (a zip bomb?)",
                                name, stat.size, stat.comp_size));
    }
    if (stat.comp_method == ZIP_CM_STORE && stat.size != stat.comp_size) {
        fail(what_, fmt::format("stored entry '{}' claims {} bytes but occupies {}", name, stat.size, stat.comp_size));
    }
    std::unique_ptr<zip_file_t, int (*)(zip_file_t*)> file(zip_fopen_index(archive_->handle, static_cast<zip_uint64_t>(index), 0),
                                                          zip_fclose);
    if (!file) fail(what_, fmt::format("cannot open entry '{}': {}", name, zip_strerror(archive_->handle)));
    std::vector<std::uint8_t> bytes(stat.size);
    std::uint64_t filled = 0;
    while (filled < bytes.size()) {
        const zip_int64_t got = zip_fread(file.get(), bytes.data() + filled, bytes.size() - filled);
        if (got < 0) fail(what_, fmt::format("entry '{}' is corrupt: {}", name, zip_file_strerror(file.get())));
        if (got == 0) fail(what_, fmt::format("entry '{}' is truncated: {} of {} bytes", name, filled, bytes.size()));
        filled += static_cast<std::uint64_t>(got);
    }
    // One more read reaches the end of the entry, where libzip compares length and CRC.
    std::uint8_t extra = 0;
    const zip_int64_t beyond = zip_fread(file.get(), &extra, 1);
    if (beyond < 0) fail(what_, fmt::format("entry '{}' is corrupt: {}", name, zip_file_strerror(file.get())));
    if (beyond > 0) fail(what_, fmt::format("entry '{}' holds more than the {} bytes its directory states", name, bytes.size()));
    return bytes;
}

std::vector<std::uint8_t> write(const std::vector<std::pair<std::string, std::span<const std::uint8_t>>>& entries) {
    zip_error_t error;
    zip_error_init(&error);
    zip_source_t* target = zip_source_buffer_create(nullptr, 0, 0, &error);
    zip_t* archive = target ? zip_open_from_source(target, ZIP_TRUNCATE, &error) : nullptr;
    if (!archive) {
        if (target) zip_source_free(target);
        const std::string text = error_text(&error);
        zip_error_fini(&error);
        throw IoError("cannot create a ZIP archive in memory: " + text);
    }
    zip_error_fini(&error);
    zip_source_keep(target);
    auto give_up = [&](const std::string& problem) {
        const std::string text = zip_strerror(archive);
        zip_discard(archive);
        zip_source_free(target);
        throw IoError("cannot write the ZIP archive: " + problem + ": " + text);
    };
    for (const auto& [name, bytes] : entries) {
        zip_source_t* source = zip_source_buffer(archive, bytes.data(), bytes.size(), 0);
        if (!source) give_up("entry '" + name + "'");
        const zip_int64_t index = zip_file_add(archive, name.c_str(), source, ZIP_FL_ENC_UTF_8);
        if (index < 0) {
            zip_source_free(source);
            give_up("entry '" + name + "'");
        }
        if (zip_set_file_compression(archive, static_cast<zip_uint64_t>(index), ZIP_CM_STORE, 0) != 0 ||
            zip_file_set_mtime(archive, static_cast<zip_uint64_t>(index), fixed_time, 0) != 0) {
            give_up("entry '" + name + "'");
        }
    }
    if (zip_close(archive) != 0) give_up("closing");
    std::vector<std::uint8_t> bytes;
    if (zip_source_open(target) == 0) {
        zip_source_seek(target, 0, SEEK_END);
        const zip_int64_t size = zip_source_tell(target);
        zip_source_seek(target, 0, SEEK_SET);
        if (size > 0) {
            bytes.resize(static_cast<std::size_t>(size));
            if (zip_source_read(target, bytes.data(), bytes.size()) != size) bytes.clear();
        }
        zip_source_close(target);
    }
    zip_source_free(target);
    if (bytes.empty()) throw IoError("cannot write the ZIP archive: its bytes cannot be read back");
    return bytes;
}

}  // namespace xtnn::zip
