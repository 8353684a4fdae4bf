// The CUDA options without a GPU: builds without CUDA refuse CUDA devices with one clear message;
// CUDA builds point a host Loader asked for a GPU at DeviceLoader. (tests/cuda/ has the GPU suite.)
#include <gtest/gtest.h>

#include <string>

#include "ferry/cuda.h"
#include "test_util.h"

namespace ferry {
namespace {

void expect_invalid(auto&& make, const std::string& needle) {
  try {
    make();
    FAIL() << "expected InvalidArgument mentioning '" << needle << "'";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(CudaOptionTest, CudaDevicesNeedTheCudaBuild) {
  testing::TempDir dir;
  const std::string path = testing::synthetic_file(dir, "f.ferry", 10, 8);
  LoaderOptions o;
  o.batch_size = 4;
  o.device = "cuda";
#if FERRY_HAVE_CUDA
  EXPECT_TRUE(cuda_available());
  expect_invalid([&] { Loader l(path, o); }, "DeviceLoader");
#else
  EXPECT_FALSE(cuda_available());
  expect_invalid([&] { Loader l(path, o); }, "ferry was built without CUDA");
  expect_invalid([&] { DeviceLoader l(path, o); }, "ferry was built without CUDA");
  o.device = "cuda:1";
  expect_invalid([&] { DeviceLoader l(path, o); }, "ferry was built without CUDA");
  expect_invalid([] { PinnedAllocator a(0); }, "ferry was built without CUDA");
#endif
  o.device = "tpu";
  expect_invalid([&] { Loader l(path, o); }, "'cpu', 'cuda' or 'cuda:N'");
  expect_invalid([&] { DeviceLoader l(path, o); }, "'cuda' or 'cuda:N'");
}

}  // namespace
}  // namespace ferry
