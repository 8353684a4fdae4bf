#pragma once
// Helpers shared by the GoogleTest suites.
#include <unistd.h>

#include <filesystem>
#include <random>
#include <string>

#include "ferry/importers.h"

namespace ferry::testing {

/// A fresh folder under the test temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ferry-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// Writes a synthetic file and returns its path.
inline std::string synthetic_file(const TempDir& dir, const std::string& name, uint64_t n,
                                  uint64_t bytes, uint64_t page_size = 64 * 1024,
                                  bool variable = false, uint64_t seed = 7) {
  SyntheticSpec spec;
  spec.num_samples = n;
  spec.shape = {bytes};
  spec.variable = variable;
  spec.seed = seed;
  WriterOptions opt;
  opt.page_size = page_size;
  opt.fsync = false;
  const std::string path = dir.file(name);
  write_synthetic(path, spec, opt);
  return path;
}

}  // namespace ferry::testing
