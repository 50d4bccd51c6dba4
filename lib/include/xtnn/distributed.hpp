#pragma once
// Training on several processes (and machines) with MPI, as Horovod and PyTorch's DDP do: every
// process (rank) holds the whole model, computes its share of each batch, and the gradients are
// summed across ranks before every optimizer step, so all ranks keep the same weights.
//
//     int main(int argc, char** argv) {
//         xtnn::distributed::Session mpi(argc, argv);
//         ... build and compile the model ...
//         model.fit(x, y, {.batch_size = 256, .epochs = 8, .distributed = mpi});
//     }
//
//     mpirun -np 4 --hostfile hosts ./train
//
// Without mpirun (or in a build without MPI) the Session is one rank and fit trains as always.
// README "Training on several machines" says what is guaranteed.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace xtnn::distributed {

/// How the ranks' gradients are summed.
enum class Reduction {
    /// xtnn's ring allreduce over MPI_Sendrecv (reduce-scatter, then allgather): each rank sends
    /// 2 (N - 1) / N of the data whatever N; each element is summed in an order fixed by the rank
    /// count, so every rank and every run with N ranks gets the same bits, over any MPI library.
    ring,
    /// MPI_Allreduce: the MPI library's algorithm and order (which can depend on message size,
    /// rank count and library version; it may know the network better than a ring).
    allreduce,
    /// Every rank receives every rank's values and adds them in rank order: the same bits on every
    /// rank and in every run with the same rank count, and for rank counts where xtnn's threads
    /// would cut the batch the same way, the same bits as one process with that many threads.
    /// Moves (ranks - 1) times the data of `allreduce`: for reproducibility, not for scale.
    fixed_order,
};

/// "ring", "allreduce" or "fixed_order".
std::string_view reduction_name(Reduction reduction);
/// The reduction of that name; an unknown name is an error that lists the known ones.
Reduction reduction_from_name(std::string_view name);

struct SessionOptions {
    Reduction reduction = Reduction::ring;
    /// Largest fused message of gradients, in bytes (Horovod's fusion buffer): one collective per
    /// bucket, never one per weight.
    std::size_t bucket_bytes = std::size_t(16) << 20;
    /// With Reduction::ring and every rank on one machine: the ranks exchange through memory they
    /// share (an MPI-3 shared window) instead of messages. The same owned ranges, the same order
    /// of sums and so the same bits as the ring over messages; fewer copies and no handshakes.
    bool shared_memory = true;
};

/// The processes of one job. Starts MPI when the program was started by an MPI launcher
/// (mpirun, mpiexec, srun with PMIx) and ends it when destroyed; otherwise one rank without MPI.
/// One Session per process, created on the main thread before any other thread uses MPI.
///
/// A Session destroyed while an exception unwinds, or abort(), ends every rank of the job
/// (MPI_Abort): a rank that stopped early would leave the others waiting in a collective. A
/// program that catches an error on one rank and gives up should call abort(), as
/// examples/mnist_mlp.cpp does; fit itself aborts the job when a rank fails during training, and
/// throws the same error on every rank when a rank's checks fail before it.
class Session {
public:
    Session(int& argc, char**& argv, SessionOptions options = {});
    explicit Session(SessionOptions options = {});
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    int rank() const { return rank_; }
    int size() const { return size_; }
    /// Rank 0: the one that prints progress and writes files during fit.
    bool is_chief() const { return rank_ == 0; }
    /// Ranks started on this machine (the launcher's local size); 1 without MPI.
    int local_size() const { return local_size_; }
    /// True when this build has MPI and the program runs under an MPI launcher.
    bool uses_mpi() const { return uses_mpi_; }
    const SessionOptions& options() const { return options_; }
    /// Changes the reduction or the bucket size; every rank must make the same change.
    void set_options(SessionOptions options);
    /// True when the ring goes through shared memory: SessionOptions::shared_memory and the ring
    /// are set, every rank is on this machine, and MPI could allocate the window (once it failed,
    /// false for good).
    bool uses_shared_memory() const;
    /// "rank 1 of 4": how errors name a rank.
    std::string describe(int rank) const;

    // Collectives: every rank must call the same ones in the same order.

    /// Sums `values` element-wise over all ranks, in place, as options().reduction says.
    void allreduce_sum(std::span<float> values) const;
    void allreduce_sum(std::span<double> values) const;
    /// The two halves of the ring, for an update split among the ranks (a distributed fit's
    /// optimizer step with Reduction::ring): sum_scatter leaves the complete sum of some ranges
    /// of `values` on this rank and returns them (ascending; together the ranks own every value
    /// once); after the owner has changed its ranges, allgather_owned copies every rank's ranges
    /// to all. Both cut `values` the same way for the same length and options; at least one value
    /// a rank. One rank owns everything.
    std::vector<std::pair<std::size_t, std::size_t>> sum_scatter(std::span<float> values) const;
    void allgather_owned(std::span<float> values) const;
    /// The same over several arrays taken as one buffer in their order (the same cut, the same
    /// bits): a fit sums its gradients and shares its weights where they are, without packing.
    std::vector<std::pair<std::size_t, std::size_t>> sum_scatter(std::span<const std::span<float>> parts) const;
    /// And every rank's `message` (the same count on every rank) into `messages`, in rank order,
    /// as allgather gives them: through shared memory, at the same barrier as the sums (a fit's
    /// step waits for the other ranks once less).
    std::vector<std::pair<std::size_t, std::size_t>> sum_scatter(std::span<const std::span<float>> parts,
                                                                 std::span<const double> message,
                                                                 std::vector<double>& messages) const;
    void allgather_owned(std::span<const std::span<float>> parts) const;
    /// True on every rank when `flag` is true on any.
    bool any(bool flag) const;
    /// Every rank's `values` (the same count on every rank), concatenated in rank order.
    std::vector<double> allgather(std::span<const double> values) const;
    /// Every rank's text, in rank order (lengths may differ).
    std::vector<std::string> allgather(std::string_view text) const;
    /// Rank `root`'s bytes on every rank (the count may differ: the root's wins).
    void broadcast(std::vector<std::uint8_t>& bytes, int root = 0) const;
    /// Rank `root`'s values written over `values` on every rank (the same count everywhere).
    void broadcast(std::span<float> values, int root = 0) const;

    /// Prints "xtnn: rank R of N on HOST: <message>" to stderr and ends every rank of the job
    /// with exit status `code`.
    [[noreturn]] void abort(std::string_view message, int code = 1) const;

private:
    struct SharedWindow;

    void start(int* argc, char*** argv);
    template <class T>
    void sum(std::span<T> values) const;
    template <class T>
    std::vector<std::pair<std::size_t, std::size_t>> scatter(std::span<const std::span<T>> parts,
                                                             std::span<const double> message = {},
                                                             std::vector<double>* messages = nullptr) const;
    template <class T>
    void gather(std::span<const std::span<T>> parts) const;

    SessionOptions options_;
    int rank_ = 0;
    int size_ = 1;
    int local_size_ = 1;
    bool uses_mpi_ = false;
    std::string host_;
    // The ranks of this machine's window, when they are all the job's ranks.
    std::unique_ptr<SharedWindow> shared_;
    // Where the ring over messages packs several arrays into one, kept from call to call: a fit
    // sums a model's gradients twice a step.
    mutable std::vector<std::byte> staging_;
};

/// True when this build of xtnn has MPI.
bool built_with_mpi();

}  // namespace xtnn::distributed
