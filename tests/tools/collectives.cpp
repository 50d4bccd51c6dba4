// Checks distributed::Session's sums on the ranks of an MPI job, for every reduction: buffers
// shorter than the rank count, uneven chunks, many buckets; each result compared with the exact
// sum (small whole numbers, exact in float) and with every other rank's bits. Exits with 1 and
// names the first wrong value otherwise.
//
//   mpirun -np 3 xtnn_collectives

#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include <xtnn/xtnn.hpp>

namespace {

float value_of(int rank, std::size_t index) { return float((index * 7 + std::size_t(rank) * 3) % 11); }

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
    // The ring's halves apart: each rank doubles the sums it owns, then every rank gets them all.
    for (std::size_t bucket_bytes : {std::size_t(64), std::size_t(16) << 20}) {
        session.set_options({.reduction = Reduction::ring, .bucket_bytes = bucket_bytes});
        for (std::size_t n : {4, 7, 1000, 100003}) {
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
    if (session.any(failures > 0)) return 1;
    if (session.is_chief()) std::printf("collectives: ok on %d ranks\n", session.size());
    return 0;
}
