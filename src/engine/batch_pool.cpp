// The batch pool: slots only (src/engine/batch_pool.h).
#include "batch_pool.h"

#include <algorithm>

#include "util.h"

namespace ferry {

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
  slot_bytes_ = slot_bytes_for(fields_, batch_size_, field_capacity_);
}

uint64_t BatchPool::slot_bytes_for(const std::vector<FieldSpec>& fields, uint64_t batch_size,
                                   const std::vector<uint64_t>& field_capacity) {
  uint64_t bytes = 0;
  for (size_t f = 0; f < fields.size(); ++f) {
    bytes += detail::align_up(field_capacity[f], 64);
    if (fields[f].kind == FieldKind::bytes) bytes += detail::align_up((batch_size + 1) * 8, 64);
  }
  return std::max<uint64_t>(bytes, 64);
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

void BatchPool::set_release_hook(std::function<void(BatchSlot*)> hook) {
  std::lock_guard lk(hook_mu_);
  hook_ = std::move(hook);
}

void BatchPool::release(BatchSlot* slot) noexcept {
  std::lock_guard lk(hook_mu_);
  if (hook_) {
    hook_(slot);
  } else {
    free_.push_back(slot);  // the owner is gone: nobody else touches the free list now
  }
}

}  // namespace ferry
