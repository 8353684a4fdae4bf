// The seed scenario, side by side in one run: N tiles, each loaded (L) then processed (P), with
// L/P = 120/428 scaled down (default L = 12 ms, P = 42.8 ms). "sequential" loads each tile in the
// consumer thread before processing it; "TileLoader" runs the same loads on worker threads,
// prefetch_ahead tiles ahead of the one being processed.
//
// A load reads a real file through ferry's sources (file_loader: open_source + read) and then
// sleeps until L has passed since it started (the storage latency the seed measured). Processing
// spins, touching the tile's bytes, until P has passed: it occupies a core like real compute.
//
//   tile_loader_bench [--tiles N] [--load-ms L] [--process-ms P] [--workers W] [--ahead A]
//                     [--tile-kib K]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "ferry/tile_loader.h"

namespace {

using Clock = std::chrono::steady_clock;
using Ms = std::chrono::duration<double, std::milli>;

struct Args {
  int tiles = 100;
  double load_ms = 12.0;
  double process_ms = 42.8;
  uint32_t workers = 2;
  uint32_t ahead = 2;
  uint64_t tile_kib = 256;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "missing value after %s\n", k.c_str());
      std::exit(2);
    }
    const char* v = argv[++i];
    if (k == "--tiles")
      a.tiles = std::atoi(v);
    else if (k == "--load-ms")
      a.load_ms = std::atof(v);
    else if (k == "--process-ms")
      a.process_ms = std::atof(v);
    else if (k == "--workers")
      a.workers = static_cast<uint32_t>(std::atoi(v));
    else if (k == "--ahead")
      a.ahead = static_cast<uint32_t>(std::atoi(v));
    else if (k == "--tile-kib")
      a.tile_kib = static_cast<uint64_t>(std::atoll(v));
    else {
      std::fprintf(stderr, "unknown option %s (see the file comment)\n", k.c_str());
      std::exit(2);
    }
  }
  if (a.tiles < 1 || a.workers < 1 || a.load_ms < 0 || a.process_ms <= 0) {
    std::fprintf(stderr, "need tiles >= 1, workers >= 1, load-ms >= 0, process-ms > 0\n");
    std::exit(2);
  }
  return a;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

/// Processing: a checksum of the tile (the result, identical in both modes), then spinning over
/// the bytes until `p` has passed. Wall-clock based, so preemption on a busy machine does not
/// stretch it.
uint64_t process_tile(const ferry::TileValue& v, Ms p) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(p);
  const auto bytes = v.as<ferry::FileBytes>().bytes();
  uint64_t sum = 0;
  for (std::size_t i = 0; i < bytes.size(); i += 64) sum = sum * 31 + bytes[i];
  volatile uint64_t sink = 0;
  std::size_t i = 0;
  while (Clock::now() < deadline)
    for (int k = 0; k < 4096 && !bytes.empty(); ++k, i = (i + 64) % bytes.size())
      sink = sink + bytes[i];
  return sum;
}

struct Run {
  double wall_s = 0;
  double process_s = 0;  // summed processing time
  double load_s = 0;     // summed time in the load function
  double wait_s = 0;     // consumer blocked on loads
  double hit_rate = 0;
  uint64_t checksum = 0;
};

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  const Ms L(args.load_ms), P(args.process_ms);

  // The tiles: real files, read back through ferry's sources.
  const auto dir =
      std::filesystem::temp_directory_path() / ("ferry-tile-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::vector<std::string> keys;
  {
    std::vector<char> bytes(args.tile_kib * 1024);
    for (int t = 0; t < args.tiles; ++t) {
      for (std::size_t i = 0; i < bytes.size(); ++i)
        bytes[i] = static_cast<char>((i * 131 + t) & 0xff);
      keys.push_back("tile_" + std::to_string(t) + ".bin");
      std::ofstream(dir / keys.back(), std::ios::binary)
          .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
  }
  const ferry::TileLoadFn read_file = ferry::file_loader(dir.string());
  const ferry::TileLoadFn load = [&](const std::string& key) {
    const auto t0 = Clock::now();
    ferry::TileValue v = read_file(key);
    std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(L));
    return v;
  };

  // Sequential: the consumer loads, then processes.
  Run seq;
  {
    const auto t0 = Clock::now();
    for (const auto& key : keys) {
      const auto l0 = Clock::now();
      const ferry::TileValue v = load(key);
      const double took = std::chrono::duration<double>(Clock::now() - l0).count();
      seq.load_s += took;
      seq.wait_s += took;
      const auto p0 = Clock::now();
      seq.checksum += process_tile(v, P);
      seq.process_s += std::chrono::duration<double>(Clock::now() - p0).count();
    }
    seq.wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  }

  // TileLoader: the same loads on workers, prefetch_ahead tiles ahead.
  Run async;
  std::string report;
  {
    ferry::TileLoaderOptions o;
    o.num_workers = args.workers;
    o.prefetch_ahead = args.ahead;
    o.cache_bytes = (args.ahead + 2ull) * args.tile_kib * 1024;  // the window, plus one
    ferry::TileLoader loader(load, o);
    const auto t0 = Clock::now();
    const auto sums = loader.process(keys, [&](const std::string&, const ferry::TileValue& v) {
      const auto p0 = Clock::now();
      const uint64_t sum = process_tile(v, P);
      async.process_s += std::chrono::duration<double>(Clock::now() - p0).count();
      return sum;
    });
    async.wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
    for (uint64_t s : sums) async.checksum += s;
    const auto st = loader.stats();
    async.load_s = st.total_load_seconds;
    async.wait_s = st.consumer_wait_seconds;
    async.hit_rate = st.hit_rate;
    report = loader.report();
  }
  std::filesystem::remove_all(dir);

  const int n = args.tiles;
  const double ideal = (args.load_ms + args.process_ms) / args.process_ms;
  // The same ratio from what the sequential run measured (sleeps overshoot on a busy machine).
  const double measured_ideal = seq.wall_s / seq.process_s;
  const double speedup = seq.wall_s / async.wall_s;
  const double hidden = 100.0 * (1.0 - async.wait_s / async.load_s);
  const bool checksum_ok = seq.checksum == async.checksum;

  std::printf(
      "ferry tile_loader_bench: %d tiles of %llu KiB, load L = %.1f ms, processing P = %.1f ms"
      " (L/P = 120/428 scaled)\n",
      n, static_cast<unsigned long long>(args.tile_kib), args.load_ms, args.process_ms);
  std::printf("machine: nproc %u, %s, load average %s\n", std::thread::hardware_concurrency(),
              ferry::bench::cpu_model().c_str(), load_average().c_str());
  std::printf(
      "TileLoader: %u workers, prefetch_ahead %u; loads read files via ferry::file_loader "
      "then sleep to L\n\n",
      args.workers, args.ahead);
  std::printf(
      "| mode       | wall (s) | per tile (ms) | load / tile (ms) | process / tile (ms) |"
      " consumer wait / tile (ms) | I/O hidden | hit rate | speedup |\n");
  std::printf(
      "|------------|---------:|--------------:|-----------------:|--------------------:|"
      "--------------------------:|-----------:|---------:|--------:|\n");
  std::printf(
      "| sequential | %8.3f | %13.2f | %16.2f | %19.2f | %25.2f | %9.1f%% | %8s | %6.3fx |\n",
      seq.wall_s, 1000 * seq.wall_s / n, 1000 * seq.load_s / n, 1000 * seq.process_s / n,
      1000 * seq.wait_s / n, 0.0, "-", 1.0);
  std::printf(
      "| TileLoader | %8.3f | %13.2f | %16.2f | %19.2f | %25.2f | %9.1f%% | %7.1f%% | %6.3fx |\n",
      async.wall_s, 1000 * async.wall_s / n, 1000 * async.load_s / n, 1000 * async.process_s / n,
      1000 * async.wait_s / n, hidden, 100 * async.hit_rate, speedup);
  std::printf(
      "\nideal speedup (L+P)/P = %.3fx (from the sequential run's measured L and P: %.3fx)\n",
      ideal, measured_ideal);
  std::printf("achieved %.3fx = %.3f x ideal, %.3f x measured ideal (target >= 0.97 x ideal): %s\n",
              speedup, speedup / ideal, speedup / measured_ideal,
              speedup >= 0.97 * ideal ? "met" : "MISSED");
  std::printf("I/O hidden %.1f%% of load time (target >= 98%%): %s\n", hidden,
              hidden >= 98.0 ? "met" : "MISSED");
  std::printf("results identical to sequential: %s\n\n%s", checksum_ok ? "yes" : "NO",
              report.c_str());
  return checksum_ok ? 0 : 1;
}
