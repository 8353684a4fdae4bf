#include "ferry/order.h"

#include <algorithm>
#include <list>
#include <numeric>
#include <unordered_map>

#include "ferry/error.h"
#include "util.h"

namespace ferry {

namespace {

constexpr std::string_view kOrderNames[] = {"sequential", "random", "quasi_random"};

template <class T>
void shuffle(std::span<T> v, detail::SplitMix64& rng) {
  for (uint64_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

std::vector<uint64_t> quasi_random(const OrderOptions& o, detail::SplitMix64& rng,
                                   std::span<const uint64_t> sample_pages) {
  const uint64_t n = sample_pages.size();
  const uint64_t num_pages =
      n ? *std::max_element(sample_pages.begin(), sample_pages.end()) + 1 : 0;
  // Counting sort of samples by page: start[p] .. start[p+1] are page p's samples.
  std::vector<uint64_t> start(num_pages + 1, 0);
  for (uint64_t p : sample_pages) ++start[p + 1];
  std::partial_sum(start.begin(), start.end(), start.begin());
  std::vector<uint64_t> by_page(n), fill(start.begin(), start.end() - 1);
  for (uint64_t s = 0; s < n; ++s) by_page[fill[sample_pages[s]]++] = s;

  std::vector<uint64_t> pages(num_pages);
  std::iota(pages.begin(), pages.end(), 0);
  shuffle(std::span(pages), rng);

  std::vector<uint64_t> out;
  out.reserve(n);
  const uint64_t window = std::max<uint32_t>(1, o.window_pages);
  for (uint64_t w = 0; w < num_pages; w += window) {
    const size_t first = out.size();
    for (uint64_t i = w; i < std::min(num_pages, w + window); ++i)
      out.insert(out.end(), by_page.begin() + start[pages[i]],
                 by_page.begin() + start[pages[i] + 1]);
    shuffle(std::span(out).subspan(first), rng);
  }
  return out;
}

}  // namespace

std::string_view order_name(OrderKind k) { return kOrderNames[static_cast<int>(k)]; }

OrderKind parse_order(std::string_view name) {
  for (int i = 0; i < 3; ++i)
    if (kOrderNames[i] == name) return static_cast<OrderKind>(i);
  throw InvalidArgument("unknown order '" + std::string(name) +
                        "' (choose sequential, random or quasi_random)");
}

std::vector<uint64_t> epoch_order(const OrderOptions& options, uint64_t epoch,
                                  std::span<const uint64_t> sample_pages) {
  const uint64_t n = sample_pages.size();
  detail::SplitMix64 rng(detail::mix_seed(options.seed, epoch));
  if (options.kind == OrderKind::quasi_random) return quasi_random(options, rng, sample_pages);
  std::vector<uint64_t> out(n);
  std::iota(out.begin(), out.end(), 0);
  if (options.kind == OrderKind::random) shuffle(std::span(out), rng);
  return out;
}

std::vector<uint64_t> shard_order(std::span<const uint64_t> order, uint32_t rank,
                                  uint32_t world_size, ShardRemainder remainder) {
  if (world_size == 0) throw InvalidArgument("world_size must be at least 1");
  if (rank >= world_size)
    throw InvalidArgument("rank " + std::to_string(rank) + " must be below world_size " +
                          std::to_string(world_size));
  const uint64_t n = order.size();
  const uint64_t per_rank =
      remainder == ShardRemainder::pad ? (n + world_size - 1) / world_size : n / world_size;
  std::vector<uint64_t> out(per_rank);
  for (uint64_t i = 0; i < per_rank; ++i) out[i] = order[(rank * per_rank + i) % n];
  return out;
}

uint64_t page_switches(std::span<const uint64_t> order, std::span<const uint64_t> sample_pages) {
  uint64_t switches = 0;
  for (size_t i = 1; i < order.size(); ++i)
    switches += sample_pages[order[i]] != sample_pages[order[i - 1]];
  return switches;
}

uint64_t page_loads(std::span<const uint64_t> order, std::span<const uint64_t> sample_pages,
                    uint32_t cache_pages) {
  std::list<uint64_t> lru;  // front = most recent
  std::unordered_map<uint64_t, std::list<uint64_t>::iterator> where;
  uint64_t loads = 0;
  const size_t cap = std::max<uint32_t>(1, cache_pages);
  for (uint64_t s : order) {
    const uint64_t p = sample_pages[s];
    auto it = where.find(p);
    if (it != where.end()) {
      lru.splice(lru.begin(), lru, it->second);
      continue;
    }
    ++loads;
    lru.push_front(p);
    where[p] = lru.begin();
    if (lru.size() > cap) {
      where.erase(lru.back());
      lru.pop_back();
    }
  }
  return loads;
}

}  // namespace ferry
