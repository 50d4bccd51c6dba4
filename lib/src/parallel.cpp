#include "parallel.hpp"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <new>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <cblas.h>

#include "xtnn/error.hpp"
#include "xtnn/ops.hpp"

namespace xtnn::detail {

namespace {

std::atomic<int> thread_count{0};
// Set while the thread runs a task: a task that asks for tasks of its own runs them itself.
thread_local bool in_task = false;
thread_local Team* thread_team = nullptr;
thread_local std::size_t thread_team_member = 0;

// Runs task(index) with in_task set.
void run_one(const std::function<void(std::size_t)>& task, std::size_t index) {
    const bool outer = in_task;
    in_task = true;
    try {
        task(index);
    } catch (...) {
        in_task = outer;
        throw;
    }
    in_task = outer;
}

// The workers poll for a while before they sleep: a training step hands them work every few tens
// of microseconds, and waking a sleeping thread costs about that much.
constexpr int polls_before_sleeping = 20000;

// Returns the first value of `word` that satisfies `ready`. The words are 32 bits wide, the size
// of a Linux futex, so that libstdc++ waits on the word itself rather than through the table of
// proxy words it uses for other sizes, which unrelated addresses share.
template <class Ready>
std::uint32_t wait_until(const std::atomic<std::uint32_t>& word, Ready ready) {
    for (int poll = 0; poll < polls_before_sleeping; ++poll) {
        const std::uint32_t value = word.load(std::memory_order_acquire);
        if (ready(value)) return value;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    for (;;) {
        const std::uint32_t value = word.load(std::memory_order_acquire);
        if (ready(value)) return value;
        word.wait(value, std::memory_order_acquire);
    }
}

class WorkerPool {
public:
    ~WorkerPool() {
        {
            std::lock_guard lock(caller_);
            stopping_ = true;
            generation_.fetch_add(1, std::memory_order_release);
            generation_.notify_all();
        }
        for (auto& worker : workers_) worker.join();
    }

    // False when another caller holds the pool: that caller's tasks are running.
    bool run(std::size_t count, const std::function<void(std::size_t)>& task) {
        std::unique_lock lock(caller_, std::try_to_lock);
        if (!lock.owns_lock()) return false;
        while (workers_.size() + 1 < count) {
            const std::size_t index = workers_.size() + 1;
            const std::uint32_t current = generation_.load(std::memory_order_relaxed);
            workers_.emplace_back([this, index, current] { work(index, current); });
        }
        task_ = &task;
        count_ = count;
        errors_.assign(count, nullptr);
        // Every worker answers, those without a task too: none may still be reading count_ when
        // the next call rewrites it (a worker that skipped one call would take the next call's
        // count for this one's and run its task twice).
        pending_.store(static_cast<std::uint32_t>(workers_.size()), std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_release);
        generation_.notify_all();
        try {
            run_one(task, 0);
        } catch (...) {
            errors_[0] = std::current_exception();
        }
        wait_until(pending_, [](std::uint32_t pending) { return pending == 0; });
        for (const auto& error : errors_) {
            if (error) std::rethrow_exception(error);
        }
        return true;
    }

private:
    // `seen`: the generation when the worker was made; the tasks of the next one are its first.
    void work(std::size_t index, std::uint32_t seen) {
        for (;;) {
            seen = wait_until(generation_, [seen](std::uint32_t generation) { return generation != seen; });
            if (stopping_) return;
            if (index < count_) {
                try {
                    run_one(*task_, index);
                } catch (...) {
                    errors_[index] = std::current_exception();
                }
            }
            if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_all();
        }
    }

    std::mutex caller_;
    std::vector<std::thread> workers_;
    std::atomic<std::uint32_t> generation_{0};
    std::atomic<std::uint32_t> pending_{0};
    const std::function<void(std::size_t)>* task_ = nullptr;
    std::size_t count_ = 0;
    std::vector<std::exception_ptr> errors_;
    bool stopping_ = false;
};

WorkerPool& worker_pool() {
    static WorkerPool pool;
    return pool;
}

}  // namespace

Team::Team(std::vector<std::size_t> rows) : rows_(std::move(rows)), first_rows_(rows_.size()), slots_(rows_.size()) {
    std::exclusive_scan(rows_.begin(), rows_.end(), first_rows_.begin(), std::size_t(0));
    total_rows_ = std::accumulate(rows_.begin(), rows_.end(), std::size_t(0));
}

namespace {

ValueError diverged(const char* how) {
    return ValueError(std::string("fit: the slices of a batch took different paths through the model, so the threads "
                                  "cannot share out a layer's product (does a layer call another only for some rows, "
                                  "or call different layers for different rows?): ") +
                      how);
}

constexpr const char* ended_while_waited = "a slice ended its step while another waits";

}  // namespace

void Team::arrive_and_wait(std::size_t member, const void* site) {
    MemberSlot& mine = slots_[member];
    const std::size_t parity = mine.barriers++ % 2;
    mine.sites[parity] = site;
    if (failed_.load(std::memory_order_acquire)) throw TeamAborted{};
    const std::uint32_t generation = generation_.load(std::memory_order_acquire);
    // Sequentially consistent with finish(): of a member arriving and another finishing, at least
    // one sees the other.
    if (arrived_.fetch_add(1, std::memory_order_seq_cst) + 1 == size()) {
        arrived_.store(0, std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_release);
        generation_.notify_all();
    } else {
        // A member that finished after this barrier completed (its last one) is no divergence: the
        // generation it moved on from is then seen to have changed.
        if (finished_.load(std::memory_order_seq_cst) > 0 && generation_.load(std::memory_order_acquire) == generation) {
            fail(std::make_exception_ptr(diverged(ended_while_waited)));
        }
        wait_until(generation_, [generation](std::uint32_t now) { return now != generation; });
    }
    if (failed_.load(std::memory_order_acquire)) throw TeamAborted{};
    for (const MemberSlot& other : slots_) {
        if (other.sites[parity] != site) throw diverged("they met at different layers");
    }
}

void Team::finish() {
    finished_.fetch_add(1, std::memory_order_seq_cst);
    if (arrived_.load(std::memory_order_seq_cst) > 0) fail(std::make_exception_ptr(diverged(ended_while_waited)));
}

void Team::fail(std::exception_ptr error) {
    {
        std::lock_guard lock(error_mutex_);
        if (!error_) error_ = std::move(error);
    }
    failed_.store(true, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
}

namespace {

// Sets the calling thread's team for its lifetime.
class TeamScope {
public:
    TeamScope(Team& team, std::size_t member) {
        thread_team = &team;
        thread_team_member = member;
    }
    ~TeamScope() { thread_team = nullptr; }
    TeamScope(const TeamScope&) = delete;
    TeamScope& operator=(const TeamScope&) = delete;
};

}  // namespace

void run_team(Team& team, const std::function<void(std::size_t)>& task) {
    const std::size_t count = team.size();
    const bool at_once = count > 1 && !in_task && count <= std::size_t(ops::num_threads()) &&
                         worker_pool().run(count, [&](std::size_t member) {
                             const TeamScope scope(team, member);
                             try {
                                 task(member);
                                 team.finish();
                             } catch (const TeamAborted&) {
                                 // Another member failed first: its error is the one to report.
                             } catch (...) {
                                 team.fail(std::current_exception());
                             }
                         });
    if (at_once) {
        if (team.error_) std::rethrow_exception(team.error_);
        return;
    }
    team.solo_ = true;
    for (std::size_t member = 0; member < count; ++member) {
        const TeamScope scope(team, member);
        task(member);
    }
}

Team* current_team() { return thread_team; }

std::size_t team_member() { return thread_team_member; }

namespace {

struct FreeAligned {
    void operator()(void* p) const { std::free(p); }
};
// The newest buffer last. A smaller one stays until release_team_scratch: another member may still
// be reading it when this one grows.
thread_local std::vector<std::unique_ptr<void, FreeAligned>> scratch;
thread_local std::size_t scratch_bytes = 0;

}  // namespace

void* team_scratch(std::size_t bytes) {
    if (scratch_bytes < bytes) {
        const std::size_t rounded = (bytes + 63) / 64 * 64;
        std::unique_ptr<void, FreeAligned> grown(std::aligned_alloc(64, rounded));
        if (!grown) throw std::bad_alloc();
        scratch.push_back(std::move(grown));
        scratch_bytes = rounded;
    }
    return scratch.back().get();
}

void release_team_scratch() noexcept {
    scratch.clear();
    scratch_bytes = 0;
}

void claim_blas_threads() {
    static const bool claimed = [] {
        int expected = 0;
        thread_count.compare_exchange_strong(expected, std::max(1, openblas_get_num_threads()));
        openblas_set_num_threads(1);
        return true;
    }();
    (void)claimed;
}

void run_tasks(std::size_t count, const std::function<void(std::size_t)>& task) {
    if (count == 0) return;
    if (count > 1 && !in_task && count <= std::size_t(ops::num_threads()) && worker_pool().run(count, task)) return;
    for (std::size_t i = 0; i < count; ++i) task(i);
}

void run_indices(std::size_t count, const std::function<void(std::size_t)>& body) {
    const std::size_t threads = std::min(count, std::size_t(ops::num_threads()));
    if (threads <= 1) {
        for (std::size_t i = 0; i < count; ++i) body(i);
        return;
    }
    run_tasks(threads, [&](std::size_t k) {
        for (std::size_t i = k; i < count; i += threads) body(i);
    });
}

void run_ranges(std::size_t count, std::size_t min_per_range, const std::function<void(std::size_t, std::size_t)>& body) {
    if (count == 0) return;
    const std::size_t ranges =
        in_task ? 1 : std::clamp<std::size_t>(count / std::max<std::size_t>(1, min_per_range), 1, std::size_t(ops::num_threads()));
    if (ranges == 1) {
        body(0, count);
        return;
    }
    run_tasks(ranges, [&](std::size_t k) { body(k * count / ranges, (k + 1) * count / ranges); });
}

}  // namespace xtnn::detail

namespace xtnn::ops {

void set_num_threads(int threads) {
    // Each thread is a worker with a stack of its own, made on first use: a count far past the
    // cores only costs memory and time, and 100,000 of them would exhaust the process.
    const int most = std::max(1024, int(std::thread::hardware_concurrency()));
    if (threads < 1 || threads > most) {
        throw ValueError("set_num_threads: threads must be in [1, " + std::to_string(most) + "], got " + std::to_string(threads));
    }
    detail::claim_blas_threads();
    detail::thread_count.store(threads);
}

int num_threads() {
    detail::claim_blas_threads();
    return detail::thread_count.load();
}

}  // namespace xtnn::ops
