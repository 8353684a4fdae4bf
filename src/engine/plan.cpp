#include "plan.h"

#include <xxhash.h>

#include <algorithm>

#include "ferry/error.h"

namespace ferry {

std::span<const uint64_t> EpochPlan::batch(uint64_t k) const {
  const uint64_t begin = std::min<uint64_t>(k * batch_size, order.size());
  const uint64_t end = std::min<uint64_t>(begin + batch_size, order.size());
  return std::span<const uint64_t>(order).subspan(begin, end - begin);
}

uint64_t EpochPlan::nominal_size(uint64_t k) const { return batch(k).size(); }

uint64_t data_identity(const Layout& layout) {
  const auto& pages = layout.pages();
  return XXH64(pages.data(), pages.size() * sizeof(PageInfo), layout.header_xxh64());
}

BatchPlan::BatchPlan(const Layout& layout, const LoaderOptions& options,
                     const std::string& pipeline_canonical)
    : layout_(layout), options_(options) {
  LoaderState& f = fingerprint_;
  f.seed = options.seed;
  f.order = options.order;
  f.window_pages = options.window_pages;
  f.batch_size = options.batch_size;
  f.rank = options.rank;
  f.world_size = options.world_size;
  f.drop_last = options.drop_last;
  f.remainder = options.remainder;
  f.skip_errors = options.on_error == OnError::skip;
  f.num_samples = layout.num_samples();
  f.file_xxh64 = layout.header_xxh64();
  f.data_xxh64 = data_identity(layout);
  for (const auto& name : options.fields) f.fields += (f.fields.empty() ? "" : ",") + name;
  f.pipeline_xxh64 = XXH64(pipeline_canonical.data(), pipeline_canonical.size(), 0);
}

std::shared_ptr<const EpochPlan> BatchPlan::epoch(uint64_t e) const {
  auto plan = std::make_shared<EpochPlan>();
  plan->epoch = e;
  plan->batch_size = options_.batch_size;
  const OrderOptions oo{options_.order, options_.seed, options_.window_pages};
  const auto full = epoch_order(oo, e, layout_.sample_pages());
  plan->order = shard_order(full, options_.rank, options_.world_size, options_.remainder);
  const uint64_t n = plan->order.size();
  plan->num_batches = options_.drop_last ? n / options_.batch_size
                                         : (n + options_.batch_size - 1) / options_.batch_size;
  return plan;
}

LoaderState BatchPlan::state(uint64_t epoch, uint64_t next_batch) const {
  LoaderState s = fingerprint_;
  s.epoch = epoch;
  s.next_batch = next_batch;
  return s;
}

namespace {

template <class T>
void compare(std::vector<std::string>& diffs, const char* what, const T& saved, const T& mine) {
  if (!(saved == mine))
    diffs.push_back(std::string(what) + " differs (saved " + saved + ", this loader " + mine + ")");
}
std::string text(uint64_t v) { return std::to_string(v); }
std::string text(uint32_t v) { return std::to_string(v); }
std::string text(bool v) { return v ? "true" : "false"; }
std::string quoted(std::string_view v) { return "'" + std::string(v) + "'"; }

}  // namespace

void BatchPlan::check_resume(const LoaderState& s) const {
  const LoaderState& m = fingerprint_;
  std::vector<std::string> diffs;
  compare(diffs, "seed", text(s.seed), text(m.seed));
  compare(diffs, "order", quoted(order_name(s.order)), quoted(order_name(m.order)));
  compare(diffs, "window_pages", text(s.window_pages), text(m.window_pages));
  compare(diffs, "batch_size", text(s.batch_size), text(m.batch_size));
  compare(diffs, "rank", text(s.rank), text(m.rank));
  compare(diffs, "world_size", text(s.world_size), text(m.world_size));
  compare(diffs, "drop_last", text(s.drop_last), text(m.drop_last));
  compare(diffs, "num_samples", text(s.num_samples), text(m.num_samples));
  compare(diffs, "file header checksum", text(s.file_xxh64), text(m.file_xxh64));
  if (s.version >= 2) {  // a version-1 state recorded none of these
    auto rem = [](ShardRemainder r) { return quoted(r == ShardRemainder::pad ? "pad" : "drop"); };
    compare(diffs, "remainder", rem(s.remainder), rem(m.remainder));
    auto err = [](bool skip) { return quoted(skip ? "skip" : "raise"); };
    compare(diffs, "on_error", err(s.skip_errors), err(m.skip_errors));
    compare(diffs, "data (page checksums: another file or other contents)", text(s.data_xxh64),
            text(m.data_xxh64));
    compare(diffs, "fields", quoted(s.fields), quoted(m.fields));
    compare(diffs, "pipeline (ops or their arguments)", text(s.pipeline_xxh64),
            text(m.pipeline_xxh64));
  }
  if (!diffs.empty()) {
    std::string msg = "cannot resume: the state was saved with other settings or data: ";
    for (size_t i = 0; i < diffs.size(); ++i) msg += (i ? "; " : "") + diffs[i];
    throw InvalidArgument(msg);
  }
  const auto plan = epoch(s.epoch);
  if (s.next_batch > plan->num_batches)
    throw InvalidArgument("cannot resume: next_batch " + std::to_string(s.next_batch) +
                          " is past the " + std::to_string(plan->num_batches) +
                          " batches of epoch " + std::to_string(s.epoch));
  for (const auto& [j, n] : s.borrowed)
    if (j >= plan->num_batches || n > plan->nominal_size(j))
      throw InvalidArgument("cannot resume: 'borrowed' entry " + std::to_string(j) + ":" +
                            std::to_string(n) + " is outside epoch " + std::to_string(s.epoch));
}

}  // namespace ferry
