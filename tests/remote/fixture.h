#pragma once
// Starts tests/remote/fixture.py (nginx + the fault-injecting proxy on 127.0.0.1) as a child
// process for a GoogleTest suite, reads its ports from the first stdout line, and stops it on
// destruction (closing its stdin is the stop signal, so a crashed test stops it too).
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <stdexcept>
#include <string>

#include <curl/curl.h>

namespace ferry::testing {

class RemoteFixture {
 public:
  explicit RemoteFixture(const std::string& root, double rtt_ms = 0, double bandwidth = 0,
                         int seed = 1) {
    int in[2], out[2];
    if (::pipe(in) != 0 || ::pipe(out) != 0) throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::close(in[1]);
      ::close(out[0]);
      const std::string script = std::string(FERRY_SOURCE_DIR) + "/tests/remote/fixture.py";
      const std::string rtt = std::to_string(rtt_ms), bw = std::to_string(bandwidth),
                        sd = std::to_string(seed);
      ::execl("/usr/bin/python3", "python3", script.c_str(), "--root", root.c_str(), "--rtt-ms",
              rtt.c_str(), "--bandwidth", bw.c_str(), "--seed", sd.c_str(), nullptr);
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    FILE* f = ::fdopen(out[0], "r");
    char line[512] = {};
    const bool ok = f && std::fgets(line, sizeof line, f) != nullptr;
    if (f) std::fclose(f);
    int nginx = 0, proxy = 0;
    if (!ok || std::sscanf(line, "{\"nginx\": %d, \"proxy\": %d", &nginx, &proxy) != 2) {
      stop();
      throw std::runtime_error(std::string("remote fixture did not start: ") + line);
    }
    nginx_port_ = nginx;
    proxy_port_ = proxy;
  }
  ~RemoteFixture() { stop(); }
  RemoteFixture(const RemoteFixture&) = delete;
  RemoteFixture& operator=(const RemoteFixture&) = delete;

  std::string url(const std::string& name, bool direct = false) const {
    return "http://127.0.0.1:" + std::to_string(direct ? nginx_port_ : proxy_port_) + "/" + name;
  }
  /// GET a control path of the proxy (__stats, __reset_stats, __faults?...); returns the body.
  std::string control(const std::string& query) const {
    CURL* h = curl_easy_init();
    std::string body;
    const std::string u = url(query);
    curl_easy_setopt(h, CURLOPT_URL, u.c_str());
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(
        h, CURLOPT_WRITEFUNCTION, +[](char* p, size_t s, size_t n, void* b) {
          static_cast<std::string*>(b)->append(p, s * n);
          return s * n;
        });
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    const CURLcode rc = curl_easy_perform(h);
    curl_easy_cleanup(h);
    if (rc != CURLE_OK) throw std::runtime_error("fixture control " + query + " failed");
    return body;
  }
  /// The proxy's count of forwarded requests (stats requests excluded).
  long requests() const {
    const std::string s = control("__stats");
    long n = -1;
    std::sscanf(s.c_str(), "{\"requests\": %ld", &n);
    return n;
  }

 private:
  void stop() {
    if (stdin_ >= 0) ::close(stdin_);
    stdin_ = -1;
    if (pid_ > 0) {
      for (int i = 0; i < 100; ++i) {  // bounded: 10 s, then SIGKILL
        if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
          pid_ = -1;
          return;
        }
        ::usleep(100000);
      }
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  pid_t pid_ = -1;
  int stdin_ = -1;
  int nginx_port_ = 0, proxy_port_ = 0;
};

}  // namespace ferry::testing
