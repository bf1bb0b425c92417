#include "tessera/core/atomic_file.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tessera/core/error.h"

namespace tessera {
namespace {

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

size_t files_in(const std::filesystem::path& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

class AtomicFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tessera_atomic_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(AtomicFile, WritesAndCreatesParentDirectories) {
  write_file_atomically(dir_ / "a" / "b.bin", "hello");
  EXPECT_EQ(read_all(dir_ / "a" / "b.bin"), "hello");
  EXPECT_EQ(files_in(dir_ / "a"), 1u);
}

TEST_F(AtomicFile, AnInterruptedWriteLeavesThePreviousFileIntact) {
  write_file_atomically(dir_ / "ckpt", "version 1");
  {
    AtomicFileWriter writer(dir_ / "ckpt");
    writer.write("version 2, half writ");
    EXPECT_TRUE(std::filesystem::exists(writer.temporary_path()));
    // No commit(): as if the process failed mid-save.
  }
  EXPECT_EQ(read_all(dir_ / "ckpt"), "version 1");
  EXPECT_EQ(files_in(dir_), 1u) << "the temporary file must be removed";
  write_file_atomically(dir_ / "ckpt", "version 2");
  EXPECT_EQ(read_all(dir_ / "ckpt"), "version 2");
}

TEST_F(AtomicFile, ErrorsNameThePath) {
  std::filesystem::create_directories(dir_);
  write_file_atomically(dir_ / "file", "x");
  try {
    write_file_atomically(dir_ / "file" / "under_a_file", "y");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("under_a_file"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tessera
