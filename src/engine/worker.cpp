#include "worker.h"

#include "ferry/codec.h"
#include "ferry/error.h"
#include "ferry/os.h"
#include "skip.h"

namespace ferry {

namespace {

using Clock = std::chrono::steady_clock;

uint64_t ns_since(Clock::time_point t0) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
}

}  // namespace

Worker::Worker(const Reader& reader, const BatchLayout& layout, const LoaderOptions& options,
               LoaderMetrics& metrics, Scheduler& scheduler, bool hint_ahead)
    : reader_(reader),
      file_(reader.layout()),
      layout_(layout),
      opt_(options),
      scheduler_(scheduler),
      hint_ahead_(hint_ahead),
      file_base_(reader.source().view(0, reader.source().size())),
      read_timer_(metrics.add_stage("read", "add threads or use a faster backend")),
      decode_timer_(metrics.add_stage("decode",
                                      "store the field uncompressed or with a faster "
                                      "codec (lz4), or add threads")),
      ops_timer_(metrics.add_stage("ops",
                                   "make the op chain cheaper (crop before converting, smaller "
                                   "outputs) or add threads")),
      transform_timer_(
          metrics.add_stage("transform", "make the transform cheaper or add threads")) {
  for (size_t f = 0; f < layout_.fields.size(); ++f)
    if (layout_.processed(f)) processed_.push_back(f);
}

void Worker::run() {
  try {
    pin_current_thread_to_node(opt_.numa_node);
  } catch (const std::exception&) {
    // Placement is an optimisation: a kernel that refuses it leaves the worker unpinned.
  }
  WorkerContext ctx;
  Task task;
  BatchSlot* slot = nullptr;
  while (scheduler_.claim(task, slot)) {
    if (hint_ahead_) hint_batch(*task.plan, task.index + scheduler_.prefetch(), ctx.hints);
    fill(*slot, task, ctx);
    scheduler_.complete(task, slot);
  }
}

void Worker::fill(BatchSlot& s, const Task& t, WorkerContext& ctx) {
  const auto ids = t.plan->batch(t.index);
  s.epoch = t.plan->epoch;
  s.index = t.index;
  s.error = nullptr;
  s.sample_ids.assign(ids.begin(), ids.end());
  s.size = s.sample_ids.size();
  s.skipped = 0;
  s.truncated = 0;
  ctx.keep.assign(s.size, 1);

  const auto t0 = Clock::now();
  set_stored_offsets(s);
  size_staging(s, ctx);
  if (file_base_) {
    fetch_from_view(s, ctx);
  } else {
    fetch_through_source(s, ctx);
  }
  read_timer_.add(ns_since(t0), s.size);
  if (!processed_.empty() && !s.error) run_pipelines(s, ctx, t.plan->epoch);
  if (opt_.transform && !s.error) run_transform(s, ctx);
  if (!s.error) skip::compact(s, ctx.keep);
  s.count_bytes();
}

// Each processed field's chain, sample by sample. A bytes output is appended at the field's
// running offset (its size is known only once the chain ran); a failed sample leaves an empty
// value, which compaction then drops.
void Worker::run_pipelines(BatchSlot& s, WorkerContext& ctx, uint64_t epoch) {
  const auto t0 = Clock::now();
  uint64_t decode_ns = 0;
  const size_t P = processed_.size();
  for (size_t f : processed_)
    if (s.fields[f].offsets) s.fields[f].offsets[0] = 0;
  for (uint64_t i = 0; i < s.size && !s.error; ++i) {
    for (size_t p = 0; p < P; ++p) {
      const size_t f = processed_[p];
      FieldBuffer& fb = s.fields[f];
      uint8_t* dst = fb.offsets ? fb.data + fb.offsets[i] : fb.data + i * fb.spec->fixed_bytes();
      const uint64_t room = fb.offsets ? fb.capacity - fb.offsets[i] : fb.spec->fixed_bytes();
      uint64_t written = 0;
      if (ctx.keep[i]) {
        try {
          written =
              process_field(s, i, f, ctx.inputs[i * P + p], {dst, room}, ctx, epoch, decode_ns);
        } catch (const std::exception& e) {
          if (!sample_failed(s, i, "field '" + fb.spec->name + "'", e, ctx)) break;
          written = 0;
        }
      }
      if (fb.offsets) fb.offsets[i + 1] = fb.offsets[i] + written;
    }
  }
  decode_timer_.add(decode_ns, s.size);
  ops_timer_.add(ns_since(t0) - decode_ns, s.size);
}

uint64_t Worker::process_field(const BatchSlot& s, uint64_t i, size_t f,
                               std::span<const uint8_t> stored, std::span<uint8_t> dst,
                               WorkerContext& ctx, uint64_t epoch, uint64_t& decode_ns) {
  const uint64_t id = s.sample_ids[i];
  const size_t ff = layout_.file_field[f];
  ctx.arena.reset();
  std::span<const uint8_t> value = stored;
  if (layout_.compressed[f]) {  // decode first: into the slot if nothing follows, else scratch
    const auto t0 = Clock::now();
    const uint64_t n = file_.decoded_length(id, ff);
    if (!layout_.pipelines[f] && n > dst.size())
      throw FormatError("decoded length " + std::to_string(n) + " exceeds the batch buffer");
    std::span<uint8_t> out = layout_.pipelines[f] ? ctx.arena.span(n) : dst.first(n);
    try {
      codec_by_id(file_.field_codec(ff)).decode(stored, out);
    } catch (const FormatError& e) {  // the caller names the file, sample and field
      throw FormatError(std::string("decode failed: ") + e.what());
    }
    decode_ns += ns_since(t0);
    if (!layout_.pipelines[f]) return n;
    value = out;
  }
  SampleRng rng(opt_.seed, epoch, id);
  // One stream per field: a chain on another field does not shift this one's numbers.
  for (size_t skip = 0; skip < f; ++skip) rng.next();
  SampleContext sc{id, epoch, rng, ctx.arena};
  return layout_.pipelines[f]->run(value, dst, sc);
}

void Worker::run_transform(BatchSlot& s, WorkerContext& ctx) {
  const auto t0 = Clock::now();
  std::vector<SampleSlot::Field> views(layout_.fields.size());
  for (uint64_t i = 0; i < s.size && !s.error; ++i) {
    if (!ctx.keep[i]) continue;
    for (size_t f = 0; f < layout_.fields.size(); ++f) {
      const FieldBuffer& fb = s.fields[f];
      const uint64_t size = fb.offsets ? fb.offsets[i + 1] - fb.offsets[i] : fb.spec->fixed_bytes();
      views[f] = {fb.spec, stored_dst(s, f, i), size};
    }
    SampleSlot slot{s.sample_ids[i], views};
    try {
      opt_.transform(slot);
    } catch (const std::exception& e) {
      sample_failed(s, i, "transform failed", e, ctx);
    }
  }
  transform_timer_.add(ns_since(t0), s.size);
}

bool Worker::sample_failed(BatchSlot& s, uint64_t i, std::string_view what, const std::exception& e,
                           WorkerContext& ctx) {
  const uint64_t id = s.sample_ids[i];
  if (opt_.on_error == OnError::raise) {
    s.error = std::make_exception_ptr(SampleError("ferry file '" + reader_.path() + "': sample " +
                                                      std::to_string(id) + ": " +
                                                      std::string(what) + ": " + e.what(),
                                                  id));
    return false;
  }
  ctx.keep[i] = 0;
  ++s.skipped;
  return true;
}

}  // namespace ferry
