// remove_stale_temporary_files: what a writer killed mid-write leaves (an AtomicFileWriter's
// `<file>.tmp.<pid>.<16 hex>` of a process that no longer exists) is removed; a live writer's
// temporary file and every other file stay. tests/hardening/crash_safety_test.py checks the same
// end to end, with real kills of `tessera train`.

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "common/temporary_folder.h"
#include "tessera/core/atomic_file.h"

namespace tessera {
namespace {

// Above Linux's largest pid (4194304): no process has it.
constexpr const char* kDeadPid = "999999999";

void touch(const std::filesystem::path& path) { std::ofstream(path) << "partial"; }

TEST(StaleTemporaryFiles, OnlyFilesOfWritersThatAreGoneAreRemoved) {
  testing::TemporaryFolder folder("stale");
  const std::string own_pid = std::to_string(::getpid());
  const std::string stale =
      std::string("checkpoint.safetensors.tmp.") + kDeadPid + ".0123456789abcdef";
  const std::string kept[] = {
      "checkpoint.safetensors",
      "checkpoint.safetensors.tmp." + own_pid + ".0123456789abcdef",  // this process: alive
      "checkpoint.safetensors.tmp.1.0123456789abcdef",                // init: alive
      std::string("checkpoint.safetensors.tmp.") + kDeadPid + ".0123456789ABCDEF",  // not ours
      std::string("checkpoint.safetensors.tmp.") + kDeadPid + ".0123",              // not ours
      std::string("notes.tmp.") + kDeadPid + ".0123456789abcdef.txt",               // not ours
  };
  touch(folder / stale);
  for (const std::string& name : kept) touch(folder / name);
  // A folder with a temporary file's name is not a file a writer left.
  std::filesystem::create_directory(folder /
                                    (std::string("x.tmp.") + kDeadPid + ".fedcba9876543210"));

  EXPECT_EQ(remove_stale_temporary_files(folder.path()), 1);
  EXPECT_FALSE(std::filesystem::exists(folder / stale));
  for (const std::string& name : kept) EXPECT_TRUE(std::filesystem::exists(folder / name)) << name;
  EXPECT_TRUE(std::filesystem::is_directory(
      folder / (std::string("x.tmp.") + kDeadPid + ".fedcba9876543210")));
  // Nothing left to remove; a missing folder is not an error.
  EXPECT_EQ(remove_stale_temporary_files(folder.path()), 0);
  EXPECT_EQ(remove_stale_temporary_files(folder / "absent"), 0);
}

}  // namespace
}  // namespace tessera
