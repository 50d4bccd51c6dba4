// libFuzzer target for Keras's files: any bytes given to the Keras readers (.keras archives,
// Keras 2 .h5 models, and load_weights of either) end in a model or an xtnn::Error, with no
// crash, leak, undefined behaviour or allocation beyond libFuzzer's limits. Seeded with the
// fixtures of tests/data/keras/. docs/keras-files.md says what this covers of HDF5 itself.
#include <cstddef>
#include <cstdint>
#include <span>

#include <xtnn/xtnn.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        xtnn::load_model_from_bytes(std::span<const std::uint8_t>(data, size), "fuzz.keras");
    } catch (const xtnn::Error&) {
    }
    return 0;
}
