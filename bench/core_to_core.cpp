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
//     of 9 batches of 200;
//   - w2_read_us: [local, across]: W2's 235,146 values (940 KB: the half of the summed gradient and
//     the half of the new weights a rank of 2 takes from the other each step) copied into a
//     private buffer on each CPU at once, after the same CPU wrote them and after the other did:
//     what the values that cross between 2 ranks cost to read, beside what the exchange costs
//     (bench/scaling.py). Median of 9 batches of 50;
//   - chase_16mb_ns: for each CPU alone, the latency of a load from a random line of 16 MB (a
//     pointer chase: each load's address is the last one's value), the size the last-level cache
//     holds when a CPU has its share of it. The vCPUs need not get the same share: at 15:25 on
//     12-01 one took 146-172 ns (its loads went to memory) and the other 30-56, and W1 trained
//     1.3-1.4x slower on the first (its shuffled rows come from a 47 MB dataset). Median of 5 turns
//     a CPU, the CPUs taking turns.
//
//   build/bench/core_to_core [label]      (the label, such as "before_w2", is printed with the figures)

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <cstdint>
#include <iostream>
#include <numeric>
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

// Spins until `arrived` has counted `count` arrivals: each caller adds one, then waits.
void meet(std::atomic<int>& arrived, int count) {
    arrived.fetch_add(1, std::memory_order_acq_rel);
    while (arrived.load(std::memory_order_acquire) < count) {}
}

// W2's weights (bench/xtnn_mlp.cpp: 784-256-128-10 with biases).
constexpr std::size_t w2_values = 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10;

// Microseconds CPU 0 takes to copy W2's values into a private buffer while CPU 1 does the same,
// each from what it wrote itself (across = false) or what the other wrote (across = true).
double w2_read_us(const std::vector<int>& cpus, bool across) {
    constexpr int rounds = 50;
    std::vector<float> written(2 * w2_values, 0.0f);
    alignas(64) std::atomic<int> arrived{0};
    double seconds = 0;
    const auto side = [&](int me) {
        std::vector<float> produced(w2_values, float(me)), taken(w2_values);
        float* mine = written.data() + std::size_t(me) * w2_values;
        const float* source = written.data() + std::size_t(across ? 1 - me : me) * w2_values;
        for (int r = 0; r < rounds; ++r) {
            std::copy(produced.begin(), produced.end(), mine);
            meet(arrived, 4 * r + 2);
            const auto start = bench::Clock::now();
            std::copy(source, source + w2_values, taken.data());
            if (me == 0) seconds += bench::seconds_since(start);
            meet(arrived, 4 * r + 4);
        }
    };
    on_both(cpus, [&] { side(0); }, [&] { side(1); });
    return seconds / rounds * 1e6;
}

constexpr std::size_t values_per_line = 64 / sizeof(std::size_t);

// A cycle through `lines` cache lines in a random order: each line's first value is the index of
// the next line's first value.
std::vector<std::size_t> random_cycle(std::size_t lines) {
    std::vector<std::size_t> order(lines);
    std::iota(order.begin(), order.end(), std::size_t(0));
    std::uint64_t state = 0x9E3779B97F4A7C15ull;
    for (std::size_t i = lines - 1; i > 0; --i) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::swap(order[i], order[state % (i + 1)]);
    }
    std::vector<std::size_t> next(lines * values_per_line, 0);
    for (std::size_t i = 0; i < lines; ++i) next[order[i] * values_per_line] = order[(i + 1) % lines] * values_per_line;
    return next;
}

double chase_ns(const std::vector<std::size_t>& next, int cpu) {
    constexpr std::size_t loads = 1 << 20;
    double ns = 0;
    std::thread runner([&] {
        pin_to(cpu);
        std::size_t at = 0;
        // One lap first, so that every page is mapped and the timed loads meet only the caches.
        for (std::size_t i = 0; i < next.size() / values_per_line; ++i) at = next[at];
        const auto start = bench::Clock::now();
        for (std::size_t i = 0; i < loads; ++i) at = next[at];
        ns = bench::seconds_since(start) / double(loads) * 1e9;
        volatile std::size_t sink = at;
        (void)sink;
    });
    runner.join();
    return ns;
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
    std::vector<double> trips, handoffs, local_reads, across_reads;
    for (int batch = 0; batch < 9; ++batch) {
        trips.push_back(round_trip_ns(cpus));
        handoffs.push_back(handoff_us(cpus));
        local_reads.push_back(w2_read_us(cpus, false));
        across_reads.push_back(w2_read_us(cpus, true));
    }
    result["round_trip_ns"] = bench::median(trips);
    result["handoff_us"] = bench::median(handoffs);
    result["w2_read_us"] = {bench::median(local_reads), bench::median(across_reads)};
    const std::vector<std::size_t> cycle = random_cycle((16u << 20) / 64);
    std::vector<std::vector<double>> chases(cpus.size());
    for (int turn = 0; turn < 5; ++turn) {
        for (std::size_t c = 0; c < cpus.size(); ++c) chases[c].push_back(chase_ns(cycle, cpus[c]));
    }
    result["chase_16mb_ns"] = {bench::median(chases[0]), bench::median(chases[1])};
    std::cout << result.dump() << std::endl;
}
