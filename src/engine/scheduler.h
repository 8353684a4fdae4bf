#pragma once
// Internal: the Scheduler owns the loader's one lock, its condition variables and every piece
// of scheduling state: the epoch's plan, the prefetch window, claims in flight, the ready map,
// skip's lending book and the stop flag. Workers claim() a batch and a free slot, fill it with
// the lock released, and complete() it; the consumer's next() takes ready batches in order.
//
// Window: a worker may claim batch k only while k - delivered < prefetch (or k is needed to
// fill a short batch under on_error=skip), and only with a free slot. Stop: set under the lock
// and tested in every wait predicate, so no wake-up is missed.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "batch_pool.h"
#include "loader_metrics.h"
#include "plan.h"

namespace ferry {

/// One unit of work: batch `index` of `plan`'s epoch, made for scheduling generation
/// `generation` (work of an older generation — before a set_epoch — is discarded).
struct Task {
  uint64_t index = 0, generation = 0;
  std::shared_ptr<const EpochPlan> plan;
};

class Scheduler {
 public:
  using Clock = std::chrono::steady_clock;

  Scheduler(const BatchPlan& plan, std::shared_ptr<BatchPool> pool, uint32_t prefetch, bool ordered,
            bool drop_last, LoaderMetrics& metrics);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  /// Restarts at batch `first_batch` of `epoch`, discarding ready and in-flight work.
  void start_epoch(uint64_t epoch, uint64_t first_batch,
                   std::map<uint64_t, uint64_t> borrowed = {});
  /// Wakes every waiter; later calls of next() throw ShutdownError. Idempotent.
  void stop();
  /// Lock-free, for workers between chunks of a batch.
  bool stopping() const { return stop_flag_.load(std::memory_order_relaxed); }

  // ---- workers ----
  /// Blocks until a batch may be claimed (then fills `task` and `slot`) or stop (false).
  bool claim(Task& task, BatchSlot*& slot);
  /// Hands a filled slot back: ready for the consumer, or discarded if the epoch moved on.
  void complete(const Task& task, BatchSlot* slot);

  // ---- consumer ----
  /// The next batch (an empty Batch ends the epoch and starts the next one), or nullopt when
  /// `deadline` passed first. Throws SampleError (the batch's error), CapacityError, ShutdownError.
  std::optional<Batch> next(std::optional<Clock::time_point> deadline);

  // ---- queries (any thread) ----
  uint64_t epoch() const;
  uint64_t delivered() const;
  std::shared_ptr<const EpochPlan> current_plan() const;
  std::map<uint64_t, uint64_t> borrowed() const;
  uint64_t total_slots() const;
  uint32_t prefetch() const { return prefetch_; }

 private:
  bool can_claim() const;
  void start_epoch_locked(uint64_t epoch, uint64_t first_batch);
  void put_slot(BatchSlot* slot);  // pool.put + wake a worker if the pool was exhausted
  using ReadyIt = std::map<uint64_t, BatchSlot*>::iterator;
  std::optional<ReadyIt> wait_ready(std::unique_lock<std::mutex>& lk,
                                    std::optional<Clock::time_point> deadline,
                                    std::optional<uint64_t> index);
  bool spin_for_ready(std::unique_lock<std::mutex>& lk, std::optional<Clock::time_point> deadline);
  /// on_error=skip: fills a short batch from the end of the following ones. False: timed out.
  bool borrow_from_following(std::unique_lock<std::mutex>& lk,
                             std::optional<Clock::time_point> deadline, BatchSlot& target,
                             uint64_t k);
  void apply_borrowed(BatchSlot& s, uint64_t k);

  const BatchPlan& plan_;
  std::shared_ptr<BatchPool> pool_;
  const uint32_t prefetch_;
  const bool ordered_, drop_last_;
  LoaderMetrics& metrics_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;   // workers: a slot was freed, the window moved, or stop
  std::condition_variable ready_cv_;  // consumer: a batch became ready, or stop
  // Guarded by mu_:
  std::shared_ptr<const EpochPlan> epoch_plan_;
  uint64_t next_claim_ = 0;  // next batch index a worker will take
  uint64_t delivered_ = 0;   // batches handed to the consumer this epoch
  uint64_t in_flight_ = 0;   // claimed, not yet complete (any generation)
  uint64_t generation_ = 0;  // bumped by start_epoch
  std::map<uint64_t, BatchSlot*> ready_;
  std::map<uint64_t, uint64_t> borrowed_;  // skip: samples lent by batch j to the one before
  uint64_t lend_window_end_ = 0;           // while borrowing: workers may claim below this too
  bool stop_ = false;
  std::atomic<bool> stop_flag_{false};
  std::atomic<uint64_t> ready_events_{0};  // bumped per ready batch: the consumer spins on it
};

}  // namespace ferry
