#pragma once
// How Session sums over the ranks without a shared window: the ring over MPI messages and the
// other reductions (README "Training on several machines"), and the arrays they take as one
// buffer. Internal: included by distributed.cpp only.

#include <algorithm>
#include <climits>
#include <cstddef>
#include <span>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "xtnn/distributed.hpp"
#include "xtnn/error.hpp"

#ifdef XTNN_WITH_MPI
// MPI's C interface only: the C++ bindings (removed in MPI-3) would need their own library.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace xtnn::distributed::detail {

// Several arrays seen as one buffer, in order.
template <class T>
class Parts {
public:
    explicit Parts(std::span<const std::span<T>> parts) : parts_(parts), offsets_{0} {
        for (const auto& part : parts) offsets_.push_back(offsets_.back() + part.size());
    }

    std::size_t size() const { return offsets_.back(); }

    // Calls visit(pointer, index) for each run of [begin, end) that lies in one array.
    template <class Visit>
    void visit(std::size_t begin, std::size_t end, Visit visit) const {
        auto part = std::size_t(std::upper_bound(offsets_.begin(), offsets_.end(), begin) - offsets_.begin()) - 1;
        for (; begin < end; ++part) {
            const std::size_t stop = std::min(end, offsets_[part + 1]);
            if (stop > begin) visit(parts_[part].data() + (begin - offsets_[part]), begin, stop - begin);
            begin = stop;
        }
    }

    void copy_out(std::size_t begin, std::size_t end, T* to) const {
        visit(begin, end, [&](const T* from, std::size_t at, std::size_t n) { std::copy(from, from + n, to + (at - begin)); });
    }

    void copy_in(std::size_t begin, std::size_t end, const T* from) const {
        visit(begin, end, [&](T* to, std::size_t at, std::size_t n) {
            std::copy(from + (at - begin), from + (at - begin) + n, to);
        });
    }

private:
    std::span<const std::span<T>> parts_;
    std::vector<std::size_t> offsets_;
};

#ifdef XTNN_WITH_MPI

inline void check(int status, const char* call) {
    if (status == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(status, text, &length);
    throw Error(fmt::format("distributed: {} failed: {}", call, std::string(text, std::size_t(length))));
}

template <class T>
MPI_Datatype mpi_type();
template <>
inline MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <>
inline MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }

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

    std::pair<std::size_t, std::size_t> owned(std::size_t n) const { return owned_by(rank_, n); }
    std::pair<std::size_t, std::size_t> owned_by(int rank, std::size_t n) const {
        const std::size_t chunk = std::size_t((rank + 1) % ranks_);
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

template <class T>
std::size_t largest(const std::vector<std::pair<std::size_t, std::size_t>>& buckets) {
    std::size_t length = 0;
    for (const auto& [first, last] : buckets) length = std::max(length, last - first);
    return length;
}

// `bytes` as room for n values of T (its old contents are not kept).
template <class T>
std::span<T> staged(std::vector<std::byte>& bytes, std::size_t n) {
    bytes.resize(std::max(bytes.size(), n * sizeof(T)));
    return {reinterpret_cast<T*>(bytes.data()), n};
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

}  // namespace xtnn::distributed::detail
