#pragma once
/// \file loader.h
/// \brief The loader engine: source → order → read → transform → collate → consumer.
///
/// Worker threads each fill whole batches, straight into pooled buffers (no per-sample queue,
/// no extra copy); a bounded window (`prefetch`) limits how far they run ahead of the consumer,
/// and the pool's size is bounded by `memory_budget`. Batches come out in epoch order for any
/// thread count (unless `ordered` is false), each sample exactly once per epoch per rank.
///
/// Threads: next(), set_epoch(), state() and metrics() may be called from one consumer thread
/// (metrics() and report() from any). Destruction stops and joins every worker promptly, also
/// while the consumer holds batches or workers wait on the pool.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ferry/batch.h"
#include "ferry/metrics.h"
#include "ferry/order.h"
#include "ferry/pipeline.h"
#include "ferry/reader.h"

namespace ferry {

/// Writable views of one sample's fields inside its batch slot, handed to a transform.
struct SampleSlot {
  uint64_t sample_id;
  struct Field {
    const FieldSpec* spec;
    uint8_t* data;
    uint64_t size;
  };
  std::span<Field> fields;  ///< in the loader's field order
};

/// Runs on worker threads, once per sample, after the sample's bytes were copied into its slot:
/// transforms them in place. Throwing marks the sample failed (see OnError).
using Transform = std::function<void(SampleSlot&)>;

enum class OnError {
  raise,  ///< next() throws SampleError for the batch holding the failed sample (after every
          ///< earlier batch)
  /// The sample is dropped and counted; its batch is filled up from the end of the following
  /// batch (ordered mode; unordered batches come out short). The epoch's last batch comes out
  /// shorter by the number of samples skipped (and is dropped if drop_last).
  skip,
};

/// One earlier run of a partially consumed epoch, for an elastic resume (docs/distributed.md):
/// its world size and how many samples of its shard each of its ranks had consumed.
struct ElasticStep {
  uint32_t world_size = 1;
  std::vector<uint64_t> consumed;  ///< per rank: a prefix of that rank's shard, in samples
  bool operator==(const ElasticStep&) const = default;
};

/// Where the loader is: enough to resume and yield exactly the batches an uninterrupted run would.
/// The JSON form is versioned (`version`); a state written by an older ferry loads in a newer one.
struct LoaderState {
  static constexpr uint32_t kVersion = 3;
  uint32_t version = kVersion;
  uint64_t epoch = 0;
  uint64_t next_batch = 0;  ///< batches of `epoch` already delivered
  /// on_error=skip: samples batch j (>= next_batch) already lent to the batch before it.
  std::map<uint64_t, uint64_t> borrowed;
  // Fingerprint (kept by BatchPlan): a resume with different settings or data would not yield
  // the same batches, so any difference is refused, naming what differs.
  uint64_t seed = 0;
  OrderKind order = OrderKind::quasi_random;
  uint32_t window_pages = 4;
  uint64_t batch_size = 0;
  uint32_t rank = 0, world_size = 1;
  bool drop_last = false;
  ShardRemainder remainder = ShardRemainder::pad;  ///< version >= 2
  bool skip_errors = false;                        ///< on_error == skip; version >= 2
  uint64_t num_samples = 0;
  uint64_t file_xxh64 = 0;      ///< the file's header checksum
  uint64_t data_xxh64 = 0;      ///< every page's checksum (the data's identity); version >= 2
  std::string fields;           ///< loaded fields, comma-separated; version >= 2
  uint64_t pipeline_xxh64 = 0;  ///< the op pipeline's canonical form; version >= 2
  /// version >= 3: earlier runs of `epoch` on other world sizes, oldest first (empty unless the
  /// epoch was resumed elastically). `epoch`'s samples are what they left, re-sharded.
  std::vector<ElasticStep> elastic;

  std::string to_json() const;
  /// Parses to_json()'s output (any version); throws InvalidArgument.
  static LoaderState from_json(const std::string& json);
  /// A JSON list of states (every rank's, for LoaderOptions::resume_ranks); throws InvalidArgument.
  static std::vector<LoaderState> list_from_json(const std::string& json);
  bool operator==(const LoaderState&) const = default;
};

struct LoaderOptions {
  uint64_t batch_size = 256;
  OrderKind order = OrderKind::quasi_random;
  uint64_t seed = 0;
  uint32_t window_pages = 4;  ///< quasi_random's shuffle window
  uint32_t rank = 0, world_size = 1;
  ShardRemainder remainder = ShardRemainder::pad;
  bool drop_last = false;
  uint32_t num_threads = 0;  ///< 0: one per core but one (left to the consumer), at least 1
  /// Batches workers may run ahead of the consumer. 0: derived — from memory_budget if given,
  /// else 2 × threads (at least 4) capped so the pool stays near 128 MiB (at least 2).
  uint32_t prefetch = 0;
  /// Bytes of batch memory the pool may ever hold. 0: the pool starts at prefetch + 2 batches
  /// and may grow to 1 GiB (or prefetch + 2 batches, if larger) while the consumer holds batches.
  uint64_t memory_budget = 0;
  OnError on_error = OnError::raise;
  bool ordered = true;  ///< false: deliver batches as they complete (still exactly once)
  std::vector<std::string> fields;  ///< fields to load (empty: all), in this order
  /// Per-field op chains (pipeline.h), run after each field is read (and decoded). The batch
  /// holds each chain's output spec. Empty: fields pass through as stored.
  PipelineSpec pipeline;
  /// Runs after the pipeline, on the sample's output fields in place (a legacy whole-sample op).
  Transform transform;
  Backend backend = Backend::auto_select;
  /// http(s):// paths: headers, timeouts, retries, disk cache (remote.h).
  RemoteOptions remote{};
  std::optional<LoaderState> resume;
  /// Elastic resume: every rank's state of an earlier run of any world size (one per rank, any
  /// order). This run yields each sample that run had not consumed in its epoch exactly once
  /// across this run's ranks, then normal epochs. Exclusive with `resume`.
  std::vector<LoaderState> resume_ranks;
  std::shared_ptr<HostAllocator> allocator;  ///< null: default_host_allocator(huge_pages)
  bool huge_pages = false;     ///< MADV_HUGEPAGE on pool buffers (see default_host_allocator)
  std::string device = "cpu";  ///< "cpu", "cuda", "cuda:N" (needs the CUDA build)
  /// Pin worker threads to this NUMA node (their first touch then places the pool's pages there).
  /// -1: no pinning. A no-op on single-node machines.
  int numa_node = -1;
  /// When the file is not (mostly) in the page cache, tell the kernel which pages the batch
  /// entering the prefetch window will read (madvise/fadvise WILLNEED, from the known order).
  bool os_hints = true;
};

class Loader {
 public:
  /// Opens `path` and starts the workers. Throws InvalidArgument for bad options (the message
  /// says what to change), IoError/FormatError for a bad file.
  Loader(const std::string& path, LoaderOptions options);
  Loader(std::shared_ptr<Reader> reader, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// The next batch of the current epoch, or an empty Batch at the end of the epoch (the
  /// following call starts the next epoch). Throws SampleError (on_error=raise), CapacityError
  /// (the consumer holds every buffer the budget allows), or TimeoutError (the timed overload;
  /// the loader stays usable).
  Batch next();
  Batch next(std::chrono::milliseconds timeout);

  /// The next batch, or nullopt when none is ready within `timeout` (the loader stays usable;
  /// the end of an epoch is an empty Batch, as for next()). For polling loops and waits that
  /// must check something else in between (Ctrl-C, a copier's stop flag).
  std::optional<Batch> try_next(std::chrono::milliseconds timeout);

  /// Stops the workers and wakes every thread blocked in next()/try_next(), which then throw
  /// ShutdownError("loader closed"). Idempotent; may be called from any thread. Batches the
  /// consumer holds stay valid. Every later call but close() and metrics() throws ShutdownError.
  void close();

  /// Restarts at the first batch of epoch `epoch` (discarding work in flight).
  void set_epoch(uint64_t epoch);
  uint64_t epoch() const;
  /// Batches per epoch for this rank.
  uint64_t batches_per_epoch() const;
  /// Samples per epoch for this rank (after sharding, before drop_last).
  uint64_t samples_per_epoch() const;
  LoaderState state() const;

  Metrics metrics() const;
  /// metrics().to_table().
  std::string report() const;
  void reset_metrics();

  const Reader& reader() const;
  /// The loaded fields as batches hold them (after each field's op chain), in batch order.
  const std::vector<FieldSpec>& fields() const;
  /// Bytes of each field's buffer in one batch (an exact upper bound; what the pools hold).
  const std::vector<uint64_t>& field_capacities() const;
  const LoaderOptions& options() const;
  /// The order of the current epoch for this rank (sample ids), a copy.
  std::vector<uint64_t> epoch_order() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry
