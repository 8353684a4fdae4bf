// The remote source (remote.h): a .ferry file over HTTP(S) read in fixed-size blocks.
//
// Blocks live in memory under a byte budget (LRU). A read waits for the blocks it needs; missing
// ones are fetched at once, at the front of the queue. will_need() (the loader's hints, from the
// known order) queues the blocks ahead of the consumer, so by the time a worker reads a sample its
// block is usually there. A small pool of fetch threads, each with its own keep-alive libcurl
// handle, runs the queue: neighbouring missing blocks go out as one range request (up to
// max_range_bytes), max_in_flight of them at once. Every range carries If-Match (the ETag seen at
// open) or If-Unmodified-Since, so an object replaced mid-run answers 412 and the read fails
// instead of mixing two versions.
#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "ferry/error.h"
#include "ferry/remote.h"
#include "ferry/source.h"
#include "source_internal.h"
#include "sources/disk_cache.h"
#include "util.h"

namespace ferry {

bool is_remote_path(const std::string& path) {
  return path.starts_with("http://") || path.starts_with("https://");
}

namespace {

using Clock = std::chrono::steady_clock;

void curl_global_once() {
  static const bool done = [] { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }();
  if (!done) throw IoError("libcurl failed to initialise", EIO);
}

// Header values are resolved once; "env:NAME" reads NAME. The error names the variable only.
std::vector<std::string> resolve_headers(const RemoteOptions& o, const std::string& url) {
  std::vector<std::string> out;
  for (const auto& [name, value] : o.headers) {
    std::string v = value;
    if (v.starts_with("env:")) {
      const char* e = std::getenv(v.c_str() + 4);
      if (e == nullptr)
        throw InvalidArgument("header '" + name + "' for " + url + ": environment variable '" +
                              v.substr(4) + "' is not set");
      v = e;
    }
    out.push_back(name + ": " + v);
  }
  return out;
}

// What one HTTP exchange returned.
struct Response {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string etag;
  std::string error;  // curl's message, for transport failures
};

// One libcurl easy handle: reused for every request of its thread so the connection stays open.
class Connection {
 public:
  Connection(const RemoteOptions& o, const std::vector<std::string>& headers)
      : handle_(curl_easy_init()) {
    if (!handle_) throw IoError("libcurl: cannot create a handle", ENOMEM);
    for (const auto& h : headers) base_headers_.push_back(h);
    set(CURLOPT_NOSIGNAL, 1L);
    set(CURLOPT_FOLLOWLOCATION, 1L);
    set(CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
    set(CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(o.connect_timeout.count()));
    set(CURLOPT_TIMEOUT_MS, static_cast<long>(o.request_timeout.count()));
    set(CURLOPT_SSL_VERIFYPEER, o.verify_tls ? 1L : 0L);
    set(CURLOPT_SSL_VERIFYHOST, o.verify_tls ? 2L : 0L);
    if (!o.ca_file.empty()) curl_easy_setopt(handle_, CURLOPT_CAINFO, o.ca_file.c_str());
    set(CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(handle_, CURLOPT_ERRORBUFFER, errbuf_);
    curl_easy_setopt(handle_, CURLOPT_WRITEFUNCTION, &Connection::on_body);
    curl_easy_setopt(handle_, CURLOPT_WRITEDATA, this);
    curl_easy_setopt(handle_, CURLOPT_HEADERFUNCTION, &Connection::on_header);
    curl_easy_setopt(handle_, CURLOPT_HEADERDATA, this);
  }
  ~Connection() { curl_easy_cleanup(handle_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // HEAD (dst == nullptr) or a GET of `range` ("a-b") into [dst, dst+capacity).
  Response run(const std::string& url, const std::vector<std::string>& extra, const char* range,
               uint8_t* dst, uint64_t capacity, uint64_t* received, uint64_t* size,
               long* filetime) {
    dst_ = dst;
    capacity_ = capacity;
    got_ = 0;
    etag_.clear();
    errbuf_[0] = 0;
    curl_slist* list = nullptr;
    for (const auto& h : base_headers_) list = curl_slist_append(list, h.c_str());
    for (const auto& h : extra) list = curl_slist_append(list, h.c_str());
    curl_easy_setopt(handle_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(handle_, CURLOPT_HTTPHEADER, list);
    set(CURLOPT_NOBODY, dst == nullptr ? 1L : 0L);
    if (dst == nullptr)
      set(CURLOPT_HTTPGET, 0L);
    else
      set(CURLOPT_HTTPGET, 1L);
    set(CURLOPT_FILETIME, 1L);
    curl_easy_setopt(handle_, CURLOPT_RANGE, range);
    Response r;
    r.code = curl_easy_perform(handle_);
    curl_easy_setopt(handle_, CURLOPT_HTTPHEADER, nullptr);
    curl_slist_free_all(list);
    curl_easy_getinfo(handle_, CURLINFO_RESPONSE_CODE, &r.status);
    if (size) {
      curl_off_t len = -1;
      curl_easy_getinfo(handle_, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
      *size = len < 0 ? UINT64_MAX : static_cast<uint64_t>(len);
    }
    if (filetime) curl_easy_getinfo(handle_, CURLINFO_FILETIME, filetime);
    if (received) *received = got_;
    r.etag = etag_;
    if (r.code != CURLE_OK)
      r.error = errbuf_[0] ? std::string(errbuf_) : std::string(curl_easy_strerror(r.code));
    return r;
  }

 private:
  template <class V>
  void set(CURLoption opt, V v) {
    curl_easy_setopt(handle_, opt, v);
  }
  static size_t on_body(char* p, size_t size, size_t n, void* self_) {
    auto* self = static_cast<Connection*>(self_);
    const size_t bytes = size * n;
    if (self->dst_ == nullptr || self->got_ + bytes > self->capacity_) return 0;  // too long
    std::memcpy(self->dst_ + self->got_, p, bytes);
    self->got_ += bytes;
    return bytes;
  }
  static size_t on_header(char* p, size_t size, size_t n, void* self_) {
    auto* self = static_cast<Connection*>(self_);
    const std::string_view line(p, size * n);
    if (line.size() > 5 &&
        (line.starts_with("ETag:") || line.starts_with("etag:") || line.starts_with("Etag:"))) {
      std::string_view v = line.substr(5);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
      while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' '))
        v.remove_suffix(1);
      self->etag_ = v;
    }
    return size * n;
  }

  CURL* handle_;
  std::vector<std::string> base_headers_;
  char errbuf_[CURL_ERROR_SIZE] = {};
  uint8_t* dst_ = nullptr;
  uint64_t capacity_ = 0, got_ = 0;
  std::string etag_;
};

bool retryable(const Response& r) {
  if (r.code != CURLE_OK) return true;  // timeouts, resets, truncated bodies, refused
  return r.status >= 500 || r.status == 429 || r.status == 408;
}

std::string describe(const Response& r) {
  if (r.code != CURLE_OK) return r.error;
  return "HTTP " + std::to_string(r.status);
}

// A block of the file: pending until a fetch fills it or fails.
struct Block {
  std::vector<uint8_t> data;
  bool ready = false;
  std::exception_ptr error;
  std::list<uint64_t>::iterator lru;  // valid while ready
};

class HttpSource final : public Source {
 public:
  HttpSource(std::string url, const RemoteOptions& o) : url_(std::move(url)), opt_(o) {
    curl_global_once();
    if (opt_.block_bytes == 0 || opt_.max_in_flight == 0 || opt_.max_in_flight > 256)
      throw InvalidArgument("remote options for " + url_ +
                            ": block_bytes must be > 0 and max_in_flight in [1, 256]");
    headers_ = resolve_headers(opt_, url_);
    probe();
    if (!opt_.cache_dir.empty() && opt_.cache_bytes > 0)
      cache_ = std::make_unique<detail::DiskCache>(opt_.cache_dir, opt_.cache_bytes,
                                                   url_ + "\n" + validator_ + "\n" +
                                                       std::to_string(size_) + "\n" +
                                                       std::to_string(opt_.block_bytes));
    for (uint32_t i = 0; i < opt_.max_in_flight; ++i)
      fetchers_.emplace_back([this] { fetch_loop(); });
  }

  ~HttpSource() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : fetchers_) t.join();
  }

  SourceTraits traits() const override {
    return {
        .local_file = false, .page_cache = false, .zero_copy_view = false, .prefetch_always = true};
  }
  const std::string& path() const override { return url_; }
  uint64_t size() const override { return size_; }
  std::string_view backend_name() const override { return "http"; }

  void read(uint64_t offset, uint64_t length, void* dst) override {
    detail::check_range(url_, offset, length, size_);
    if (length == 0) return;
    const uint64_t first = offset / opt_.block_bytes,
                   last = (offset + length - 1) / opt_.block_bytes;
    std::unique_lock lock(mu_);
    request_locked(first, last, /*urgent=*/true);
    const auto wait_start = Clock::now();
    bool waited = false;
    auto* out = static_cast<uint8_t*>(dst);
    for (uint64_t b = first; b <= last; ++b) {
      std::shared_ptr<Block> blk;
      for (;;) {
        auto it = blocks_.find(b);
        if (it == blocks_.end()) {  // evicted between request and wait: ask again
          request_locked(b, b, true);
          continue;
        }
        blk = it->second;
        if (blk->ready || blk->error) break;
        waited = true;
        done_cv_.wait(lock);
      }
      if (blk->error) {
        const std::exception_ptr e = blk->error;
        blocks_.erase(b);  // a later read retries it
        if (waited) add_wait(wait_start);
        std::rethrow_exception(e);
      }
      lru_.splice(lru_.end(), lru_, blk->lru);
      const uint64_t bbegin = b * opt_.block_bytes;
      const uint64_t from = std::max(offset, bbegin);
      const uint64_t to = std::min(offset + length, bbegin + blk->data.size());
      std::memcpy(out + (from - offset), blk->data.data() + (from - bbegin), to - from);
    }
    if (waited) add_wait(wait_start);
  }

  void will_need(std::span<const ReadRequest> ranges) override {
    std::vector<std::pair<uint64_t, uint64_t>> spans;
    for (const auto& r : ranges)
      if (r.length != 0 && detail::fits(r.offset, r.length, size_))
        spans.emplace_back(r.offset / opt_.block_bytes,
                           (r.offset + r.length - 1) / opt_.block_bytes);
    std::lock_guard lock(mu_);
    for (const auto& [a, b] : spans) request_locked(a, b, false);
  }

  RemoteStats stats() const {
    RemoteStats s;
    s.bytes = bytes_;
    s.requests = requests_;
    s.retries = retries_;
    s.cache_hits = cache_hits_;
    s.cache_misses = cache_misses_;
    s.wait_seconds = static_cast<double>(wait_ns_) / 1e9;
    return s;
  }

 private:
  struct Job {
    uint64_t first, last;  // blocks, inclusive
  };

  void add_wait(Clock::time_point start) {
    wait_ns_ += static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
  }

  uint64_t block_length(uint64_t b) const {
    return std::min(opt_.block_bytes, size_ - b * opt_.block_bytes);
  }

  // Marks the missing blocks of [first, last] pending and queues them in runs. Hints beyond the
  // memory budget are dropped (they would evict blocks about to be read); demand reads never are.
  void request_locked(uint64_t first, uint64_t last, bool urgent) {
    std::vector<Job> jobs;
    for (uint64_t b = first; b <= last; ++b) {
      if (blocks_.count(b)) continue;
      if (!urgent && held_bytes_ + block_length(b) > opt_.memory_bytes) {
        evict_locked(block_length(b));
        if (held_bytes_ + block_length(b) > opt_.memory_bytes) break;
      }
      if (urgent) evict_locked(block_length(b));
      blocks_.emplace(b, std::make_shared<Block>());
      held_bytes_ += block_length(b);
      if (!jobs.empty() && jobs.back().last + 1 == b &&
          (b - jobs.back().first + 1) * opt_.block_bytes <= opt_.max_range_bytes)
        jobs.back().last = b;
      else
        jobs.push_back({b, b});
    }
    if (jobs.empty()) return;
    if (urgent)
      queue_.insert(queue_.begin(), jobs.begin(), jobs.end());
    else
      queue_.insert(queue_.end(), jobs.begin(), jobs.end());
    work_cv_.notify_all();
  }

  // Drops least recently used ready blocks until `incoming` more bytes fit the budget.
  void evict_locked(uint64_t incoming) {
    while (held_bytes_ + incoming > opt_.memory_bytes && !lru_.empty()) {
      const uint64_t b = lru_.front();
      lru_.pop_front();
      auto it = blocks_.find(b);
      if (it != blocks_.end()) {
        held_bytes_ -= it->second->data.size();
        blocks_.erase(it);
      }
    }
  }

  void fetch_loop() {
    std::unique_ptr<Connection> conn;
    std::unique_lock lock(mu_);
    for (;;) {
      work_cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      const Job job = queue_.front();
      queue_.pop_front();
      lock.unlock();
      std::vector<std::vector<uint8_t>> data;
      std::exception_ptr error;
      try {
        if (!conn) conn = std::make_unique<Connection>(opt_, headers_);
        data = fetch_job(*conn, job);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      for (uint64_t b = job.first; b <= job.last; ++b) {
        auto it = blocks_.find(b);
        if (it == blocks_.end()) continue;
        Block& blk = *it->second;
        if (error) {
          blk.error = error;
          held_bytes_ -= block_length(b);
          continue;
        }
        blk.data = std::move(data[b - job.first]);
        blk.ready = true;
        blk.lru = lru_.insert(lru_.end(), b);
      }
      done_cv_.notify_all();
    }
  }

  // The blocks of `job`: from the disk cache where it has them, the rest by range requests.
  std::vector<std::vector<uint8_t>> fetch_job(Connection& conn, const Job& job) {
    std::vector<std::vector<uint8_t>> data(job.last - job.first + 1);
    std::vector<bool> have(data.size(), false);
    for (uint64_t b = job.first; b <= job.last; ++b) {
      data[b - job.first].resize(block_length(b));
      if (cache_) {
        have[b - job.first] = cache_->get(b, data[b - job.first]);
        (have[b - job.first] ? cache_hits_ : cache_misses_) += 1;
      }
    }
    for (uint64_t i = 0; i < data.size();) {
      if (have[i]) {
        ++i;
        continue;
      }
      uint64_t j = i;
      while (j + 1 < data.size() && !have[j + 1]) ++j;
      fetch_range(conn, job.first + i, job.first + j, data, i);
      if (cache_)
        for (uint64_t k = i; k <= j; ++k) cache_->put(job.first + k, data[k]);
      i = j + 1;
    }
    return data;
  }

  // Blocks [first, last] into data[at...] with one range request, retried on faults.
  void fetch_range(Connection& conn, uint64_t first, uint64_t last,
                   std::vector<std::vector<uint8_t>>& data, uint64_t at) {
    const uint64_t begin = first * opt_.block_bytes;
    const uint64_t end = last * opt_.block_bytes + block_length(last);
    std::vector<uint8_t> buf(end - begin);
    const std::string range = std::to_string(begin) + "-" + std::to_string(end - 1);
    std::vector<std::string> extra;
    if (!etag_.empty())
      extra.push_back("If-Match: " + etag_);
    else if (!last_modified_.empty())
      extra.push_back("If-Unmodified-Since: " + last_modified_);
    auto backoff = opt_.backoff;
    for (uint32_t attempt = 0;; ++attempt) {
      uint64_t got = 0;
      ++requests_;
      const Response r =
          conn.run(url_, extra, range.c_str(), buf.data(), buf.size(), &got, nullptr, nullptr);
      bytes_ += got;
      if (r.code == CURLE_OK && r.status == 412)
        throw IoError(
            "object changed during the run: " + url_ + " (ETag/Last-Modified differ from open)",
            ESTALE);
      if (r.code == CURLE_OK && r.status == 206 && !etag_.empty() && !r.etag.empty() &&
          r.etag != etag_)
        throw IoError("object changed during the run: " + url_ + " (ETag differs from open)",
                      ESTALE);
      const bool whole = r.code == CURLE_OK &&
                         (r.status == 206 || (r.status == 200 && begin == 0 && end == size_));
      if (whole && got == buf.size()) break;
      const bool again = whole /* short body */ || retryable(r);
      if (!again || attempt >= opt_.retries) {
        const std::string what = whole ? "truncated body (" + std::to_string(got) + " of " +
                                             std::to_string(buf.size()) + " bytes)"
                                       : describe(r);
        throw IoError("GET " + url_ + " bytes " + range + ": " + what +
                          (again ? " after " + std::to_string(attempt + 1) + " attempts" : ""),
                      EIO);
      }
      ++retries_;
      std::this_thread::sleep_for(backoff);
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(5));
    }
    for (uint64_t b = first; b <= last; ++b)
      std::memcpy(data[at + (b - first)].data(), buf.data() + (b - first) * opt_.block_bytes,
                  block_length(b));
  }

  // HEAD: size and validator. 4xx fail at once, naming the URL and status.
  void probe() {
    Connection conn(opt_, headers_);
    auto backoff = opt_.backoff;
    for (uint32_t attempt = 0;; ++attempt) {
      uint64_t size = 0;
      long filetime = -1;
      ++requests_;
      const Response r = conn.run(url_, {}, nullptr, nullptr, 0, nullptr, &size, &filetime);
      if (r.code == CURLE_OK && r.status >= 200 && r.status < 300) {
        if (size == UINT64_MAX)
          throw IoError(url_ + ": the server sent no Content-Length; cannot read by ranges", EIO);
        size_ = size;
        etag_ = r.etag.starts_with("W/") ? "" : r.etag;  // weak ETags are not valid for If-Match
        if (filetime >= 0) {
          char buf[64];
          const time_t t = filetime;
          tm g{};
          gmtime_r(&t, &g);
          std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &g);
          last_modified_ = buf;
        }
        validator_ = etag_.empty() ? last_modified_ : etag_;
        return;
      }
      if (!retryable(r) || attempt >= opt_.retries)
        throw IoError(
            "cannot open " + url_ + ": " + describe(r) +
                (retryable(r) ? " after " + std::to_string(attempt + 1) + " attempts" : ""),
            r.status == 404                      ? ENOENT
            : r.status == 403 || r.status == 401 ? EACCES
                                                 : EIO);
      ++retries_;
      std::this_thread::sleep_for(backoff);
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(5));
    }
  }

  std::string url_;
  RemoteOptions opt_;
  std::vector<std::string> headers_;
  uint64_t size_ = 0;
  std::string etag_, last_modified_, validator_;
  std::unique_ptr<detail::DiskCache> cache_;

  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::unordered_map<uint64_t, std::shared_ptr<Block>> blocks_;  // guarded by mu_
  std::list<uint64_t> lru_;                                      // ready blocks, oldest first
  std::deque<Job> queue_;
  uint64_t held_bytes_ = 0;
  bool stop_ = false;
  std::vector<std::thread> fetchers_;

  std::atomic<uint64_t> bytes_{0}, requests_{0}, retries_{0}, cache_hits_{0}, cache_misses_{0},
      wait_ns_{0};
};

}  // namespace

std::unique_ptr<Source> open_http_source(const std::string& url, const RemoteOptions& options) {
  return std::make_unique<HttpSource>(url, options);
}

RemoteStats remote_stats(const Source& source) {
  if (const auto* h = dynamic_cast<const HttpSource*>(&source)) return h->stats();
  return {};
}

}  // namespace ferry
