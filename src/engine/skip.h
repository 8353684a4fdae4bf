#pragma once
// Internal: on_error=skip's slot edits — dropping failed samples and filling a short batch
// from the end of the following one. Every function here runs on one slot (or two) that its
// caller owns: no locking inside.
#include <cstdint>
#include <vector>

#include "batch_pool.h"

namespace ferry::skip {

/// Copies sample i of `from` to position `at` of `to` (which may be the same slot, at <= i).
/// Positions before `at` must be filled: a bytes field's value starts at offsets[at].
void move_sample(const BatchSlot& from, uint64_t i, BatchSlot& to, uint64_t at);
/// Drops the samples whose keep[i] is 0, moving later ones down.
void compact(BatchSlot& s, const std::vector<uint8_t>& keep);
/// Appends sample i of `from` to `to`.
void append_sample(BatchSlot& to, const BatchSlot& from, uint64_t i);
/// Cuts `s` so that `lent` samples from its end are gone (what was lent to the batch before).
void apply_lent(BatchSlot& s, uint64_t lent);

}  // namespace ferry::skip
