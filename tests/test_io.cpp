#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <sys/stat.h>
#include <zlib.h>

#include <xtensor/xview.hpp>
#include <xtnn/xtnn.hpp>

#include "test_helpers.hpp"

using namespace xtnn;
using testing::error_of;
using testing::TempDir;
using Bytes = std::vector<std::uint8_t>;

namespace {

namespace fs = std::filesystem;

Bytes idx_header(std::uint8_t type, const std::vector<std::uint32_t>& dims) {
    Bytes bytes{0, 0, type, static_cast<std::uint8_t>(dims.size())};
    for (auto d : dims) {
        for (int shift : {24, 16, 8, 0}) bytes.push_back(static_cast<std::uint8_t>(d >> shift));
    }
    return bytes;
}

Bytes idx_file(std::uint8_t type, const std::vector<std::uint32_t>& dims, std::size_t payload) {
    Bytes bytes = idx_header(type, dims);
    for (std::size_t i = 0; i < payload; ++i) bytes.push_back(static_cast<std::uint8_t>(i % 10));
    return bytes;
}

Bytes gzip(const Bytes& raw) {
    uLongf size = compressBound(raw.size()) + 32;
    Bytes out(size);
    z_stream stream{};
    deflateInit2(&stream, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    stream.next_in = const_cast<Bytef*>(raw.data());
    stream.avail_in = static_cast<uInt>(raw.size());
    stream.next_out = out.data();
    stream.avail_out = static_cast<uInt>(out.size());
    deflate(&stream, Z_FINISH);
    out.resize(stream.total_out);
    deflateEnd(&stream);
    return out;
}

// header followed by `zeros` zero bytes, gzip-compressed without ever holding them in memory.
Bytes gzip_with_zeros(const Bytes& header, std::size_t zeros) {
    Bytes out, chunk(1 << 16);
    const Bytes zero_block(1 << 20, 0);
    z_stream stream{};
    deflateInit2(&stream, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    auto feed = [&](const std::uint8_t* data, std::size_t size, int flush) {
        stream.next_in = const_cast<Bytef*>(data);
        stream.avail_in = static_cast<uInt>(size);
        do {
            stream.next_out = chunk.data();
            stream.avail_out = static_cast<uInt>(chunk.size());
            deflate(&stream, flush);
            out.insert(out.end(), chunk.begin(), chunk.end() - stream.avail_out);
        } while (stream.avail_out == 0);
    };
    feed(header.data(), header.size(), Z_NO_FLUSH);
    for (std::size_t left = zeros; left > 0;) {
        const std::size_t n = std::min(left, zero_block.size());
        feed(zero_block.data(), n, Z_NO_FLUSH);
        left -= n;
    }
    feed(nullptr, 0, Z_FINISH);
    deflateEnd(&stream);
    return out;
}

}  // namespace

TEST_CASE("IDX: every element type, plain and gzip, recognised by magic bytes") {
    TempDir dir;
    Bytes doubles = idx_header(0x0E, {2});
    for (double v : {1.5, -2.25}) {
        auto bits = std::bit_cast<std::uint64_t>(v);
        for (int shift = 56; shift >= 0; shift -= 8) doubles.push_back(std::uint8_t(bits >> shift));
    }
    Bytes shorts = idx_header(0x0B, {2});
    shorts.insert(shorts.end(), {0xFF, 0xFE, 0x01, 0x00});  // -2, 256
    Bytes ints = idx_header(0x0C, {1});
    ints.insert(ints.end(), {0x00, 0x01, 0x00, 0x00});  // 65536
    Bytes floats = idx_header(0x0D, {1});
    floats.insert(floats.end(), {0x3F, 0xC0, 0x00, 0x00});  // 1.5
    Bytes signed_bytes = idx_header(0x09, {2});
    signed_bytes.insert(signed_bytes.end(), {0xFF, 0x05});
    for (bool compressed : {false, true}) {
        auto write = [&](const std::string& name, const Bytes& b) { return dir.write(name, compressed ? gzip(b) : b); };
        CHECK(io::read_idx(write("d", doubles)).to_float() == xt::xarray<float>{1.5f, -2.25f});
        CHECK(io::read_idx(write("s", shorts)).to_float() == xt::xarray<float>{-2.0f, 256.0f});
        CHECK(io::read_idx(write("i", ints)).to_float() == xt::xarray<float>{65536.0f});
        CHECK(io::read_idx(write("f", floats)).to_float() == xt::xarray<float>{1.5f});
        CHECK(io::read_idx(write("b", signed_bytes)).to_float() == xt::xarray<float>{-1.0f, 5.0f});
        auto images = io::read_idx(write("u.gz", idx_file(0x08, {3, 2, 2}, 12)));
        CHECK(images.shape == Shape{3, 2, 2});
        CHECK(images.to_bytes()(2, 1, 1) == 1);
    }
}

TEST_CASE("IDX: hostile files give clear errors") {
    TempDir dir;
    CHECK(error_of<IoError>([&] { io::read_idx(dir.write("empty", {})); }).find("truncated header") != std::string::npos);
    CHECK(error_of<IoError>([&] { io::read_idx(dir.write("three", {0, 0, 8})); }).find("truncated header") != std::string::npos);
    Bytes fifteen = idx_file(0x08, {1, 2, 2}, 0);
    fifteen.pop_back();
    CHECK(error_of<IoError>([&] { io::read_idx(dir.write("fifteen", fifteen)); }).find("needs 16") != std::string::npos);
    CHECK(error_of<IoError>([&] { io::read_idx(dir.write("magic", {0x89, 'P', 'N', 'G', 0, 0, 0, 1})); }).find("expected 00 00") !=
          std::string::npos);
    CHECK(error_of<IoError>([&] { io::read_idx(dir.write("type", idx_file(0x0A, {1}, 1))); }).find("0x0a") != std::string::npos);
    CHECK(error_of<IoError>([&] { io::read_idx(dir.write("rank0", {0, 0, 8, 0})); }).find("rank 0") != std::string::npos);
    CHECK(error_of<IoError>([&] { io::read_idx(dir.write("dim0", idx_file(0x08, {0, 28}, 0))); }).find("dimension 0 is 0") !=
          std::string::npos);

    const Bytes digits = idx_file(0x08, {2, 28, 28}, 2 * 784);
    CHECK(error_of<IoError>([&] { io::parse_idx(gzip(digits), "g"); }).find("gzip-compressed") != std::string::npos);
    CHECK(io::read_idx(dir.write("raw-named.gz", digits)).shape == Shape{2, 28, 28});

    Bytes huge = idx_header(0x08, {0x80000000u, 28, 28});
    huge.resize(100, 0);
    const auto claimed = error_of<IoError>([&] { io::read_idx(dir.write("claims", huge)); });
    CHECK(claimed.find("truncated") != std::string::npos);
    CHECK(claimed.find("100 bytes") != std::string::npos);
    CHECK(error_of<IoError>([&] { io::read_idx(dir.write("claims.gz", gzip(huge))); }).find("payload truncated") != std::string::npos);
    CHECK(error_of<IoError>([&] { io::read_idx(dir.write("overflow", idx_file(0x0E, {0xFFFFFFFFu, 65536, 65536, 65536}, 0))); })
              .find("overflows") != std::string::npos);

    Bytes short_one = digits;
    short_one.pop_back();
    Bytes long_one = digits;
    long_one.push_back(0);
    CHECK(error_of<IoError>([&] { io::read_idx(dir.write("short", short_one)); }).find("(truncated)") != std::string::npos);
    CHECK(error_of<IoError>([&] { io::read_idx(dir.write("long", long_one)); }).find("(trailing data)") != std::string::npos);
    CHECK(error_of<IoError>([&] { io::read_idx(dir.write("short.gz", gzip(short_one))); }).find("payload truncated") != std::string::npos);
    CHECK(error_of<IoError>([&] { io::read_idx(dir.write("long.gz", gzip(long_one))); }).find("trailing data") != std::string::npos);
    Bytes corrupt = gzip(digits);
    corrupt[corrupt.size() - 6] ^= 0xFF;  // the CRC32
    CHECK(error_of<IoError>([&] { io::read_idx(dir.write("corrupt.gz", corrupt)); }).find("corrupt gzip") != std::string::npos);

    CHECK(error_of<IoError>([&] { io::read_idx(dir.path.string()); }).find("not a regular file") != std::string::npos);
    CHECK(error_of<IoError>([&] { io::read_idx((dir.path / "missing").string()); }).find("No such file") != std::string::npos);
    CHECK(error_of<IoError>([&] { io::read_idx("/dev/zero"); }).find("not a regular file") != std::string::npos);
    // A FIFO nobody writes to: refused at once, where a blocking open would wait forever.
    const std::string fifo = (dir.path / "fifo").string();
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK(error_of<IoError>([&] { io::read_idx(fifo); }).find("not a regular file (a FIFO)") != std::string::npos);
    CHECK(error_of<IoError>([&] { io::read_pgm(fifo); }).find("not a regular file (a FIFO)") != std::string::npos);
}

TEST_CASE("IDX mapped into memory: the bytes read_idx gives, and hostile files refused as read_idx refuses them") {
    TempDir dir;
    const Bytes digits = idx_file(0x08, {3, 2, 2}, 12);
    {
        io::MappedIdx mapped(dir.write("digits", digits));
        CHECK(mapped.shape() == Shape{3, 2, 2});
        const auto loaded = io::read_idx(dir.file("digits")).to_bytes();
        CHECK(std::equal(loaded.begin(), loaded.end(), mapped.data()));
        const io::MappedIdx moved(std::move(mapped));
        CHECK(moved.shape() == Shape{3, 2, 2});
        CHECK(InputRows(moved).gather({2, 0}, 0, 2) == xt::xarray<float>{{{8, 9}, {0, 1}}, {{0, 1}, {2, 3}}});
    }
    const auto refused = [&](const std::string& name, const Bytes& bytes) {
        return error_of<IoError>([&] { io::MappedIdx mapped(dir.write(name, bytes)); });
    };
    CHECK(refused("empty", {}).find("truncated header: 0 bytes") != std::string::npos);
    CHECK(refused("three", {0, 0, 8}).find("truncated header") != std::string::npos);
    Bytes fifteen = idx_file(0x08, {1, 2, 2}, 0);
    fifteen.pop_back();
    CHECK(refused("fifteen", fifteen).find("needs 16") != std::string::npos);
    CHECK(refused("magic", {0x89, 'P', 'N', 'G', 0, 0, 0, 1}).find("expected 00 00") != std::string::npos);
    CHECK(refused("type", idx_file(0x0A, {1}, 1)).find("0x0a") != std::string::npos);
    CHECK(refused("rank0", {0, 0, 8, 0}).find("rank 0") != std::string::npos);
    CHECK(refused("dim0", idx_file(0x08, {0, 28}, 0)).find("dimension 0 is 0") != std::string::npos);
    CHECK(refused("digits.gz", gzip(digits)).find("gzip-compressed") != std::string::npos);
    CHECK(refused("floats", idx_file(0x0D, {2}, 8)) ==
          "IDX file '" + dir.file("floats") + "': holds elements of type 0x0d; only unsigned bytes (0x08) can be mapped: read it "
          "with read_idx()");
    Bytes huge = idx_header(0x08, {0x80000000u, 28, 28});
    huge.resize(100, 0);
    CHECK(refused("claims", huge).find("but 84 follow it") != std::string::npos);
    CHECK(refused("overflow", idx_file(0x0E, {0xFFFFFFFFu, 65536, 65536, 65536}, 0)).find("overflows") != std::string::npos);
    Bytes short_one = digits, long_one = digits;
    short_one.pop_back();
    long_one.push_back(0);
    CHECK(refused("short", short_one).find("describes 12 bytes of data, but 11 follow it") != std::string::npos);
    CHECK(refused("long", long_one).find("describes 12 bytes of data, but 13 follow it") != std::string::npos);
    CHECK(error_of<IoError>([&] { io::MappedIdx mapped(dir.path.string()); }).find("not a regular file") != std::string::npos);
    CHECK(error_of<IoError>([&] { io::MappedIdx mapped(dir.file("missing")); }).find("No such file") != std::string::npos);
    CHECK(error_of<IoError>([&] { io::MappedIdx mapped("/dev/zero"); }).find("not a regular file") != std::string::npos);
    const std::string fifo = dir.file("fifo");
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK(error_of<IoError>([&] { io::MappedIdx mapped(fifo); }).find("not a regular file (a FIFO)") != std::string::npos);
}

TEST_CASE("fit on images mapped from an IDX file trains bit for bit as on the images loaded") {
    TempDir dir;
    const auto images = io::read_idx(std::string(XTNN_SOURCE_DIR) + "/datasets/mnist-10k/images-idx3-ubyte.gz");
    const auto labels = io::read_idx(std::string(XTNN_SOURCE_DIR) + "/datasets/mnist-10k/labels-idx1-ubyte.gz").to_float();
    Bytes file = idx_header(0x08, {400, 28, 28});
    file.insert(file.end(), images.payload.begin(), images.payload.begin() + 400 * 784);
    const io::MappedIdx mapped(dir.write("images-idx3-ubyte", file));
    const xt::xarray<std::uint8_t> loaded = io::read_idx(dir.file("images-idx3-ubyte")).to_bytes();
    const xt::xarray<float> y = to_categorical(xt::view(labels, xt::range(0, 400)), 10);
    const auto train = [&](const InputRows& x) {
        set_random_seed(3);
        Sequential model;
        model.add(Rescaling(1.0 / 255, 0.0, {28, 28}));
        model.add(Flatten());
        model.add(Dense(16, "relu"));
        model.add(Dropout(0.1));
        model.add(Dense(10, "softmax"));
        model.compile("categorical_crossentropy", "adam", {"accuracy"});
        const History history = model.fit(std::vector<InputRows>{x}, {y}, {.batch_size = 64, .epochs = 2, .verbose = 0});
        return std::pair(model.get_weights(), history.history);
    };
    const auto [weights_mapped, history_mapped] = train(InputRows(mapped));
    const auto [weights_loaded, history_loaded] = train(InputRows(loaded));
    for (std::size_t w = 0; w < weights_loaded.size(); ++w) CHECK(testing::bitwise_equal(weights_mapped[w], weights_loaded[w]));
    CHECK(history_mapped == history_loaded);
}

TEST_CASE("IDX: a gzip bomb whose header claims 10 images stops at the data it promises") {
    TempDir dir;
    // 200 MB of zeros, about 200 KB compressed, never held in memory by the test itself.
    const std::string path = dir.write("bomb.gz", gzip_with_zeros(idx_header(0x08, {10, 28, 28}), 200u << 20));
    CHECK(std::filesystem::file_size(path) < (1u << 20));
    struct rusage before {};
    getrusage(RUSAGE_SELF, &before);
    CHECK(error_of<IoError>([&] { io::read_idx(path); }).find("trailing data") != std::string::npos);
    struct rusage after {};
    getrusage(RUSAGE_SELF, &after);
    CHECK(after.ru_maxrss - before.ru_maxrss < 32 * 1024);  // KiB: nothing near the 200 MB inflated
}

TEST_CASE("datasets: the bundled digits, image/label mismatches and label range") {
    auto [train, test] = datasets::load_mnist(std::string(XTNN_SOURCE_DIR) + "/datasets/mnist-10k");
    CHECK(train.x.shape() == Shape{8000, 28, 28});
    CHECK(test.x.shape() == Shape{2000, 28, 28});
    CHECK(train.y.size() == 8000);
    CHECK(xt::amax(train.x)() <= 1.0f);
    CHECK(xt::amin(train.x)() >= 0.0f);
    CHECK(xt::amax(train.x)() == 1.0f);

    // The byte sets hold the files' bytes; scaled, they are exactly the float sets.
    const auto [train_bytes, test_bytes] = datasets::load_mnist_bytes(std::string(XTNN_SOURCE_DIR) + "/datasets/mnist-10k");
    CHECK(train_bytes.x.shape() == Shape{8000, 28, 28});
    CHECK(test_bytes.x.shape() == Shape{2000, 28, 28});
    CHECK(scale_to_unit(train_bytes.x) == train.x);
    CHECK(scale_to_unit(test_bytes.x) == test.x);
    CHECK(train_bytes.y == train.y);
    CHECK(test_bytes.y == test.y);

    TempDir dir;
    dir.write("images-idx3-ubyte", idx_file(0x08, {3, 28, 28}, 3 * 784));
    dir.write("labels-idx1-ubyte", idx_file(0x08, {2}, 2));
    CHECK(error_of<IoError>([&] { datasets::load_mnist(dir.path.string()); }).find("3 images but") != std::string::npos);
    Bytes labels = idx_header(0x08, {3});
    labels.insert(labels.end(), {1, 10, 2});
    dir.write("labels-idx1-ubyte", labels);
    CHECK(error_of<IoError>([&] { datasets::load_mnist(dir.path.string()); }).find("label 10 at index 1") != std::string::npos);
    CHECK(error_of<IoError>([&] { datasets::load_mnist_bytes(dir.path.string()); }).find("label 10 at index 1") != std::string::npos);
    CHECK(error_of<IoError>([&] { datasets::load_mnist((dir.path / "nowhere").string()); }).find("does not exist") != std::string::npos);
}

TEST_CASE("to_categorical, scaling and the seeded split") {
    CHECK(to_categorical(xt::xarray<float>{2, 0}, 3) == xt::xarray<float>{{0, 0, 1}, {1, 0, 0}});
    CHECK(scale_to_unit(xt::xarray<std::uint8_t>{0, 255})(1) == 1.0f);
    // Every byte scales to the float a Rescaling(1.0 / 255) layer gives it.
    xt::xarray<std::uint8_t> every_byte = xt::empty<std::uint8_t>({256});
    for (std::size_t b = 0; b < 256; ++b) every_byte(b) = std::uint8_t(b);
    Rescaling rescaling(1.0 / 255);
    rescaling.build({256});
    xt::xarray<float> batch = xt::cast<float>(every_byte);
    batch.reshape({1, 256});
    xt::xarray<float> rescaled = rescaling.call(Tensor::constant(batch), false).value();
    rescaled.reshape({256});
    CHECK(scale_to_unit(every_byte) == rescaled);

    // Gathered rows of bytes are the same rows cast to float, in the order asked.
    const xt::xarray<std::uint8_t> images{{{1, 2}, {3, 4}}, {{5, 6}, {7, 8}}, {{9, 10}, {11, 255}}};
    const xt::xarray<float> gathered = gather_rows(images, {2, 0, 1}, 0, 2);
    CHECK(gathered == xt::xarray<float>{{{9, 10}, {11, 255}}, {{1, 2}, {3, 4}}});
    CHECK(gather_rows(xt::xarray<float>(xt::cast<float>(images)), {2, 0, 1}, 1, 3) ==
          xt::xarray<float>{{{1, 2}, {3, 4}}, {{5, 6}, {7, 8}}});
    Generator a(3), b(3);
    auto split = random_split(100, 0.2, a);
    CHECK(split.validation.size() == 20);
    CHECK(split.train.size() == 80);
    CHECK(split.validation == random_split(100, 0.2, b).validation);
    std::vector<std::size_t> tail;
    for (std::size_t i = 80; i < 100; ++i) tail.push_back(i);
    CHECK(split.validation != tail);  // drawn at random, not Keras's last fifth
    CHECK_THROWS_AS(random_split(3, 0.1, a), ValueError);
}

TEST_CASE("PGM images: binary and text, comments, 16-bit, and hostile headers") {
    auto bytes = [](const std::string& text) { return Bytes(text.begin(), text.end()); };
    Bytes binary = bytes("P5\n# a comment\n3 2\n255\n");
    binary.insert(binary.end(), {0, 51, 255, 102, 204, 0});
    const auto image = io::parse_pgm(binary);
    CHECK(image.shape() == Shape{2, 3});
    CHECK(image(0, 1) == doctest::Approx(0.2f));
    CHECK(image(0, 2) == 1.0f);
    CHECK(image(1, 0) == doctest::Approx(0.4f));

    const auto text = io::parse_pgm(bytes("P2 2 2 10\n0 5 # half\n10 1\n"));
    CHECK(text(0, 1) == 0.5f);
    CHECK(text(1, 0) == 1.0f);

    Bytes wide = bytes("P5 1 1 1000\n");
    wide.insert(wide.end(), {0x01, 0xf4});
    CHECK(io::parse_pgm(wide)(0, 0) == 0.5f);

    auto error = [&](const Bytes& b) { return error_of<IoError>([&] { io::parse_pgm(b, "digit.pgm"); }); };
    CHECK(error({}).find("PGM file 'digit.pgm': not a grayscale PGM image") == 0);
    CHECK(error(bytes("P6 1 1 255\n\x01\x02\x03")).find("should start with P5 or P2") != std::string::npos);
    CHECK(error(bytes("P5 3")).find("truncated: expected the height") != std::string::npos);
    CHECK(error(bytes("P5 99999 1 255\n")).find("the width exceeds 16384") != std::string::npos);
    CHECK(error(bytes("P5 0 4 255\n")).find("both sides must be positive") != std::string::npos);
    CHECK(error(bytes("P5 2 2 0\n")).find("maxval is 0") != std::string::npos);
    CHECK(error(bytes("P5 2 2 255\n\x01\x02\x03")).find("needs 4 bytes of pixels, found 3") != std::string::npos);
    CHECK(error(bytes("P5 1 1 255\n\x01\x02")).find("needs 1 bytes of pixels, found 2") != std::string::npos);
    CHECK(error(bytes("P2 16384 16384 255\n1 2 3")).find("cannot hold them") != std::string::npos);
    CHECK(error(bytes("P2 1 2 9\n3 12\n")).find("the pixel value exceeds 9") != std::string::npos);
    CHECK(error(bytes("P2 1 1 9\n3 4\n")).find("trailing data") != std::string::npos);
    CHECK(error(bytes("P5 1 1 100\n\xff")).find("pixel 0 is 255, above maxval 100") != std::string::npos);
}

TEST_CASE("the fuzzing seeds and every crasher found so far read or fail with an xtnn::Error") {
    std::size_t replayed = 0;
    for (const char* folder : {"/tests/fuzz/seeds/idx", "/tests/fuzz/regressions/idx"}) {
        for (const auto& entry : fs::directory_iterator(std::string(XTNN_SOURCE_DIR) + folder)) {
            if (entry.path().filename().string().front() == '.') continue;
            CAPTURE(entry.path().string());
            const auto bytes = io::read_file(entry.path().string());
            for (auto read : std::initializer_list<std::function<void()>>{
                     [&] { io::parse_idx(bytes); }, [&] { io::parse_pgm(bytes); }, [&] { io::read_idx(entry.path().string()); },
                     [&] { io::MappedIdx mapped(entry.path().string()); }}) {
                try {
                    read();
                } catch (const Error&) {
                }
            }
            ++replayed;
        }
    }
    CHECK(replayed >= 15);
}
