#pragma once
/// \file error.h
/// \brief ferry's one error convention: exceptions from a small hierarchy.
///
/// Syscall failures become IoError in exactly one place (io_error()); file-content problems are
/// FormatError and always name the file and section. The Python bindings map each class to a
/// Python exception type (InvalidArgument -> ValueError, TimeoutError -> TimeoutError, ...).
#include <cstdint>
#include <stdexcept>
#include <string>

namespace ferry {

/// Base class of every error ferry throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The file's bytes are not a valid ferry file (bad magic, checksum, offset out of range...).
class FormatError : public Error {
 public:
  using Error::Error;
};

/// A system call failed; errno_value() holds the errno.
class IoError : public Error {
 public:
  IoError(const std::string& what, int errno_value) : Error(what), errno_(errno_value) {}
  int errno_value() const noexcept { return errno_; }

 private:
  int errno_;
};

/// An argument or option is invalid; the message says what to change.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

/// A wait (Loader::next(timeout), TileLoader::get(key, timeout)) ran out of time.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

/// Reading or transforming one sample failed; the message names the file, sample and cause.
class SampleError : public Error {
 public:
  SampleError(const std::string& what, uint64_t sample) : Error(what), sample_(sample) {}
  uint64_t sample() const noexcept { return sample_; }

 private:
  uint64_t sample_;
};

/// The object was shut down (or is shutting down) and cannot serve the call.
class ShutdownError : public Error {
 public:
  using Error::Error;
};

/// The consumer holds every buffer the memory budget allows; it must release batches.
class CapacityError : public Error {
 public:
  using Error::Error;
};

/// Builds an IoError "<what> '<path>': <strerror(err)>". The one place errno becomes an error.
IoError io_error(const std::string& what, const std::string& path, int err);

}  // namespace ferry
