// Classifies images with a saved model (xtnn's .xtnn, or Keras's .keras and .h5): PGM images, or
// digits from an IDX file (plain or gzip).
//
//   build/examples/predict mnist_mlp.xtnn datasets/samples/digit-7.pgm
//   build/examples/predict mnist_mlp.xtnn datasets/mnist-10k/images-idx3-ubyte.gz --first 8000 --count 5
//   build/examples/predict ../shared/data/keras-models/cnn-keras2.h5 datasets/samples/digit-3.pgm

#include <fstream>
#include <iostream>

#include <fmt/format.h>
#include <xtensor/xmath.hpp>
#include <xtensor/xsort.hpp>
#include <xtensor/xview.hpp>
#include <xtnn/xtnn.hpp>

#include "command_line.hpp"

namespace {

// PGM files start with "P5" or "P2"; only those two bytes are read to tell.
bool is_pgm(const std::string& path) {
    char start[2] = {};
    std::ifstream(path, std::ios::binary).read(start, 2);
    return start[0] == 'P' && (start[1] == '5' || start[1] == '2');
}

// Images as a (count, height, width) batch in [0, 1], with a name for each.
std::pair<xt::xarray<float>, std::vector<std::string>> load_images(const std::string& path, std::size_t first,
                                                                  std::size_t count) {
    if (is_pgm(path)) {
        xt::xarray<float> image = xtnn::io::read_pgm(path);
        image.reshape({std::size_t(1), image.shape()[0], image.shape()[1]});
        return {image, {path}};
    }
    const xtnn::io::IdxArray idx = xtnn::io::read_idx(path);
    if (idx.shape.size() != 3) {
        throw xtnn::ShapeError(fmt::format("{}: expected images of shape (count, height, width), got {}", path,
                                           xtnn::shape_to_string(idx.shape)));
    }
    if (first >= idx.shape[0]) throw xtnn::ValueError(fmt::format("{}: --first {} but the file has {} images", path, first, idx.shape[0]));
    const std::size_t end = std::min(idx.shape[0], first + count);
    std::vector<std::string> names;
    for (std::size_t i = first; i < end; ++i) names.push_back(fmt::format("{}[{}]", path, i));
    if (idx.type == xtnn::io::IdxType::ubyte) {
        const xt::xarray<std::uint8_t> pixels = xt::view(idx.to_bytes(), xt::range(first, end));
        return {xtnn::scale_to_unit(pixels), names};
    }
    return {xt::view(idx.to_float(), xt::range(first, end)), names};
}

// A model that starts with Rescaling (as tiny_resnet: Rescaling(1.0 / 255)) takes pixel values
// 0..255 as the files hold them; the others take them in [0, 1].
bool takes_raw_pixels(const xtnn::Model& model) {
    for (const auto& call : model.layer_calls()) {
        if (call->inputs.size() == 1 && call->inputs[0] == model.inputs()[0]) return call->layer->class_name() == "Rescaling";
    }
    return false;
}

}  // namespace

int main(int argc, char** argv) {
    command_line::Parser args{"Classify images with a model saved by Model::save() or by Keras"};
    std::string model_path;
    std::vector<std::string> inputs;
    std::size_t first = 0;
    std::size_t count = 10;
    args.option("model", model_path, "model file (.xtnn, .keras or Keras 2 .h5)").required();
    args.option("images", inputs, "PGM images or IDX image files").required();
    args.option("--first", first, "first image to classify in an IDX file");
    args.option("--count", count, "how many images to classify from an IDX file");
    if (auto exit_code = args.parse(argc, argv)) return *exit_code;

    try {
        xtnn::Model model = xtnn::load_model(model_path);
        const xtnn::Shape input_shape = model.input_shape();
        for (const auto& input : inputs) {
            auto [images, names] = load_images(input, first, count);
            const std::size_t pixels = images.size() / images.shape()[0];
            if (input_shape.size() == 1 && input_shape[0] == pixels) images.reshape({images.shape()[0], pixels});
            // A convolutional network takes (height, width, channels): one channel for gray images.
            if (input_shape.size() == 3 && input_shape[2] == 1 && images.dimension() == 3) {
                images.reshape({images.shape()[0], images.shape()[1], images.shape()[2], std::size_t(1)});
            }
            if (takes_raw_pixels(model)) images = xt::round(images * 255.0f);
            const xt::xarray<float> probabilities = model.predict(images);
            const auto classes = xt::argmax(probabilities, 1);
            for (std::size_t i = 0; i < names.size(); ++i) {
                fmt::print("{}: class {} ({:.1f}%)\n ", names[i], classes(i), 100.0 * probabilities(i, classes(i)));
                for (std::size_t c = 0; c < probabilities.shape()[1]; ++c) fmt::print(" {}:{:.3f}", c, probabilities(i, c));
                fmt::print("\n");
            }
        }
    } catch (const std::exception& e) {
        std::cerr << "predict: " << e.what() << "\n";
        return 1;
    }
}
