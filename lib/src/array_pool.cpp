#include "xtnn/array_pool.hpp"

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

namespace xtnn::detail {

namespace {

// Bounds: enough slots for the arrays of a step of the bench/ models; a cap on the bytes kept per
// thread, and arrays above 64 MiB go back to the system (glibc maps those separately anyway).
constexpr std::size_t pool_slots = 256;
constexpr std::size_t max_pooled_bytes = std::size_t(256) << 20;
constexpr std::size_t max_array_bytes = std::size_t(64) << 20;
// The demand table: sizes the thread asked the pool for (open addressing on the element count).
constexpr std::size_t demand_slots = 1024;
constexpr std::size_t demand_probes = 8;
constexpr std::uint32_t max_open_requests = 64;

template <class T>
thread_local bool pool_destroyed = false;

template <class T>
class StoragePool {
public:
    StoragePool() {
        counts_.reserve(pool_slots);
        buffers_.reserve(pool_slots);
    }
    ~StoragePool() { pool_destroyed<T> = true; }
    StoragePool(const StoragePool&) = delete;
    StoragePool& operator=(const StoragePool&) = delete;

    std::optional<ArrayStorage<T>> take(std::size_t count) {
        if (Demand* demand = demand_for(count, true); demand && demand->open < max_open_requests) ++demand->open;
        for (std::size_t i = counts_.size(); i-- > 0;) {
            if (counts_[i] != count) continue;
            std::optional<ArrayStorage<T>> buffer(std::move(buffers_[i]));
            buffers_[i] = std::move(buffers_.back());
            counts_[i] = counts_.back();
            buffers_.pop_back();
            counts_.pop_back();
            bytes_ -= count * sizeof(T);
            return buffer;
        }
        return std::nullopt;
    }

    // Within the reserved capacity, and a buffer moves as two pointers: nothing here throws.
    bool keep(ArrayStorage<T>& buffer) noexcept {
        const std::size_t count = buffer.size();
        const std::size_t bytes = count * sizeof(T);
        if (count == 0 || bytes > max_array_bytes || bytes_ + bytes > max_pooled_bytes) return false;
        Demand* demand = demand_for(count, false);
        if (!demand || demand->open == 0) return false;
        --demand->open;
        if (buffers_.size() < pool_slots) {
            buffers_.push_back(std::move(buffer));
            counts_.push_back(count);
        } else {
            // Full: the new buffer takes a slot in turn (the old one is freed), so sizes no longer
            // asked for cannot hold the pool forever.
            const std::size_t slot = next_replaced_++ % pool_slots;
            bytes_ -= counts_[slot] * sizeof(T);
            ArrayStorage<T> replaced = std::move(buffers_[slot]);
            buffers_[slot] = std::move(buffer);
            counts_[slot] = count;
        }
        bytes_ += bytes;
        return true;
    }

    void release() noexcept {
        buffers_.clear();
        counts_.clear();
        bytes_ = 0;
    }

private:
    // A buffer is kept only against a request of its size that is still open (taken, hit or miss,
    // and not yet given back): a thread keeps at most what it asks for. Arrays allocated elsewhere
    // (an xtensor expression) and freed into the pool would otherwise fill it to its cap, size by
    // size, with buffers nobody takes again.
    struct Demand {
        std::size_t count = 0;
        std::uint32_t open = 0;
    };

    Demand* demand_for(std::size_t count, bool insert) noexcept {
        const std::size_t home = (count * 0x9E3779B97F4A7C15ull) >> 54;  // 10 bits: demand_slots
        Demand* free_slot = nullptr;  // unused, or a size with no open request: reusable
        for (std::size_t probe = 0; probe < demand_probes; ++probe) {
            Demand& slot = demand_[(home + probe) % demand_slots];
            if (slot.count == count) return &slot;
            if (!free_slot && slot.open == 0) free_slot = &slot;
        }
        if (!insert || !free_slot) return nullptr;  // all eight taken: that size is not pooled for now
        *free_slot = Demand{count, 0};
        return free_slot;
    }

    std::array<Demand, demand_slots> demand_{};
    std::vector<std::size_t> counts_;  // counts_[i] == buffers_[i].size(), scanned without touching the buffers
    std::vector<ArrayStorage<T>> buffers_;
    std::size_t bytes_ = 0;
    std::size_t next_replaced_ = 0;
};

template <class T>
StoragePool<T>& this_threads_pool() {
    thread_local StoragePool<T> pool;
    return pool;
}

}  // namespace

template <class T>
ArrayStorage<T> take_storage(std::size_t count) {
    if (!pool_destroyed<T>) {
        if (auto buffer = this_threads_pool<T>().take(count)) return std::move(*buffer);
    }
    return ArrayStorage<T>(count);
}

template <class T>
void recycle(xt::xarray<T>& array) noexcept {
    // A kept buffer has moved out: the shape must follow (zero elements need no allocation).
    if (!pool_destroyed<T> && this_threads_pool<T>().keep(array.storage())) array.resize(Shape{0});
}

template <class T>
void release_pooled_arrays() noexcept {
    if (!pool_destroyed<T>) this_threads_pool<T>().release();
}

template ArrayStorage<float> take_storage<float>(std::size_t);
template ArrayStorage<double> take_storage<double>(std::size_t);
template void recycle<float>(xt::xarray<float>&) noexcept;
template void recycle<double>(xt::xarray<double>&) noexcept;
template void release_pooled_arrays<float>() noexcept;
template void release_pooled_arrays<double>() noexcept;

}  // namespace xtnn::detail
