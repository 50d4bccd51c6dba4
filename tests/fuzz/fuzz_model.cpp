// libFuzzer target: any bytes given to the model loader end in a model or an xtnn::Error, with
// no crash, leak, undefined behaviour or allocation beyond libFuzzer's limits.
#include <cstddef>
#include <cstdint>
#include <span>

#include <xtnn/xtnn.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        xtnn::load_model_from_bytes(std::span<const std::uint8_t>(data, size), "fuzz");
    } catch (const xtnn::Error&) {
    }
    return 0;
}
