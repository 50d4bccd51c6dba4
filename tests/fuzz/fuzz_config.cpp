// libFuzzer target: any text given to Model::from_json (Sequential and functional configs, both
// Keras forms) ends in a model or an xtnn::Error, with no crash, stack overflow, hang, undefined
// behaviour or allocation beyond libFuzzer's limits; a model that loads writes a config that
// loads again to the same config.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <xtnn/xtnn.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        const auto model = xtnn::Model::from_json(std::string(reinterpret_cast<const char*>(data), size));
        if (xtnn::Model::from_json(model.to_json()).to_json() != model.to_json()) std::abort();
    } catch (const xtnn::Error&) {
    }
    return 0;
}
