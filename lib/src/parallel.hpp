#pragma once
// xtnn's own threads: ops::num_threads() - 1 workers that run tasks next to the calling thread.
// OpenBLAS runs on one thread inside them, so the two never compete for the cores.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <vector>

namespace xtnn::detail {

/// Runs task(0), ..., task(count - 1): task 0 on the calling thread, the others on the workers, and
/// returns when all are done, rethrowing the exception of the lowest task that threw. When the
/// workers are busy with another caller's tasks, count exceeds ops::num_threads(), or the caller
/// is itself a task, the calling thread runs the tasks one after the other instead; a task must
/// therefore give the same result on any thread (it sets up whatever per-thread state it reads).
void run_tasks(std::size_t count, const std::function<void(std::size_t)>& task);

/// Runs body(0), ..., body(count - 1) spread over the calling thread and the workers (thread k
/// takes k, k + threads, ...), returning when all are done. The same caveats as run_tasks.
void run_indices(std::size_t count, const std::function<void(std::size_t)>& body);

/// Cuts [0, count) into consecutive ranges, one per thread but none of fewer than `min_per_range`
/// items (one range when count is smaller, or when the caller is itself a task), and runs
/// body(begin, end) for each as run_tasks does. Where the cuts fall depends on the thread count:
/// the caller makes its result independent of them (each item computed on its own, or sums over
/// fixed groups of items).
void run_ranges(std::size_t count, std::size_t min_per_range, const std::function<void(std::size_t, std::size_t)>& body);

/// The threads that run the slices of one batch (run_team), member k on slice k. An op can share
/// its work out across them, each member taking a part of every slice's rows, where moving
/// activations between cores costs less than moving the weights' gradients (the sharded product,
/// ops_sharded.hpp). The members call such ops in the same order (they run one graph on their own
/// rows) and meet at barriers inside them. When the members cannot run at once, they run one after
/// the other as a solo team: each op then computes the same bits for its member alone.
class Team {
public:
    /// What a member shows the others: addresses it writes before a barrier and they use until
    /// the next one. An op documents which entry holds what.
    struct Slot {
        std::array<const void*, 4> reads{};
        std::array<void*, 2> writes{};
        std::array<bool, 2> accumulate{};
    };

    /// `rows[k]`: the rows of member k's slice.
    explicit Team(std::vector<std::size_t> rows);

    std::size_t size() const { return rows_.size(); }
    std::size_t rows(std::size_t member) const { return rows_[member]; }
    /// The row of the batch where member's slice starts.
    std::size_t first_row(std::size_t member) const { return first_rows_[member]; }
    std::size_t total_rows() const { return total_rows_; }
    /// True when the members run one after the other: no barriers, no slots.
    bool solo() const { return solo_; }

    Slot& slot(std::size_t member) { return slots_[member].slot; }

    /// Returns when every member has arrived at `site` (an address that names where they meet,
    /// such as a layer's kernel, the same on every member); throws TeamAborted once a member has
    /// failed. Members that arrive at different sites, or a member that ends its task while
    /// another waits, fail the team with a ValueError rather than leave it waiting for ever: the
    /// slices took different paths through the model.
    void arrive_and_wait(std::size_t member, const void* site);

private:
    friend void run_team(Team& team, const std::function<void(std::size_t)>& task);
    void fail(std::exception_ptr error);
    void finish();

    struct alignas(64) MemberSlot {
        Slot slot;
        // The sites of this member's last two barriers (by parity): a member can run at most one
        // barrier ahead of another, so a site is never rewritten while another member reads it.
        std::array<const void*, 2> sites{};
        std::size_t barriers = 0;
    };

    std::vector<std::size_t> rows_;
    std::vector<std::size_t> first_rows_;
    std::size_t total_rows_ = 0;
    bool solo_ = false;
    std::vector<MemberSlot> slots_;
    alignas(64) std::atomic<std::uint32_t> arrived_{0};
    alignas(64) std::atomic<std::uint32_t> generation_{0};
    std::atomic<bool> failed_{false};
    std::atomic<std::uint32_t> finished_{0};
    std::mutex error_mutex_;
    std::exception_ptr error_;
};

/// Thrown at a barrier of a team that another member's failure ended.
struct TeamAborted {};

/// Runs task(0), ..., task(team.size() - 1), each with current_team() set: at the same time, task
/// k on the same thread for every call (0 on the calling one), when run_tasks would run them so;
/// otherwise one after the other on the calling thread, the team solo. Returns when all are done,
/// rethrowing the error of the member that failed first.
void run_team(Team& team, const std::function<void(std::size_t)>& task);

/// The team of the calling thread's task in run_team, or nullptr; and its member index there.
Team* current_team();
std::size_t team_member();

/// The calling thread's scratch buffer for a team op, at least `bytes` bytes, 64-byte aligned. It
/// lives with the thread (until release_team_scratch), so the other members may read it until
/// this member's next barrier even when this member's task has ended in an exception.
void* team_scratch(std::size_t bytes);
void release_team_scratch() noexcept;

/// Makes OpenBLAS single-threaded, once, remembering its thread count as xtnn's default.
void claim_blas_threads();

}  // namespace xtnn::detail
