// MemcpyStage: the device stage that copies a host batch's fields into a ring slot as they are.
#include <string>

#include "cuda/copier.h"

namespace ferry {

using cuda_detail::check;

namespace {

class MemcpyStage final : public DeviceStage {
 public:
  explicit MemcpyStage(const std::vector<FieldSpec>& fields) : fields_(fields) {}

  bool issue(DeviceSlot& s, const Batch& hb, cudaStream_t cs) override {
    bool behind = false;
    // The consumer may still be using this buffer on its stream: order the copy after its
    // release event on the device, so neither thread waits for the GPU here.
    if (s.release_recorded) {
      if (cudaEventQuery(s.released.get()) == cudaErrorNotReady) behind = true;
      check(cudaStreamWaitEvent(cs, s.released.get(), 0), "cudaStreamWaitEvent (buffer reuse)");
    }
    s.release_recorded = false;
    check(cudaEventRecord(s.copy_start.get(), cs), "cudaEventRecord");
    const uint64_t n = hb.size();
    s.bytes = 0;
    for (size_t f = 0; f < hb.num_fields(); ++f) {
      const FieldBuffer& fb = hb.field(f);
      const uint64_t bytes = fb.bytes(n);
      if (bytes > s.capacity[f])  // cannot happen while the host pool is sized as we size ours
        throw Error("field '" + fb.spec->name + "': batch of " + std::to_string(bytes) +
                    " bytes exceeds the " + std::to_string(s.capacity[f]) + "-byte device buffer");
      uint8_t* dst = s.memory.get() + s.data_offset[f];
      if (bytes)
        check(cudaMemcpyAsync(dst, fb.data, bytes, cudaMemcpyHostToDevice, cs), "cudaMemcpyAsync");
      DeviceField& out = s.fields[f];
      out.spec = &fields_[f];
      out.data = dst;
      out.bytes = bytes;
      if (fb.offsets) {
        auto* doff = reinterpret_cast<uint64_t*>(s.memory.get() + s.offsets_offset[f]);
        check(cudaMemcpyAsync(doff, fb.offsets, (n + 1) * 8, cudaMemcpyHostToDevice, cs),
              "cudaMemcpyAsync");
        s.host_offsets[f].assign(fb.offsets, fb.offsets + n + 1);
        out.offsets = doff;
        out.host_offsets = s.host_offsets[f];
        s.bytes += (n + 1) * 8;
      } else {
        out.offsets = nullptr;
        out.host_offsets = {};
      }
      s.bytes += bytes;
    }
    check(cudaEventRecord(s.copy_done.get(), cs), "cudaEventRecord");
    s.size = n;
    s.epoch = hb.epoch();
    s.index = hb.index();
    s.sample_ids.assign(hb.sample_ids().begin(), hb.sample_ids().end());
    return behind;
  }

 private:
  const std::vector<FieldSpec>& fields_;
};

}  // namespace

std::unique_ptr<DeviceStage> make_memcpy_stage(const std::vector<FieldSpec>& fields) {
  return std::make_unique<MemcpyStage>(fields);
}

}  // namespace ferry
