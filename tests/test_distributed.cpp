// distributed::Session in a process that no MPI launcher started: one rank whose collectives hand
// back what they were given, and a fit given it that trains exactly as without it. The jobs of
// several ranks run from tests/distributed.cmake under mpirun.

#include <doctest/doctest.h>

#include <sstream>
#include <vector>

#include <xtensor/xview.hpp>
#include <xtnn/xtnn.hpp>

#include "test_helpers.hpp"

using namespace xtnn;
using testing::bitwise_equal;
using testing::error_of;

TEST_CASE("a Session outside an MPI job is rank 0 of 1, and its collectives return their input") {
    distributed::Session session;
    CHECK(session.rank() == 0);
    CHECK(session.size() == 1);
    CHECK(session.is_chief());
    CHECK_FALSE(session.uses_mpi());
    CHECK(session.describe(0) == "rank 0 of 1");

    std::vector<float> values{1.5f, -2.0f, 3.25f};
    session.allreduce_sum(std::span<float>(values));
    CHECK(values == std::vector<float>{1.5f, -2.0f, 3.25f});
    std::vector<double> doubles{0.1, 0.2};
    CHECK(session.allgather(std::span<const double>(doubles)) == doubles);
    CHECK(session.allgather("settings") == std::vector<std::string>{"settings"});
    CHECK(session.any(true));
    CHECK_FALSE(session.any(false));
    std::vector<std::uint8_t> bytes{1, 2, 3};
    session.broadcast(bytes);
    CHECK(bytes == std::vector<std::uint8_t>{1, 2, 3});
}

TEST_CASE("reductions by name, an unknown name listing the known ones") {
    for (const auto reduction : {distributed::Reduction::ring, distributed::Reduction::allreduce, distributed::Reduction::fixed_order}) {
        CHECK(distributed::reduction_from_name(distributed::reduction_name(reduction)) == reduction);
    }
    CHECK(distributed::reduction_name(distributed::Reduction::fixed_order) == "fixed_order");
    CHECK(error_of([] { distributed::reduction_from_name("tree"); }) ==
          "distributed: unknown reduction 'tree'; known: ring, allreduce, fixed_order");
}

TEST_CASE("a Session rejects a fusion bucket smaller than one value") {
    CHECK(error_of<ValueError>([] { distributed::Session session({.bucket_bytes = 4}); }) ==
          "distributed::Session: bucket_bytes must be at least 8, got 4");
}

TEST_CASE("fit given a one-rank Session trains bit for bit as without it") {
    auto [train, test] = datasets::load_mnist(std::string(XTNN_SOURCE_DIR) + "/datasets/mnist-10k");
    const xt::xarray<float> x = xt::view(train.x, xt::range(0, 300));
    const xt::xarray<float> y = to_categorical(xt::view(train.y, xt::range(0, 300)), 10);
    const auto run = [&](bool with_session) {
        set_random_seed(7);
        Sequential model;
        model.add(Dense(16, "relu", {28, 28}));
        model.add(Dropout(0.2));
        model.add(Flatten());
        model.add(Dense(10, "softmax"));
        model.compile("categorical_crossentropy", "adam", {"accuracy"});
        distributed::Session session;
        FitOptions options{.batch_size = 64, .epochs = 2, .verbose = 0, .validation_split = 0.2};
        if (with_session) options.distributed = session;
        const History history = model.fit(x, y, options);
        return std::pair(model.get_weights(), history.history);
    };
    const auto [weights, history] = run(false);
    const auto [weights_with_session, history_with_session] = run(true);
    REQUIRE(weights.size() == weights_with_session.size());
    for (std::size_t w = 0; w < weights.size(); ++w) CHECK(bitwise_equal(weights[w], weights_with_session[w]));
    CHECK(history == history_with_session);
}

TEST_CASE("the callbacks that write files are the ones a distributed fit runs on rank 0 only") {
    CHECK(ModelCheckpoint("unused.xtnn").chief_only());
    CSVLogger logger("unused.csv");
    CHECK(logger.chief_only());
    CHECK_FALSE(EarlyStopping().chief_only());
    CHECK_FALSE(TerminateOnNaN().chief_only());
}
