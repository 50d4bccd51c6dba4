// How far apart the machine's first two CPUs are, as the training step's threads and ranks feel it.
// On a virtual machine the host may place the two vCPUs on cores that share a cache or on cores of
// different dies, and may move them while a benchmark runs: the same Zen 5 VM measured round trips
// of 90-140 ns in some minutes and 400-650 ns in others, and W2 trained on two threads at 0.53-0.55
// of one thread's epoch in the first and 0.65-0.80 in the second (bench/README.md). Each figure a
// benchmark takes on two threads or two ranks is printed beside this one, taken around it.
//   - round_trip_ns: a cache line handed from one CPU to the other and back (two threads pinned to
//     the CPUs, spinning on one atomic), median of 9 batches of 20,000;
//   - handoff_us: 128 KB (W2's layer-2 kernel) written on one CPU, then read on the other, then
//     written again on the first: the pattern of a weight one thread updates and both read. Median
//     of 9 batches of 200.
//
//   build/bench/core_to_core [label]      (the label, such as "before_w2", is printed with the figures)

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_common.hpp"

namespace {

// The first two CPUs this process may run on.
std::vector<int> first_two_cpus() {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    std::vector<int> cpus;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return cpus;
    for (int cpu = 0; cpu < CPU_SETSIZE && cpus.size() < 2; ++cpu) {
        if (CPU_ISSET(cpu, &allowed)) cpus.push_back(cpu);
    }
    return cpus;
}

void pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

// Runs `first` pinned to cpus[0] and `second` pinned to cpus[1], at the same time.
template <class First, class Second>
void on_both(const std::vector<int>& cpus, First first, Second second) {
    std::thread other([&] {
        pin_to(cpus[1]);
        second();
    });
    pin_to(cpus[0]);
    first();
    other.join();
}

double round_trip_ns(const std::vector<int>& cpus) {
    constexpr int trips = 20000;
    alignas(64) std::atomic<int> line{0};
    double seconds = 0;
    on_both(
        cpus,
        [&] {
            const auto start = bench::Clock::now();
            for (int i = 0; i < trips; ++i) {
                line.store(2 * i + 1, std::memory_order_release);
                while (line.load(std::memory_order_acquire) != 2 * i + 2) {}
            }
            seconds = bench::seconds_since(start);
        },
        [&] {
            for (int i = 0; i < trips; ++i) {
                while (line.load(std::memory_order_acquire) != 2 * i + 1) {}
                line.store(2 * i + 2, std::memory_order_release);
            }
        });
    return seconds / trips * 1e9;
}

double handoff_us(const std::vector<int>& cpus) {
    constexpr int rounds = 200;
    constexpr std::size_t values = 32768;
    std::vector<float> buffer(values, 1.0f);
    alignas(64) std::atomic<int> turn{0};
    double seconds = 0;
    volatile float sink = 0;
    on_both(
        cpus,
        [&] {
            const auto start = bench::Clock::now();
            for (int r = 0; r < rounds; ++r) {
                for (std::size_t i = 0; i < values; ++i) buffer[i] = float(r + i);
                turn.store(2 * r + 1, std::memory_order_release);
                while (turn.load(std::memory_order_acquire) != 2 * r + 2) {}
            }
            seconds = bench::seconds_since(start);
        },
        [&] {
            float total = 0;
            for (int r = 0; r < rounds; ++r) {
                while (turn.load(std::memory_order_acquire) != 2 * r + 1) {}
                for (std::size_t i = 0; i < values; ++i) total += buffer[i];
                turn.store(2 * r + 2, std::memory_order_release);
            }
            sink = total;
        });
    return seconds / rounds * 1e6;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string label = argc > 1 ? argv[1] : "";
    const std::vector<int> cpus = first_two_cpus();
    nlohmann::json result = {{"peer", "machine"}, {"workload", "core_to_core"}, {"cpu", bench::cpu_model()},
                             {"cpus", cpus}, {"label", label}};
    if (cpus.size() < 2) {
        std::cout << result.dump() << std::endl;
        return 0;
    }
    std::vector<double> trips, handoffs;
    for (int batch = 0; batch < 9; ++batch) {
        trips.push_back(round_trip_ns(cpus));
        handoffs.push_back(handoff_us(cpus));
    }
    result["round_trip_ns"] = bench::median(trips);
    result["handoff_us"] = bench::median(handoffs);
    std::cout << result.dump() << std::endl;
}
