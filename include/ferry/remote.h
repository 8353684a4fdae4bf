#pragma once
/// \file remote.h
/// \brief Reading a .ferry file over HTTP(S): range requests for fixed-size blocks of the file,
/// coalesced, many in flight over keep-alive connections, fetched ahead from the loader's hints,
/// with retries, an object-changed check and an optional on-disk cache tier. docs/remote.md.
///
/// open_source() and Reader::open() dispatch here for paths starting with http:// or https://.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ferry {

class Source;

struct RemoteOptions {
  /// Extra request headers. A value "env:NAME" is read from the environment variable NAME at
  /// open (e.g. {"Authorization", "env:HF_TOKEN"}); header values never appear in errors, logs
  /// or metrics.
  std::vector<std::pair<std::string, std::string>> headers;
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds request_timeout{60'000};  ///< one range request, start to end
  /// Attempts after the first for timeouts, resets, 5xx and truncated bodies; the wait doubles
  /// from `backoff` each time (capped at 5 s).
  uint32_t retries = 5;
  std::chrono::milliseconds backoff{50};
  uint32_t max_in_flight = 8;            ///< range requests at once (one connection each)
  uint64_t block_bytes = 1 << 20;        ///< fetch and cache granularity
  uint64_t max_range_bytes = 16 << 20;   ///< neighbouring blocks are coalesced up to this
  uint64_t memory_bytes = 256ull << 20;  ///< fetched + in-flight blocks held in memory at most
  bool verify_tls = true;                ///< off only for test servers you control
  std::string ca_file;                   ///< PEM bundle instead of the system's
  /// Local disk cache tier: blocks are kept under cache_dir within cache_bytes (LRU by access
  /// time), verified by checksum on reuse, written atomically, shared by processes, reused
  /// after a restart. Empty: no disk cache.
  std::string cache_dir;
  uint64_t cache_bytes = 0;
};

/// What a remote source did (all zero for local sources).
struct RemoteStats {
  uint64_t bytes = 0;     ///< body bytes received from the network
  uint64_t requests = 0;  ///< HTTP requests sent (HEAD at open and every range attempt)
  uint64_t retries = 0;   ///< attempts repeated after a fault
  uint64_t cache_hits = 0, cache_misses = 0;  ///< disk cache blocks (with cache_dir set)
  double wait_seconds = 0;  ///< time readers spent blocked waiting for the network
};

/// True for http:// and https:// paths.
bool is_remote_path(const std::string& path);

/// Opens `url`: one HEAD for its size and ETag/Last-Modified. Throws IoError naming the URL and
/// the HTTP status (404, 403, ...) or the transport error after the retries.
std::unique_ptr<Source> open_http_source(const std::string& url, const RemoteOptions& options = {});

/// The source's counters if it is remote (or wraps nothing else), else zeros.
RemoteStats remote_stats(const Source& source);

}  // namespace ferry
