#pragma once
// Shared by the benchmark programs: machine description, timers, synthetic files, RSS.
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "ferry/importers.h"

namespace ferry::bench {

using Clock = std::chrono::steady_clock;

inline double elapsed(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// The CPU's model name from /proc/cpuinfo.
inline std::string cpu_model() {
  std::ifstream cpu("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpu, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

/// "2 cores, Intel(R) Xeon(R) ..., Linux 6.1" — printed by every benchmark.
inline std::string machine() {
  utsname u{};
  uname(&u);
  return std::to_string(sysconf(_SC_NPROCESSORS_ONLN)) + " cores, " + cpu_model() + ", " +
         u.sysname + " " + u.release;
}

/// Value of a /proc/self/status line ("VmHWM", "RssAnon"...), in bytes.
inline uint64_t proc_status_bytes(const std::string& key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key + ":", 0) == 0) return std::stoull(line.substr(key.size() + 1)) * 1024;
  return 0;
}

/// Busy-waits (models compute that occupies a core).
inline void spin_for(std::chrono::nanoseconds d) {
  const auto end = Clock::now() + d;
  while (Clock::now() < end) {
  }
}

/// Writes a synthetic file once (kept between runs under data/), returns its path.
inline std::string synthetic(const std::string& name, uint64_t n, uint64_t bytes,
                             uint64_t page_size = 2u << 20) {
  std::filesystem::create_directories("data");
  const std::string path = "data/" + name;
  if (std::filesystem::exists(path)) return path;
  std::fprintf(stderr, "writing %s (%llu × %llu B)...\n", path.c_str(),
               static_cast<unsigned long long>(n), static_cast<unsigned long long>(bytes));
  SyntheticSpec spec;
  spec.num_samples = n;
  spec.shape = {bytes};
  WriterOptions o;
  o.page_size = page_size;
  o.fsync = false;
  write_synthetic(path, spec, o);
  return path;
}

}  // namespace ferry::bench
