#include "xtnn/distributed.hpp"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>

#include <fmt/format.h>

#include "xtnn/error.hpp"
#include "xtnn/ops.hpp"

#ifdef XTNN_WITH_MPI
// MPI's C interface only: the C++ bindings (removed in MPI-3) would need their own library.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace xtnn::distributed {

namespace {

// The variables MPI launchers give the processes they start: Open MPI's mpirun, PMIx (srun, Open
// MPI 5, MPICH with PMIx) and PMI (MPICH's and Intel MPI's hydra).
[[maybe_unused]] bool started_by_mpi_launcher() {
    for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) {
        if (std::getenv(name)) return true;
    }
    return false;
}

#ifdef XTNN_WITH_MPI

void check(int status, const char* call) {
    if (status == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(status, text, &length);
    throw Error(fmt::format("distributed: {} failed: {}", call, std::string(text, std::size_t(length))));
}

template <class T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <>
MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }

// MPI counts are ints: long arrays go in pieces of at most `limit` elements.
template <class T, class Body>
void in_pieces(std::span<T> values, std::size_t limit, Body body) {
    limit = std::clamp<std::size_t>(limit, 1, std::size_t(INT_MAX));
    for (std::size_t first = 0; first < values.size(); first += limit) {
        body(values.subspan(first, std::min(limit, values.size() - first)));
    }
}

// Ring allreduce (reduce-scatter, then allgather, around the ranks in order): every rank sends
// and receives 2 (N - 1) / N of the buffer, whatever N, and every chunk is summed in one fixed
// order by one rank and then copied to the others, so all ranks get the same bits, in every run
// with N ranks, whichever MPI library carries the messages. Chunk c of a piece of n values is
// [c n / N, (c + 1) n / N); after the reduce-scatter, rank r holds the sum of chunk (r + 1) % N.
class Ring {
public:
    Ring(int ranks, int rank) : ranks_(ranks), rank_(rank) {}

    std::pair<std::size_t, std::size_t> owned(std::size_t n) const {
        const std::size_t chunk = std::size_t((rank_ + 1) % ranks_);
        return {first(chunk, n), first(chunk + 1, n)};
    }

    template <class T>
    void reduce_scatter(std::span<T> values, std::vector<T>& received) const {
        received.resize(values.size() / std::size_t(ranks_) + 1);
        for (int step = 0; step + 1 < ranks_; ++step) {
            const std::size_t receive = at(-step - 1);
            exchange(values, at(-step), receive, received.data());
            T* sum = values.data() + first(receive, values.size());
            for (std::size_t j = 0, n = size(receive, values.size()); j < n; ++j) sum[j] = received[j] + sum[j];
        }
    }

    template <class T>
    void allgather(std::span<T> values) const {
        for (int step = 0; step + 1 < ranks_; ++step) {
            const std::size_t receive = at(-step);
            exchange(values, at(1 - step), receive, values.data() + first(receive, values.size()));
        }
    }

private:
    std::size_t first(std::size_t chunk, std::size_t n) const { return chunk * n / std::size_t(ranks_); }
    std::size_t size(std::size_t chunk, std::size_t n) const { return first(chunk + 1, n) - first(chunk, n); }
    std::size_t at(int step) const { return std::size_t(((rank_ + step) % ranks_ + ranks_) % ranks_); }

    // Sends chunk `send` to the next rank while receiving chunk `receive` from the previous one.
    template <class T>
    void exchange(std::span<T> values, std::size_t send, std::size_t receive, T* into) const {
        const int right = (rank_ + 1) % ranks_, left = (rank_ + ranks_ - 1) % ranks_;
        check(MPI_Sendrecv(values.data() + first(send, values.size()), int(size(send, values.size())), mpi_type<T>(), right, 0,
                           into, int(size(receive, values.size())), mpi_type<T>(), left, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE),
              "MPI_Sendrecv");
    }

    int ranks_, rank_;
};

// The pieces a ring works on: buckets of at most `bucket_bytes`, each at least one value a rank
// (so that no chunk is empty), each fitting an int count.
template <class T>
std::vector<std::pair<std::size_t, std::size_t>> ring_buckets(std::size_t n, int ranks, std::size_t bucket_bytes) {
    const std::size_t bucket = std::clamp<std::size_t>(bucket_bytes / sizeof(T), std::size_t(ranks), std::size_t(INT_MAX));
    std::vector<std::pair<std::size_t, std::size_t>> buckets;
    for (std::size_t first = 0; first < n; first += bucket) buckets.emplace_back(first, std::min(n, first + bucket));
    // A last bucket of fewer values than ranks joins the one before (or is the only one).
    if (buckets.size() > 1 && buckets.back().second - buckets.back().first < std::size_t(ranks)) {
        buckets[buckets.size() - 2].second = n;
        buckets.pop_back();
    }
    return buckets;
}

// Sums of fewer values than ranks, where a ring would send empty chunks: gathered, added in rank order.
template <class T>
void sum_in_rank_order(std::span<T> values, int ranks) {
    std::vector<T> gathered(values.size() * std::size_t(ranks));
    check(MPI_Allgather(values.data(), int(values.size()), mpi_type<T>(), gathered.data(), int(values.size()), mpi_type<T>(),
                        MPI_COMM_WORLD),
          "MPI_Allgather");
    for (std::size_t j = 0; j < values.size(); ++j) {
        T sum = gathered[j];
        for (int r = 1; r < ranks; ++r) sum += gathered[std::size_t(r) * values.size() + j];
        values[j] = sum;
    }
}

template <class T>
void sum_over_ranks(std::span<T> values, int ranks, int rank, const SessionOptions& options) {
    if (options.reduction == Reduction::ring) {
        if (values.size() < std::size_t(ranks)) return sum_in_rank_order(values, ranks);
        const Ring ring(ranks, rank);
        std::vector<T> received;
        for (const auto& [first, last] : ring_buckets<T>(values.size(), ranks, options.bucket_bytes)) {
            ring.reduce_scatter(values.subspan(first, last - first), received);
            ring.allgather(values.subspan(first, last - first));
        }
        return;
    }
    const std::size_t bucket = std::max<std::size_t>(1, options.bucket_bytes / sizeof(T));
    if (options.reduction == Reduction::allreduce) {
        in_pieces(values, bucket, [](std::span<T> piece) {
            check(MPI_Allreduce(MPI_IN_PLACE, piece.data(), int(piece.size()), mpi_type<T>(), MPI_SUM, MPI_COMM_WORLD),
                  "MPI_Allreduce");
        });
        return;
    }
    std::vector<T> gathered;
    in_pieces(values, std::max<std::size_t>(1, std::min(bucket, std::size_t(INT_MAX) / std::size_t(ranks))),
              [&](std::span<T> piece) {
                  const std::size_t n = piece.size();
                  gathered.resize(n * std::size_t(ranks));
                  check(MPI_Allgather(piece.data(), int(n), mpi_type<T>(), gathered.data(), int(n), mpi_type<T>(),
                                      MPI_COMM_WORLD),
                        "MPI_Allgather");
                  std::copy(gathered.begin(), gathered.begin() + std::ptrdiff_t(n), piece.begin());
                  for (int r = 1; r < ranks; ++r) {
                      const T* addend = gathered.data() + std::size_t(r) * n;
                      for (std::size_t j = 0; j < n; ++j) piece[j] += addend[j];
                  }
              });
}

#endif

}  // namespace

bool built_with_mpi() {
#ifdef XTNN_WITH_MPI
    return true;
#else
    return false;
#endif
}

Session::Session(int& argc, char**& argv, SessionOptions options) : options_(options) { start(&argc, &argv); }

Session::Session(SessionOptions options) : options_(options) { start(nullptr, nullptr); }

void Session::set_options(SessionOptions options) {
    if (options.bucket_bytes < sizeof(double)) {
        throw ValueError(fmt::format("distributed::Session: bucket_bytes must be at least {}, got {}", sizeof(double),
                                     options.bucket_bytes));
    }
    options_ = options;
}

void Session::start([[maybe_unused]] int* argc, [[maybe_unused]] char*** argv) {
    set_options(options_);
#ifdef XTNN_WITH_MPI
    if (!started_by_mpi_launcher()) return;
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) throw ValueError("distributed::Session: MPI is already initialized (one Session per process)");
    // Collectives come from whichever thread calls fit, one at a time.
    int provided = 0;
    check(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
    uses_mpi_ = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local);
    MPI_Comm_size(local, &local_size_);
    MPI_Comm_free(&local);
    char name[MPI_MAX_PROCESSOR_NAME];
    int length = 0;
    MPI_Get_processor_name(name, &length);
    host_.assign(name, std::size_t(length));
    // The ranks on one machine share its cores: each takes its share of xtnn's default threads.
    if (local_size_ > 1) ops::set_num_threads(std::max(1, ops::num_threads() / local_size_));
#endif
}

Session::~Session() {
#ifdef XTNN_WITH_MPI
    if (!uses_mpi_) return;
    // MPI_Finalize waits for the other ranks, which may be waiting in a collective this rank
    // will never join.
    if (std::uncaught_exceptions() > 0 && size_ > 1) abort("an exception ended this rank's program; ending the job");
    MPI_Finalize();
#endif
}

std::string Session::describe(int rank) const { return fmt::format("rank {} of {}", rank, size_); }

void Session::allreduce_sum(std::span<float> values) const {
#ifdef XTNN_WITH_MPI
    if (size_ > 1) sum_over_ranks(values, size_, rank_, options_);
#else
    (void)values;
#endif
}

void Session::allreduce_sum(std::span<double> values) const {
#ifdef XTNN_WITH_MPI
    if (size_ > 1) sum_over_ranks(values, size_, rank_, options_);
#else
    (void)values;
#endif
}

std::vector<std::pair<std::size_t, std::size_t>> Session::sum_scatter(std::span<float> values) const {
#ifdef XTNN_WITH_MPI
    if (size_ > 1) {
        if (values.size() < std::size_t(size_)) {
            throw ValueError(fmt::format("distributed: sum_scatter of {} values over {} ranks", values.size(), size_));
        }
        const Ring ring(size_, rank_);
        std::vector<float> received;
        std::vector<std::pair<std::size_t, std::size_t>> owned;
        for (const auto& [first, last] : ring_buckets<float>(values.size(), size_, options_.bucket_bytes)) {
            ring.reduce_scatter(values.subspan(first, last - first), received);
            const auto [begin, end] = ring.owned(last - first);
            owned.emplace_back(first + begin, first + end);
        }
        return owned;
    }
#endif
    return {{0, values.size()}};
}

void Session::allgather_owned(std::span<float> values) const {
#ifdef XTNN_WITH_MPI
    if (size_ > 1) {
        const Ring ring(size_, rank_);
        for (const auto& [first, last] : ring_buckets<float>(values.size(), size_, options_.bucket_bytes)) {
            ring.allgather(values.subspan(first, last - first));
        }
    }
#else
    (void)values;
#endif
}

bool Session::any(bool flag) const {
#ifdef XTNN_WITH_MPI
    if (size_ > 1) {
        int value = flag ? 1 : 0;
        check(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD), "MPI_Allreduce");
        return value != 0;
    }
#endif
    return flag;
}

std::vector<double> Session::allgather(std::span<const double> values) const {
    std::vector<double> gathered(values.begin(), values.end());
#ifdef XTNN_WITH_MPI
    if (size_ > 1) {
        if (values.size() > std::size_t(INT_MAX) / std::size_t(size_)) {
            throw ValueError(fmt::format("distributed: allgather of {} values per rank is too long", values.size()));
        }
        gathered.resize(values.size() * std::size_t(size_));
        check(MPI_Allgather(values.data(), int(values.size()), MPI_DOUBLE, gathered.data(), int(values.size()), MPI_DOUBLE,
                            MPI_COMM_WORLD),
              "MPI_Allgather");
    }
#endif
    return gathered;
}

std::vector<std::string> Session::allgather(std::string_view text) const {
#ifdef XTNN_WITH_MPI
    if (size_ > 1) {
        long long length = static_cast<long long>(text.size());
        std::vector<long long> lengths(std::size_t(size_), 0);
        check(MPI_Allgather(&length, 1, MPI_LONG_LONG, lengths.data(), 1, MPI_LONG_LONG, MPI_COMM_WORLD), "MPI_Allgather");
        std::vector<int> counts, offsets;
        long long total = 0;
        for (long long l : lengths) {
            offsets.push_back(int(total));
            counts.push_back(int(l));
            total += l;
            if (total > INT_MAX) throw ValueError("distributed: allgather of more than 2 GB of text");
        }
        std::string all(std::size_t(total), '\0');
        check(MPI_Allgatherv(text.data(), int(text.size()), MPI_CHAR, all.data(), counts.data(), offsets.data(), MPI_CHAR,
                             MPI_COMM_WORLD),
              "MPI_Allgatherv");
        std::vector<std::string> texts;
        for (int r = 0; r < size_; ++r) texts.push_back(all.substr(std::size_t(offsets[std::size_t(r)]), std::size_t(counts[std::size_t(r)])));
        return texts;
    }
#endif
    return {std::string(text)};
}

void Session::broadcast(std::vector<std::uint8_t>& bytes, [[maybe_unused]] int root) const {
#ifdef XTNN_WITH_MPI
    if (size_ > 1) {
        unsigned long long size = bytes.size();
        check(MPI_Bcast(&size, 1, MPI_UNSIGNED_LONG_LONG, root, MPI_COMM_WORLD), "MPI_Bcast");
        bytes.resize(std::size_t(size));
        in_pieces(std::span<std::uint8_t>(bytes), std::size_t(INT_MAX), [&](std::span<std::uint8_t> piece) {
            check(MPI_Bcast(piece.data(), int(piece.size()), MPI_UNSIGNED_CHAR, root, MPI_COMM_WORLD), "MPI_Bcast");
        });
    }
#else
    (void)bytes;
#endif
}

void Session::broadcast(std::span<float> values, [[maybe_unused]] int root) const {
#ifdef XTNN_WITH_MPI
    if (size_ > 1) {
        in_pieces(values, std::size_t(INT_MAX), [&](std::span<float> piece) {
            check(MPI_Bcast(piece.data(), int(piece.size()), MPI_FLOAT, root, MPI_COMM_WORLD), "MPI_Bcast");
        });
    }
#else
    (void)values;
#endif
}

void Session::abort(std::string_view message, int code) const {
    const std::string where = host_.empty() ? describe(rank_) : describe(rank_) + " on " + host_;
    std::fprintf(stderr, "xtnn: %s: %.*s\n", where.c_str(), int(message.size()), message.data());
    std::fflush(stderr);
#ifdef XTNN_WITH_MPI
    if (uses_mpi_) MPI_Abort(MPI_COMM_WORLD, code);
#endif
    std::exit(code);
}

}  // namespace xtnn::distributed
