// libFuzzer target: any text given to Sequential::from_json ends in a model or an xtnn::Error,
// with no crash, stack overflow, undefined behaviour or allocation beyond libFuzzer's limits; a
// model that loads writes a config that loads again.
#include <cstddef>
#include <cstdint>
#include <string>

#include <xtnn/xtnn.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        const auto model = xtnn::Sequential::from_json(std::string(reinterpret_cast<const char*>(data), size));
        xtnn::Sequential::from_json(model.to_json());
    } catch (const xtnn::Error&) {
    }
    return 0;
}
