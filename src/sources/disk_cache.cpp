#include "sources/disk_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <thread>
#include <vector>

#include "ferry/error.h"
#include "util.h"

namespace ferry::detail {

namespace {

constexpr uint32_t kEntryMagic = 0x46434b31;  // "FCK1"
constexpr size_t kHeaderBytes = 16;

struct EntryHeader {
  uint32_t magic;
  uint32_t length;
  uint64_t xxh64;
};
static_assert(sizeof(EntryHeader) == kHeaderBytes);

std::string hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

bool write_all(int fd, const void* p, size_t n) {
  const auto* c = static_cast<const uint8_t*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool read_all(int fd, void* p, size_t n) {
  auto* c = static_cast<uint8_t*>(p);
  while (n > 0) {
    const ssize_t r = ::read(fd, c, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

}  // namespace

DiskCache::DiskCache(std::string dir, uint64_t budget_bytes, const std::string& identity)
    : root_(std::move(dir)), budget_(budget_bytes) {
  dir_ = root_ + "/" + hex(XXH64(identity.data(), identity.size(), 0));
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) throw IoError("cache_dir '" + root_ + "': cannot create: " + ec.message(), EIO);
  evict();  // learn the current total (and trim a directory left over budget)
}

std::string DiskCache::entry_path(uint64_t block) const {
  return dir_ + "/" + std::to_string(block) + ".blk";
}

bool DiskCache::get(uint64_t block, std::span<uint8_t> dst) {
  const std::string path = entry_path(block);
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  EntryHeader h{};
  const bool ok = read_all(fd.get(), &h, sizeof h) && h.magic == kEntryMagic &&
                  h.length == dst.size() && read_all(fd.get(), dst.data(), dst.size()) &&
                  XXH64(dst.data(), dst.size(), 0) == h.xxh64;
  if (!ok) {
    ::unlink(path.c_str());  // torn by something outside our atomic writes, or bit rot
    return false;
  }
  ::futimens(fd.get(), nullptr);  // LRU: a hit makes the entry young again
  return true;
}

void DiskCache::put(uint64_t block, std::span<const uint8_t> data) {
  if (budget_ == 0 || data.size() + kHeaderBytes > budget_) return;
  const std::string path = entry_path(block);
  const std::string tmp =
      dir_ + "/." + std::to_string(block) + "." + std::to_string(::getpid()) + "." +
      std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id())) + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd) return;
  const EntryHeader h{kEntryMagic, static_cast<uint32_t>(data.size()),
                      XXH64(data.data(), data.size(), 0)};
  const bool ok = write_all(fd.get(), &h, sizeof h) &&
                  write_all(fd.get(), data.data(), data.size()) && ::fsync(fd.get()) == 0;
  fd = Fd();
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return;
  }
  const uint64_t since =
      written_since_scan_.fetch_add(data.size() + kHeaderBytes) + data.size() + kHeaderBytes;
  if (last_total_.load() + since > budget_) evict();
}

void DiskCache::evict() {
  if (evicting_.exchange(true)) return;  // one scan per process at a time is enough
  namespace fs = std::filesystem;
  const std::string lock_path = root_ + "/.lock";
  Fd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (lock) ::flock(lock.get(), LOCK_EX);  // ranks of a node scan one at a time
  struct Entry {
    timespec mtime;
    uint64_t bytes;
    std::string path;
  };
  std::vector<Entry> entries;
  uint64_t total = 0;
  std::error_code ec;
  const auto now = ::time(nullptr);
  for (auto it = fs::recursive_directory_iterator(root_, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const std::string p = it->path().string();
    const std::string name = it->path().filename().string();
    struct stat st;
    if (::stat(p.c_str(), &st) != 0) continue;
    if (name.ends_with(".tmp")) {
      // Left by a killed writer (live writers finish in seconds).
      if (now - st.st_mtime > 60) ::unlink(p.c_str());
      continue;
    }
    if (!name.ends_with(".blk")) continue;
    entries.push_back({st.st_mtim, static_cast<uint64_t>(st.st_size), p});
    total += static_cast<uint64_t>(st.st_size);
  }
  if (total > budget_) {
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
      return a.mtime.tv_sec != b.mtime.tv_sec ? a.mtime.tv_sec < b.mtime.tv_sec
                                              : a.mtime.tv_nsec < b.mtime.tv_nsec;
    });
    const uint64_t target = budget_ / 10 * 9;
    for (const Entry& e : entries) {
      if (total <= target) break;
      if (::unlink(e.path.c_str()) == 0) total -= e.bytes;
    }
  }
  last_total_ = total;
  written_since_scan_ = 0;
  if (lock) ::flock(lock.get(), LOCK_UN);
  evicting_ = false;
}

}  // namespace ferry::detail
