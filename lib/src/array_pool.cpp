#include "xtnn/array_pool.hpp"

#include <optional>
#include <vector>

namespace xtnn::detail {

namespace {

// Bounds: enough slots for the arrays of a step of the bench/ models; a cap on the bytes kept per
// thread, and arrays above 64 MiB go back to the system (glibc maps those separately anyway).
constexpr std::size_t pool_slots = 256;
constexpr std::size_t max_pooled_bytes = std::size_t(256) << 20;
constexpr std::size_t max_array_bytes = std::size_t(64) << 20;

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

private:
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

template ArrayStorage<float> take_storage<float>(std::size_t);
template ArrayStorage<double> take_storage<double>(std::size_t);
template void recycle<float>(xt::xarray<float>&) noexcept;
template void recycle<double>(xt::xarray<double>&) noexcept;

}  // namespace xtnn::detail
