#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <utility>

#include "batch_pool.h"
#include "ferry/error.h"
#include "util.h"

namespace ferry {

namespace {

constexpr uint64_t kHugePage = 2u << 20;

class DefaultAllocator final : public HostAllocator {
 public:
  explicit DefaultAllocator(bool huge_pages) : huge_pages_(huge_pages) {}
  void* allocate(uint64_t bytes) override {
    // Large buffers are 2 MiB aligned either way, so huge pages can back them when asked for.
    const uint64_t align = bytes >= kHugePage ? kHugePage : 64;
    void* p = std::aligned_alloc(align, detail::align_up(bytes, align));
    if (!p) throw std::bad_alloc();
    if (huge_pages_ && align == kHugePage)
      ::madvise(p, detail::align_up(bytes, align), MADV_HUGEPAGE);
    return p;
  }
  void deallocate(void* p, uint64_t) noexcept override { std::free(p); }
  std::string_view name() const override { return huge_pages_ ? "host (huge pages)" : "host"; }

 private:
  bool huge_pages_;
};

}  // namespace

std::shared_ptr<HostAllocator> default_host_allocator(bool huge_pages) {
  static auto plain = std::make_shared<DefaultAllocator>(false);
  static auto huge = std::make_shared<DefaultAllocator>(true);
  return huge_pages ? huge : plain;
}

BatchPool::BatchPool(std::vector<FieldSpec> fields, uint64_t batch_size,
                     std::vector<uint64_t> field_capacity, uint64_t max_slots,
                     std::shared_ptr<HostAllocator> allocator)
    : fields_(std::move(fields)),
      batch_size_(batch_size),
      field_capacity_(std::move(field_capacity)),
      max_slots_(max_slots),
      allocator_(std::move(allocator)) {
  for (size_t f = 0; f < fields_.size(); ++f) {
    field_offset_.push_back(slot_bytes_);
    slot_bytes_ += detail::align_up(field_capacity_[f], 64);
    if (fields_[f].kind == FieldKind::bytes)
      slot_bytes_ += detail::align_up((batch_size_ + 1) * 8, 64);
  }
  slot_bytes_ = std::max<uint64_t>(slot_bytes_, 64);
}

BatchPool::~BatchPool() {
  for (auto& s : slots_) allocator_->deallocate(s->memory, s->memory_bytes);
}

BatchSlot* BatchPool::allocate_slot() {
  auto slot = std::make_unique<BatchSlot>();
  slot->memory = allocator_->allocate(slot_bytes_);
  slot->memory_bytes = slot_bytes_;
  auto* base = static_cast<uint8_t*>(slot->memory);
  for (size_t f = 0; f < fields_.size(); ++f) {
    FieldBuffer fb;
    fb.spec = &fields_[f];
    fb.data = base + field_offset_[f];
    fb.capacity = field_capacity_[f];
    if (fields_[f].kind == FieldKind::bytes)
      fb.offsets = reinterpret_cast<uint64_t*>(base + field_offset_[f] +
                                               detail::align_up(field_capacity_[f], 64));
    slot->fields.push_back(fb);
  }
  slot->sample_ids.reserve(batch_size_);
  slots_.push_back(std::move(slot));
  return slots_.back().get();
}

void BatchPool::reserve(uint64_t n) {
  while (slots_.size() < std::min(n, max_slots_)) free_.push_back(allocate_slot());
}

BatchSlot* BatchPool::take() {
  if (!free_.empty()) {
    BatchSlot* s = free_.back();
    free_.pop_back();
    return s;
  }
  return slots_.size() < max_slots_ ? allocate_slot() : nullptr;
}

void BatchPool::put(BatchSlot* slot) { free_.push_back(slot); }

void BatchPool::release(BatchSlot* slot) noexcept {
  bool was_exhausted;
  {
    std::lock_guard lk(mu);
    // Workers can be waiting for a slot only if none was free and the pool cannot grow.
    was_exhausted = free_.empty() && slots_.size() >= max_slots_;
    free_.push_back(slot);
  }
  if (was_exhausted) work_cv.notify_all();
}

// ---- Batch ----

Batch::Batch(Batch&& o) noexcept
    : pool_(std::move(o.pool_)), slot_(std::exchange(o.slot_, nullptr)) {}
Batch& Batch::operator=(Batch&& o) noexcept {
  if (this != &o) {
    release();
    pool_ = std::move(o.pool_);
    slot_ = std::exchange(o.slot_, nullptr);
  }
  return *this;
}
Batch::~Batch() { release(); }

void Batch::release() noexcept {
  if (slot_) pool_->release(slot_);
  slot_ = nullptr;
  pool_.reset();
}

uint64_t Batch::size() const { return slot_ ? slot_->size : 0; }
uint64_t Batch::epoch() const { return slot_ ? slot_->epoch : 0; }
uint64_t Batch::index() const { return slot_ ? slot_->index : 0; }
std::span<const uint64_t> Batch::sample_ids() const {
  return slot_ ? std::span<const uint64_t>(slot_->sample_ids) : std::span<const uint64_t>();
}
size_t Batch::num_fields() const { return slot_ ? slot_->fields.size() : 0; }

const FieldBuffer& Batch::field(size_t i) const {
  if (!slot_ || i >= slot_->fields.size())
    throw InvalidArgument("batch field " + std::to_string(i) + " out of range");
  return slot_->fields[i];
}

const FieldBuffer& Batch::field(std::string_view name) const {
  if (slot_)
    for (const auto& f : slot_->fields)
      if (f.spec->name == name) return f;
  throw InvalidArgument("batch has no field '" + std::string(name) + "'");
}

std::vector<uint64_t> Batch::shape(size_t i) const {
  const FieldBuffer& f = field(i);
  if (f.offsets) return {f.offsets[slot_->size]};
  std::vector<uint64_t> s = {slot_->size};
  s.insert(s.end(), f.spec->shape.begin(), f.spec->shape.end());
  return s;
}

}  // namespace ferry
