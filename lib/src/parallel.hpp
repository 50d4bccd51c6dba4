#pragma once
// xtnn's own threads: ops::num_threads() - 1 workers that run tasks next to the calling thread.
// OpenBLAS runs on one thread inside them, so the two never compete for the cores.

#include <cstddef>
#include <functional>

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

/// Makes OpenBLAS single-threaded, once, remembering its thread count as xtnn's default.
void claim_blas_threads();

}  // namespace xtnn::detail
