#include "xtnn/progress.hpp"

#include <chrono>
#include <cmath>
#include <iostream>

#include <fmt/format.h>
#include <unistd.h>

#include "text.hpp"

namespace xtnn {

namespace {

using internal::repeat;

constexpr std::size_t bar_width = 20;
constexpr double redraw_interval = 0.05;
const std::string bar_glyph = "\u2501";  // ━
const std::string bold = "\x1b[1m";
const std::string reset = "\x1b[0m";

double steady_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Columns a line takes on screen: escape sequences take none, each UTF-8 character one.
std::size_t display_width(const std::string& text) {
    std::size_t width = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c == 0x1b) {
            while (i < text.size() && text[i] != 'm') ++i;
        } else if ((c & 0xC0) != 0x80) {
            ++width;
        }
    }
    return width;
}

}  // namespace

bool is_terminal(const std::ostream& out) {
    if (&out == &std::cout) return ::isatty(STDOUT_FILENO) == 1;
    if (&out == &std::cerr) return ::isatty(STDERR_FILENO) == 1;
    return false;
}

std::string format_eta(double seconds) {
    const auto total = static_cast<long long>(seconds);
    if (total < 60) return fmt::format("{}s", total);
    if (total < 3600) return fmt::format("{}:{:02d}", total / 60, total % 60);
    return fmt::format("{}:{:02d}:{:02d}", total / 3600, (total % 3600) / 60, total % 60);
}

std::string format_step_time(double seconds_per_step) {
    if (seconds_per_step >= 1 || seconds_per_step == 0) return fmt::format(" {:.0f}s/step", seconds_per_step);
    if (seconds_per_step >= 1e-3) return fmt::format(" {:.0f}ms/step", seconds_per_step * 1e3);
    return fmt::format(" {:.0f}us/step", seconds_per_step * 1e6);
}

Progbar::Progbar(std::size_t target, int verbose, std::ostream& out, bool dynamic_display, Clock clock)
    : target_(target), verbose_(verbose), out_(out), dynamic_(dynamic_display),
      clock_(clock ? std::move(clock) : Clock(steady_seconds)), start_(clock_()) {}

std::string Progbar::count_text(std::size_t current) const {
    const int digits = static_cast<int>(std::to_string(target_).size());
    return fmt::format("{:>{}}/{}", current, digits, target_);
}

std::string Progbar::values_text(const Logs& values) const {
    std::string text;
    for (const auto& [name, value] : values) {
        text += std::abs(value) > 1e-3 ? fmt::format(" - {}: {:.4f}", name, value) : fmt::format(" - {}: {:.4e}", name, value);
    }
    return text;
}

void Progbar::update(std::size_t current, const Logs& values, bool finalize) {
    const double now = clock_();
    double seconds_per_step = 0;
    if (current > 1 && time_after_first_step_ >= 0) {
        seconds_per_step = (now - time_after_first_step_) / static_cast<double>(current - 1);
    } else if (current > 0) {
        seconds_per_step = (now - start_) / static_cast<double>(current);
    }
    if (current == 1) time_after_first_step_ = now;

    if (verbose_ == 2 && finalize) {
        out_ << count_text(current) << " - " << fmt::format("{:.0f}s", now - start_) << " -"
             << format_step_time(seconds_per_step) << values_text(values) << '\n'
             << std::flush;
        return;
    }
    if (verbose_ != 1) return;
    if (!finalize && (!dynamic_ || now - last_update_ < redraw_interval)) return;
    last_update_ = now;

    const std::size_t done = target_ == 0 ? bar_width : std::min(bar_width, bar_width * current / target_);
    const std::string time_field =
        finalize ? fmt::format("{:.0f}s", now - start_) : format_eta(seconds_per_step * double(target_ - std::min(current, target_)));
    std::string line;
    if (dynamic_) {
        line = bold + count_text(current) + reset + " ";
        if (done > 0) line += "\x1b[32m" + repeat(bar_glyph, done) + reset;
        line += "\x1b[37m" + repeat(bar_glyph, bar_width - done) + reset;
        line += " " + bold + time_field + reset;
    } else {
        line = count_text(current) + " " + repeat(bar_glyph, bar_width) + " " + time_field;
    }
    line += format_step_time(seconds_per_step) + values_text(values);

    if (dynamic_) {
        const std::size_t width = display_width(line);
        out_ << '\r' << line;
        if (width < previous_width_) out_ << std::string(previous_width_ - width, ' ');
        previous_width_ = width;
        if (finalize) out_ << '\n';
    } else {
        out_ << line << '\n';
    }
    out_ << std::flush;
}

}  // namespace xtnn
