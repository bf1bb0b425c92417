#pragma once
// A fresh folder under the system's temporary folder for one test, removed with everything in it
// when the object goes out of scope. Shared by every suite that writes files.

#include <ftw.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <string>

namespace tessera::testing {

// Removes a folder and everything under it. Not std::filesystem::remove_all: the torch wheel's
// libtorch.so exports its own copy of that function, which the dynamic linker may pick ahead of
// libstdc++'s and which crashed (a call through a null pointer) with this toolchain (see Note
// [libstdc++ before LibTorch] in CMakeLists.txt).
inline void remove_tree(const std::filesystem::path& root) {
  ::nftw(
      root.c_str(),
      [](const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); },
      /*nopenfd=*/16, FTW_DEPTH | FTW_PHYS);
}

class TemporaryFolder {
 public:
  // tessera-<label>-<test name>-<pid>-<counter>: unique within the process and across processes.
  explicit TemporaryFolder(const std::string& label = "test") {
    static std::atomic<int> counter{0};
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("tessera-" + label + "-" + (test ? test->name() : "test") + "-" +
             std::to_string(::getpid()) + "-" + std::to_string(counter++));
    remove_tree(path_);
    std::filesystem::create_directories(path_);
  }
  ~TemporaryFolder() { remove_tree(path_); }
  TemporaryFolder(const TemporaryFolder&) = delete;
  TemporaryFolder& operator=(const TemporaryFolder&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace tessera::testing
