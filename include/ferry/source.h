#pragma once
/// \file source.h
/// \brief Where bytes come from: one interface, several backends (mmap, pread; io_uring and
/// O_DIRECT plug in behind the same interface), plus test doubles (fault-injecting, slow).
///
/// Thread-safety: every method may be called concurrently from any number of threads.
/// Errors: a failed read throws IoError naming the file and the cause; a read past the end of
/// the file throws FormatError. Sources never return partial data.
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ferry {

/// One read of a batched request: `length` bytes at file `offset` into `dst`.
struct ReadRequest {
  uint64_t offset;
  uint64_t length;
  void* dst;
};

/// How the caller will walk the file; backends turn it into OS hints (madvise, fadvise).
enum class AccessPattern { normal, sequential, random };

class Source {
 public:
  virtual ~Source() = default;

  virtual const std::string& path() const = 0;
  virtual uint64_t size() const = 0;
  /// "mmap", "pread", ...
  virtual std::string_view backend_name() const = 0;

  /// Reads exactly `length` bytes at `offset` into `dst`.
  virtual void read(uint64_t offset, uint64_t length, void* dst) = 0;

  /// Reads every request; backends with asynchronous I/O submit them together. The default
  /// issues them one by one. On error, throws for the first failing request (by position).
  virtual void read_many(std::span<const ReadRequest> requests);

  /// A pointer to the bytes [offset, offset+length) if the backend holds them in memory for the
  /// source's lifetime (mmap), else nullptr. Callers must fall back to read() on nullptr.
  virtual const uint8_t* view(uint64_t /*offset*/, uint64_t /*length*/) { return nullptr; }

  /// Hint: these byte ranges will be read soon, in this order. Default: ignored.
  virtual void will_need(std::span<const ReadRequest> /*ranges*/) {}
  /// Hint: the whole file will be walked like this. Default: ignored.
  virtual void advise(AccessPattern /*pattern*/) {}
};

enum class Backend { auto_select, mmap, pread, io_uring, direct };

/// "auto", "mmap", "pread", "io_uring", "direct".
std::string_view backend_name(Backend b);
/// Parses backend_name()'s spellings; throws InvalidArgument naming the choices.
Backend parse_backend(std::string_view name);

struct SourceOptions {
  Backend backend = Backend::auto_select;
  AccessPattern pattern = AccessPattern::normal;
};

/// Opens `path` with the chosen backend (auto: see docs/io.md for the rule).
/// Throws IoError if the file cannot be opened, InvalidArgument for an unsupported backend.
std::unique_ptr<Source> open_source(const std::string& path, const SourceOptions& options = {});

/// The file mapped once, read-only; view() points into the mapping.
std::unique_ptr<Source> open_mmap_source(const std::string& path);
/// pread(2) into the caller's buffer; no mapping.
std::unique_ptr<Source> open_pread_source(const std::string& path);

/// An in-memory "file" (tests, fuzzing, data already in RAM). view() points into `bytes`.
std::unique_ptr<Source> open_memory_source(std::string name, std::vector<uint8_t> bytes);

/// Test double: wraps a source and fails or delays chosen reads (the latency-hiding and
/// error-path tests run every backend through it). view() returns nullptr so every byte goes
/// through read()/read_many().
struct FaultSpec {
  /// Reads overlapping any [begin, end) here throw IoError(EIO).
  std::vector<std::pair<uint64_t, uint64_t>> fail_ranges;
  /// Every read (each request of read_many) sleeps this long first.
  std::chrono::microseconds delay{0};
  /// Only reads at or after this offset are delayed/failed (so opening the file is not).
  uint64_t from_offset = 0;
};
std::unique_ptr<Source> wrap_faulty_source(std::shared_ptr<Source> inner, FaultSpec spec);

}  // namespace ferry
