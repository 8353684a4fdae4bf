// Issue 2: how fast can one thread pull samples out of a .ferry file, per I/O backend and epoch
// order, compared with what the machine can copy at all (memcpy, measured in the same run)?
//
//   read_bench [--dir data] [--small N] [--large N] [--repeat R] [--batch B] [--max-seconds S]
//
// Two files are generated once with write_synthetic and reused afterwards (same name, same
// sample count): N_small × 64 B samples (default 1M) and N_large × 150 KB samples (default 20k).
// Each file is read whole once first, so the page cache is warm. Then, for every backend
// open_source() accepts ("n/a" for those this build lacks) and every order, a fresh Source reads
// R epochs single-threaded: each batch of B sample ids is turned into one read per sample
// extent (Layout::sample_extent) and handed to Source::read_many, into one batch-sized buffer.
// Reported: best epoch (samples/s, GB/s of payload, % of memcpy) and the first epoch (where
// mmap pays its page faults). Page switches and LRU page loads per epoch come from order.h.
// An epoch slower than --max-seconds is cut short and marked '*' (e.g. O_DIRECT on slow disks).
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.h"
#include "ferry/error.h"
#include "ferry/importers.h"
#include "ferry/order.h"
#include "ferry/reader.h"
#include "ferry/source.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Options {
  std::string dir = "data";
  uint64_t small = 1'000'000;
  uint64_t large = 20'000;
  uint64_t repeat = 3;
  uint64_t batch = 256;
  double max_seconds = 5;
};

[[noreturn]] void usage(const char* argv0, const std::string& problem) {
  std::fprintf(
      stderr,
      "%s\nusage: %s [--dir data] [--small 1000000] [--large 20000] [--repeat 3] [--batch 256] "
      "[--max-seconds 5]\n",
      problem.c_str(), argv0);
  std::exit(2);
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) usage(argv[0], "missing value after " + a);
    const std::string v = argv[++i];
    try {
      if (a == "--dir")
        o.dir = v;
      else if (a == "--small")
        o.small = std::stoull(v);
      else if (a == "--large")
        o.large = std::stoull(v);
      else if (a == "--repeat")
        o.repeat = std::max<uint64_t>(1, std::stoull(v));
      else if (a == "--batch")
        o.batch = std::max<uint64_t>(1, std::stoull(v));
      else if (a == "--max-seconds")
        o.max_seconds = std::stod(v);
      else
        usage(argv[0], "unknown option " + a);
    } catch (const std::logic_error&) {
      usage(argv[0], "bad value '" + v + "' for " + a);
    }
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Machine description, so a table is never read without its context.

std::string machine_line() {
  struct utsname u;
  ::uname(&u);
  struct sysinfo si;
  ::sysinfo(&si);
  char buf[512];
  std::snprintf(buf, sizeof buf, "%ld cores (nproc), %s, Linux %s, %.1f GiB RAM",
                ::sysconf(_SC_NPROCESSORS_ONLN), ferry::bench::cpu_model().c_str(), u.release,
                static_cast<double>(si.totalram) * si.mem_unit / (1ull << 30));
  return buf;
}

std::string today() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&t));
  return buf;
}

/// 1234567 -> "1,234,567".
std::string with_commas(uint64_t v) {
  const std::string digits = std::to_string(v);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

/// Rates with three significant digits: "52.8M", "33.9k".
std::string rate(double v) {
  char buf[32];
  if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.3gM", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%.3gk", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

// ---------------------------------------------------------------------------------------------

struct FreeDeleter {
  void operator()(void* p) const noexcept { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t[], FreeDeleter>;

/// 4 KiB-aligned (O_DIRECT-friendly) and touched, so no run pays for first-touch faults.
Buffer alloc_buffer(uint64_t bytes) {
  const uint64_t rounded = (bytes + 4095) / 4096 * 4096;
  Buffer b(static_cast<uint8_t*>(std::aligned_alloc(4096, rounded)));
  if (!b) throw std::bad_alloc();
  std::memset(b.get(), 1, rounded);
  return b;
}

/// Single-thread memcpy bandwidth of a copy much larger than the caches: the ceiling for any
/// read that ends in a copy out of the page cache. Best of several copies.
double memcpy_gbps() {
  constexpr uint64_t kBytes = 256ull << 20;
  Buffer src = alloc_buffer(kBytes), dst = alloc_buffer(kBytes);
  double best = 0;
  for (int i = 0; i < 6; ++i) {
    const auto t0 = Clock::now();
    std::memcpy(dst.get(), src.get(), kBytes);
    const double s = seconds_since(t0);
    best = std::max(best, static_cast<double>(kBytes) / s / 1e9);
    src[static_cast<uint64_t>(i) * 4096] ^= dst[kBytes - 1];  // keep the copies observable
  }
  return best;
}

/// Reads the file once through the page cache so every run below starts warm.
void warm_page_cache(const std::string& path) {
  auto src = ferry::open_pread_source(path);
  constexpr uint64_t kChunk = 16ull << 20;
  std::vector<uint8_t> buf(kChunk);
  for (uint64_t off = 0; off < src->size(); off += kChunk)
    src->read(off, std::min(kChunk, src->size() - off), buf.data());
}

/// Generates the file unless an earlier run left one with the right contents.
std::string ensure_file(const Options& o, uint64_t samples, uint64_t bytes) {
  std::filesystem::create_directories(o.dir);
  const std::string path =
      o.dir + "/read-bench-" + std::to_string(samples) + "x" + std::to_string(bytes) + ".ferry";
  try {
    const auto r = ferry::Reader::open(path);
    if (r->num_samples() == samples && r->schema().fields[0].fixed_bytes() == bytes) return path;
  } catch (const ferry::Error&) {
    // absent or stale: regenerate below
  }
  std::fprintf(stderr, "generating %s ...\n", path.c_str());
  ferry::SyntheticSpec spec;
  spec.num_samples = samples;
  spec.shape = {bytes};
  ferry::WriterOptions wo;
  wo.fsync = false;  // a benchmark input, regenerated if lost
  ferry::write_synthetic(path, spec, wo);
  return path;
}

struct EpochResult {
  uint64_t samples = 0, payload_bytes = 0;
  double seconds = 0;
  bool partial = false;
  double samples_per_second() const { return samples / seconds; }
  double gbps() const { return static_cast<double>(payload_bytes) / seconds / 1e9; }
};

/// One epoch in `order`, one batch at a time, through `src` into `buf`.
EpochResult read_epoch(ferry::Source& src, const ferry::Layout& L,
                       const std::vector<uint64_t>& order, uint64_t batch, uint8_t* buf,
                       double max_seconds) {
  EpochResult r;
  std::vector<ferry::ReadRequest> reqs;
  reqs.reserve(batch);
  const auto t0 = Clock::now();
  for (uint64_t b = 0; b < order.size(); b += batch) {
    reqs.clear();
    uint64_t fill = 0;
    const uint64_t end = std::min<uint64_t>(order.size(), b + batch);
    for (uint64_t i = b; i < end; ++i) {
      const auto [lo, hi] = L.sample_extent(order[i]);
      reqs.push_back({lo, hi - lo, buf + fill});
      fill += hi - lo;
      for (const ferry::FieldLoc& f : L.sample_fields(order[i])) r.payload_bytes += f.length;
    }
    src.read_many(reqs);
    r.samples += end - b;
    if (seconds_since(t0) > max_seconds && end < order.size()) {
      r.partial = true;
      break;
    }
  }
  r.seconds = seconds_since(t0);
  return r;
}

void bench_file(const Options& o, const std::string& path, double memcpy_rate) {
  warm_page_cache(path);
  const auto reader = ferry::Reader::open(path);
  const ferry::Layout& L = reader->layout();
  const uint64_t n = L.num_samples();
  std::vector<uint64_t> sample_pages(n);
  for (uint64_t s = 0; s < n; ++s) sample_pages[s] = L.sample_page(s);
  uint64_t max_extent = 0;
  for (uint64_t s = 0; s < n; ++s) {
    const auto [lo, hi] = L.sample_extent(s);
    max_extent = std::max(max_extent, hi - lo);
  }
  Buffer buf = alloc_buffer(max_extent * o.batch);

  const uint64_t sample_bytes = L.schema().fields[0].fixed_bytes();
  std::printf("\n### %s × %s B samples (`%s`, %.1f MiB, %s pages of %.0f MiB)\n\n",
              with_commas(n).c_str(), with_commas(sample_bytes).c_str(), path.c_str(),
              static_cast<double>(L.file_size()) / (1 << 20), with_commas(L.num_pages()).c_str(),
              static_cast<double>(L.page_size()) / (1 << 20));
  std::printf("| backend | order | samples/s | GB/s | %% of memcpy | first epoch samples/s |\n");
  std::printf("|---|---|---:|---:|---:|---:|\n");

  const ferry::OrderKind kinds[] = {ferry::OrderKind::sequential, ferry::OrderKind::random,
                                    ferry::OrderKind::quasi_random};
  std::vector<std::vector<uint64_t>> orders;
  for (const auto k : kinds) {
    ferry::OrderOptions oo;
    oo.kind = k;
    orders.push_back(ferry::epoch_order(oo, 0, sample_pages));
  }
  const ferry::Backend backends[] = {ferry::Backend::mmap, ferry::Backend::pread,
                                     ferry::Backend::io_uring, ferry::Backend::direct};
  bool any_partial = false;
  for (const auto backend : backends) {
    for (size_t k = 0; k < orders.size(); ++k) {
      const std::string bname(ferry::backend_name(backend)), oname(ferry::order_name(kinds[k]));
      std::unique_ptr<ferry::Source> src;
      try {
        ferry::SourceOptions so;
        so.backend = backend;
        src = ferry::open_source(path, so);  // fresh per order: the first epoch is a cold mapping
      } catch (const ferry::Error& e) {
        std::printf("| %s | (all) | n/a | n/a | n/a | n/a |\n", bname.c_str());
        std::fprintf(stderr, "%s: %s\n", bname.c_str(), e.what());
        break;  // the backend is missing, not the order
      }
      EpochResult first, best;
      for (uint64_t rep = 0; rep < o.repeat; ++rep) {
        const EpochResult r = read_epoch(*src, L, orders[k], o.batch, buf.get(), o.max_seconds);
        if (rep == 0) first = r;
        if (rep == 0 || r.samples_per_second() > best.samples_per_second()) best = r;
        if (r.partial) break;  // too slow to repeat within the time budget
      }
      std::printf("| %s | %s | %s%s | %.2f | %.0f%% | %s |\n", bname.c_str(), oname.c_str(),
                  rate(best.samples_per_second()).c_str(), best.partial ? "*" : "", best.gbps(),
                  100 * best.gbps() / memcpy_rate, rate(first.samples_per_second()).c_str());
      std::fflush(stdout);
      any_partial |= best.partial;
    }
  }
  if (any_partial)
    std::printf("\n\\* epoch cut short after %g s; the rate is over the samples read by then.\n",
                o.max_seconds);

  std::printf(
      "\n| order | page switches / epoch | page loads / epoch (LRU of 4 pages) | pages |\n");
  std::printf("|---|---:|---:|---:|\n");
  for (size_t k = 0; k < orders.size(); ++k)
    std::printf("| %s | %s | %s | %s |\n", std::string(ferry::order_name(kinds[k])).c_str(),
                with_commas(ferry::page_switches(orders[k], sample_pages)).c_str(),
                with_commas(ferry::page_loads(orders[k], sample_pages, 4)).c_str(),
                with_commas(L.num_pages()).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_args(argc, argv);
  try {
    const std::string small = ensure_file(o, o.small, 64);
    const std::string large = ensure_file(o, o.large, 150'000);
    std::printf("## read_bench: one thread, batch %llu, page cache warm, best of %llu epochs\n\n",
                static_cast<unsigned long long>(o.batch),
                static_cast<unsigned long long>(o.repeat));
    std::printf("- machine: %s\n- date: %s\n", machine_line().c_str(), today().c_str());
    const double mc = memcpy_gbps();
    std::printf("- memcpy (one thread, 256 MiB buffers, best of 6): %.2f GB/s\n", mc);
    bench_file(o, small, mc);
    bench_file(o, large, mc);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "read_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
