#include "keras/hdf5.hpp"

#include <atomic>
#include <cstring>
#include <utility>

#include <fmt/format.h>
#include <hdf5.h>

#include "xtnn/error.hpp"

namespace xtnn::hdf5 {

namespace {

constexpr std::size_t max_rank = 8;
constexpr std::size_t max_members = 1 << 20;
constexpr std::size_t max_attribute_bytes = std::size_t(64) << 20;
constexpr std::string_view signature = "\x89HDF\r\n\x1a\n";

// Owns one HDF5 identifier and closes it with the function that matches its kind.
class Handle {
public:
    Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
    ~Handle() {
        if (id_ >= 0) close_(id_);
    }
    Handle(Handle&& other) noexcept : id_(std::exchange(other.id_, -1)), close_(other.close_) {}
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    Handle& operator=(Handle&&) = delete;
    hid_t get() const { return id_; }
    bool valid() const { return id_ >= 0; }

private:
    hid_t id_;
    herr_t (*close_)(hid_t);
};

// HDF5 prints its error stack to stderr unless told not to; the stack is per thread.
void silence_error_printing() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

// The innermost message of HDF5's error stack, which says what went wrong in its own words.
std::string library_message() {
    std::string message;
    H5Ewalk2(
        H5E_DEFAULT, H5E_WALK_DOWNWARD,
        [](unsigned, const H5E_error2_t* error, void* data) -> herr_t {
            auto& text = *static_cast<std::string*>(data);
            if (text.empty() && error->desc) text = error->desc;
            return 0;
        },
        &message);
    H5Eclear2(H5E_DEFAULT);
    return message.empty() ? "" : " (HDF5: " + message + ")";
}

[[noreturn]] void fail(const std::string& what, const std::string& problem) {
    throw IoError(what + ": " + problem + library_message());
}

// A name the core driver uses for an in-memory file; unique so that concurrent files on other
// threads are never taken for the same file. No file of this name is created.
std::string memory_file_name() {
    static std::atomic<std::uint64_t> counter{0};
    return fmt::format("xtnn-memory-{}.h5", counter.fetch_add(1));
}

Handle memory_access_list(const std::string& what) {
    Handle access(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    if (!access.valid() || H5Pset_fapl_core(access.get(), 1 << 20, 0) < 0) fail(what, "cannot set up an in-memory file");
    return access;
}

// The object's kind, or nullopt when a component of the path is missing.
std::optional<H5O_type_t> object_type(hid_t file, const std::string& path) {
    if (path.empty() || path == "/") return H5O_TYPE_GROUP;
    std::size_t start = path[0] == '/' ? 1 : 0;
    while (true) {
        const std::size_t slash = path.find('/', start);
        const std::string prefix = path.substr(0, slash);
        if (H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0) {
            H5Eclear2(H5E_DEFAULT);
            return std::nullopt;
        }
        if (slash == std::string::npos) break;
        start = slash + 1;
    }
    H5O_info_t info;
    if (H5Oget_info_by_name2(file, path.c_str(), &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0) {
        H5Eclear2(H5E_DEFAULT);
        return std::nullopt;
    }
    return info.type;
}

Shape space_shape(hid_t space, const std::string& what, const std::string& object) {
    const H5S_class_t kind = H5Sget_simple_extent_type(space);
    if (kind == H5S_SCALAR) return {};
    if (kind == H5S_NULL) return {0};
    if (kind != H5S_SIMPLE) fail(what, fmt::format("'{}' has an unreadable dataspace", object));
    const int rank = H5Sget_simple_extent_ndims(space);
    if (rank < 0 || static_cast<std::size_t>(rank) > max_rank) {
        fail(what, fmt::format("'{}' has rank {}; at most {} is supported", object, rank, max_rank));
    }
    std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
    if (rank > 0 && H5Sget_simple_extent_dims(space, dims.data(), nullptr) < 0) fail(what, "cannot read the shape of '" + object + "'");
    return Shape(dims.begin(), dims.end());
}

std::size_t element_count(const Shape& shape) {
    std::size_t count = 1;
    for (auto extent : shape) count *= extent;
    return count;
}

// Reads a string attribute's values, fixed-length or variable-length.
std::vector<std::string> read_strings(hid_t attribute, std::size_t count, const std::string& what, const std::string& label) {
    Handle type(H5Aget_type(attribute), H5Tclose);
    if (!type.valid()) fail(what, "cannot read the type of " + label);
    if (count == 0) return {};
    if (H5Tget_class(type.get()) != H5T_STRING) fail(what, label + " is not a string attribute");
    Handle memory_type(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_cset(memory_type.get(), H5Tget_cset(type.get()));
    std::vector<std::string> values;
    if (H5Tis_variable_str(type.get()) > 0) {
        H5Tset_size(memory_type.get(), H5T_VARIABLE);
        std::vector<char*> pointers(count, nullptr);
        if (H5Aread(attribute, memory_type.get(), pointers.data()) < 0) fail(what, "cannot read " + label);
        for (char* text : pointers) values.emplace_back(text ? text : "");
        Handle space(H5Aget_space(attribute), H5Sclose);
        H5Dvlen_reclaim(memory_type.get(), space.get(), H5P_DEFAULT, pointers.data());
        return values;
    }
    const std::size_t size = H5Tget_size(type.get());
    if (size == 0 || size * count > max_attribute_bytes) fail(what, fmt::format("{} holds {} strings of {} bytes", label, count, size));
    H5Tset_size(memory_type.get(), size);
    std::vector<char> buffer(size * count);
    if (H5Aread(attribute, memory_type.get(), buffer.data()) < 0) fail(what, "cannot read " + label);
    for (std::size_t i = 0; i < count; ++i) {
        const char* start = buffer.data() + i * size;
        values.emplace_back(start, strnlen(start, size));
    }
    return values;
}

}  // namespace

bool has_signature(std::span<const std::uint8_t> bytes) {
    return bytes.size() >= signature.size() && std::memcmp(bytes.data(), signature.data(), signature.size()) == 0;
}

Reader::Reader(std::span<const std::uint8_t> image, std::string what) : what_(std::move(what)) {
    silence_error_printing();
    if (!has_signature(image)) fail(what_, "not an HDF5 file: it does not start with HDF5's signature");
    Handle access = memory_access_list(what_);
    if (H5Pset_file_image(access.get(), const_cast<std::uint8_t*>(image.data()), image.size()) < 0) {
        fail(what_, "cannot hand the file's bytes to HDF5");
    }
    file_ = H5Fopen(memory_file_name().c_str(), H5F_ACC_RDONLY, access.get());
    if (file_ < 0) fail(what_, fmt::format("HDF5 cannot open the file ({} bytes): it is truncated or corrupt", image.size()));
}

Reader::~Reader() {
    if (file_ >= 0) H5Fclose(file_);
}

bool Reader::has_group(const std::string& path) const { return object_type(file_, path) == H5O_TYPE_GROUP; }

bool Reader::has_dataset(const std::string& path) const { return object_type(file_, path) == H5O_TYPE_DATASET; }

std::vector<std::string> Reader::members(const std::string& group) const {
    if (!has_group(group)) fail(what_, "no group '" + group + "'");
    Handle handle(H5Gopen2(file_, group.empty() ? "/" : group.c_str(), H5P_DEFAULT), H5Gclose);
    if (!handle.valid()) fail(what_, "cannot open group '" + group + "'");
    std::vector<std::string> names;
    const herr_t status = H5Literate(
        handle.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr,
        [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
            auto& list = *static_cast<std::vector<std::string>*>(data);
            if (list.size() >= max_members) return 1;
            list.emplace_back(name);
            return 0;
        },
        &names);
    if (status < 0) fail(what_, "cannot list group '" + group + "'");
    if (names.size() >= max_members) fail(what_, fmt::format("group '{}' has more than {} members", group, max_members));
    return names;
}

namespace {

struct OpenAttribute {
    Handle handle;
    Shape shape;
    std::string label;
};

// The attribute `name` of `object`, opened, or nullopt when there is none.
std::optional<OpenAttribute> open_attribute(hid_t file, const std::string& what, const std::string& object,
                                            const std::string& name) {
    if (!object_type(file, object)) return std::nullopt;
    const char* location = object.empty() ? "/" : object.c_str();
    if (H5Aexists_by_name(file, location, name.c_str(), H5P_DEFAULT) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return std::nullopt;
    }
    const std::string label = fmt::format("attribute '{}' of '{}'", name, object.empty() ? "/" : object);
    Handle attribute(H5Aopen_by_name(file, location, name.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    if (!attribute.valid()) fail(what, "cannot open " + label);
    Handle space(H5Aget_space(attribute.get()), H5Sclose);
    Shape shape = space_shape(space.get(), what, label);
    return OpenAttribute{std::move(attribute), std::move(shape), label};
}

}  // namespace

std::optional<std::string> Reader::string_attribute(const std::string& object, const std::string& name) const {
    auto attribute = open_attribute(file_, what_, object, name);
    if (!attribute) return std::nullopt;
    if (element_count(attribute->shape) != 1) {
        fail(what_, fmt::format("{} should be one string, has shape {}", attribute->label, shape_to_string(attribute->shape)));
    }
    return read_strings(attribute->handle.get(), 1, what_, attribute->label).front();
}

std::optional<std::vector<std::string>> Reader::string_list_attribute(const std::string& object, const std::string& name) const {
    auto read_one = [&](const std::string& attribute_name) -> std::optional<std::vector<std::string>> {
        auto attribute = open_attribute(file_, what_, object, attribute_name);
        if (!attribute) return std::nullopt;
        const auto& label = attribute->label;
        if (attribute->shape.size() > 1) {
            fail(what_, fmt::format("{} should be a list of strings, has shape {}", label, shape_to_string(attribute->shape)));
        }
        const std::size_t count = element_count(attribute->shape);
        if (count > max_members) fail(what_, fmt::format("{} holds {} strings, more than {}", label, count, max_members));
        return read_strings(attribute->handle.get(), count, what_, label);
    };
    if (auto whole = read_one(name)) return whole;
    std::optional<std::vector<std::string>> joined;
    for (std::size_t chunk = 0; chunk < max_members; ++chunk) {
        auto part = read_one(name + std::to_string(chunk));
        if (!part) break;
        if (!joined) joined.emplace();
        joined->insert(joined->end(), part->begin(), part->end());
        if (joined->size() > max_members) fail(what_, fmt::format("attribute '{}' holds more than {} strings", name, max_members));
    }
    return joined;
}

Shape Reader::float_dataset_shape(const std::string& path) const {
    if (!has_dataset(path)) fail(what_, "no dataset '" + path + "'");
    Handle dataset(H5Dopen2(file_, path.c_str(), H5P_DEFAULT), H5Dclose);
    if (!dataset.valid()) fail(what_, "cannot open dataset '" + path + "'");
    Handle type(H5Dget_type(dataset.get()), H5Tclose);
    const H5T_class_t kind = H5Tget_class(type.get());
    const std::size_t size = H5Tget_size(type.get());
    if (kind != H5T_FLOAT || (size != 2 && size != 4 && size != 8)) {
        const char* kind_name = kind == H5T_INTEGER ? "integer" : kind == H5T_STRING ? "string" : kind == H5T_FLOAT ? "float" : "non-numeric";
        fail(what_, fmt::format("dataset '{}' holds {}-byte {} values; xtnn reads float16, float32 and float64 weights", path,
                                size, kind_name));
    }
    Handle space(H5Dget_space(dataset.get()), H5Sclose);
    return space_shape(space.get(), what_, "dataset '" + path + "'");
}

std::vector<float> Reader::read_floats(const std::string& path, const Shape& expected) const {
    const Shape shape = float_dataset_shape(path);
    if (shape != expected) {
        fail(what_, fmt::format("dataset '{}' has shape {} but {} was expected", path, shape_to_string(shape),
                                shape_to_string(expected)));
    }
    Handle dataset(H5Dopen2(file_, path.c_str(), H5P_DEFAULT), H5Dclose);
    std::vector<float> values(element_count(shape));
    if (!values.empty() && H5Dread(dataset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0) {
        fail(what_, "cannot read dataset '" + path + "': its data is truncated or corrupt");
    }
    return values;
}

std::int64_t Reader::read_integer(const std::string& path) const {
    if (!has_dataset(path)) fail(what_, "no dataset '" + path + "'");
    Handle dataset(H5Dopen2(file_, path.c_str(), H5P_DEFAULT), H5Dclose);
    Handle type(H5Dget_type(dataset.get()), H5Tclose);
    Handle space(H5Dget_space(dataset.get()), H5Sclose);
    const Shape shape = space_shape(space.get(), what_, "dataset '" + path + "'");
    if (H5Tget_class(type.get()) != H5T_INTEGER || element_count(shape) != 1) {
        fail(what_, fmt::format("dataset '{}' should be one integer, has shape {}", path, shape_to_string(shape)));
    }
    std::int64_t value = 0;
    if (H5Dread(dataset.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value) < 0) {
        fail(what_, "cannot read dataset '" + path + "'");
    }
    return value;
}

Writer::Writer() {
    silence_error_printing();
    Handle access = memory_access_list("in-memory HDF5 file");
    Handle creation(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
    file_ = H5Fcreate(memory_file_name().c_str(), H5F_ACC_EXCL, creation.get(), access.get());
    if (file_ < 0) fail("in-memory HDF5 file", "cannot create it");
}

Writer::~Writer() {
    if (file_ >= 0) H5Fclose(file_);
}

void Writer::ensure_parents(const std::string& path) {
    for (std::size_t slash = path.find('/', 1); slash != std::string::npos; slash = path.find('/', slash + 1)) {
        const std::string prefix = path.substr(0, slash);
        if (!object_type(file_, prefix)) create_group(prefix);
    }
}

void Writer::create_group(const std::string& path) {
    ensure_parents(path);
    if (object_type(file_, path)) return;
    // Without modification times the same weights give the same bytes, as h5py writes them.
    Handle creation(H5Pcreate(H5P_GROUP_CREATE), H5Pclose);
    H5Pset_obj_track_times(creation.get(), 0);
    Handle group(H5Gcreate2(file_, path.c_str(), H5P_DEFAULT, creation.get(), H5P_DEFAULT), H5Gclose);
    if (!group.valid()) fail("in-memory HDF5 file", "cannot create group '" + path + "'");
}

void Writer::write_floats(const std::string& path, const Shape& shape, std::span<const float> values) {
    ensure_parents(path);
    const std::vector<hsize_t> dims(shape.begin(), shape.end());
    Handle space(shape.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                 H5Sclose);
    Handle creation(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    H5Pset_obj_track_times(creation.get(), 0);
    Handle dataset(H5Dcreate2(file_, path.c_str(), H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, creation.get(), H5P_DEFAULT),
                   H5Dclose);
    if (!dataset.valid() || (!values.empty() && H5Dwrite(dataset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                                         values.data()) < 0)) {
        fail("in-memory HDF5 file", "cannot write dataset '" + path + "'");
    }
}

void Writer::write_integer(const std::string& path, std::int64_t value) {
    ensure_parents(path);
    Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    Handle creation(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    H5Pset_obj_track_times(creation.get(), 0);
    Handle dataset(H5Dcreate2(file_, path.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, creation.get(), H5P_DEFAULT),
                   H5Dclose);
    if (!dataset.valid() || H5Dwrite(dataset.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value) < 0) {
        fail("in-memory HDF5 file", "cannot write dataset '" + path + "'");
    }
}

std::vector<std::uint8_t> Writer::finish() {
    if (H5Fflush(file_, H5F_SCOPE_GLOBAL) < 0) fail("in-memory HDF5 file", "cannot flush it");
    const ssize_t size = H5Fget_file_image(file_, nullptr, 0);
    if (size <= 0) fail("in-memory HDF5 file", "cannot take its image");
    std::vector<std::uint8_t> image(static_cast<std::size_t>(size));
    if (H5Fget_file_image(file_, image.data(), image.size()) != size) fail("in-memory HDF5 file", "cannot copy its image");
    H5Fclose(file_);
    file_ = -1;
    return image;
}

}  // namespace xtnn::hdf5
