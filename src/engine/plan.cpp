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

namespace {

uint64_t shard_length(uint64_t n, uint32_t world_size, ShardRemainder remainder) {
  return remainder == ShardRemainder::pad ? (n + world_size - 1) / world_size : n / world_size;
}

}  // namespace

std::vector<uint64_t> remaining_after(std::span<const uint64_t> list, const ElasticStep& step,
                                      ShardRemainder remainder) {
  if (step.world_size == 0 || step.consumed.size() != step.world_size)
    throw InvalidArgument("elastic state: a step of world_size " + std::to_string(step.world_size) +
                          " lists " + std::to_string(step.consumed.size()) + " ranks");
  const uint64_t n = list.size();
  const uint64_t per_rank = shard_length(n, step.world_size, remainder);
  std::vector<bool> taken(n, false);
  for (uint32_t r = 0; r < step.world_size; ++r) {
    if (step.consumed[r] > per_rank)
      throw InvalidArgument("elastic state: rank " + std::to_string(r) + " consumed " +
                            std::to_string(step.consumed[r]) + " samples of a " +
                            std::to_string(per_rank) + "-sample shard");
    // A padded shard wraps to the list's start: that sample counts as delivered.
    for (uint64_t i = 0; i < step.consumed[r]; ++i) taken[(r * per_rank + i) % n] = true;
  }
  std::vector<uint64_t> out;
  const uint64_t in_epoch = std::min<uint64_t>(n, per_rank * step.world_size);
  for (uint64_t p = 0; p < in_epoch; ++p)
    if (!taken[p]) out.push_back(list[p]);
  return out;
}

std::vector<uint64_t> BatchPlan::epoch_list(uint64_t e,
                                            const std::vector<ElasticStep>& history) const {
  const OrderOptions oo{options_.order, options_.seed, options_.window_pages};
  auto list = epoch_order(oo, e, layout_.sample_pages());
  for (const auto& step : history) list = remaining_after(list, step, options_.remainder);
  return list;
}

std::shared_ptr<const EpochPlan> BatchPlan::epoch(uint64_t e) const {
  auto plan = std::make_shared<EpochPlan>();
  plan->epoch = e;
  plan->batch_size = options_.batch_size;
  static const std::vector<ElasticStep> kNone;
  const auto list = epoch_list(e, e == elastic_epoch_ ? elastic_ : kNone);
  plan->order = shard_order(list, options_.rank, options_.world_size, options_.remainder);
  const uint64_t n = plan->order.size();
  plan->num_batches = options_.drop_last ? n / options_.batch_size
                                         : (n + options_.batch_size - 1) / options_.batch_size;
  return plan;
}

LoaderState BatchPlan::state(uint64_t epoch, uint64_t next_batch) const {
  LoaderState s = fingerprint_;
  s.epoch = epoch;
  s.next_batch = next_batch;
  if (epoch == elastic_epoch_) s.elastic = elastic_;
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
std::string in_quotes(std::string_view v) { return "'" + std::string(v) + "'"; }

}  // namespace

std::vector<std::string> BatchPlan::fingerprint_diffs(const LoaderState& s, bool same_world) const {
  const LoaderState& m = fingerprint_;
  std::vector<std::string> diffs;
  compare(diffs, "seed", text(s.seed), text(m.seed));
  compare(diffs, "order", in_quotes(order_name(s.order)), in_quotes(order_name(m.order)));
  compare(diffs, "window_pages", text(s.window_pages), text(m.window_pages));
  compare(diffs, "batch_size", text(s.batch_size), text(m.batch_size));
  if (same_world) {
    compare(diffs, "rank", text(s.rank), text(m.rank));
    compare(diffs, "world_size", text(s.world_size), text(m.world_size));
  }
  compare(diffs, "drop_last", text(s.drop_last), text(m.drop_last));
  compare(diffs, "num_samples", text(s.num_samples), text(m.num_samples));
  compare(diffs, "file header checksum", text(s.file_xxh64), text(m.file_xxh64));
  if (s.version >= 2) {  // a version-1 state recorded none of these
    auto rem = [](ShardRemainder r) {
      return in_quotes(r == ShardRemainder::pad ? "pad" : "drop");
    };
    compare(diffs, "remainder", rem(s.remainder), rem(m.remainder));
    auto err = [](bool skip) { return in_quotes(skip ? "skip" : "raise"); };
    compare(diffs, "on_error", err(s.skip_errors), err(m.skip_errors));
    compare(diffs, "data (page checksums: another file or other contents)", text(s.data_xxh64),
            text(m.data_xxh64));
    compare(diffs, "fields", in_quotes(s.fields), in_quotes(m.fields));
    compare(diffs, "pipeline (ops or their arguments)", text(s.pipeline_xxh64),
            text(m.pipeline_xxh64));
  }
  return diffs;
}

namespace {

void refuse(const std::string& who, const std::vector<std::string>& diffs) {
  if (diffs.empty()) return;
  std::string msg = "cannot resume: " + who + " was saved with other settings or data: ";
  for (size_t i = 0; i < diffs.size(); ++i) msg += (i ? "; " : "") + diffs[i];
  throw InvalidArgument(msg);
}

}  // namespace

void BatchPlan::check_resume(const LoaderState& s) {
  refuse("the state", fingerprint_diffs(s, true));
  elastic_epoch_ = s.epoch;
  elastic_ = s.elastic;
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

uint64_t BatchPlan::resume_elastic(const std::vector<LoaderState>& ranks) {
  if (ranks.empty()) throw InvalidArgument("elastic resume: no rank states given");
  const uint32_t old_world = ranks[0].world_size;
  if (ranks.size() != old_world)
    throw InvalidArgument("elastic resume: " + std::to_string(ranks.size()) +
                          " states given for a run of world_size " + std::to_string(old_world) +
                          " (pass every rank's state)");
  std::vector<const LoaderState*> by_rank(old_world, nullptr);
  uint64_t epoch = UINT64_MAX;
  for (size_t i = 0; i < ranks.size(); ++i) {
    const LoaderState& s = ranks[i];
    refuse("state " + std::to_string(i) + " (rank " + std::to_string(s.rank) + ")",
           fingerprint_diffs(s, false));
    if (s.world_size != old_world || s.rank >= old_world || by_rank[s.rank])
      throw InvalidArgument("elastic resume: state " + std::to_string(i) + " is rank " +
                            std::to_string(s.rank) + " of " + std::to_string(s.world_size) +
                            "; need ranks 0.." + std::to_string(old_world - 1) +
                            " of one run, once each");
    if (!s.borrowed.empty())
      throw InvalidArgument("elastic resume: rank " + std::to_string(s.rank) +
                            " holds on_error=skip loans; save between epochs or on as many ranks");
    by_rank[s.rank] = &s;
    epoch = std::min(epoch, s.epoch);
  }
  // Ranks that finished the epoch already stand at the next one's batch 0.
  const LoaderState* mid = nullptr;
  for (const LoaderState* s : by_rank) {
    const bool finished = s->epoch == epoch + 1 && s->next_batch == 0;
    if (s->epoch != epoch && !finished)
      throw InvalidArgument("elastic resume: rank " + std::to_string(s->rank) + " is at epoch " +
                            std::to_string(s->epoch) + " batch " + std::to_string(s->next_batch) +
                            ", more than an epoch boundary past epoch " + std::to_string(epoch));
    if (s->epoch != epoch) continue;
    if (mid && s->elastic != mid->elastic)
      throw InvalidArgument("elastic resume: ranks " + std::to_string(mid->rank) + " and " +
                            std::to_string(s->rank) + " record different histories of epoch " +
                            std::to_string(epoch));
    mid = s;
  }
  std::vector<ElasticStep> history = mid->elastic;
  const auto list = epoch_list(epoch, history);
  const uint64_t per_rank = shard_length(list.size(), old_world, options_.remainder);
  ElasticStep step{old_world, std::vector<uint64_t>(old_world, 0)};
  bool any = false;
  for (const LoaderState* s : by_rank) {
    uint64_t& c = step.consumed[s->rank];
    c = s->epoch != epoch ? per_rank : std::min(per_rank, s->next_batch * options_.batch_size);
    const uint64_t batches = options_.drop_last
                                 ? per_rank / options_.batch_size
                                 : (per_rank + options_.batch_size - 1) / options_.batch_size;
    if (s->epoch == epoch && s->next_batch > batches)
      throw InvalidArgument("elastic resume: rank " + std::to_string(s->rank) + "'s next_batch " +
                            std::to_string(s->next_batch) + " is past its " +
                            std::to_string(batches) + " batches of epoch " + std::to_string(epoch));
    any = any || c > 0;
  }
  if (any) history.push_back(std::move(step));
  elastic_epoch_ = epoch;
  elastic_ = std::move(history);
  return epoch;
}

}  // namespace ferry
