#pragma once
// Keras 3's progress bar: "125/125 ━━━━━━━━━━━━━━━━━━━━ 1s 4ms/step - accuracy: 0.9123 - loss: 0.3021".
// On a terminal it redraws in place (at most every 0.05 s) with an ETA; elsewhere it writes only
// the final line, so logs stay short. Verbose 2 writes one plain line at the end.

#include <cstddef>
#include <functional>
#include <map>
#include <ostream>
#include <string>

namespace xtnn {

using Logs = std::map<std::string, double>;

/// True when `out` is std::cout or std::cerr and that stream is a terminal.
bool is_terminal(const std::ostream& out);

class Progbar {
public:
    using Clock = std::function<double()>;  // seconds since any fixed point

    /// `dynamic_display`: redraw in place with colours (a terminal); `clock` is for tests.
    Progbar(std::size_t target, int verbose, std::ostream& out, bool dynamic_display, Clock clock = {});

    /// Step `current` of `target` done, with running values; `finalize` writes the final line.
    void update(std::size_t current, const Logs& values, bool finalize = false);

private:
    std::string count_text(std::size_t current) const;
    std::string values_text(const Logs& values) const;

    std::size_t target_;
    int verbose_;
    std::ostream& out_;
    bool dynamic_;
    Clock clock_;
    double start_;
    double last_update_ = -1e300;
    double time_after_first_step_ = -1;
    std::size_t previous_width_ = 0;
};

/// Keras's duration formats: "%ds" under a minute, "%d:%02d" under an hour, "%d:%02d:%02d".
std::string format_eta(double seconds);
/// " 4ms/step", " 1s/step", " 550us/step".
std::string format_step_time(double seconds_per_step);

}  // namespace xtnn
