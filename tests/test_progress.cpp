#include <doctest/doctest.h>

#include <sstream>

#include <xtnn/xtnn.hpp>

using namespace xtnn;

namespace {

// A clock the test moves by hand.
struct FakeClock {
    double now = 0;
    Progbar::Clock function() {
        return [this] { return now; };
    }
};

}  // namespace

TEST_CASE("verbose 1 off a terminal writes only the final line") {
    FakeClock clock;
    std::ostringstream out;
    Progbar bar(3, 1, out, false, clock.function());
    for (std::size_t step = 1; step <= 3; ++step) {
        clock.now = 0.5 + 0.5 * double(step);
        bar.update(step, {{"accuracy", 0.5}, {"loss", 1.23456}});
    }
    CHECK(out.str().empty());
    bar.update(3, {{"accuracy", 0.5}, {"loss", 1.23456}, {"val_loss", 0.0001}}, true);
    CHECK(out.str() == "3/3 ━━━━━━━━━━━━━━━━━━━━ 2s 500ms/step - accuracy: 0.5000 - loss: 1.2346 - val_loss: 1.0000e-04\n");
}

TEST_CASE("verbose 2 writes one plain line at the end; verbose 0 nothing") {
    FakeClock clock;
    std::ostringstream two, zero;
    Progbar per_epoch(12, 2, two, false, clock.function());
    Progbar silent(12, 0, zero, true, clock.function());
    for (std::size_t step = 1; step <= 12; ++step) {
        clock.now = 0.002 * double(step);
        per_epoch.update(step, {{"loss", 0.25}}, step == 12);
        silent.update(step, {{"loss", 0.25}}, step == 12);
    }
    CHECK(two.str() == "12/12 - 0s - 2ms/step - loss: 0.2500\n");
    CHECK(zero.str().empty());
}

TEST_CASE("on a terminal the bar redraws in place, at most every 0.05 s, with an ETA") {
    FakeClock clock;
    std::ostringstream out;
    Progbar bar(100, 1, out, true, clock.function());
    for (std::size_t step = 1; step <= 100; ++step) {
        clock.now = double(step) / 64;  // exact in binary, so the 0.05 s throttle is predictable
        bar.update(step, {{"loss", 1.0}}, step == 100);
    }
    const std::string text = out.str();
    const auto redraws = std::count(text.begin(), text.end(), '\r');
    CHECK(redraws == 26);  // steps 1, 5, 9, ..., 97, then the final line
    CHECK(text.find("\r\x1b[1m 25/100\x1b[0m \x1b[32m━━━━━\x1b[0m\x1b[37m━━━━━━━━━━━━━━━\x1b[0m \x1b[1m1s\x1b[0m 16ms/step - loss: 1.0000") !=
          std::string::npos);
    CHECK(text.back() == '\n');
    CHECK(std::count(text.begin(), text.end(), '\n') == 1);
    CHECK(text.find("\x1b[1m100/100\x1b[0m \x1b[32m━━━━━━━━━━━━━━━━━━━━\x1b[0m\x1b[37m\x1b[0m \x1b[1m2s\x1b[0m") != std::string::npos);
}

TEST_CASE("Keras's time formats") {
    CHECK(format_eta(5.7) == "5s");
    CHECK(format_eta(75) == "1:15");
    CHECK(format_eta(3725) == "1:02:05");
    CHECK(format_step_time(2.0) == " 2s/step");
    CHECK(format_step_time(0.004) == " 4ms/step");
    CHECK(format_step_time(0.00055) == " 550us/step");
    CHECK(format_step_time(0.0) == " 0s/step");
}
