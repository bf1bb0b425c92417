#include "tessera/core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "tessera/core/error.h"
#include "tessera/core/logging.h"

namespace tessera {
namespace {

std::string describe_errno(int error_number) { return std::strerror(error_number); }

std::string random_hex_suffix() {
  std::random_device device;
  std::uniform_int_distribution<uint64_t> distribution;
  return fmt::format("{:016x}", distribution(device));
}

std::filesystem::path directory_of(const std::filesystem::path& target) {
  return target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
}

// A rename is durable only once the directory holding the new entry is synced. The file is
// already in place by then, so a failure here is logged rather than thrown: throwing would tell
// the caller the save failed when the new file is, in fact, complete and visible.
void sync_directory_of(const std::filesystem::path& target) {
  const std::filesystem::path directory = directory_of(target);
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const bool synced = fd >= 0 && ::fsync(fd) == 0;
  const int sync_errno = errno;
  if (fd >= 0) ::close(fd);
  // Some file systems do not support fsync on a directory (EINVAL); nothing more can be done.
  if (!synced && sync_errno != EINVAL) {
    TESSERA_LOG_WARN("saved '{}' but could not sync its directory '{}': {}", target.string(),
                     directory.string(), describe_errno(sync_errno));
  }
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::filesystem::path target) : target_(std::move(target)) {
  TESSERA_CHECK(!target_.empty() && target_.has_filename(),
                "cannot write to '{}': not a file path", target_.string());
  std::error_code error;
  if (target_.has_parent_path()) std::filesystem::create_directories(target_.parent_path(), error);
  TESSERA_CHECK(!error, "cannot write '{}': cannot create its directory: {}", target_.string(),
                error.message());
  // O_EXCL refuses a name that exists; with 64 random bits a retry is all but never needed.
  int open_errno = 0;
  for (int attempt = 0; attempt < 8 && fd_ < 0; ++attempt) {
    temporary_ = directory_of(target_) / fmt::format("{}.tmp.{}.{}", target_.filename().string(),
                                                     static_cast<long>(::getpid()),
                                                     random_hex_suffix());
    fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    open_errno = errno;
    if (fd_ < 0 && open_errno != EEXIST) break;
  }
  TESSERA_CHECK(fd_ >= 0, "cannot write '{}': cannot create a temporary file next to it ('{}'): {}",
                target_.string(), temporary_.string(), describe_errno(open_errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temporary_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t size) {
  TESSERA_CHECK(fd_ >= 0 && !committed_, "cannot write '{}': already committed", target_.string());
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd_, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    const int write_errno = errno;
    TESSERA_CHECK(n > 0, "cannot write '{}': writing '{}' failed: {}", target_.string(),
                  temporary_.string(), n < 0 ? describe_errno(write_errno) : "no progress");
    bytes += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicFileWriter::commit() {
  TESSERA_CHECK(fd_ >= 0 && !committed_, "'{}' committed twice", target_.string());
  const int sync_result = ::fsync(fd_);
  const int sync_errno = errno;
  TESSERA_CHECK(sync_result == 0, "cannot write '{}': fsync of '{}' failed: {}", target_.string(),
                temporary_.string(), describe_errno(sync_errno));
  // close can report a deferred write error (NFS, quota), so its result counts too.
  const int close_result = ::close(fd_);
  const int close_errno = errno;
  fd_ = -1;
  TESSERA_CHECK(close_result == 0, "cannot write '{}': closing '{}' failed: {}", target_.string(),
                temporary_.string(), describe_errno(close_errno));
  const int rename_result = ::rename(temporary_.c_str(), target_.c_str());
  const int rename_errno = errno;
  TESSERA_CHECK(rename_result == 0, "cannot write '{}': renaming '{}' to it failed: {}",
                target_.string(), temporary_.string(), describe_errno(rename_errno));
  committed_ = true;
  sync_directory_of(target_);
}

void write_file_atomically(const std::filesystem::path& path, std::string_view bytes) {
  AtomicFileWriter writer(path);
  writer.write(bytes);
  writer.commit();
}

}  // namespace tessera
