// Checks distributed::Session's sums on the ranks of an MPI job, for every reduction: buffers
// shorter than the rank count, uneven chunks, many buckets; each result compared with the exact
// sum (small whole numbers, exact in float) and with every other rank's bits. Exits with 1 and
// names the first wrong value otherwise.
//
//   mpirun -np 3 xtnn_collectives

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include <xtnn/xtnn.hpp>

namespace {

float value_of(int rank, std::size_t index) { return float((index * 7 + std::size_t(rank) * 3) % 11); }

// Values whose sums round differently in different orders.
float inexact_value_of(int rank, std::size_t index) {
    const std::uint32_t hash = std::uint32_t(index * 2654435761u) ^ std::uint32_t(rank * 40503 + 17);
    return float(hash % 100003) / 7.0f + 1e-3f * float(rank);
}

std::string bits_of(const std::vector<float>& values) {
    return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

}  // namespace

int main(int argc, char** argv) {
    using xtnn::distributed::Reduction;
    xtnn::distributed::Session session(argc, argv);
    int failures = 0;
    for (Reduction reduction : {Reduction::ring, Reduction::allreduce, Reduction::fixed_order}) {
        // Buckets of 64 bytes (16 floats) cut the longer buffers into many collectives.
        for (std::size_t bucket_bytes : {std::size_t(64), std::size_t(16) << 20}) {
            session.set_options({.reduction = reduction, .bucket_bytes = bucket_bytes});
            for (std::size_t n : {1, 2, 3, 7, 1000, 100003}) {
                // Thousands of 64-byte buckets, each a barrier or a message, add nothing but time.
                if (bucket_bytes == 64 && n > 1000) continue;
                std::vector<float> values(n);
                for (std::size_t i = 0; i < n; ++i) values[i] = value_of(session.rank(), i);
                session.allreduce_sum(std::span<float>(values));
                for (std::size_t i = 0; i < n && failures == 0; ++i) {
                    float expected = 0;
                    for (int r = 0; r < session.size(); ++r) expected += value_of(r, i);
                    if (values[i] != expected) {
                        std::fprintf(stderr, "%s: reduction %d, bucket %zu bytes, %zu values: element %zu is %g, expected %g\n",
                                     session.describe(session.rank()).c_str(), int(reduction), bucket_bytes, n, i,
                                     double(values[i]), double(expected));
                        ++failures;
                    }
                }
                const std::string bits(reinterpret_cast<const char*>(values.data()), n * sizeof(float));
                for (const auto& other : session.allgather(bits)) {
                    if (other != bits) {
                        std::fprintf(stderr, "reduction %d, %zu values: the ranks got different bits\n", int(reduction), n);
                        ++failures;
                    }
                }
            }
        }
    }
    // The ring through shared memory and over messages: the same order of sums, the same bits;
    // arrays taken as one buffer: the same cut and bits as that buffer.
    for (std::size_t bucket_bytes : {std::size_t(64), std::size_t(16) << 20}) {
        for (std::size_t n : {4, 7, 1000, 100003}) {
            if (bucket_bytes == 64 && n > 1000) continue;
            std::vector<float> original(n);
            for (std::size_t i = 0; i < n; ++i) original[i] = inexact_value_of(session.rank(), i);
            std::vector<std::string> results;
            for (bool shared_memory : {true, false}) {
                session.set_options({.reduction = Reduction::ring, .bucket_bytes = bucket_bytes, .shared_memory = shared_memory});
                std::vector<float> values = original;
                session.allreduce_sum(std::span<float>(values));
                results.push_back(bits_of(values));
                values = original;
                // Parts of 0, 1, 2, ... values, the last taking the rest.
                std::vector<std::span<float>> parts;
                for (std::size_t first = 0, length = 0; first < n; first += length++) {
                    parts.push_back(std::span<float>(values).subspan(first, std::min(length, n - first)));
                }
                // With every rank's message gathered on the way, as allgather gives them.
                const std::vector<double> message = {double(session.rank()), double(n) + 0.5};
                std::vector<double> messages;
                for (const auto& [first, last] : session.sum_scatter(std::span<const std::span<float>>(parts), message, messages)) {
                    for (std::size_t i = first; i < last; ++i) values[i] = values[i] * 2;
                }
                if (messages != session.allgather(message)) {
                    std::fprintf(stderr, "%s: sum_scatter of %zu values: the messages differ from allgather's\n",
                                 session.describe(session.rank()).c_str(), n);
                    ++failures;
                }
                session.allgather_owned(std::span<const std::span<float>>(parts));
                for (float& value : values) value = value / 2;
                results.push_back(bits_of(values));
            }
            for (std::size_t k = 1; k < results.size(); ++k) {
                if (results[k] != results[0]) {
                    std::fprintf(stderr, "%s: ring of %zu inexact values, bucket %zu bytes: result %zu differs from the first\n",
                                 session.describe(session.rank()).c_str(), n, bucket_bytes, k);
                    ++failures;
                }
            }
            for (const auto& other : session.allgather(results[0])) {
                if (other != results[0]) {
                    std::fprintf(stderr, "ring of %zu inexact values: the ranks got different bits\n", n);
                    ++failures;
                }
            }
        }
    }
    // The ring's halves apart: each rank doubles the sums it owns, then every rank gets them all.
    for (const std::size_t bucket_bytes : {std::size_t(64), std::size_t(16) << 20}) {
        for (const bool shared_memory : {true, false}) {
            session.set_options({.reduction = Reduction::ring, .bucket_bytes = bucket_bytes, .shared_memory = shared_memory});
            for (std::size_t n : {4, 7, 1000, 100003}) {
                if (bucket_bytes == 64 && n > 1000) continue;
                std::vector<float> values(n);
                for (std::size_t i = 0; i < n; ++i) values[i] = value_of(session.rank(), i);
                std::size_t owned_count = 0;
                for (const auto& [first, last] : session.sum_scatter(std::span<float>(values))) {
                    for (std::size_t i = first; i < last; ++i) values[i] *= 2;
                    owned_count += last - first;
                }
                session.allgather_owned(std::span<float>(values));
                std::size_t total_owned = 0;
                for (const auto& count : session.allgather(std::to_string(owned_count))) total_owned += std::stoul(count);
                if (total_owned != n) {
                    std::fprintf(stderr, "sum_scatter of %zu values: the ranks own %zu\n", n, total_owned);
                    ++failures;
                }
                for (std::size_t i = 0; i < n && failures == 0; ++i) {
                    float expected = 0;
                    for (int r = 0; r < session.size(); ++r) expected += value_of(r, i);
                    if (values[i] != 2 * expected) {
                        std::fprintf(stderr, "%s: sum_scatter + allgather_owned, bucket %zu bytes, %zu values: element %zu is %g, expected %g\n",
                                     session.describe(session.rank()).c_str(), bucket_bytes, n, i, double(values[i]), double(2 * expected));
                        ++failures;
                    }
                }
            }
        }
    }
    if (session.any(failures > 0)) return 1;
    session.set_options({});
    if (session.is_chief()) {
        std::printf("collectives: ok on %d ranks (the ring %s)\n", session.size(),
                    session.uses_shared_memory() ? "through shared memory" : "over messages");
    }
    return 0;
}
