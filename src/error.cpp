#include "ferry/error.h"

#include <cstring>

namespace ferry {

IoError io_error(const std::string& what, const std::string& path, int err) {
  return IoError(what + " '" + path + "': " + std::strerror(err), err);
}

}  // namespace ferry
