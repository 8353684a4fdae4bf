#include "ferry/source.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "ferry/error.h"
#include "util.h"

namespace ferry {

namespace {

constexpr std::string_view kBackendNames[] = {"auto", "mmap", "pread", "io_uring", "direct"};

detail::Fd open_readonly(const std::string& path, int extra_flags, uint64_t& size) {
  detail::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | extra_flags));
  if (!fd) throw io_error("cannot open", path, errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) throw io_error("cannot stat", path, errno);
  if (!S_ISREG(st.st_mode)) throw IoError("'" + path + "' is not a regular file", EINVAL);
  size = static_cast<uint64_t>(st.st_size);
  return fd;
}

void check_range(const std::string& path, uint64_t offset, uint64_t length, uint64_t size) {
  if (!detail::fits(offset, length, size))
    throw FormatError("ferry file '" + path + "': read of " + std::to_string(length) + " bytes at offset " +
                      std::to_string(offset) + " past the end of the file (" + std::to_string(size) + " bytes)");
}

class PreadSource final : public Source {
 public:
  explicit PreadSource(const std::string& path) : path_(path), fd_(open_readonly(path, 0, size_)) {}

  const std::string& path() const override { return path_; }
  uint64_t size() const override { return size_; }
  std::string_view backend_name() const override { return "pread"; }

  void read(uint64_t offset, uint64_t length, void* dst) override {
    check_range(path_, offset, length, size_);
    auto* out = static_cast<uint8_t*>(dst);
    while (length > 0) {
      const ssize_t n = ::pread(fd_.get(), out, length, static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw io_error("read failed on", path_, errno);
      }
      if (n == 0) throw IoError("'" + path_ + "': unexpected end of file (file shrank?)", EIO);
      out += n;
      offset += static_cast<uint64_t>(n);
      length -= static_cast<uint64_t>(n);
    }
  }

  void advise(AccessPattern pattern) override {
    const int advice = pattern == AccessPattern::sequential ? POSIX_FADV_SEQUENTIAL
                       : pattern == AccessPattern::random   ? POSIX_FADV_RANDOM
                                                            : POSIX_FADV_NORMAL;
    ::posix_fadvise(fd_.get(), 0, 0, advice);  // a hint: failure changes nothing
  }

  void will_need(std::span<const ReadRequest> ranges) override {
    for (const auto& r : ranges) ::posix_fadvise(fd_.get(), static_cast<off_t>(r.offset),
                                                 static_cast<off_t>(r.length), POSIX_FADV_WILLNEED);
  }

 private:
  std::string path_;
  uint64_t size_ = 0;
  detail::Fd fd_;
};

class MmapSource final : public Source {
 public:
  explicit MmapSource(const std::string& path) : path_(path) {
    detail::Fd fd = open_readonly(path, 0, size_);
    if (size_ == 0) return;  // mmap of length 0 is invalid; reads of nothing need no mapping
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) throw io_error("cannot mmap", path, errno);
    base_ = static_cast<uint8_t*>(p);
  }
  ~MmapSource() override {
    if (base_) ::munmap(base_, size_);
  }

  const std::string& path() const override { return path_; }
  uint64_t size() const override { return size_; }
  std::string_view backend_name() const override { return "mmap"; }

  void read(uint64_t offset, uint64_t length, void* dst) override {
    check_range(path_, offset, length, size_);
    if (length) std::memcpy(dst, base_ + offset, length);
  }

  const uint8_t* view(uint64_t offset, uint64_t length) override {
    check_range(path_, offset, length, size_);
    return base_ + offset;
  }

  void advise(AccessPattern pattern) override {
    if (!base_) return;
    const int advice = pattern == AccessPattern::sequential ? MADV_SEQUENTIAL
                       : pattern == AccessPattern::random   ? MADV_RANDOM
                                                            : MADV_NORMAL;
    ::madvise(base_, size_, advice);  // a hint: failure changes nothing
  }

  void will_need(std::span<const ReadRequest> ranges) override {
    static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    for (const auto& r : ranges) {
      if (!detail::fits(r.offset, r.length, size_) || r.length == 0) continue;
      const uint64_t begin = r.offset / page * page;
      ::madvise(base_ + begin, r.offset + r.length - begin, MADV_WILLNEED);
    }
  }

 private:
  std::string path_;
  uint64_t size_ = 0;
  uint8_t* base_ = nullptr;
};

class MemorySource final : public Source {
 public:
  MemorySource(std::string name, std::vector<uint8_t> bytes) : name_(std::move(name)), bytes_(std::move(bytes)) {}
  const std::string& path() const override { return name_; }
  uint64_t size() const override { return bytes_.size(); }
  std::string_view backend_name() const override { return "memory"; }
  void read(uint64_t offset, uint64_t length, void* dst) override {
    check_range(name_, offset, length, bytes_.size());
    if (length) std::memcpy(dst, bytes_.data() + offset, length);
  }
  const uint8_t* view(uint64_t offset, uint64_t length) override {
    check_range(name_, offset, length, bytes_.size());
    return bytes_.data() + offset;
  }

 private:
  std::string name_;
  std::vector<uint8_t> bytes_;
};

class FaultySource final : public Source {
 public:
  FaultySource(std::shared_ptr<Source> inner, FaultSpec spec) : inner_(std::move(inner)), spec_(std::move(spec)) {}
  const std::string& path() const override { return inner_->path(); }
  uint64_t size() const override { return inner_->size(); }
  std::string_view backend_name() const override { return inner_->backend_name(); }
  void read(uint64_t offset, uint64_t length, void* dst) override {
    if (offset >= spec_.from_offset) {
      if (spec_.delay.count() > 0) std::this_thread::sleep_for(spec_.delay);
      for (const auto& [b, e] : spec_.fail_ranges)
        if (offset < e && b < offset + length)
          throw IoError("read failed on '" + path() + "' at offset " + std::to_string(offset) +
                            ": Input/output error (injected)", EIO);
    }
    inner_->read(offset, length, dst);
  }
  void read_many(std::span<const ReadRequest> requests) override {
    for (const auto& r : requests) read(r.offset, r.length, r.dst);
  }

 private:
  std::shared_ptr<Source> inner_;
  FaultSpec spec_;
};

}  // namespace

std::unique_ptr<Source> open_memory_source(std::string name, std::vector<uint8_t> bytes) {
  return std::make_unique<MemorySource>(std::move(name), std::move(bytes));
}

std::unique_ptr<Source> wrap_faulty_source(std::shared_ptr<Source> inner, FaultSpec spec) {
  return std::make_unique<FaultySource>(std::move(inner), std::move(spec));
}

void Source::read_many(std::span<const ReadRequest> requests) {
  for (const auto& r : requests) read(r.offset, r.length, r.dst);
}

std::string_view backend_name(Backend b) { return kBackendNames[static_cast<int>(b)]; }

Backend parse_backend(std::string_view name) {
  for (int i = 0; i < 5; ++i)
    if (kBackendNames[i] == name) return static_cast<Backend>(i);
  throw InvalidArgument("unknown backend '" + std::string(name) +
                        "' (choose auto, mmap, pread, io_uring or direct)");
}

std::unique_ptr<Source> open_mmap_source(const std::string& path) { return std::make_unique<MmapSource>(path); }
std::unique_ptr<Source> open_pread_source(const std::string& path) { return std::make_unique<PreadSource>(path); }

std::unique_ptr<Source> open_source(const std::string& path, const SourceOptions& options) {
  std::unique_ptr<Source> src;
  switch (options.backend) {
    case Backend::auto_select:  // the page cache makes mmap the fastest warm path (docs/io.md)
    case Backend::mmap: src = open_mmap_source(path); break;
    case Backend::pread: src = open_pread_source(path); break;
    case Backend::io_uring:
    case Backend::direct:
      throw InvalidArgument("backend '" + std::string(backend_name(options.backend)) +
                            "' is not available in this build");
  }
  src->advise(options.pattern);
  return src;
}

}  // namespace ferry
