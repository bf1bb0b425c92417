#include "tessera/core/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <random>
#include <string>

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

// The writer's pid when `name` is `<file>.tmp.<pid>.<16 hex digits>` (AtomicFileWriter's temporary
// names), else -1.
long temporary_file_writer(const std::string& name) {
  constexpr size_t kHexDigits = 16;
  const size_t marker = name.rfind(".tmp.");
  if (marker == std::string::npos || marker == 0) return -1;
  const std::string rest = name.substr(marker + 5);  // "<pid>.<hex>"
  const size_t dot = rest.find('.');
  if (dot == std::string::npos || dot == 0 || dot > 9 || rest.size() - dot - 1 != kHexDigits) {
    return -1;
  }
  for (size_t i = 0; i < rest.size(); ++i) {
    const auto c = static_cast<unsigned char>(rest[i]);
    const bool digit = std::isdigit(c) != 0, hex = digit || (c >= 'a' && c <= 'f');
    if (i < dot ? !digit : (i != dot && !hex)) return -1;
  }
  return std::stol(rest.substr(0, dot));
}

}  // namespace

int64_t remove_stale_temporary_files(const std::filesystem::path& directory) {
  std::error_code error;
  std::filesystem::directory_iterator entries(directory, error);
  if (error) return 0;
  int64_t removed = 0;
  for (const auto& entry : entries) {
    const long pid = temporary_file_writer(entry.path().filename().string());
    if (pid <= 0 || pid == static_cast<long>(::getpid())) continue;
    // kill(pid, 0) probes without signalling: ESRCH means no such process. EPERM (another user's
    // process) counts as alive.
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    std::error_code type_error;
    if (entry.is_regular_file(type_error) && ::unlink(entry.path().c_str()) == 0) {
      ++removed;
      TESSERA_LOG_INFO("removed '{}', left by a writer (pid {}) that did not finish",
                       entry.path().string(), pid);
    }
  }
  return removed;
}

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
