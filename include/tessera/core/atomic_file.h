#pragma once
// Writing a file so that a crash never leaves a half-written file under the real name.
//
// Note [Atomic writes]
// Bytes go to a temporary file in the target's directory (same file system, so rename is atomic),
// which is fsync'ed, renamed over the target, and the directory is fsync'ed so the rename itself
// is durable. Until commit() the target is untouched: a previous checkpoint stays intact whatever
// happens mid-write, and an AtomicFileWriter destroyed without commit() removes its temporary file.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>

namespace tessera {

class AtomicFileWriter {
 public:
  /// Creates the temporary file (and the target's parent directories).
  explicit AtomicFileWriter(std::filesystem::path target);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);  ///< Appends `size` bytes to the temporary file.
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }  ///< Appends `bytes`.
  /// fsync, rename over the target, fsync the directory. Throws tessera::Error on failure (the
  /// target is then unchanged).
  void commit();

  const std::filesystem::path& target() const { return target_; }  ///< The file commit() replaces.
  const std::filesystem::path& temporary_path() const { return temporary_; }  ///< Where bytes go.

 private:
  std::filesystem::path target_, temporary_;
  int fd_ = -1;
  bool committed_ = false;
};  ///< Writes a file that readers see whole or not at all: a temporary file, renamed by commit().

/// Writes `bytes` to `path` atomically.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

/// Removes the temporary files that writers killed mid-write (SIGKILL, a power cut: no destructor
/// ran) left in `directory`. Their names are `<file>.tmp.<pid>.<16 hex digits>` and their process
/// no longer exists on this machine; a live writer's file is kept. Returns how many were removed (a
/// missing directory is not an error). The trainer calls it on its output folder before it resumes,
/// so that repeated crashes do not pile up checkpoint-sized files.
int64_t remove_stale_temporary_files(const std::filesystem::path& directory);

}  // namespace tessera
