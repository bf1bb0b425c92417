#include "tessera/core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "tessera/core/error.h"

namespace tessera {
namespace {

std::string errno_text() { return std::strerror(errno); }

std::filesystem::path temporary_name(const std::filesystem::path& target) {
  std::random_device device;
  const auto suffix = fmt::format(".tmp.{}.{:08x}", static_cast<long>(::getpid()), device());
  return target.parent_path() / (target.filename().string() + suffix);
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::filesystem::path target) : target_(std::move(target)) {
  TESSERA_CHECK(!target_.empty() && target_.has_filename(),
                "cannot write to '{}': not a file path", target_.string());
  std::error_code error;
  if (target_.has_parent_path()) std::filesystem::create_directories(target_.parent_path(), error);
  TESSERA_CHECK(!error, "cannot write '{}': cannot create its directory: {}", target_.string(),
                error.message());
  temporary_ = temporary_name(target_);
  fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  TESSERA_CHECK(fd_ >= 0, "cannot write '{}': cannot create '{}': {}", target_.string(),
                temporary_.string(), errno_text());
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temporary_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t size) {
  TESSERA_CHECK(fd_ >= 0 && !committed_, "write to '{}' after commit", target_.string());
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd_, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    TESSERA_CHECK(n > 0, "writing '{}' failed: {}", temporary_.string(), errno_text());
    bytes += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicFileWriter::commit() {
  TESSERA_CHECK(fd_ >= 0 && !committed_, "'{}' committed twice", target_.string());
  TESSERA_CHECK(::fsync(fd_) == 0, "fsync of '{}' failed: {}", temporary_.string(), errno_text());
  const int close_result = ::close(fd_);
  fd_ = -1;
  TESSERA_CHECK(close_result == 0, "closing '{}' failed: {}", temporary_.string(), errno_text());
  TESSERA_CHECK(::rename(temporary_.c_str(), target_.c_str()) == 0, "renaming '{}' to '{}' failed: {}",
                temporary_.string(), target_.string(), errno_text());
  committed_ = true;
  // Make the rename durable. A failure here leaves the new file in place; report nothing.
  const auto dir = target_.has_parent_path() ? target_.parent_path() : std::filesystem::path(".");
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

void write_file_atomically(const std::filesystem::path& path, std::string_view bytes) {
  AtomicFileWriter writer(path);
  writer.write(bytes);
  writer.commit();
}

}  // namespace tessera
