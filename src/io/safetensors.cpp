#include "tessera/io/safetensors.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <fcntl.h>
#include <fmt/ranges.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <system_error>
#include <tuple>
#include <utility>

#include "tessera/core/atomic_file.h"
#include "tessera/core/error.h"
#include "tessera/core/logging.h"

// The format stores integers and tensor bytes little-endian; reading and writing them as the
// host's native bytes is only correct on a little-endian host.
static_assert(std::endian::native == std::endian::little,
              "safetensors I/O assumes a little-endian host");

namespace tessera {

namespace {

using Json = nlohmann::json;

struct DtypeName {
  at::ScalarType type;
  std::string_view name;
};

constexpr std::array<DtypeName, 10> kDtypeNames{{
    {at::kDouble, "F64"},
    {at::kFloat, "F32"},
    {at::kHalf, "F16"},
    {at::kBFloat16, "BF16"},
    {at::kLong, "I64"},
    {at::kInt, "I32"},
    {at::kShort, "I16"},
    {at::kChar, "I8"},
    {at::kByte, "U8"},
    {at::kBool, "BOOL"},
}};

constexpr std::string_view kMetadataKey = "__metadata__";
constexpr std::uint64_t kHeaderLengthFieldBytes = 8;

std::string supported_dtype_names() {
  std::string names;
  for (const auto& entry : kDtypeNames) {
    if (!names.empty()) names += ' ';
    names += entry.name;
  }
  return names;
}

std::string describe_errno(int error_number) {
  return std::system_category().message(error_number);
}

std::string shape_to_string(const std::vector<std::int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

// Reads the 8-byte little-endian header length; memcpy because the bytes need not be aligned.
std::uint64_t read_header_length(const std::byte* bytes) {
  std::uint64_t length = 0;
  std::memcpy(&length, bytes, sizeof(length));
  return length;
}

// --- header parsing ------------------------------------------------------------------------

// nlohmann::json keeps one value of a key given twice, silently. A safetensors header with a
// repeated tensor name (or a repeated field in an entry) is ambiguous, so the parse callback
// tracks the keys of every open object and refuses a repeat.
Json parse_header_json(std::string_view text, const std::string& file_label) {
  std::vector<std::set<std::string>> keys_of_open_objects;
  const Json::parser_callback_t refuse_duplicate_keys =
      [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
        switch (event) {
          case Json::parse_event_t::object_start:
            keys_of_open_objects.emplace_back();
            break;
          case Json::parse_event_t::object_end:
            if (!keys_of_open_objects.empty()) keys_of_open_objects.pop_back();
            break;
          case Json::parse_event_t::key: {
            const auto& key = parsed.get_ref<const std::string&>();
            TESSERA_CHECK(
                keys_of_open_objects.empty() || keys_of_open_objects.back().insert(key).second,
                "{}: the header names key '{}' twice in one object", file_label, key);
            break;
          }
          default:
            break;
        }
        return true;
      };
  try {
    return Json::parse(text.begin(), text.end(), refuse_duplicate_keys);
  } catch (const Json::exception& error) {
    TESSERA_FAIL("{}: the header is not valid JSON: {}", file_label, error.what());
  }
}

// A JSON number that is a non-negative integer no larger than `limit`.
std::uint64_t parse_non_negative_integer(const Json& value, std::uint64_t limit,
                                         const std::string& what) {
  TESSERA_CHECK(value.is_number_integer(), "{} must be an integer, got {} ({})", what, value.dump(),
                value.type_name());
  TESSERA_CHECK(value.is_number_unsigned(), "{} must not be negative, got {}", what, value.dump());
  const auto number = value.get<std::uint64_t>();
  TESSERA_CHECK(number <= limit, "{} is {}, larger than the largest allowed value {}", what, number,
                limit);
  return number;
}

SafetensorsFile::TensorInfo parse_tensor_entry(const std::string& name, const Json& entry,
                                               std::uint64_t data_section_offset,
                                               std::uint64_t data_section_size,
                                               const std::string& file_label) {
  const std::string where = fmt::format("{}: tensor '{}'", file_label, name);
  TESSERA_CHECK(entry.is_object(),
                "{}: the entry must be a JSON object with dtype, shape and data_offsets, got {}",
                where, entry.type_name());
  for (const auto& [field, value] : entry.items()) {
    TESSERA_CHECK(field == "dtype" || field == "shape" || field == "data_offsets",
                  "{}: unknown field '{}' (expected only dtype, shape and data_offsets)", where,
                  field);
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    TESSERA_CHECK(entry.contains(field), "{}: the entry has no field '{}'", where, field);
  }

  SafetensorsFile::TensorInfo info;
  const Json& dtype = entry["dtype"];
  TESSERA_CHECK(dtype.is_string(), "{}: dtype must be a string, got {}", where, dtype.dump());
  try {
    info.dtype = scalar_type_from_safetensors_dtype(dtype.get_ref<const std::string&>());
  } catch (const Error& error) {
    TESSERA_FAIL("{}: {}", where, error.what());
  }

  const Json& shape = entry["shape"];
  TESSERA_CHECK(shape.is_array(), "{}: shape must be an array of integers, got {}", where,
                shape.dump());
  constexpr auto kMaxInt64 = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  // The product of the non-zero dimensions must fit in int64 even when another dimension is
  // zero: LibTorch computes it for strides, and an overflow there is undefined behaviour.
  std::uint64_t product_of_nonzero_dims = 1;
  bool has_zero_dim = false;
  for (std::size_t axis = 0; axis < shape.size(); ++axis) {
    const std::uint64_t extent = parse_non_negative_integer(
        shape[axis], kMaxInt64, fmt::format("{}: shape[{}]", where, axis));
    info.shape.push_back(static_cast<std::int64_t>(extent));
    if (extent == 0) {
      has_zero_dim = true;
      continue;
    }
    TESSERA_CHECK(
        !__builtin_mul_overflow(product_of_nonzero_dims, extent, &product_of_nonzero_dims) &&
            product_of_nonzero_dims <= kMaxInt64,
        "{}: shape {} has more elements than an int64 can count", where, shape.dump());
  }
  const std::uint64_t numel = has_zero_dim ? 0 : product_of_nonzero_dims;

  const Json& offsets = entry["data_offsets"];
  TESSERA_CHECK(offsets.is_array() && offsets.size() == 2,
                "{}: data_offsets must be an array [begin, end], got {}", where, offsets.dump());
  info.data_begin = parse_non_negative_integer(
      offsets[0], std::numeric_limits<std::uint64_t>::max(), where + ": data_offsets[0]");
  info.data_end = parse_non_negative_integer(offsets[1], std::numeric_limits<std::uint64_t>::max(),
                                             where + ": data_offsets[1]");
  TESSERA_CHECK(info.data_begin <= info.data_end, "{}: data_offsets [{}, {}] begin after they end",
                where, info.data_begin, info.data_end);
  TESSERA_CHECK(info.data_end <= data_section_size,
                "{}: data_offsets [{}, {}] reach past the end of the data section, which holds {} "
                "bytes (out of bounds: is the file truncated?)",
                where, info.data_begin, info.data_end, data_section_size);

  const std::uint64_t item_size = c10::elementSize(info.dtype);
  std::uint64_t expected_bytes = 0;
  TESSERA_CHECK(!__builtin_mul_overflow(numel, item_size, &expected_bytes),
                "{}: shape {} of {} needs more bytes than fit in 64 bits", where,
                shape_to_string(info.shape), dtype.get_ref<const std::string&>());
  TESSERA_CHECK(info.byte_size() == expected_bytes,
                "{}: byte size mismatch: data_offsets [{}, {}] hold {} bytes, but shape {} of {} "
                "needs {} ({} elements × {} bytes)",
                where, info.data_begin, info.data_end, info.byte_size(),
                shape_to_string(info.shape), dtype.get_ref<const std::string&>(), expected_bytes,
                numel, item_size);
  info.file_offset = data_section_offset + info.data_begin;
  return info;
}

// The format requires the tensors to tile the data section exactly: no byte shared by two
// tensors, and none belonging to no tensor (the reference implementation refuses both).
void check_tensors_tile_data_section(
    const std::map<std::string, SafetensorsFile::TensorInfo>& infos,
    std::uint64_t data_section_size, const std::string& file_label) {
  std::vector<std::pair<const std::string*, const SafetensorsFile::TensorInfo*>> by_offset;
  by_offset.reserve(infos.size());
  for (const auto& [name, info] : infos) by_offset.emplace_back(&name, &info);
  std::sort(by_offset.begin(), by_offset.end(), [](const auto& left, const auto& right) {
    return std::tie(left.second->data_begin, left.second->data_end, *left.first) <
           std::tie(right.second->data_begin, right.second->data_end, *right.first);
  });

  std::uint64_t covered_until = 0;
  const std::string* previous_name = nullptr;
  const SafetensorsFile::TensorInfo* previous_info = nullptr;
  for (const auto& [name, info] : by_offset) {
    TESSERA_CHECK(info->data_begin >= covered_until,
                  "{}: tensors '{}' (data_offsets [{}, {}]) and '{}' (data_offsets [{}, {}]) "
                  "overlap",
                  file_label, *previous_name, previous_info->data_begin, previous_info->data_end,
                  *name, info->data_begin, info->data_end);
    TESSERA_CHECK(info->data_begin == covered_until,
                  "{}: bytes [{}, {}) of the data section belong to no tensor (a hole before "
                  "tensor '{}')",
                  file_label, covered_until, info->data_begin, *name);
    covered_until = info->data_end;
    previous_name = name;
    previous_info = info;
  }
  TESSERA_CHECK(covered_until == data_section_size,
                "{}: bytes [{}, {}) at the end of the data section belong to no tensor (trailing "
                "bytes after the last tensor)",
                file_label, covered_until, data_section_size);
}

std::string file_label_for(const std::filesystem::path& path) {
  return fmt::format("safetensors file '{}'", path.string());
}

}  // namespace

// --- dtypes ----------------------------------------------------------------------------------

std::string_view safetensors_dtype_name(at::ScalarType type) {
  for (const auto& entry : kDtypeNames) {
    if (entry.type == type) return entry.name;
  }
  TESSERA_FAIL("dtype {} cannot be stored in safetensors by Tessera (supported: {})",
               c10::toString(type), supported_dtype_names());
}

at::ScalarType scalar_type_from_safetensors_dtype(std::string_view name) {
  for (const auto& entry : kDtypeNames) {
    if (entry.name == name) return entry.type;
  }
  TESSERA_FAIL("unknown dtype '{}' (supported: {})", name, supported_dtype_names());
}

// --- reading ---------------------------------------------------------------------------------

struct SafetensorsFile::Mapping {
  std::byte* base = nullptr;
  std::size_t size = 0;

  Mapping(std::byte* mapped_base, std::size_t mapped_size) : base(mapped_base), size(mapped_size) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { ::munmap(base, size); }
};

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string file_label = file_label_for(path);

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TESSERA_CHECK(fd >= 0, "{}: cannot open it: {}", file_label, describe_errno(errno));
  // The mapping outlives the descriptor, so the descriptor is closed on every path out of here.
  struct CloseOnExit {
    int fd;
    ~CloseOnExit() { ::close(fd); }
  } close_on_exit{fd};

  struct stat status {};
  TESSERA_CHECK(::fstat(fd, &status) == 0, "{}: cannot stat it: {}", file_label,
                describe_errno(errno));
  TESSERA_CHECK(S_ISREG(status.st_mode), "{}: not a regular file", file_label);
  const auto file_size = static_cast<std::uint64_t>(status.st_size);
  TESSERA_CHECK(file_size >= kHeaderLengthFieldBytes,
                "{}: too short: {} bytes, fewer than the 8-byte header length field", file_label,
                file_size);

  // PROT_WRITE with MAP_PRIVATE makes writes copy-on-write and private to this process: see
  // Note [Zero-copy tensors]. It needs only read access to the file.
  void* mapped = ::mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, /*offset=*/0);
  TESSERA_CHECK(mapped != MAP_FAILED, "{}: cannot map its {} bytes into memory: {}", file_label,
                file_size, describe_errno(errno));
  auto mapping = std::make_shared<const Mapping>(static_cast<std::byte*>(mapped), file_size);

  const std::uint64_t header_length = read_header_length(mapping->base);
  TESSERA_CHECK(header_length <= kMaxSafetensorsHeaderBytes,
                "{}: header length {} exceeds the limit of {} bytes (corrupt length field?)",
                file_label, header_length, kMaxSafetensorsHeaderBytes);
  TESSERA_CHECK(header_length <= file_size - kHeaderLengthFieldBytes,
                "{}: header length {} reaches past the end of the file, which has {} bytes after "
                "the length field (truncated file?)",
                file_label, header_length, file_size - kHeaderLengthFieldBytes);

  const std::string_view header_text(
      reinterpret_cast<const char*>(mapping->base + kHeaderLengthFieldBytes), header_length);
  const Json header = parse_header_json(header_text, file_label);
  TESSERA_CHECK(header.is_object(), "{}: the header must be a JSON object, got {}", file_label,
                header.type_name());

  SafetensorsFile file;
  file.path_ = path;
  file.data_section_offset_ = kHeaderLengthFieldBytes + header_length;
  const std::uint64_t data_section_size = file_size - file.data_section_offset_;
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      TESSERA_CHECK(value.is_object(),
                    "{}: __metadata__ must be an object of string values, got {}", file_label,
                    value.type_name());
      for (const auto& [metadata_key, metadata_value] : value.items()) {
        TESSERA_CHECK(metadata_value.is_string(),
                      "{}: __metadata__ value of '{}' must be a string, got {} ({})", file_label,
                      metadata_key, metadata_value.dump(), metadata_value.type_name());
        file.metadata_.emplace(metadata_key, metadata_value.get<std::string>());
      }
      continue;
    }
    file.infos_.emplace(key, parse_tensor_entry(key, value, file.data_section_offset_,
                                                data_section_size, file_label));
  }
  check_tensors_tile_data_section(file.infos_, data_section_size, file_label);
  file.mapping_ = std::move(mapping);
  return file;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> names;
  names.reserve(infos_.size());
  for (const auto& [name, info] : infos_) names.push_back(name);
  return names;
}

const SafetensorsFile::TensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto found = infos_.find(name);
  TESSERA_CHECK(found != infos_.end(), "{}: no tensor named '{}' (the file holds {} tensors)",
                file_label_for(path_), name, infos_.size());
  return found->second;
}

bool SafetensorsFile::is_zero_copy(const std::string& name) const {
  const TensorInfo& tensor_info = info(name);
  if (tensor_info.byte_size() == 0) return false;
  const auto address = reinterpret_cast<std::uintptr_t>(mapping_->base + tensor_info.file_offset);
  return address % c10::elementSize(tensor_info.dtype) == 0;
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& tensor_info = info(name);
  const auto options = at::TensorOptions().dtype(tensor_info.dtype).device(at::kCPU);
  if (tensor_info.byte_size() == 0) return at::empty(tensor_info.shape, options);

  std::byte* source = mapping_->base + tensor_info.file_offset;
  // A bool is a byte holding 0 or 1; any other value would be undefined behaviour in the
  // kernels that read it, so a file cannot be allowed to smuggle one in.
  if (tensor_info.dtype == at::kBool) {
    const auto* first = reinterpret_cast<const std::uint8_t*>(source);
    const auto* bad = std::find_if(first, first + tensor_info.byte_size(),
                                   [](std::uint8_t byte) { return byte > 1; });
    TESSERA_CHECK(bad == first + tensor_info.byte_size(),
                  "{}: tensor '{}' is BOOL but element {} holds byte value {} (expected 0 or 1)",
                  file_label_for(path_), name, bad - first, static_cast<int>(*bad));
  }

  if (is_zero_copy(name)) {
    // The deleter owns a reference to the mapping: the tensor keeps it alive.
    return at::from_blob(
        source, tensor_info.shape,
        [keep_mapping_alive = mapping_](void*) { (void)keep_mapping_alive; }, options);
  }
  at::Tensor copy = at::empty(tensor_info.shape, options);
  std::memcpy(copy.data_ptr(), source, tensor_info.byte_size());
  return copy;
}

std::map<std::string, at::Tensor> SafetensorsFile::all() const {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, tensor_info] : infos_) tensors.emplace(name, tensor(name));
  return tensors;
}

std::span<const std::byte> SafetensorsFile::mapped_bytes() const {
  return {mapping_->base, mapping_->size};
}

std::map<std::string, at::Tensor> load_safetensors(const std::filesystem::path& path) {
  return SafetensorsFile::open(path).all();
}

// --- writing ---------------------------------------------------------------------------------

namespace {


struct PlannedTensor {
  const std::string* name;
  const at::Tensor* tensor;
  std::size_t item_size;
  std::uint64_t byte_size;
};

}  // namespace

// Note [Data order]
// A zero-copy read needs each tensor to start at an address aligned to its element size. The
// header is padded so the data section starts at a multiple of 8 from the (page-aligned) start of
// the file, and the format forbids gaps between tensors, so the writer orders the data by element
// size, largest first (ties by name). Every element size is a power of two no larger than 8, and
// each tensor's byte size is a multiple of its element size, so each tensor then starts at a
// multiple of its own element size. The header still lists entries sorted by name.
void save_safetensors(const std::filesystem::path& path,
                      const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string target = path.string();

  // Validate everything before touching the file system.
  std::vector<PlannedTensor> plan;
  plan.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    TESSERA_CHECK(name != kMetadataKey,
                  "cannot save '{}': '__metadata__' is reserved and cannot name a tensor", target);
    TESSERA_CHECK(tensor.defined(), "cannot save '{}': tensor '{}' is undefined", target, name);
    if (tensor.layout() != at::kStrided) {
      std::ostringstream layout;
      layout << tensor.layout();
      TESSERA_FAIL(
          "cannot save '{}': tensor '{}' has layout {}, only dense (strided) tensors "
          "can be saved",
          target, name, layout.str());
    }
    TESSERA_CHECK(!tensor.is_meta(),
                  "cannot save '{}': tensor '{}' is on the meta device (no data)", target, name);
    try {
      (void)safetensors_dtype_name(tensor.scalar_type());
    } catch (const Error& error) {
      TESSERA_FAIL("cannot save '{}': tensor '{}': {}", target, name, error.what());
    }
    const std::size_t item_size = tensor.element_size();
    plan.push_back(PlannedTensor{&name, &tensor, item_size,
                                 static_cast<std::uint64_t>(tensor.numel()) * item_size});
  }
  // See Note [Data order].
  std::stable_sort(plan.begin(), plan.end(),
                   [](const PlannedTensor& left, const PlannedTensor& right) {
                     return left.item_size > right.item_size;
                   });

  Json header = Json::object();
  std::uint64_t data_offset = 0;
  for (const PlannedTensor& planned : plan) {
    header[*planned.name] = {
        {"dtype", safetensors_dtype_name(planned.tensor->scalar_type())},
        {"shape", planned.tensor->sizes().vec()},
        {"data_offsets", {data_offset, data_offset + planned.byte_size}},
    };
    data_offset += planned.byte_size;
  }
  if (!metadata.empty()) header[std::string(kMetadataKey)] = metadata;

  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const Json::exception& error) {
    // Names and metadata must be valid UTF-8 to be JSON strings.
    TESSERA_FAIL("cannot save '{}': the header cannot be written as JSON: {}", target,
                 error.what());
  }
  // Pad with spaces (JSON whitespace) so the data section starts at a multiple of 8.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  const std::uint64_t header_length = header_text.size();

  AtomicFileWriter file(path);  // see Note [Atomic writes]
  try {
    file.write(&header_length, sizeof(header_length));
    file.write(header_text);
    // One tensor at a time, so a model on the GPU never needs a second full copy in host memory.
    for (const PlannedTensor& planned : plan) {
      const at::Tensor host =
          planned.tensor->to(at::kCPU).resolve_conj().resolve_neg().contiguous();
      TESSERA_CHECK(static_cast<std::uint64_t>(host.nbytes()) == planned.byte_size,
                    "tensor '{}' changed size while being saved", *planned.name);
      if (planned.byte_size == 0) continue;
      file.write(host.const_data_ptr(), planned.byte_size);
    }
    file.commit();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& error) {
    // LibTorch reports failures (a device copy, say) as c10::Error; callers catch tessera::Error.
    TESSERA_FAIL("cannot save '{}': {}", target, error.what());
  }
}

}  // namespace tessera
