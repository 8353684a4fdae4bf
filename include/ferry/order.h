#pragma once
/// \file order.h
/// \brief Epoch orders: which sample comes when. Each order is a pure function of
/// (kind, seed, epoch, sample→page map); the same inputs give the same order on every platform.
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace ferry {

enum class OrderKind {
  sequential,    ///< 0, 1, 2, ... (no shuffling)
  random,        ///< a uniform permutation of all samples
  quasi_random,  ///< FFCV-style: shuffle pages, then shuffle samples within windows of a few pages
};

std::string_view order_name(OrderKind k);
/// Parses "sequential", "random", "quasi_random"; throws InvalidArgument.
OrderKind parse_order(std::string_view name);

struct OrderOptions {
  OrderKind kind = OrderKind::quasi_random;
  uint64_t seed = 0;
  /// quasi_random: samples are shuffled within groups of this many (shuffled) pages. Larger
  /// windows mix more; the reader's working set is this many pages.
  uint32_t window_pages = 4;
};

/// The order of epoch `epoch` over samples whose first pages are `sample_pages` (one entry per
/// sample, as in Layout). Returns a permutation of [0, sample_pages.size()).
std::vector<uint64_t> epoch_order(const OrderOptions& options, uint64_t epoch,
                                  std::span<const uint64_t> sample_pages);

/// How a rank's slice is made equal in length when world_size does not divide the count.
enum class ShardRemainder {
  pad,   ///< wrap around to the start of the order (a few samples appear twice per epoch)
  drop,  ///< drop the last samples (a few samples are not seen this epoch)
};

/// Rank `rank`'s contiguous slice of `order` (contiguous keeps quasi_random's page locality).
/// Every rank gets the same length; across ranks each sample appears exactly once, padding aside.
/// Throws InvalidArgument for rank >= world_size or world_size == 0.
std::vector<uint64_t> shard_order(std::span<const uint64_t> order, uint32_t rank,
                                  uint32_t world_size,
                                  ShardRemainder remainder = ShardRemainder::pad);

/// Number of consecutive pairs in `order` that lie on different pages.
uint64_t page_switches(std::span<const uint64_t> order, std::span<const uint64_t> sample_pages);

/// Number of page loads a reader keeping the `cache_pages` most recently used pages would make
/// walking `order` (a locality measure that rewards windows of a few pages).
uint64_t page_loads(std::span<const uint64_t> order, std::span<const uint64_t> sample_pages,
                    uint32_t cache_pages);

}  // namespace ferry
