// libFuzzer target for Keras's .keras archives: any bytes end in a model or an xtnn::Error, with
// no crash, leak, undefined behaviour or allocation beyond libFuzzer's limits. It covers xtnn's
// own parts: the zip reader, config.json and metadata.json, and the mapping of weights onto the
// model the config describes. The weights file inside must be one of the fixtures' (the seeds)
// byte for byte, else the input is passed over: libhdf5's own parser is not hardened against
// crafted files (docs/keras-files.md), and fuzz_hdf5 is the target that feeds it mutations.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <set>
#include <span>
#include <vector>

#include <xtnn/xtnn.hpp>

#include "keras/zip.hpp"

namespace {

std::vector<std::uint8_t> weights_of(std::span<const std::uint8_t> archive) {
    const xtnn::zip::Reader reader(archive, "fuzz.keras");
    return reader.read("model.weights.h5", std::uint64_t(64) << 20);
}

const std::set<std::vector<std::uint8_t>>& known_weights() {
    static const std::set<std::vector<std::uint8_t>> known = [] {
        std::set<std::vector<std::uint8_t>> files;
        for (const auto& entry : std::filesystem::recursive_directory_iterator(XTNN_KERAS_FIXTURES)) {
            if (entry.path().extension() != ".keras") continue;
            try {
                files.insert(weights_of(xtnn::io::read_file(entry.path().string())));
            } catch (const xtnn::Error&) {
            }
        }
        return files;
    }();
    return known;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::uint8_t> bytes(data, size);
    if (!xtnn::zip::has_signature(bytes)) return 0;
    try {
        if (!known_weights().count(weights_of(bytes))) return 0;
        xtnn::load_model_from_bytes(bytes, "fuzz.keras");
    } catch (const xtnn::Error&) {
    }
    return 0;
}
