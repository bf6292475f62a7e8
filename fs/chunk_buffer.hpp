#pragma once
/// `chunk_buffer`: the chunks one `chunk_store::read` returned, as views into one page-aligned
/// buffer the object owns (the store reads the packs into it with O_DIRECT, so there is no copy
/// out of the page cache and no copy into per-chunk strings).
///
/// Reuse: a later `read` into the same object reuses the buffer when it is large enough, which is
/// the point — on a VM, pages the process has just been given cost a fault each (often a host
/// fault too) on first touch, and a reused buffer has none. Keep one per reading thread or per
/// pipeline slot.
///
/// Lifetime: the views of `chunks()` / `operator[]` are valid until the next `read` into this
/// object (or its destruction). Threads: one thread at a time; the bytes may be read from any
/// thread once the `read` that filled them returned.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <utility>
#include <vector>

namespace shoal::fs {

class chunk_buffer {
public:
  chunk_buffer() = default;
  ~chunk_buffer() { std::free(data_); }
  chunk_buffer(const chunk_buffer&) = delete;
  chunk_buffer& operator=(const chunk_buffer&) = delete;
  chunk_buffer(chunk_buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), capacity_bytes_(std::exchange(other.capacity_bytes_, 0)),
      chunks_(std::move(other.chunks_)), bytes_(std::exchange(other.bytes_, 0)) {}
  chunk_buffer& operator=(chunk_buffer&& other) noexcept {
    if (this != &other) {
      std::free(data_);
      data_ = std::exchange(other.data_, nullptr);
      capacity_bytes_ = std::exchange(other.capacity_bytes_, 0);
      chunks_ = std::move(other.chunks_);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }

  /// The chunks of the last read, in the order their ids were given.
  const std::vector<std::string_view>& chunks() const noexcept { return chunks_; }
  std::string_view operator[](size_t i) const { return chunks_[i]; }
  size_t size() const noexcept { return chunks_.size(); }
  /// Payload bytes of the chunks (not the buffer's size, which includes alignment padding).
  uint64_t bytes() const noexcept { return bytes_; }
  size_t capacity_bytes() const noexcept { return capacity_bytes_; }

  /// For the store: forgets the chunks and returns `size_bytes` of 4 KiB-aligned memory (the old
  /// buffer when it is large enough, its contents undefined). nullptr when out of memory.
  char* prepare(size_t size_bytes) {
    chunks_.clear();
    bytes_ = 0;
    if (size_bytes > capacity_bytes_ || data_ == nullptr) {
      std::free(data_);
      data_ = nullptr;
      capacity_bytes_ = 0;
      size_t want = std::max<size_t>(size_bytes, 4096);
      void* p = nullptr;
      if (posix_memalign(&p, 4096, want) != 0)
        return nullptr;
      data_ = static_cast<char*>(p);
      capacity_bytes_ = want;
    }
    return data_;
  }
  /// For the store: appends a view into the memory `prepare` returned.
  void add(std::string_view chunk) {
    chunks_.push_back(chunk);
    bytes_ += chunk.size();
  }

private:
  char* data_ = nullptr;
  size_t capacity_bytes_ = 0;
  std::vector<std::string_view> chunks_;
  uint64_t bytes_ = 0;
};

} // namespace shoal::fs
