#pragma once
/// \file os.h
/// \brief What ferry asks the operating system about memory: page-cache residency and eviction
/// (the auto backend rule and the cold-cache benchmark), available memory, and NUMA placement.
///
/// Thread-safety: every function may be called from any thread.
/// NUMA: on a single-node machine, or a build without libnuma, the NUMA functions are no-ops
/// (count 1, pinning does nothing, allocation is ordinary page-aligned memory, nodes are -1).
#include <cstddef>
#include <cstdint>
#include <string>

namespace ferry {

/// Fraction in [0, 1] of `path`'s pages in the page cache (mincore over a temporary read-only
/// mapping). Files over 64 MiB are sampled (256 evenly spread windows of 256 KiB), so the result
/// is an estimate there. An empty file counts as fully resident. Caveat (Linux >= 5.0): for a file
/// the caller neither owns nor may write, the kernel reports only pages mapped by this process,
/// so the result may read low. Throws IoError if the file cannot be opened or mapped.
double resident_fraction(const std::string& path);

/// Drops `path`'s pages from the page cache: fsync (dirty pages cannot be dropped) then
/// POSIX_FADV_DONTNEED. Pages some process has mapped stay, and some filesystems (tmpfs, whose
/// page cache is the file's only copy; overlay mounts) keep everything: check
/// resident_fraction() afterwards when it matters. Throws IoError if the file cannot be opened
/// or synced.
void evict_from_page_cache(const std::string& path);

/// Bytes this process could still use without swapping: MemAvailable from /proc/meminfo,
/// lowered to the cgroup (v2) limit's headroom when one is set. 0 if neither can be read.
uint64_t available_memory_bytes();

/// Number of NUMA nodes with memory (>= 1).
int numa_node_count();

/// Restricts the calling thread to the CPUs of `node` and prefers `node` for its allocations.
/// node < 0 means "no preference" and does nothing, as does any call on a single-node machine.
/// Throws InvalidArgument if node >= numa_node_count(), IoError if the kernel refuses.
void pin_current_thread_to_node(int node);

/// `bytes` of page-aligned memory whose pages are placed on `node` when first touched (node < 0 or
/// a single-node machine: anywhere). Release with free_on_node(p, bytes). bytes == 0 gives
/// nullptr. Throws InvalidArgument if node >= numa_node_count(), std::bad_alloc if out of memory.
void* allocate_on_node(size_t bytes, int node);
/// Releases memory from allocate_on_node; `bytes` must be the size it was allocated with.
void free_on_node(void* p, size_t bytes);

/// NUMA node of the PCI device `bus_id` ("0000:3b:00.0", or "3b:00.0"; case-insensitive, as
/// CUDA's cudaDeviceGetPCIBusId writes it), read from /sys/bus/pci/devices/<id>/numa_node. -1 if
/// the device is unknown or the machine has a single node. Throws InvalidArgument if `bus_id` is
/// not of that form.
int node_of_pci_device(const std::string& bus_id);

}  // namespace ferry
