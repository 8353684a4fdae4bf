#include "scheduler.h"

#include <thread>

#include "ferry/error.h"
#include "skip.h"

namespace ferry {

namespace {

constexpr auto kSpin = std::chrono::microseconds(50);  // consumer polls this long before sleeping

uint64_t ns_since(Scheduler::Clock::time_point t0) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Scheduler::Clock::now() - t0).count());
}

}  // namespace

Scheduler::Scheduler(const BatchPlan& plan, std::shared_ptr<BatchPool> pool, uint32_t prefetch,
                     bool ordered, bool drop_last, LoaderMetrics& metrics)
    : plan_(plan),
      pool_(std::move(pool)),
      prefetch_(prefetch),
      ordered_(ordered),
      drop_last_(drop_last),
      metrics_(metrics) {
  pool_->set_release_hook([this](BatchSlot* slot) {
    std::lock_guard lk(mu_);
    put_slot(slot);
  });
}

// The hook is cleared without holding mu_: a Batch released right now holds the hook's lock
// and waits for mu_ (lock order: hook, then mu_).
Scheduler::~Scheduler() { pool_->set_release_hook(nullptr); }

void Scheduler::put_slot(BatchSlot* slot) {
  // Workers can wait for a slot only if none was free and the pool cannot grow.
  const bool was_exhausted = pool_->exhausted();
  pool_->put(slot);
  if (was_exhausted) work_cv_.notify_all();
}

void Scheduler::start_epoch(uint64_t epoch, uint64_t first_batch,
                            std::map<uint64_t, uint64_t> borrowed) {
  std::lock_guard lk(mu_);
  if (stop_) throw ShutdownError("loader closed");
  start_epoch_locked(epoch, first_batch);
  borrowed_ = std::move(borrowed);
}

void Scheduler::start_epoch_locked(uint64_t epoch, uint64_t first_batch) {
  ++generation_;
  epoch_plan_ = plan_.epoch(epoch);
  next_claim_ = delivered_ = std::min(first_batch, epoch_plan_->num_batches);
  for (auto& [k, slot] : ready_) pool_->put(slot);
  ready_.clear();
  borrowed_.clear();
  work_cv_.notify_all();
}

void Scheduler::stop() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
    stop_flag_.store(true, std::memory_order_relaxed);
    for (auto& [k, slot] : ready_) pool_->put(slot);
    ready_.clear();
  }
  work_cv_.notify_all();
  ready_cv_.notify_all();
}

bool Scheduler::can_claim() const {
  const bool in_window = next_claim_ - delivered_ < prefetch_ || next_claim_ < lend_window_end_;
  return next_claim_ < epoch_plan_->num_batches && in_window && pool_->can_take();
}

bool Scheduler::claim(Task& task, BatchSlot*& slot) {
  std::unique_lock lk(mu_);
  work_cv_.wait(lk, [&] { return stop_ || can_claim(); });
  if (stop_) return false;
  slot = pool_->take();
  task = Task{next_claim_++, generation_, epoch_plan_};
  ++in_flight_;
  slot->claimed = Clock::now();
  return true;
}

void Scheduler::complete(const Task& task, BatchSlot* slot) {
  std::lock_guard lk(mu_);
  --in_flight_;
  if (task.generation != generation_ || stop_) {
    pool_->put(slot);
    work_cv_.notify_one();
    ready_cv_.notify_all();  // in_flight changed: a consumer may need to re-check capacity
    return;
  }
  ready_.emplace(task.index, slot);
  ready_events_.fetch_add(1, std::memory_order_release);
  ready_cv_.notify_all();
}

std::optional<Batch> Scheduler::next(std::optional<Clock::time_point> deadline) {
  const auto t0 = Clock::now();
  std::unique_lock lk(mu_);
  metrics_.record_queue(ready_.size(), prefetch_);
  while (true) {
    if (stop_) throw ShutdownError("loader closed");
    if (delivered_ ==
        epoch_plan_->num_batches) {  // end of epoch: the next call starts the next one
      start_epoch_locked(epoch_plan_->epoch + 1, 0);
      metrics_.add_wait(ns_since(t0));
      return Batch();
    }
    auto found =
        wait_ready(lk, deadline, ordered_ ? std::optional<uint64_t>(delivered_) : std::nullopt);
    if (!found) {
      metrics_.add_wait(ns_since(t0));
      return std::nullopt;
    }
    BatchSlot* slot = (*found)->second;
    const uint64_t k = (*found)->first;
    if (!slot->error) {
      apply_borrowed(*slot, k);
      if (ordered_ && slot->size < epoch_plan_->nominal_size(k) &&
          !borrow_from_following(lk, deadline, *slot, k)) {
        metrics_.add_wait(ns_since(t0));
        return std::nullopt;  // stays ready (and partly filled: borrowing resumes next call)
      }
    }
    ready_.erase(k);
    borrowed_.erase(k);
    ++delivered_;
    // The window moved. Sleeping workers are woken once half of it is free rather than for
    // every batch: each wake-up of a sleeping thread costs a cross-core interrupt (and on a
    // VM an exit), which at millions of samples per second is a large share of a batch.
    if (next_claim_ - delivered_ <= prefetch_ / 2) work_cv_.notify_all();
    metrics_.errors_skipped.fetch_add(slot->skipped, std::memory_order_relaxed);
    if (slot->error) {
      metrics_.add_wait(ns_since(t0));
      auto err = slot->error;
      slot->error = nullptr;
      pool_->put(slot);
      lk.unlock();
      std::rethrow_exception(err);
    }
    // Every sample skipped or lent to the batch before; or drop_last's short final batch.
    if (slot->size == 0 || (drop_last_ && slot->size < plan_.batch_size())) {
      pool_->put(slot);
      continue;
    }
    metrics_.add_wait(ns_since(t0));
    metrics_.add_latency(
        std::chrono::duration<double, std::milli>(Clock::now() - slot->claimed).count());
    metrics_.batches.fetch_add(1, std::memory_order_relaxed);
    metrics_.samples.fetch_add(slot->size, std::memory_order_relaxed);
    metrics_.bytes.fetch_add(slot->bytes, std::memory_order_relaxed);
    return pool_->wrap(slot);
  }
}

std::optional<Scheduler::ReadyIt> Scheduler::wait_ready(std::unique_lock<std::mutex>& lk,
                                                        std::optional<Clock::time_point> deadline,
                                                        std::optional<uint64_t> index) {
  bool spun = false;
  while (true) {
    auto it = index ? ready_.find(*index) : ready_.begin();
    if (it != ready_.end()) return it;
    if (stop_) throw ShutdownError("loader closed");
    if (in_flight_ == 0 && !pool_->can_take())
      throw CapacityError(
          "all " + std::to_string(pool_->total_slots()) + " batch buffers (" +
          std::to_string(pool_->total_slots() * pool_->slot_bytes()) +
          " bytes) are held by the consumer: release batches you no longer need, or "
          "raise memory_budget");
    if (!spun && spin_for_ready(lk, deadline)) {
      spun = true;
      continue;
    }
    if (!deadline) {
      ready_cv_.wait(lk);
    } else if (ready_cv_.wait_until(lk, *deadline) == std::cv_status::timeout) {
      it = index ? ready_.find(*index) : ready_.begin();
      if (it != ready_.end()) return it;
      return std::nullopt;
    }
  }
}

// Before sleeping, the consumer polls for up to kSpin with the lock released: a batch that is
// about to be ready is then picked up without a wake-up (see the note in next()). Returns
// false (no spin) when no worker is busy on a batch, since nothing could arrive then.
bool Scheduler::spin_for_ready(std::unique_lock<std::mutex>& lk,
                               std::optional<Clock::time_point> deadline) {
  if (in_flight_ == 0) return false;
  const uint64_t seen = ready_events_.load(std::memory_order_acquire);
  lk.unlock();
  auto until = Clock::now() + kSpin;
  if (deadline && *deadline < until) until = *deadline;
  // yield, not a pause loop: if the worker we wait for shares this core, it runs now.
  while (ready_events_.load(std::memory_order_acquire) == seen && Clock::now() < until)
    std::this_thread::yield();
  lk.lock();
  return true;
}

// on_error=skip leaves batches short; they are filled from the END of the following batch(es)
// (so only the lender shrinks, and only by what it lent). `borrowed_[j]` counts samples lent by
// batch j; it is part of the resume state, so a resumed run shrinks j the same way.
void Scheduler::apply_borrowed(BatchSlot& s, uint64_t k) {
  auto it = borrowed_.find(k);
  skip::apply_lent(s, it == borrowed_.end() ? 0 : it->second);
}

bool Scheduler::borrow_from_following(std::unique_lock<std::mutex>& lk,
                                      std::optional<Clock::time_point> deadline, BatchSlot& target,
                                      uint64_t k) {
  for (uint64_t j = k + 1; target.size < plan_.batch_size() && j < epoch_plan_->num_batches; ++j) {
    lend_window_end_ = j + 1;  // workers may claim j even if it lies past the prefetch window
    work_cv_.notify_all();
    auto found = wait_ready(lk, deadline, j);
    lend_window_end_ = 0;
    if (!found) return false;
    BatchSlot& lender = *(*found)->second;
    if (lender.error) return true;  // on_error=raise: the lender throws in its turn
    apply_borrowed(lender, j);
    const uint64_t take = std::min(plan_.batch_size() - target.size, lender.size);
    for (uint64_t i = lender.size - take; i < lender.size; ++i)
      skip::append_sample(target, lender, i);
    borrowed_[j] += take;
    apply_borrowed(lender, j);
  }
  return true;
}

uint64_t Scheduler::epoch() const {
  std::lock_guard lk(mu_);
  return epoch_plan_->epoch;
}
uint64_t Scheduler::delivered() const {
  std::lock_guard lk(mu_);
  return delivered_;
}
std::shared_ptr<const EpochPlan> Scheduler::current_plan() const {
  std::lock_guard lk(mu_);
  return epoch_plan_;
}
std::map<uint64_t, uint64_t> Scheduler::borrowed() const {
  std::lock_guard lk(mu_);
  return borrowed_;
}
uint64_t Scheduler::total_slots() const {
  std::lock_guard lk(mu_);
  return pool_->total_slots();
}

}  // namespace ferry
