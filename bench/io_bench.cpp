// I/O backends with a cold and a warm page cache, beside fio on the same file (the ceiling).
// Needs fio on the PATH (its rows read 0 without it). docs/BENCHMARKS.md records a run.
//
// For each sample size (4, 16, 64 KiB) one .ferry file is written under --dir (default data/,
// git-ignored; removed at the end unless --keep). Then, for every order (sequential,
// quasi_random, random: epoch_order) and backend (mmap, pread, io_uring, direct), samples are
// read in epoch order through Source::read_many in chunks of 64 (what the loader does per batch):
//  - cold: the file evicted with fsync + POSIX_FADV_DONTNEED just before, and its residency
//    measured with mincore to prove it; once plainly and once with will_need() hinting the next
//    chunk while reading this one (the loader's prefetch hint);
//  - warm: the file fully in the page cache.
// Each run stops at the end of the epoch or after --seconds; each cell is the best of --reps
// runs. CPU time is getrusage(RUSAGE_SELF) (user + system, io_uring's kernel workers included).
// fio then reads the same file with io_uring + O_DIRECT at the same block size and queue depth:
// randread for random, read for sequential; and randread of a sample's bytes (rounded to 512) in
// batches of --chunk completed together, which is exactly what read_many does with O_DIRECT.
//
//   build/io/bench/io_bench [--dir data] [--mib 512] [--seconds 1.0] [--depth 64] [--chunk 64]
//                           [--reps 3] [--sizes 4,16,64] [--keep]
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.h"
#include "ferry/error.h"
#include "ferry/importers.h"
#include "ferry/order.h"
#include "ferry/os.h"
#include "ferry/reader.h"
#include "ferry/source.h"
#include "util.h"

namespace {

using namespace ferry;

struct Options {
  std::string dir = "data";
  uint64_t mib = 512;  // per sample size: 3 files of 512 MiB = 1.5 GiB in all
  double seconds = 1.0;
  uint32_t depth = 64;
  uint64_t chunk = 64;  // samples per read_many, like one loader batch
  int reps = 3;         // best of this many runs per cell
  std::vector<uint64_t> sizes = {4096, 16384, 65536};
  bool keep = false;
};

double cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

std::string run_command(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

struct Result {
  double mbps = 0, samples_per_s = 0, cpu_s = 0, wall_s = 0, resident_before = 0;
  uint64_t samples = 0;
  bool complete = false;  // the whole epoch was read before the time limit
};

// Reads `order` through `src` in chunks of chunk; checks the first sample of every chunk against
// the synthetic generator so a backend returning wrong bytes cannot look fast.
Result read_epoch(Source& src, const Layout& layout, const std::vector<uint64_t>& order,
                  uint64_t sample_bytes, double seconds, uint64_t chunk, uint64_t prefetch) {
  const uint64_t slot = detail::align_up(sample_bytes + 128, 64);
  std::vector<uint8_t> buf(slot * chunk);
  std::vector<ReadRequest> reqs(chunk), hints(chunk);
  std::vector<uint8_t> want(sample_bytes);
  Result r;
  uint64_t bytes = 0;
  const double cpu0 = cpu_seconds();
  const auto t0 = detail::Clock::now();
  size_t i = 0;
  for (; i < order.size(); i += chunk) {
    const size_t n = std::min<size_t>(chunk, order.size() - i);
    for (size_t k = 0; k < n; ++k) {
      const auto [b, e] = layout.sample_extent(order[i + k]);
      reqs[k] = {b, e - b, buf.data() + k * slot};
      bytes += e - b;
    }
    if (prefetch > 0 && i + prefetch * chunk < order.size()) {
      // What the loader does: hint the batch `prefetch` ahead while reading this one.
      const size_t a = i + prefetch * chunk, m = std::min<size_t>(chunk, order.size() - a);
      for (size_t k = 0; k < m; ++k) {
        const auto [b, e] = layout.sample_extent(order[a + k]);
        hints[k] = {b, e - b, nullptr};
      }
      src.will_need({hints.data(), m});
    }
    src.read_many({reqs.data(), n});
    // The data field is first in the sample's extent (the label follows it).
    synthetic_fill(0, order[i], want.data(), sample_bytes);
    if (std::memcmp(buf.data(), want.data(), sample_bytes) != 0) {
      std::fprintf(stderr, "io_bench: %s returned wrong bytes for sample %" PRIu64 "\n",
                   std::string(src.backend_name()).c_str(), order[i]);
      std::exit(1);
    }
    r.samples += n;
    if (detail::seconds_since(t0) > seconds) {
      i += chunk;
      break;
    }
  }
  r.wall_s = detail::seconds_since(t0);
  r.cpu_s = cpu_seconds() - cpu0;
  r.complete = i >= order.size();
  r.mbps = static_cast<double>(bytes) / r.wall_s / 1e6;
  r.samples_per_s = static_cast<double>(r.samples) / r.wall_s;
  return r;
}

struct Fio {
  double mbps = 0, iops = 0;
};

// fio with io_uring + O_DIRECT at block size `bs` and depth `depth`; terse v3 fields 7 and 8 are
// the read bandwidth (KiB/s) and IOPS.
Fio run_fio(const std::string& path, const char* rw, uint64_t bs, uint32_t depth, double seconds) {
  char cmd[1024];
  std::snprintf(cmd, sizeof cmd,
                "fio --name=ceiling --filename=%s --readonly --ioengine=io_uring --direct=1 "
                "--rw=%s --bs=%" PRIu64
                " --iodepth=%u --runtime=%.1f --time_based --output-format=terse --terse-version=3 "
                "2>/dev/null",
                path.c_str(), rw, bs, depth, seconds);
  const std::string out = run_command(cmd);
  std::vector<std::string> f;
  size_t start = 0;
  for (size_t p = 0; p <= out.size(); ++p)
    if (p == out.size() || out[p] == ';') {
      f.push_back(out.substr(start, p - start));
      start = p + 1;
    }
  Fio r;
  if (f.size() > 8) {
    r.mbps = std::atof(f[6].c_str()) * 1024 / 1e6;
    r.iops = std::atof(f[7].c_str());
  }
  return r;
}

AccessPattern pattern_for(OrderKind k) {
  // quasi_random leaves the kernel's default readahead on: samples of one window are near.
  return k == OrderKind::sequential ? AccessPattern::sequential
         : k == OrderKind::random   ? AccessPattern::random
                                    : AccessPattern::normal;
}

void warm_up(const std::string& path) {
  auto src = open_pread_source(path);
  std::vector<uint8_t> buf(8u << 20);
  for (uint64_t off = 0; off < src->size(); off += buf.size())
    src->read(off, std::min<uint64_t>(buf.size(), src->size() - off), buf.data());
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "io_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--dir")
      opt.dir = next();
    else if (a == "--mib")
      opt.mib = std::stoull(next());
    else if (a == "--seconds")
      opt.seconds = std::stod(next());
    else if (a == "--depth")
      opt.depth = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--chunk")
      opt.chunk = std::stoull(next());
    else if (a == "--sizes") {  // in KiB, comma-separated
      opt.sizes.clear();
      const std::string v = next();
      for (size_t p = 0; p < v.size();) {
        const size_t c = std::min(v.find(',', p), v.size());
        opt.sizes.push_back(std::stoull(v.substr(p, c - p)) * 1024);
        p = c + 1;
      }
    } else if (a == "--reps")
      opt.reps = std::max(1, std::stoi(next()));
    else if (a == "--keep")
      opt.keep = true;
    else {
      std::fprintf(stderr,
                   "usage: io_bench [--dir data] [--mib 512] [--seconds 1.0] [--depth 64] [--chunk "
                   "64] [--reps 3] "
                   "[--sizes 4,16,64] [--keep]\n");
      return 2;
    }
  }
  std::filesystem::create_directories(opt.dir);

  utsname un{};
  ::uname(&un);
  std::printf("## machine\n");
  std::printf("nproc %ld, CPU %s, kernel %s, memory available %.1f GiB, NUMA nodes %d\n",
              ::sysconf(_SC_NPROCESSORS_ONLN), ferry::bench::cpu_model().c_str(), un.release,
              static_cast<double>(available_memory_bytes()) / (1u << 30), numa_node_count());
  std::printf("%s", run_command("df -T " + opt.dir + " | tail -1").c_str());
  std::printf("%s", run_command("lsblk -d -o NAME,SIZE,ROTA,TYPE,MODEL 2>/dev/null").c_str());
  const std::string uring_why = backend_unavailable_reason(Backend::io_uring);
  std::printf("io_uring: %s\n", uring_why.empty() ? "usable" : uring_why.c_str());
  std::printf("settings: %" PRIu64 " MiB per sample size, read_many chunks of %" PRIu64
              " samples, queue depth %u, at most %.1f s per run, best of %d runs per cell\n\n",
              opt.mib, opt.chunk, opt.depth, opt.seconds, opt.reps);

  const OrderKind orders[] = {OrderKind::sequential, OrderKind::quasi_random, OrderKind::random};
  const Backend backends[] = {Backend::mmap, Backend::pread, Backend::io_uring, Backend::direct};
  std::vector<std::string> files, misses;
  std::string targets;  // printed after the table
  auto say = [&targets](const char* fmt, auto... args) {
    char line[512];
    std::snprintf(line, sizeof line, fmt, args...);
    targets += line;
  };

  std::printf(
      "| sample | order | backend | cold residency | cold MB/s | cold samples/s | cold CPU s / "
      "wall s "
      "| cold + will_need samples/s | warm MB/s | warm samples/s | warm CPU s / wall s |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  Fio device_seq;  // fio sequential 1 MiB reads: the disk's bandwidth ceiling, measured once
  for (uint64_t size : opt.sizes) {
    const std::string path = opt.dir + "/io_bench_" + std::to_string(size / 1024) + "k.ferry";
    files.push_back(path);
    SyntheticSpec spec;
    spec.num_samples = opt.mib * (1u << 20) / size;
    spec.shape = {size};
    WriterOptions wopt;
    wopt.fsync = true;   // dirty pages cannot be evicted; a synced file can
    bool reuse = false;  // a file left by --keep with the same samples
    try {
      reuse = Reader::open(path, {Backend::pread})->num_samples() == spec.num_samples;
    } catch (const Error&) {
    }
    if (!reuse) write_synthetic(path, spec, wopt);

    auto reader = Reader::open(path, {Backend::pread});
    const Layout& layout = reader->layout();
    std::vector<uint64_t> pages(layout.num_samples());
    for (uint64_t s = 0; s < pages.size(); ++s) pages[s] = layout.sample_page(s);
    const auto [b0, e0] = layout.sample_extent(0);
    const uint64_t extent = e0 - b0;

    // What auto picks for this file, cold and warm.
    std::string auto_cold, auto_warm;
    evict_from_page_cache(path);
    auto_cold = std::string(open_source(path)->backend_name());
    warm_up(path);
    auto_warm = std::string(open_source(path)->backend_name());

    std::map<std::pair<int, int>, Result> cold, hinted, warm;  // (order, backend)
    for (OrderKind order : orders) {
      OrderOptions oo;
      oo.kind = order;
      const std::vector<uint64_t> ord = epoch_order(oo, 0, pages);
      for (Backend b : backends) {
        if (const std::string why = backend_unavailable_reason(b, path); !why.empty()) {
          std::printf("| %" PRIu64 " KiB | %s | %s | skipped: %s |\n", size / 1024,
                      std::string(order_name(order)).c_str(), std::string(backend_name(b)).c_str(),
                      why.c_str());
          continue;
        }
        SourceOptions so;
        so.backend = b;
        so.pattern = pattern_for(order);
        so.queue_depth = opt.depth;
        // Best of --reps: other work on the machine only ever slows a run down.
        Result c, w, ch;
        for (int rep = 0; rep < opt.reps; ++rep) {
          for (const uint64_t prefetch : {uint64_t{0}, uint64_t{1}}) {
            evict_from_page_cache(path);
            const double resident = resident_fraction(path);
            if (resident > 0.01)
              misses.push_back(path + " stayed " + std::to_string(resident) +
                               " resident after eviction");
            auto src = open_source(path, so);
            Result r = read_epoch(*src, layout, ord, size, opt.seconds, opt.chunk, prefetch);
            r.resident_before = resident;
            Result& best = prefetch == 0 ? c : ch;
            if (r.samples_per_s > best.samples_per_s) best = r;
          }
        }
        warm_up(path);
        for (int rep = 0; rep < opt.reps; ++rep) {
          auto src = open_source(path, so);
          Result r = read_epoch(*src, layout, ord, size, opt.seconds, opt.chunk, 0);
          if (r.samples_per_s > w.samples_per_s) w = r;
        }
        cold[{static_cast<int>(order), static_cast<int>(b)}] = c;
        hinted[{static_cast<int>(order), static_cast<int>(b)}] = ch;
        warm[{static_cast<int>(order), static_cast<int>(b)}] = w;
        std::printf("| %" PRIu64
                    " KiB | %s | %s | %.3f | %.0f | %.0f | %.2f / %.2f%s | %.0f | %.0f | %.0f "
                    "| %.2f / %.2f%s |\n",
                    size / 1024, std::string(order_name(order)).c_str(),
                    std::string(backend_name(b)).c_str(),
                    std::max(c.resident_before, ch.resident_before), c.mbps, c.samples_per_s,
                    c.cpu_s, c.wall_s, c.complete ? "" : "*", ch.samples_per_s, w.mbps,
                    w.samples_per_s, w.cpu_s, w.wall_s, w.complete ? "" : "*");
        std::fflush(stdout);
      }
    }
    // The ceiling: fio on the same file, cold by construction (O_DIRECT). A ferry sample is its
    // data plus the label and padding, so each read is a little over the block size: the second
    // random row reads that many bytes (rounded to 512) at 512-byte alignment, as direct does.
    const uint64_t same_bytes = detail::align_up(extent, 512);
    // Best of --reps too: the disk is shared and its speed swings as much as ferry's.
    Fio fr, fr2, fs;
    const std::string batched =
        "randread --blockalign=512 --iodepth_batch_submit=" + std::to_string(opt.chunk) +
        " --iodepth_batch_complete_min=" + std::to_string(opt.chunk);
    for (int rep = 0; rep < opt.reps; ++rep) {
      const Fio a = run_fio(path, "randread", size, opt.depth, opt.seconds);
      const Fio b = run_fio(path, batched.c_str(), same_bytes, opt.depth, opt.seconds);
      const Fio c = run_fio(path, "read", size, opt.depth, opt.seconds);
      if (a.iops > fr.iops) fr = a;
      if (b.iops > fr2.iops) fr2 = b;
      if (c.iops > fs.iops) fs = c;
      if (size == opt.sizes.front()) {
        const Fio d = run_fio(path, "read", 1u << 20, 16, opt.seconds);
        if (d.mbps > device_seq.mbps) device_seq = d;
      }
    }
    std::printf("| %" PRIu64 " KiB | random | **fio** randread bs=%" PRIu64
                " QD%u | - | %.0f | %.0f | - | - | - | - | - |\n",
                size / 1024, size, opt.depth, fr.mbps, fr.iops);
    std::printf("| %" PRIu64 " KiB | random | **fio** randread bs=%" PRIu64
                " QD%u in batches of %" PRIu64
                " (what read_many does) | - | %.0f | %.0f | - | - | - | - | - |\n",
                size / 1024, same_bytes, opt.depth, opt.chunk, fr2.mbps, fr2.iops);
    std::printf("| %" PRIu64 " KiB | sequential | **fio** read bs=%" PRIu64
                " QD%u | - | %.0f | %.0f | - | - | - | - | - |\n",
                size / 1024, size, opt.depth, fs.mbps, fs.iops);
    std::printf("| %" PRIu64 " KiB | auto | picks %s cold, %s warm | | | | | | | | |\n",
                size / 1024, auto_cold.c_str(), auto_warm.c_str());

    // Targets for this size.
    auto key = [](OrderKind o, Backend b) {
      return std::pair<int, int>(static_cast<int>(o), static_cast<int>(b));
    };
    auto best_cold = [&](OrderKind o, Backend* which) {
      double best = 0;
      for (Backend b : backends) {
        auto it = cold.find(key(o, b));
        if (it != cold.end() && it->second.samples_per_s > best) {
          best = it->second.samples_per_s;
          *which = b;
        }
      }
      return best;
    };
    Backend bq = Backend::mmap, br = Backend::mmap, bs = Backend::mmap;
    const double q = best_cold(OrderKind::quasi_random, &bq),
                 rnd = best_cold(OrderKind::random, &br),
                 seq = best_cold(OrderKind::sequential, &bs);
    auto name = [](Backend b) { return std::string(backend_name(b)); };
    say("\ntargets, %" PRIu64 " KiB samples:\n", size / 1024);
    say("  cold quasi_random / cold random, best backend each (%s / %s): %.2fx (target >= 3x) %s\n",
        name(bq).c_str(), name(br).c_str(), q / rnd, q >= 3 * rnd ? "met" : "MISSED");
    say("    per backend:");
    for (Backend b : backends) {
      auto qi = cold.find(key(OrderKind::quasi_random, b));
      auto ri = cold.find(key(OrderKind::random, b));
      if (qi != cold.end() && ri != cold.end())
        say(" %s %.2fx", name(b).c_str(), qi->second.samples_per_s / ri->second.samples_per_s);
    }
    say("\n    with will_need one batch ahead:");
    for (Backend b : backends) {
      auto qi = hinted.find(key(OrderKind::quasi_random, b));
      auto ri = hinted.find(key(OrderKind::random, b));
      if (qi != hinted.end() && ri != hinted.end())
        say(" %s %.2fx", name(b).c_str(), qi->second.samples_per_s / ri->second.samples_per_s);
    }
    double seq_mbps =
        device_seq.mbps;  // the disk's sequential bandwidth, as fio or the page cache saw it
    for (Backend b : backends) {
      auto it = cold.find(key(OrderKind::sequential, b));
      if (it != cold.end()) seq_mbps = std::max(seq_mbps, it->second.mbps);
    }
    say("\n    disk bound for a backend reading only what is asked (sequential %.0f MB/s / fio "
        "random "
        "%.0f MB/s at this size): %.2fx\n",
        seq_mbps, fr.mbps, seq_mbps / fr.mbps);
    say("  best cold random (%s) vs fio randread bs=%" PRIu64
        ": %.0f%% of its IOPS (target >= 80%%) %s\n",
        name(br).c_str(), size, 100 * rnd / fr.iops, rnd >= 0.8 * fr.iops ? "met" : "MISSED");
    say("    deep-queue backends, which read exactly the samples:");
    for (Backend b : {Backend::io_uring, Backend::direct}) {
      auto it = cold.find(key(OrderKind::random, b));
      if (it != cold.end())
        say(" %s %.0f%% of fio bs=%" PRIu64 ", %.0f%% of fio doing what read_many does;",
            name(b).c_str(), 100 * it->second.samples_per_s / fr.iops, size,
            100 * it->second.samples_per_s / fr2.iops);
    }
    say("\n  best cold sequential (%s) vs fio read bs=%" PRIu64
        ": %.0f%% of its IOPS (target >= 80%%) %s\n",
        name(bs).c_str(), size, 100 * seq / fs.iops, seq >= 0.8 * fs.iops ? "met" : "MISSED");
    for (OrderKind o : orders) {
      const double m = warm[key(o, Backend::mmap)].samples_per_s;
      say("  warm %s, samples/s relative to mmap:", std::string(order_name(o)).c_str());
      for (Backend b : backends) {
        auto it = warm.find(key(o, b));
        if (it != warm.end()) say(" %s %.2fx", name(b).c_str(), it->second.samples_per_s / m);
      }
      say("\n");
    }
  }
  std::printf(
      "| | sequential | **fio** read bs=1 MiB QD16 (the disk's bandwidth) | - | %.0f "
      "| - | - | - | - | - | - |\n",
      device_seq.mbps);
  std::printf(
      "\n(* = stopped at the time limit before the end of the epoch; rates are over what was "
      "read)\n");
  std::printf("%s", targets.c_str());
  for (const auto& m : misses) std::printf("NOT COLD: %s\n", m.c_str());
  if (!opt.keep)
    for (const auto& f : files) std::filesystem::remove(f);
  return 0;
}
