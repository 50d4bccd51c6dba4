#pragma once
// What the benchmark programs share: the CPU's name, wall-clock timing, medians, and an epoch
// timer.

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include <xtensor/xview.hpp>
#include <xtnn/xtnn.hpp>

namespace bench {

using Clock = std::chrono::steady_clock;

/// The CPU's model name, printed with every figure: the machines here are not all the same CPU.
inline std::string cpu_model() {
    std::ifstream cpuinfo("/proc/cpuinfo");
    for (std::string line; std::getline(cpuinfo, line);) {
        if (line.starts_with("model name")) return line.substr(line.find(':') + 2);
    }
    return "unknown";
}

inline double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

inline double median(std::vector<double> values) {
    if (values.empty()) return 0.0;
    std::sort(values.begin(), values.end());
    const std::size_t n = values.size();
    return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

inline double mean(const std::vector<double>& values) {
    double total = 0;
    for (double v : values) total += v;
    return values.empty() ? 0.0 : total / double(values.size());
}

/// Records the wall time of each epoch's training loop (fit runs no validation in the benchmarks),
/// and the CPU the calling thread is on at the end of each step: where a step runs in one piece, the
/// vCPU that ran it (bench/core_to_core: the two need not be equally fast).
class EpochTimer : public xtnn::Callback {
public:
    void on_epoch_begin(int, const xtnn::Logs&) override { start_ = Clock::now(); }
    void on_epoch_end(int, const xtnn::Logs&) override { times.push_back(seconds_since(start_)); }
    void on_train_batch_end(int, const xtnn::Logs&) override {
        const int cpu = sched_getcpu();
        if (cpu < 0) return;
        if (steps_on_cpu.size() <= std::size_t(cpu)) steps_on_cpu.resize(std::size_t(cpu) + 1, 0);
        ++steps_on_cpu[std::size_t(cpu)];
    }
    std::vector<double> times;
    std::vector<int> steps_on_cpu;  // by CPU number

private:
    Clock::time_point start_;
};

/// Under mpirun with --no-exchange: this rank's share of the samples, [r n / N, (r + 1) n / N) for
/// rank r of N, which it then trains on alone, batch / N rows a step. Timed, that is the compute of
/// one rank of an N-rank fit without any exchange (though with the whole optimizer update, which a
/// fit on N ranks splits between them): the most N ranks can reach on this machine.
template <class T>
xt::xarray<T> own_share(const xt::xarray<T>& samples, const xtnn::distributed::Session& session) {
    const std::size_t n = samples.shape()[0], rank = std::size_t(session.rank()), ranks = std::size_t(session.size());
    return xt::view(samples, xt::range(rank * n / ranks, (rank + 1) * n / ranks));
}

/// The fraction of samples whose largest output is their label.
inline double accuracy(const xt::xarray<float>& probabilities, const xt::xarray<float>& labels) {
    const std::size_t n = probabilities.shape()[0], classes = probabilities.shape()[1];
    std::size_t correct = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const float* row = probabilities.data() + i * classes;
        correct += std::size_t(std::max_element(row, row + classes) - row) == static_cast<std::size_t>(labels(i));
    }
    return double(correct) / double(n);
}

}  // namespace bench
