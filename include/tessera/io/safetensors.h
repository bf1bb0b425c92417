#pragma once
// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON header, then one data section holding every tensor's bytes.
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the data section) and may hold "__metadata__", a string→string map.
//
// Reading memory-maps the file and hands out tensors that share the mapping where alignment
// allows (see Note [Zero-copy tensors]). Every defect of a file is a tessera::Error naming the
// file and what was wrong; nothing in a file can crash the reader. Writing goes through a
// temporary file and a rename, so a crash never leaves a half-written file under the real name.

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

/// The dtypes Tessera reads and writes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.
/// safetensors_dtype_name throws tessera::Error for any other scalar type; scalar_type_from_
/// safetensors_dtype throws for any other name (the message lists the supported ones).
std::string_view safetensors_dtype_name(at::ScalarType type);
at::ScalarType scalar_type_from_safetensors_dtype(std::string_view name);  ///< The inverse.

/// Headers longer than this are refused before anything is allocated for them, so a corrupt
/// length field cannot make the reader allocate or parse gigabytes. Real headers are kilobytes.
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Note [Zero-copy tensors]
// SafetensorsFile maps the whole file with MAP_PRIVATE and PROT_READ | PROT_WRITE. A tensor
// whose bytes start at an address aligned to its element size is built on the mapping itself
// (at::from_blob with a deleter that holds a shared_ptr to the mapping), so it costs no copy
// and keeps the mapping alive after the SafetensorsFile is gone. Other tensors are copied.
//   * Writing into a zero-copy tensor is allowed: the mapping is private copy-on-write, so the
//     write stays in this process and never reaches the file.
//   * Two calls of tensor(name) on the same SafetensorsFile return tensors over the same bytes,
//     so a write through one shows through the other; clone() when independent copies matter.
//   * The file must not be truncated or rewritten in place while mapped (reading a page past a
//     truncated end raises SIGBUS). save_safetensors never does that: it replaces the file by
//     rename, and the old mapping keeps the old contents.
class SafetensorsFile {
 public:
  struct TensorInfo {
    at::ScalarType dtype;  ///< element type
    std::vector<std::int64_t> shape;  ///< sizes
    /// Byte range [data_begin, data_end) relative to the start of the data section, as written
    /// in the header's data_offsets.
    std::uint64_t data_begin = 0;
    std::uint64_t data_end = 0;  ///< see data_begin
    /// Offset of the tensor's first byte from the start of the file.
    std::uint64_t file_offset = 0;

    std::uint64_t byte_size() const { return data_end - data_begin; }  ///< data_end - data_begin.
  };  ///< Where one tensor lies in the file, and its dtype and shape.

  /// Maps and validates the whole header; throws tessera::Error naming the file and the defect.
  static SafetensorsFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }  ///< The file's path.

  /// Tensor names in sorted order.
  std::vector<std::string> names() const;
  std::size_t size() const { return infos_.size(); }  ///< Number of tensors.
  bool contains(const std::string& name) const { return infos_.contains(name); }  ///< Has `name`.

  /// Throws tessera::Error when the file holds no tensor of that name.
  const TensorInfo& info(const std::string& name) const;

  /// A CPU tensor; zero-copy where alignment allows (see Note [Zero-copy tensors]).
  at::Tensor tensor(const std::string& name) const;
  /// Whether tensor(name) shares the mapping rather than copying. False for zero-element tensors,
  /// which own no bytes at all.
  bool is_zero_copy(const std::string& name) const;

  std::map<std::string, at::Tensor> all() const;  ///< Every tensor by name, as tensor() gives them.

  /// The "__metadata__" map; empty when the file has none.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// The whole file as mapped, valid while this object or any zero-copy tensor from it lives.
  /// For diagnostics and tests (e.g. checking that a tensor's data lies inside the mapping).
  std::span<const std::byte> mapped_bytes() const;

 private:
  struct Mapping;

  SafetensorsFile() = default;

  std::filesystem::path path_;
  std::shared_ptr<const Mapping> mapping_;
  std::uint64_t data_section_offset_ = 0;
  std::map<std::string, TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};  ///< A safetensors file, mapped and validated: tensors (see Note [Zero-copy tensors]), metadata.

/// Every tensor of the file, zero-copy where alignment allows (see Note [Zero-copy tensors]).
std::map<std::string, at::Tensor> load_safetensors(const std::filesystem::path& path);

/// Writes the tensors (moved to the CPU and made contiguous, one at a time) and the metadata.
/// The header lists entries sorted by name and is padded with spaces to a multiple of 8 bytes;
/// the data is ordered so that every tensor starts aligned to its element size (see Note [Data
/// order] in safetensors.cpp), so reading it back is zero-copy for every tensor.
/// The file is written under a temporary name in the same directory, fsynced, renamed over
/// `path`, and the directory fsynced. Every tensor is validated before anything is written; on
/// any failure the temporary file is removed, a previous file at `path` is left intact, and a
/// tessera::Error is thrown.
void save_safetensors(const std::filesystem::path& path,
                      const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace tessera
