#include "xtnn/distributed.hpp"

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <exception>

#include <fmt/format.h>

#include "distributed_reductions.hpp"
#include "xtnn/error.hpp"
#include "xtnn/ops.hpp"

namespace xtnn::distributed {

using namespace detail;

namespace {

// The variables MPI launchers give the processes they start: Open MPI's mpirun, PMIx (srun, Open
// MPI 5, MPICH with PMIx) and PMI (MPICH's and Intel MPI's hydra).
[[maybe_unused]] bool started_by_mpi_launcher() {
    for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) {
        if (std::getenv(name)) return true;
    }
    return false;
}

}  // namespace

#ifdef XTNN_WITH_MPI
// The ranks of one machine sum through memory they all map (an MPI-3 shared window) instead of
// messages: each rank writes into its own segment the chunks that others own, and each owner reads
// its chunk from every segment, adding in the ring's order; the new values go back the same way.
// No protocol copies, handshakes or page pinning, one barrier per bucket and half. Two buffers a
// segment take turns: a rank writes a buffer again only after every rank has reached the barrier
// of the other buffer's use, by which time every rank has finished reading this one.
struct Session::SharedWindow {
    explicit SharedWindow(MPI_Comm ranks) : comm(ranks) { MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN); }
    ~SharedWindow() {
        release();
        MPI_Comm_free(&comm);
    }
    SharedWindow(const SharedWindow&) = delete;
    SharedWindow& operator=(const SharedWindow&) = delete;

    // Room for `bytes` in each buffer. Collective: every rank asks for the same room. False on
    // every rank, from then on, when the window could not be had (no room left in the file
    // system MPI maps it from, an MPI without shared windows): the ring goes over messages.
    bool reserve(std::size_t bytes) {
        if (failed) return false;
        if (bytes <= capacity) return true;
        release();
        std::byte* own = nullptr;
        const std::size_t room = (bytes + 63) / 64 * 64;
        int allocated = MPI_Win_allocate_shared(MPI_Aint(2 * room), 1, MPI_INFO_NULL, comm, &own, &window) == MPI_SUCCESS;
        check(MPI_Allreduce(MPI_IN_PLACE, &allocated, 1, MPI_INT, MPI_LAND, comm), "MPI_Allreduce");
        if (!allocated) {
            // A window some ranks got stays until MPI_Finalize: freeing it would wait for the others.
            window = MPI_WIN_NULL;
            failed = true;
            return false;
        }
        capacity = room;
        int ranks = 0;
        MPI_Comm_size(comm, &ranks);
        segments.assign(std::size_t(ranks), nullptr);
        for (int r = 0; r < ranks; ++r) {
            MPI_Aint size = 0;
            int unit = 0;
            void* base = nullptr;
            check(MPI_Win_shared_query(window, r, &size, &unit, &base), "MPI_Win_shared_query");
            segments[std::size_t(r)] = static_cast<std::byte*>(base);
        }
        check(MPI_Win_lock_all(MPI_MODE_NOCHECK, window), "MPI_Win_lock_all");
        return true;
    }

    // Rank `rank`'s buffer of the current use, from byte `offset`.
    template <class T>
    T* buffer(int rank, std::size_t offset = 0) const {
        return reinterpret_cast<T*>(segments[std::size_t(rank)] + (uses % 2) * capacity + offset);
    }

    // After this, every rank sees what every rank wrote into its buffer of the current use.
    void publish() const {
        MPI_Win_sync(window);
        check(MPI_Barrier(comm), "MPI_Barrier");
        MPI_Win_sync(window);
    }

    void next() { ++uses; }

    void release() {
        if (window == MPI_WIN_NULL) return;
        MPI_Win_unlock_all(window);
        MPI_Win_free(&window);
        capacity = 0;
    }

    MPI_Comm comm;
    MPI_Win window = MPI_WIN_NULL;
    std::vector<std::byte*> segments;
    std::size_t capacity = 0;
    std::size_t uses = 0;
    bool failed = false;
};
#else
struct Session::SharedWindow {};
#endif

namespace {
constexpr std::pair<Reduction, std::string_view> reduction_names[] = {
    {Reduction::ring, "ring"}, {Reduction::allreduce, "allreduce"}, {Reduction::fixed_order, "fixed_order"}};
}  // namespace

std::string_view reduction_name(Reduction reduction) {
    for (const auto& [known, name] : reduction_names) {
        if (known == reduction) return name;
    }
    throw ValueError(fmt::format("distributed: no reduction numbered {}", int(reduction)));
}

Reduction reduction_from_name(std::string_view name) {
    std::string known;
    for (const auto& [reduction, known_name] : reduction_names) {
        if (known_name == name) return reduction;
        known += (known.empty() ? "" : ", ") + std::string(known_name);
    }
    throw ValueError(fmt::format("distributed: unknown reduction '{}'; known: {}", name, known));
}

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
    if (size_ > 1 && local_size_ == size_) {
        shared_ = std::make_unique<SharedWindow>(local);
    } else {
        MPI_Comm_free(&local);
    }
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
    shared_.reset();
    MPI_Finalize();
#endif
}

std::string Session::describe(int rank) const { return fmt::format("rank {} of {}", rank, size_); }

bool Session::uses_shared_memory() const {
#ifdef XTNN_WITH_MPI
    return shared_ && !shared_->failed && options_.shared_memory && options_.reduction == Reduction::ring;
#else
    return false;
#endif
}

void Session::allreduce_sum(std::span<float> values) const { sum(values); }

void Session::allreduce_sum(std::span<double> values) const { sum(values); }

std::vector<std::pair<std::size_t, std::size_t>> Session::sum_scatter(std::span<float> values) const {
    const std::span<float> whole[] = {values};
    return scatter<float>(whole);
}

void Session::allgather_owned(std::span<float> values) const {
    const std::span<float> whole[] = {values};
    gather<float>(whole);
}

std::vector<std::pair<std::size_t, std::size_t>> Session::sum_scatter(std::span<const std::span<float>> parts) const {
    return scatter(parts);
}

std::vector<std::pair<std::size_t, std::size_t>> Session::sum_scatter(std::span<const std::span<float>> parts,
                                                                      std::span<const double> message,
                                                                      std::vector<double>& messages) const {
    return scatter(parts, message, &messages);
}

void Session::allgather_owned(std::span<const std::span<float>> parts) const { gather(parts); }

template <class T>
void Session::sum([[maybe_unused]] std::span<T> values) const {
#ifdef XTNN_WITH_MPI
    if (size_ == 1) return;
    if (uses_shared_memory() && values.size() >= std::size_t(size_)) {
        const std::span<T> whole[] = {values};
        scatter<T>(whole);
        gather<T>(whole);
        return;
    }
    sum_over_ranks(values, size_, rank_, options_);
#endif
}

template <class T>
std::vector<std::pair<std::size_t, std::size_t>> Session::scatter(std::span<const std::span<T>> arrays,
                                                                  std::span<const double> message,
                                                                  std::vector<double>* messages) const {
    const Parts<T> parts(arrays);
    if (messages) messages->assign(message.begin(), message.end());
#ifdef XTNN_WITH_MPI
    if (size_ > 1) {
        if (parts.size() < std::size_t(size_)) {
            throw ValueError(fmt::format("distributed: sum_scatter of {} values over {} ranks", parts.size(), size_));
        }
        const Ring ring(size_, rank_);
        const auto buckets = ring_buckets<T>(parts.size(), size_, options_.bucket_bytes);
        std::vector<std::pair<std::size_t, std::size_t>> owned;
        for (const auto& [first, last] : buckets) {
            const auto [begin, end] = ring.owned(last - first);
            owned.emplace_back(first + begin, first + end);
        }
        std::vector<T> partial;
        // The message goes after the first bucket's values, at the first barrier.
        const std::size_t message_at = (largest<T>(buckets) * sizeof(T) + alignof(double) - 1) / alignof(double) * alignof(double);
        if (!uses_shared_memory() || !shared_->reserve(message_at + message.size_bytes())) {
            if (messages) *messages = allgather(message);
            const std::span<T> packed = staged<T>(staging_, parts.size());
            parts.copy_out(0, parts.size(), packed.data());
            for (const auto& [first, last] : buckets) ring.reduce_scatter(packed.subspan(first, last - first), partial);
            for (const auto& [begin, end] : owned) parts.copy_in(begin, end, packed.data() + begin);
            return owned;
        }
        for (std::size_t b = 0; b < buckets.size(); ++b) {
            const auto [first, last] = buckets[b];
            const std::size_t begin = owned[b].first, end = owned[b].second;
            // This rank's values of the chunks others own, at their places in the bucket.
            T* mine = shared_->buffer<T>(rank_);
            parts.copy_out(first, begin, mine);
            parts.copy_out(end, last, mine + (end - first));
            if (b == 0 && messages) std::copy(message.begin(), message.end(), shared_->buffer<double>(rank_, message_at));
            shared_->publish();
            if (b == 0 && messages) {
                messages->resize(message.size() * std::size_t(size_));
                for (int r = 0; r < size_; ++r) {
                    const double* theirs = shared_->buffer<double>(r, message_at);
                    std::copy(theirs, theirs + message.size(), messages->begin() + std::ptrdiff_t(std::size_t(r) * message.size()));
                }
            }
            // The ring's order: from the rank after this one around to this one, added last.
            const T* sum = shared_->buffer<T>((rank_ + 1) % size_) + (begin - first);
            if (size_ > 2) {
                partial.assign(sum, sum + (end - begin));
                for (int step = 2; step < size_; ++step) {
                    const T* addend = shared_->buffer<T>((rank_ + step) % size_) + (begin - first);
                    for (std::size_t j = 0; j < partial.size(); ++j) partial[j] = partial[j] + addend[j];
                }
                sum = partial.data();
            }
            parts.visit(begin, end, [&](T* own, std::size_t at, std::size_t n) {
                const T* other = sum + (at - begin);
                for (std::size_t j = 0; j < n; ++j) own[j] = other[j] + own[j];
            });
            shared_->next();
        }
        return owned;
    }
#endif
    return {{0, parts.size()}};
}

template <class T>
void Session::gather([[maybe_unused]] std::span<const std::span<T>> arrays) const {
#ifdef XTNN_WITH_MPI
    if (size_ == 1) return;
    const Parts<T> parts(arrays);
    const Ring ring(size_, rank_);
    const auto buckets = ring_buckets<T>(parts.size(), size_, options_.bucket_bytes);
    if (!uses_shared_memory() || !shared_->reserve(largest<T>(buckets) * sizeof(T))) {
        const std::span<T> packed = staged<T>(staging_, parts.size());
        parts.copy_out(0, parts.size(), packed.data());
        for (const auto& [first, last] : buckets) ring.allgather(packed.subspan(first, last - first));
        parts.copy_in(0, parts.size(), packed.data());
        return;
    }
    for (const auto& [first, last] : buckets) {
        const auto [begin, end] = ring.owned(last - first);
        parts.copy_out(first + begin, first + end, shared_->buffer<T>(rank_) + begin);
        shared_->publish();
        for (int r = 0; r < size_; ++r) {
            if (r == rank_) continue;
            const auto [their_begin, their_end] = ring.owned_by(r, last - first);
            parts.copy_in(first + their_begin, first + their_end, shared_->buffer<T>(r) + their_begin);
        }
        shared_->next();
    }
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
