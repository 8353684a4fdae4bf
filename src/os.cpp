#include "ferry/os.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <new>
#include <sstream>
#include <string_view>
#include <vector>

#ifdef FERRY_HAVE_NUMA
#include <numa.h>
#endif

#include "ferry/error.h"
#include "util.h"

namespace ferry {

namespace {

// Residency of files up to this many pages (64 MiB of 4 KiB pages) is counted exactly; bigger
// files are sampled in 256 windows of 256 KiB: the loader asks at open, where a full walk of a
// multi-GB file (one page-cache lookup per page) would add tens of milliseconds to start-up.
constexpr uint64_t kExactPages = uint64_t{1} << 14;
constexpr uint64_t kSampleWindows = 256;
constexpr uint64_t kSampleWindowBytes = uint64_t{256} << 10;

// Unmaps on scope exit.
struct Mapping {
  void* base = MAP_FAILED;
  size_t length = 0;
  ~Mapping() {
    if (base != MAP_FAILED) ::munmap(base, length);
  }
};

// The first number on the line of `file` that starts with `key`, or -1.
int64_t read_keyed_number(const std::string& file, std::string_view key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) != 0) continue;
    std::istringstream rest(line.substr(key.size()));
    int64_t v = -1;
    if (rest >> v) return v;
  }
  return -1;
}

// The whole (first-line) content of a small file as a number; -1 if absent or not a number
// (cgroup's memory.max says "max" when there is no limit).
int64_t read_number_file(const std::string& file) {
  std::ifstream in(file);
  int64_t v = -1;
  if (!(in >> v)) return -1;
  return v;
}

// Headroom left under this process's cgroup v2 memory limit, counting its page cache as
// reclaimable (it is, within the cgroup); -1 when there is no limit or no cgroup v2.
int64_t cgroup_headroom() {
  std::ifstream in("/proc/self/cgroup");
  std::string line, rel;
  while (std::getline(in, line))
    if (line.rfind("0::", 0) == 0) rel = line.substr(3);
  if (rel.empty()) return -1;
  const std::string dir = "/sys/fs/cgroup" + (rel == "/" ? std::string() : rel);
  const int64_t max = read_number_file(dir + "/memory.max");
  const int64_t current = read_number_file(dir + "/memory.current");
  if (max < 0 || current < 0) return -1;
  const int64_t file = std::max<int64_t>(read_keyed_number(dir + "/memory.stat", "file "), 0);
  return std::max<int64_t>(max - std::max<int64_t>(current - file, 0), 0);
}

bool parse_hex(std::string_view s, size_t max_digits, unsigned& out) {
  if (s.empty() || s.size() > max_digits) return false;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out, 16);
  return ec == std::errc() && p == s.data() + s.size();
}

// "[domain:]bus:device.function" -> sysfs's "dddd:bb:dd.f", or "" if malformed. CUDA writes
// 4- or 8-digit domains ("00000000:3B:00.0"); sysfs uses 4.
std::string normalize_bus_id(std::string_view id) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (size_t i = 0; i <= id.size(); ++i) {
    if (i == id.size() || id[i] == ':') {
      parts.push_back(id.substr(start, i - start));
      start = i + 1;
    }
  }
  if (parts.size() != 2 && parts.size() != 3) return "";
  unsigned domain = 0, bus = 0, dev = 0, fn = 0;
  if (parts.size() == 3 && !parse_hex(parts[0], 8, domain)) return "";
  const std::string_view bus_s = parts[parts.size() - 2], last = parts.back();
  const size_t dot = last.find('.');
  if (dot == std::string_view::npos || !parse_hex(bus_s, 2, bus) ||
      !parse_hex(last.substr(0, dot), 2, dev) || !parse_hex(last.substr(dot + 1), 1, fn) ||
      domain > 0xffff || dev > 0x1f || fn > 7)
    return "";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%x", domain, bus, dev, fn);
  return buf;
}

}  // namespace

double resident_fraction(const std::string& path) {
  detail::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));  // a FIFO must not block
  if (!fd) throw io_error("cannot open", path, errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) throw io_error("cannot stat", path, errno);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size == 0) return 1.0;
  Mapping m;
  m.length = size;
  // A mapping costs address space only: mincore asks the page cache, nothing is faulted in.
  m.base = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (m.base == MAP_FAILED) throw io_error("cannot mmap", path, errno);

  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t pages = (size + page - 1) / page;
  const uint64_t window = pages <= kExactPages ? pages : kSampleWindowBytes / page;
  const uint64_t windows = pages <= kExactPages ? 1 : kSampleWindows;
  std::vector<unsigned char> vec(window);
  uint64_t resident = 0, examined = 0;
  for (uint64_t w = 0; w < windows; ++w) {
    const uint64_t first = windows == 1 ? 0 : (pages - window) * w / (windows - 1);
    const uint64_t n = std::min(window, pages - first);
    auto* addr = static_cast<uint8_t*>(m.base) + first * page;
    if (::mincore(addr, n * page, vec.data()) != 0)
      throw io_error("mincore failed on", path, errno);
    for (uint64_t i = 0; i < n; ++i) resident += vec[i] & 1;
    examined += n;
  }
  return static_cast<double>(resident) / static_cast<double>(examined);
}

void evict_from_page_cache(const std::string& path) {
  detail::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));  // a FIFO must not block
  if (!fd) throw io_error("cannot open", path, errno);
  // Dirty pages cannot be dropped; write them back first (fsync on a read-only fd is allowed).
  if (::fsync(fd.get()) != 0) throw io_error("cannot fsync", path, errno);
  const int err = ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
  if (err != 0) throw io_error("cannot drop the page cache of", path, err);
}

uint64_t available_memory_bytes() {
  const int64_t kb = read_keyed_number("/proc/meminfo", "MemAvailable:");
  int64_t avail = kb < 0 ? -1 : kb * 1024;
  const int64_t headroom = cgroup_headroom();
  if (headroom >= 0) avail = avail < 0 ? headroom : std::min(avail, headroom);
  return avail < 0 ? 0 : static_cast<uint64_t>(avail);
}

int numa_node_count() {
#ifdef FERRY_HAVE_NUMA
  // libnuma reads the topology once; numa_available() < 0 means the kernel (or a seccomp policy
  // refusing get_mempolicy) gives us no NUMA API: behave as one node.
  static const int count = [] {
    if (::numa_available() < 0) return 1;
    return std::max(::numa_num_configured_nodes(), 1);
  }();
  return count;
#else
  return 1;
#endif
}

void pin_current_thread_to_node(int node) {
  if (node < 0) return;
  const int count = numa_node_count();
  if (node >= count)
    throw InvalidArgument("NUMA node " + std::to_string(node) +
                          " does not exist (this machine has " + std::to_string(count) +
                          (count == 1 ? " node)" : " nodes)"));
  if (count == 1) return;
#ifdef FERRY_HAVE_NUMA
  if (::numa_run_on_node(node) != 0)
    throw io_error("cannot pin the calling thread to", "NUMA node " + std::to_string(node), errno);
  ::numa_set_preferred(node);
#endif
}

void* allocate_on_node(size_t bytes, int node) {
  if (bytes == 0) return nullptr;
  const int count = numa_node_count();
  if (node >= count)
    throw InvalidArgument("NUMA node " + std::to_string(node) +
                          " does not exist (this machine has " + std::to_string(count) +
                          (count == 1 ? " node)" : " nodes)"));
  // Anonymous mmap on every path, so free_on_node is always munmap whatever the machine.
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
#ifdef FERRY_HAVE_NUMA
  // The policy applies when pages are first touched; a refusal leaves ordinary memory, which is
  // still correct, only possibly remote.
  if (node >= 0 && count > 1) ::numa_tonode_memory(p, bytes, node);
#endif
  return p;
}

void free_on_node(void* p, size_t bytes) {
  if (p && bytes) ::munmap(p, bytes);
}

int node_of_pci_device(const std::string& bus_id) {
  std::string lower = bus_id;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  const std::string id = normalize_bus_id(lower);
  if (id.empty())
    throw InvalidArgument("'" + bus_id +
                          "' is not a PCI bus id (expected domain:bus:device.function, e.g. "
                          "0000:3b:00.0)");
  if (numa_node_count() == 1) return -1;
  const int64_t node = read_number_file("/sys/bus/pci/devices/" + id + "/numa_node");
  return node < 0 ? -1 : static_cast<int>(node);
}

}  // namespace ferry
