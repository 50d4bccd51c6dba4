// libFuzzer target for HDF5 input: Keras 2 .h5 models and weights files through xtnn's HDF5
// reader, and so through libhdf5's own parser, which is not hardened against crafted files: this
// target finds libhdf5's hangs and crashes (docs/keras-files.md lists what it found), so
// scripts/fuzz.sh runs it only with FUZZ_HDF5=1.
#include <cstddef>
#include <cstdint>
#include <span>

#include <xtnn/xtnn.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        xtnn::load_model_from_bytes(std::span<const std::uint8_t>(data, size), "fuzz.h5");
    } catch (const xtnn::Error&) {
    }
    return 0;
}
