#include "tessera/io/safetensors.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "common/parity_dir.h"
#include "common/temporary_folder.h"
#include "tessera/core/error.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// --- helpers ---------------------------------------------------------------------------------

std::string read_file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

std::string little_endian_u64(std::uint64_t value) {
  static_assert(std::endian::native == std::endian::little);
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &value, 8);
  return bytes;
}

// A safetensors file assembled byte by byte, independently of the writer under test. The header
// is padded with spaces so that the data section starts at a multiple of 8 (unless `pad` is
// false); `length_field` overrides the header length written in the first 8 bytes.
std::string assemble_file(std::string header, const std::string& data, bool pad = true,
                          std::optional<std::uint64_t> length_field = std::nullopt) {
  if (pad) header.append((8 - header.size() % 8) % 8, ' ');
  return little_endian_u64(length_field.value_or(header.size())) + header + data;
}

// The tensor's bytes in row-major order, for exact (bitwise) comparison: NaN payloads and the
// sign of zero count, which at::equal would not see.
std::string tensor_bytes(const at::Tensor& tensor) {
  const at::Tensor contiguous = tensor.contiguous();
  return std::string(static_cast<const char*>(contiguous.const_data_ptr()), contiguous.nbytes());
}

bool data_lies_in(const at::Tensor& tensor, std::span<const std::byte> mapping) {
  const auto* data = static_cast<const std::byte*>(tensor.const_data_ptr());
  return data >= mapping.data() && data + tensor.nbytes() <= mapping.data() + mapping.size();
}

// Returns the message of the tessera::Error that `action` throws; any other exception escapes
// and fails the test, and throwing nothing is a failure too.
template <typename Action>
std::string error_message_of(Action&& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected a tessera::Error, but nothing was thrown";
  return {};
}

class SafetensorsTest : public ::testing::Test {
 protected:
  fs::path file(const std::string& name) const { return folder_.path() / name; }

  std::vector<std::string> directory_listing() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(folder_.path())) {
      names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  // Writes `bytes` to a file and returns the message of the error that opening it throws,
  // checking that the message names the file.
  std::string open_error(const std::string& bytes) {
    const fs::path path = file("malformed.safetensors");
    write_file_bytes(path, bytes);
    const std::string message = error_message_of([&] { SafetensorsFile::open(path); });
    EXPECT_NE(message.find(path.string()), std::string::npos)
        << "the message should name the file: " << message;
    return message;
  }

  testing::TemporaryFolder folder_{"safetensors"};
};

at::Tensor random_tensor(at::ScalarType dtype, at::IntArrayRef shape) {
  switch (dtype) {
    case at::kDouble:
    case at::kFloat:
    case at::kHalf:
    case at::kBFloat16:
      return at::randn(shape, at::TensorOptions().dtype(dtype));
    case at::kBool:
      return at::randint(0, 2, shape, at::TensorOptions().dtype(at::kLong)).to(at::kBool);
    case at::kByte:
      return at::randint(0, 256, shape, at::TensorOptions().dtype(dtype));
    default: {
      // (Nearly) the full range of the type, so that every byte of an element is exercised.
      const auto bits = static_cast<int>(c10::elementSize(dtype) * 8);
      const std::int64_t high = std::int64_t{1} << (std::min(bits, 63) - 1);
      return at::randint(-high, high, shape, at::TensorOptions().dtype(dtype));
    }
  }
}

// --- round trips -----------------------------------------------------------------------------

struct DtypeCase {
  at::ScalarType dtype;
  const char* safetensors_name;
};

class SafetensorsRoundTrip : public SafetensorsTest,
                             public ::testing::WithParamInterface<DtypeCase> {};

TEST_P(SafetensorsRoundTrip, EveryShapeIsExact) {
  const DtypeCase& dtype_case = GetParam();
  EXPECT_EQ(safetensors_dtype_name(dtype_case.dtype), dtype_case.safetensors_name);
  EXPECT_EQ(scalar_type_from_safetensors_dtype(dtype_case.safetensors_name), dtype_case.dtype);

  std::map<std::string, at::Tensor> saved{
      {"matrix", random_tensor(dtype_case.dtype, {2, 3, 5})},
      {"scalar", random_tensor(dtype_case.dtype, {})},
      {"empty", random_tensor(dtype_case.dtype, {0, 4})},
      {"odd", random_tensor(dtype_case.dtype, {7})},
  };
  if (at::isFloatingType(dtype_case.dtype)) {
    // Values whose bits a careless copy would lose: signed zero, infinities, NaN.
    at::Tensor odd = saved["odd"];
    odd[0] = -0.0;
    odd[1] = std::numeric_limits<double>::infinity();
    odd[2] = -std::numeric_limits<double>::infinity();
    odd[3] = std::numeric_limits<double>::quiet_NaN();
  }
  const fs::path path = file("round_trip.safetensors");
  save_safetensors(path, saved);

  const auto loaded = load_safetensors(path);
  ASSERT_EQ(loaded.size(), saved.size());
  for (const auto& [name, original] : saved) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(loaded.contains(name));
    const at::Tensor& restored = loaded.at(name);
    EXPECT_EQ(restored.scalar_type(), dtype_case.dtype);
    EXPECT_EQ(restored.sizes(), original.sizes());
    EXPECT_TRUE(restored.device().is_cpu());
    EXPECT_EQ(tensor_bytes(restored), tensor_bytes(original));
  }

  const SafetensorsFile opened = SafetensorsFile::open(path);
  EXPECT_EQ(opened.names(), (std::vector<std::string>{"empty", "matrix", "odd", "scalar"}));
  EXPECT_EQ(opened.info("scalar").shape, std::vector<std::int64_t>{});
  EXPECT_EQ(opened.info("empty").byte_size(), 0u);
  EXPECT_EQ(opened.info("matrix").byte_size(), 30 * c10::elementSize(dtype_case.dtype));
  EXPECT_TRUE(opened.metadata().empty());
}

INSTANTIATE_TEST_SUITE_P(
    SafetensorsEveryDtype, SafetensorsRoundTrip,
    ::testing::Values(DtypeCase{at::kDouble, "F64"}, DtypeCase{at::kFloat, "F32"},
                      DtypeCase{at::kHalf, "F16"}, DtypeCase{at::kBFloat16, "BF16"},
                      DtypeCase{at::kLong, "I64"}, DtypeCase{at::kInt, "I32"},
                      DtypeCase{at::kShort, "I16"}, DtypeCase{at::kChar, "I8"},
                      DtypeCase{at::kByte, "U8"}, DtypeCase{at::kBool, "BOOL"}),
    [](const ::testing::TestParamInfo<DtypeCase>& info) {
      return std::string(info.param.safetensors_name);
    });

TEST_F(SafetensorsTest, MixedDtypesAreAllZeroCopyAfterSaving) {
  // Names chosen so that alphabetical order would put odd-sized small tensors before wide
  // ones: the writer must still align every tensor (Note [Data order]).
  const std::map<std::string, at::Tensor> saved{
      {"a_bytes", random_tensor(at::kByte, {3})},
      {"b_bool", random_tensor(at::kBool, {5})},
      {"c_half", random_tensor(at::kHalf, {3})},
      {"d_double", random_tensor(at::kDouble, {3})},
      {"e_int", random_tensor(at::kInt, {1})},
      {"f_long", random_tensor(at::kLong, {2})},
      {"g_bf16", random_tensor(at::kBFloat16, {1, 1})},
      {"h_short", random_tensor(at::kShort, {3})},
      {"i_char", random_tensor(at::kChar, {1})},
      {"j_float", random_tensor(at::kFloat, {5})},
  };
  const fs::path path = file("mixed.safetensors");
  save_safetensors(path, saved);
  const SafetensorsFile opened = SafetensorsFile::open(path);
  for (const auto& [name, original] : saved) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(opened.is_zero_copy(name));
    const at::Tensor restored = opened.tensor(name);
    EXPECT_TRUE(data_lies_in(restored, opened.mapped_bytes()));
    EXPECT_EQ(restored.scalar_type(), original.scalar_type());
    EXPECT_EQ(tensor_bytes(restored), tensor_bytes(original));
  }
}

TEST_F(SafetensorsTest, MetadataRoundTrips) {
  const std::map<std::string, std::string> metadata{
      {"format", "pt"}, {"empty", ""}, {"unicode", "größe ✓"}, {"json-like", "{\"a\": [1]}"}};
  const fs::path path = file("metadata.safetensors");
  save_safetensors(path, {{"w", at::arange(4, at::kFloat)}}, metadata);
  EXPECT_EQ(SafetensorsFile::open(path).metadata(), metadata);

  // Metadata alone, with no tensors, is a valid file too.
  save_safetensors(path, {}, metadata);
  const SafetensorsFile only_metadata = SafetensorsFile::open(path);
  EXPECT_EQ(only_metadata.metadata(), metadata);
  EXPECT_EQ(only_metadata.size(), 0u);
}

TEST_F(SafetensorsTest, NonContiguousInputsAreSavedByValue) {
  const at::Tensor base = at::arange(24, at::kInt).reshape({4, 6});
  const at::Tensor transposed = base.t();                               // strides (1, 6)
  const at::Tensor strided_slice = base.slice(1, 1, 6, 2);              // storage offset 1
  const at::Tensor expanded = at::arange(3, at::kLong).expand({2, 3});  // stride 0
  const fs::path path = file("views.safetensors");
  save_safetensors(path, {{"t", transposed}, {"s", strided_slice}, {"e", expanded}});
  const auto loaded = load_safetensors(path);
  EXPECT_TRUE(loaded.at("t").equal(transposed));
  EXPECT_TRUE(loaded.at("s").equal(strided_slice));
  EXPECT_TRUE(loaded.at("e").equal(expanded));
  EXPECT_TRUE(loaded.at("t").is_contiguous());
}

// The writer's bytes checked against the format's definition, not against the reader.
TEST_F(SafetensorsTest, WriterOutputFollowsTheFormat) {
  const float floats[2] = {1.5f, -2.0f};
  const std::uint8_t bytes[3] = {1, 2, 255};
  const fs::path path = file("layout.safetensors");
  save_safetensors(path,
                   {{"b_floats", at::from_blob(const_cast<float*>(floats), {2}, at::kFloat)},
                    {"a_bytes", at::from_blob(const_cast<std::uint8_t*>(bytes), {3}, at::kByte)}},
                   {{"note", "hi"}});
  const std::string raw = read_file_bytes(path);
  ASSERT_GE(raw.size(), 8u);
  std::uint64_t header_length = 0;
  std::memcpy(&header_length, raw.data(), 8);
  EXPECT_EQ((8 + header_length) % 8, 0u) << "the data section must start 8-byte aligned";
  ASSERT_EQ(raw.size(), 8 + header_length + sizeof(floats) + sizeof(bytes));

  const std::string header_text = raw.substr(8, header_length);
  const auto last_brace = header_text.find_last_of('}');
  ASSERT_NE(last_brace, std::string::npos);
  EXPECT_EQ(header_text.find_first_not_of(' ', last_brace + 1), std::string::npos)
      << "padding must be spaces";
  EXPECT_LT(header_text.find("\"a_bytes\""), header_text.find("\"b_floats\""))
      << "entries must be sorted by name";

  const Json header = Json::parse(header_text);
  EXPECT_EQ(header["__metadata__"], (Json{{"note", "hi"}}));
  EXPECT_EQ(header["b_floats"], (Json{{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}));
  EXPECT_EQ(header["a_bytes"], (Json{{"dtype", "U8"}, {"shape", {3}}, {"data_offsets", {8, 11}}}));
  const char* data = raw.data() + 8 + header_length;
  EXPECT_EQ(std::memcmp(data, floats, sizeof(floats)), 0);
  EXPECT_EQ(std::memcmp(data + 8, bytes, sizeof(bytes)), 0);
}

// --- reading ---------------------------------------------------------------------------------

TEST_F(SafetensorsTest, ReadsAHandAssembledFile) {
  // I16 values 1 and -1, little-endian.
  const std::string data("\x01\x00\xff\xff", 4);
  const fs::path path = file("hand.safetensors");
  write_file_bytes(path, assemble_file(R"({"x":{"dtype":"I16","shape":[2],"data_offsets":[0,4]},)"
                                       R"("__metadata__":{"k":"v"}})",
                                       data));
  const SafetensorsFile opened = SafetensorsFile::open(path);
  EXPECT_EQ(opened.names(), std::vector<std::string>{"x"});
  EXPECT_TRUE(opened.contains("x"));
  EXPECT_FALSE(opened.contains("y"));
  EXPECT_EQ(opened.info("x").dtype, at::kShort);
  const at::Tensor x = opened.tensor("x");
  EXPECT_EQ(x.scalar_type(), at::kShort);
  EXPECT_EQ(x[0].item<std::int16_t>(), 1);
  EXPECT_EQ(x[1].item<std::int16_t>(), -1);
  EXPECT_EQ(opened.metadata(), (std::map<std::string, std::string>{{"k", "v"}}));
}

TEST_F(SafetensorsTest, AlignedTensorsAreZeroCopyAndWritable) {
  const at::Tensor original = at::arange(16, at::kFloat);
  const fs::path path = file("zero_copy.safetensors");
  save_safetensors(path, {{"w", original}});
  const std::string bytes_before = read_file_bytes(path);

  at::Tensor outliving;
  {
    const SafetensorsFile opened = SafetensorsFile::open(path);
    ASSERT_TRUE(opened.is_zero_copy("w"));
    const at::Tensor w = opened.tensor("w");
    EXPECT_TRUE(data_lies_in(w, opened.mapped_bytes()));
    EXPECT_EQ(static_cast<const std::byte*>(w.const_data_ptr()),
              opened.mapped_bytes().data() + opened.info("w").file_offset);
    // See Note [Zero-copy tensors]: writing is allowed and stays in this process.
    w.fill_(7.0f);
    EXPECT_TRUE(opened.tensor("w").equal(w)) << "tensors of one file share the mapping";
    outliving = w;
  }
  // The tensor keeps the mapping alive after the SafetensorsFile is gone.
  EXPECT_EQ(outliving.sum().item<float>(), 7.0f * 16);
  EXPECT_EQ(read_file_bytes(path), bytes_before) << "a private mapping never writes the file";
  EXPECT_TRUE(load_safetensors(path).at("w").equal(original));
}

TEST_F(SafetensorsTest, MisalignedTensorsAreCopied) {
  // One byte of U8 first puts the F32 tensor at an odd address.
  const float value = 3.25f;
  std::string data(1, '\x2a');
  data.append(reinterpret_cast<const char*>(&value), sizeof(value));
  const fs::path path = file("misaligned.safetensors");
  write_file_bytes(path, assemble_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                                       R"("f":{"dtype":"F32","shape":[],"data_offsets":[1,5]}})",
                                       data));
  const SafetensorsFile opened = SafetensorsFile::open(path);
  EXPECT_TRUE(opened.is_zero_copy("a"));
  EXPECT_FALSE(opened.is_zero_copy("f"));
  const at::Tensor f = opened.tensor("f");
  EXPECT_FALSE(data_lies_in(f, opened.mapped_bytes()));
  EXPECT_EQ(f.item<float>(), value);
  EXPECT_EQ(opened.tensor("a").item<std::uint8_t>(), 42);
}

TEST_F(SafetensorsTest, UnknownTensorNameIsAnError) {
  const fs::path path = file("one.safetensors");
  save_safetensors(path, {{"w", at::zeros({2})}});
  const SafetensorsFile opened = SafetensorsFile::open(path);
  EXPECT_NE(error_message_of([&] { opened.tensor("nope"); }).find("no tensor named 'nope'"),
            std::string::npos);
}

// --- parity fixtures -------------------------------------------------------------------------
// The VAR fixture's files (../shared/parity/README.md) read whole: every tensor the README lists,
// with the shape the fixture's own configuration gives it (from the __metadata__, never assumed),
// and values within their documented ranges, as a check that the bytes were read, not only the
// header.

// The integer metadata value `key`, or a test failure naming it.
std::int64_t metadata_integer(const SafetensorsFile& file, const std::string& key) {
  EXPECT_TRUE(file.metadata().contains(key)) << "__metadata__ has no '" << key << "'";
  return file.metadata().contains(key) ? std::stoll(file.metadata().at(key)) : 0;
}

// patch_nums "1,2,3,4" as numbers.
std::vector<std::int64_t> metadata_patch_nums(const SafetensorsFile& file) {
  std::vector<std::int64_t> out;
  std::string rest = file.metadata().contains("patch_nums") ? file.metadata().at("patch_nums") : "";
  EXPECT_FALSE(rest.empty()) << "__metadata__ has no 'patch_nums'";
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    out.push_back(std::stoll(rest.substr(0, comma)));
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
  }
  return out;
}

void expect_tensor(const std::map<std::string, at::Tensor>& tensors, const std::string& name,
                   at::ScalarType dtype, std::vector<std::int64_t> shape) {
  SCOPED_TRACE(name);
  ASSERT_TRUE(tensors.contains(name));
  EXPECT_EQ(tensors.at(name).scalar_type(), dtype);
  EXPECT_EQ(tensors.at(name).sizes(), at::IntArrayRef(shape));
}

TEST(SafetensorsParity, IoFixtureHasTheDocumentedTensors) {
  const fs::path dir = testing::parity_dir();
  TESSERA_SKIP_WITHOUT_VAR_FIXTURE(dir, "io.safetensors");
  const SafetensorsFile opened = SafetensorsFile::open(dir / "io.safetensors");
  const auto tensors = opened.all();
  const std::vector<std::int64_t> patch_nums = metadata_patch_nums(opened);
  ASSERT_FALSE(patch_nums.empty());
  const std::int64_t scales = static_cast<std::int64_t>(patch_nums.size());
  const std::int64_t vocab = metadata_integer(opened, "vocab_size");
  const std::int64_t cvae = metadata_integer(opened, "Cvae");
  const std::int64_t classes = metadata_integer(opened, "num_classes");
  std::int64_t tokens = 0;
  for (std::int64_t pn : patch_nums) tokens += pn * pn;
  // The batch is the labels' count; VAR's VQ-VAE downsamples by 16, so the images are
  // 16 · (last scale) pixels on a side and the latents the last scale's size.
  ASSERT_TRUE(tensors.contains("label"));
  ASSERT_EQ(tensors.at("label").dim(), 1);
  const std::int64_t batch = tensors.at("label").size(0);
  const std::int64_t last = patch_nums.back(), side = 16 * last;
  // 11 tensors plus idx.* and sampled_idx.* for every scale.
  EXPECT_EQ(static_cast<std::int64_t>(tensors.size()), 11 + 2 * scales);

  expect_tensor(tensors, "image", at::kFloat, {batch, 3, side, side});
  expect_tensor(tensors, "f", at::kFloat, {batch, cvae, last, last});
  expect_tensor(tensors, "fhat", at::kFloat, {batch, cvae, last, last});
  expect_tensor(tensors, "recon", at::kFloat, {batch, 3, side, side});
  expect_tensor(tensors, "var_input", at::kFloat,
                {batch, tokens - patch_nums.front() * patch_nums.front(), cvae});
  expect_tensor(tensors, "label", at::kLong, {batch});
  expect_tensor(tensors, "logits", at::kFloat, {batch, tokens, vocab});
  expect_tensor(tensors, "sample_image", at::kFloat, {batch, 3, side, side});
  // The probes' sizes are the fixture's own: a 1-D exponential draw, one multinomial draw per row.
  ASSERT_TRUE(tensors.contains("rng_probe.exponential") && tensors.contains("rng_probe.probs"));
  expect_tensor(tensors, "rng_probe.exponential", at::kFloat,
                {tensors.at("rng_probe.exponential").numel()});
  const at::Tensor probs = tensors.at("rng_probe.probs");
  ASSERT_EQ(probs.dim(), 2);
  expect_tensor(tensors, "rng_probe.probs", at::kFloat, {probs.size(0), probs.size(1)});
  expect_tensor(tensors, "rng_probe.multinomial", at::kLong, {probs.size(0), 1});
  for (std::int64_t scale = 0; scale < scales; ++scale) {
    const std::int64_t patch_count = patch_nums[scale] * patch_nums[scale];
    for (const std::string prefix : {"idx.", "sampled_idx."}) {
      const std::string name = prefix + std::to_string(scale);
      expect_tensor(tensors, name, at::kLong, {batch, patch_count});
      if (!tensors.contains(name)) continue;
      // Token ids index the fixture's vocabulary.
      EXPECT_GE(tensors.at(name).min().item<std::int64_t>(), 0) << name;
      EXPECT_LT(tensors.at(name).max().item<std::int64_t>(), vocab) << name;
    }
  }

  // Values in their documented ranges.
  const at::Tensor label = tensors.at("label");
  EXPECT_GE(label.min().item<std::int64_t>(), 0);
  EXPECT_LT(label.max().item<std::int64_t>(), classes);
  EXPECT_TRUE(tensors.at("image").isfinite().all().item<bool>());
  EXPECT_LE(tensors.at("image").abs().max().item<float>(), 1.0f);
  EXPECT_GE(tensors.at("sample_image").min().item<float>(), 0.0f);
  EXPECT_LE(tensors.at("sample_image").max().item<float>(), 1.0f);
  EXPECT_NEAR(probs.sum(1).sub(1).abs().max().item<float>(), 0.0f, 1e-5f);
  EXPECT_GT(tensors.at("rng_probe.exponential").min().item<float>(), 0.0f);
  EXPECT_GE(tensors.at("rng_probe.multinomial").min().item<std::int64_t>(), 0);
  EXPECT_LT(tensors.at("rng_probe.multinomial").max().item<std::int64_t>(), probs.size(1));
}

TEST(SafetensorsParity, ModelFixturesLoadEveryTensor) {
  const fs::path dir = testing::parity_dir();
  TESSERA_SKIP_WITHOUT_VAR_FIXTURE(dir, "vqvae.safetensors", "var.safetensors");
  for (const char* name : {"vqvae.safetensors", "var.safetensors"}) {
    SCOPED_TRACE(name);
    const SafetensorsFile opened = SafetensorsFile::open(dir / name);
    EXPECT_FALSE(opened.metadata().empty());
    EXPECT_EQ(opened.metadata().at("reference"), "FoundationVision/VAR@78b9539");
    const auto tensors = opened.all();
    EXPECT_GT(tensors.size(), 0u);
    for (const auto& [tensor_name, tensor] : tensors) {
      const auto& info = opened.info(tensor_name);
      EXPECT_EQ(tensor.scalar_type(), info.dtype) << tensor_name;
      EXPECT_EQ(tensor.sizes(), at::IntArrayRef(info.shape)) << tensor_name;
      EXPECT_EQ(static_cast<std::uint64_t>(tensor.nbytes()), info.byte_size()) << tensor_name;
      // The attention mask bias is 0 or -inf by design; every parameter is finite.
      if (at::isFloatingType(tensor.scalar_type()) && tensor_name != "attn_bias_for_masking") {
        EXPECT_TRUE(tensor.isfinite().all().item<bool>()) << tensor_name;
      }
    }
  }
  const SafetensorsFile var_file = SafetensorsFile::open(dir / "var.safetensors");
  const auto var = var_file.all();
  const std::int64_t depth = metadata_integer(var_file, "depth");
  ASSERT_GT(depth, 0);
  EXPECT_TRUE(var.contains("lvl_1L"));
  for (std::int64_t block = 0; block < depth; ++block) {
    const std::string buffer = "blocks." + std::to_string(block) + ".attn.zero_k_bias";
    EXPECT_TRUE(var.contains(buffer)) << buffer;
  }
  EXPECT_FALSE(var.contains("blocks." + std::to_string(depth) + ".attn.zero_k_bias"))
      << "more blocks than the metadata's depth " << depth;
  // The block-causal mask over the fixture's pyramid (var-tiny: the 1+4+9+16 = 30 tokens of
  // patch_nums 1,2,3,4): 0 where a query may see a key (level(q) >= level(k)), -inf elsewhere.
  std::vector<std::int64_t> level;
  const std::vector<std::int64_t> patch_nums = metadata_patch_nums(var_file);
  for (size_t s = 0; s < patch_nums.size(); ++s) {
    for (std::int64_t i = 0; i < patch_nums[s] * patch_nums[s]; ++i) {
      level.push_back(static_cast<std::int64_t>(s));
    }
  }
  const std::int64_t L = static_cast<std::int64_t>(level.size());
  ASSERT_TRUE(var.contains("attn_bias_for_masking"));
  const at::Tensor mask = var.at("attn_bias_for_masking");
  ASSERT_EQ(mask.sizes(), at::IntArrayRef({1, 1, L, L}));
  const auto m = mask.accessor<float, 4>();
  std::int64_t wrong = 0;
  for (std::int64_t q = 0; q < L; ++q) {
    for (std::int64_t k = 0; k < L; ++k) {
      const float expected = level[q] >= level[k] ? 0.0f : -std::numeric_limits<float>::infinity();
      wrong += m[0][0][q][k] != expected;
    }
  }
  EXPECT_EQ(wrong, 0) << "of " << L * L << " mask entries";
}

// --- malformed files: one test per defect, each a tessera::Error that says what was wrong ----

constexpr const char* kOneFloat = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
const std::string kFourBytes("\0\0\x80\x3f", 4);

TEST_F(SafetensorsTest, MalformedTooShortFile) {
  EXPECT_NE(open_error("").find("too short"), std::string::npos);
  EXPECT_NE(open_error("\x01\x02\x03\x04\x05").find("too short"), std::string::npos);
}

TEST_F(SafetensorsTest, MalformedTruncatedFile) {
  const fs::path path = file("whole.safetensors");
  save_safetensors(path, {{"a", at::arange(10, at::kFloat)}, {"b", at::arange(3, at::kLong)}});
  const std::string whole = read_file_bytes(path);
  // Cut inside the data: the last tensor reaches past the end.
  EXPECT_NE(open_error(whole.substr(0, whole.size() - 3)).find("truncated"), std::string::npos);
  // Cut inside the header: the header length reaches past the end.
  EXPECT_NE(open_error(whole.substr(0, 20)).find("truncated"), std::string::npos);
  // Every shorter prefix is refused cleanly.
  for (std::size_t length = 0; length < whole.size(); ++length) {
    SCOPED_TRACE(length);
    write_file_bytes(path, whole.substr(0, length));
    EXPECT_THROW(SafetensorsFile::open(path), Error);
  }
}

TEST_F(SafetensorsTest, MalformedHeaderLengthPastTheEnd) {
  const std::string message =
      open_error(assemble_file(kOneFloat, kFourBytes, /*pad=*/true, /*length_field=*/1000));
  EXPECT_NE(message.find("past the end"), std::string::npos) << message;
}

TEST_F(SafetensorsTest, MalformedHeaderLengthOverTheLimit) {
  const std::string message = open_error(
      assemble_file(kOneFloat, kFourBytes, /*pad=*/true, /*length_field=*/std::uint64_t{1} << 62));
  EXPECT_NE(message.find("exceeds the limit"), std::string::npos) << message;
}

TEST_F(SafetensorsTest, MalformedJson) {
  const std::string message = open_error(assemble_file(R"({"w":{"dtype":"F32",)", kFourBytes));
  EXPECT_NE(message.find("not valid JSON"), std::string::npos) << message;
  EXPECT_NE(open_error(assemble_file("", "")).find("not valid JSON"), std::string::npos);
  // Bytes that are not UTF-8 inside a JSON string.
  EXPECT_NE(open_error(assemble_file("{\"\xff\":1}", "")).find("not valid JSON"),
            std::string::npos);
}

TEST_F(SafetensorsTest, MalformedHeaderNotAnObject) {
  const std::string message = open_error(assemble_file("[1, 2]", ""));
  EXPECT_NE(message.find("must be a JSON object"), std::string::npos) << message;
  EXPECT_NE(open_error(assemble_file(R"({"w": [1]})", "")).find("must be a JSON object"),
            std::string::npos);
}

TEST_F(SafetensorsTest, MalformedOffsetsOutOfBounds) {
  const std::string message = open_error(
      assemble_file(R"({"w":{"dtype":"F32","shape":[100],"data_offsets":[0,400]}})", kFourBytes));
  EXPECT_NE(message.find("out of bounds"), std::string::npos) << message;
}

TEST_F(SafetensorsTest, MalformedOffsetsReversed) {
  const std::string message = open_error(
      assemble_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", kFourBytes));
  EXPECT_NE(message.find("begin after"), std::string::npos) << message;
}

TEST_F(SafetensorsTest, MalformedOverlappingOffsets) {
  const std::string message =
      open_error(assemble_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                               std::string(12, '\0')));
  EXPECT_NE(message.find("overlap"), std::string::npos) << message;
  EXPECT_NE(message.find("'a'"), std::string::npos) << message;
  EXPECT_NE(message.find("'b'"), std::string::npos) << message;
}

TEST_F(SafetensorsTest, MalformedDataNotCoveredByTensors) {
  const std::string hole =
      open_error(assemble_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                               std::string(12, '\0')));
  EXPECT_NE(hole.find("belong to no tensor"), std::string::npos) << hole;
  const std::string trailing = open_error(assemble_file(kOneFloat, kFourBytes + "junk"));
  EXPECT_NE(trailing.find("belong to no tensor"), std::string::npos) << trailing;
}

TEST_F(SafetensorsTest, MalformedUnknownDtype) {
  const std::string message = open_error(
      assemble_file(R"({"w":{"dtype":"F128","shape":[1],"data_offsets":[0,4]}})", kFourBytes));
  EXPECT_NE(message.find("unknown dtype 'F128'"), std::string::npos) << message;
  EXPECT_NE(message.find("'w'"), std::string::npos) << message;
}

TEST_F(SafetensorsTest, MalformedSizeMismatch) {
  const std::string message = open_error(
      assemble_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,4]}})", kFourBytes));
  EXPECT_NE(message.find("size mismatch"), std::string::npos) << message;
}

TEST_F(SafetensorsTest, MalformedShape) {
  const auto with_shape = [&](const std::string& shape) {
    return open_error(
        assemble_file(R"({"w":{"dtype":"U8","shape":)" + shape + R"(,"data_offsets":[0,0]}})", ""));
  };
  EXPECT_NE(with_shape("[-1]").find("must not be negative"), std::string::npos);
  EXPECT_NE(with_shape("[1.5]").find("must be an integer"), std::string::npos);
  EXPECT_NE(with_shape("[\"2\"]").find("must be an integer"), std::string::npos);
  EXPECT_NE(with_shape("3").find("must be an array"), std::string::npos);
  EXPECT_NE(with_shape("[0, 4294967296, 4294967296]").find("more elements than an int64"),
            std::string::npos);
}

TEST_F(SafetensorsTest, MalformedNonStringMetadata) {
  const std::string message = open_error(assemble_file(R"({"__metadata__":{"k":1}})", ""));
  EXPECT_NE(message.find("must be a string"), std::string::npos) << message;
  EXPECT_NE(open_error(assemble_file(R"({"__metadata__":"text"})", "")).find("__metadata__"),
            std::string::npos);
}

TEST_F(SafetensorsTest, MalformedEntryFields) {
  const std::string unknown = open_error(assemble_file(
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":true}})", kFourBytes));
  EXPECT_NE(unknown.find("unknown field 'extra'"), std::string::npos) << unknown;
  const std::string missing =
      open_error(assemble_file(R"({"w":{"dtype":"F32","shape":[1]}})", kFourBytes));
  EXPECT_NE(missing.find("no field 'data_offsets'"), std::string::npos) << missing;
  const std::string offsets = open_error(
      assemble_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", kFourBytes));
  EXPECT_NE(offsets.find("data_offsets must be an array [begin, end]"), std::string::npos)
      << offsets;
}

TEST_F(SafetensorsTest, MalformedDuplicateNames) {
  const std::string message =
      open_error(assemble_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                               R"("w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                               kFourBytes));
  EXPECT_NE(message.find("twice"), std::string::npos) << message;
}

TEST_F(SafetensorsTest, MalformedBoolByte) {
  // Opening succeeds (the header is fine); materialising the tensor refuses the byte 2.
  const fs::path path = file("bool.safetensors");
  write_file_bytes(path, assemble_file(R"({"b":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})",
                                       std::string("\x01\x00\x02", 3)));
  const SafetensorsFile opened = SafetensorsFile::open(path);
  const std::string message = error_message_of([&] { opened.tensor("b"); });
  EXPECT_NE(message.find("0 or 1"), std::string::npos) << message;
}

TEST_F(SafetensorsTest, MalformedNotAFile) {
  EXPECT_NE(error_message_of([&] {
              SafetensorsFile::open(file("absent.safetensors"));
            }).find("cannot open"),
            std::string::npos);
  EXPECT_NE(
      error_message_of([&] { SafetensorsFile::open(folder_.path()); }).find("not a regular file"),
      std::string::npos);
}

// Random corruption of a valid file's header and length field: every outcome is either a
// successful read or a tessera::Error, never a crash or another exception type.
TEST_F(SafetensorsTest, MalformedRandomCorruptionNeverCrashes) {
  const fs::path path = file("fuzz.safetensors");
  save_safetensors(path,
                   {{"a", at::arange(6, at::kFloat).reshape({2, 3})},
                    {"b", at::arange(3, at::kLong)},
                    {"c", at::zeros({2}, at::kBool)}},
                   {{"k", "v"}});
  const std::string whole = read_file_bytes(path);
  std::uint64_t header_length = 0;
  std::memcpy(&header_length, whole.data(), 8);
  std::mt19937 generator(12345);
  std::uniform_int_distribution<std::size_t> position(0, 8 + header_length - 1);
  std::uniform_int_distribution<int> byte_value(0, 255);
  std::uniform_int_distribution<int> flips(1, 3);
  for (int trial = 0; trial < 300; ++trial) {
    std::string corrupted = whole;
    for (int flip = flips(generator); flip > 0; --flip) {
      corrupted[position(generator)] = static_cast<char>(byte_value(generator));
    }
    write_file_bytes(path, corrupted);
    try {
      const SafetensorsFile opened = SafetensorsFile::open(path);
      for (const auto& [name, tensor] : opened.all()) EXPECT_TRUE(tensor.defined());
    } catch (const Error&) {
      // A refused file is the expected outcome for most corruptions.
    }
  }
}

// --- writing ---------------------------------------------------------------------------------

TEST_F(SafetensorsTest, FailedSaveLeavesThePreviousFileIntact) {
  const fs::path path = file("checkpoint.safetensors");
  const at::Tensor original = at::arange(8, at::kFloat);
  save_safetensors(path, {{"w", original}}, {{"version", "1"}});
  const std::string bytes_before = read_file_bytes(path);

  const auto expect_refused = [&](const std::map<std::string, at::Tensor>& tensors,
                                  const std::string& telling_word) {
    const std::string message = error_message_of([&] { save_safetensors(path, tensors); });
    EXPECT_NE(message.find(telling_word), std::string::npos) << message;
    EXPECT_EQ(read_file_bytes(path), bytes_before);
    EXPECT_EQ(directory_listing(), std::vector<std::string>{"checkpoint.safetensors"})
        << "no temporary file may be left behind";
  };
  // The bad tensor sorts last, after good ones, so the refusal cannot come from the first entry.
  expect_refused({{"a", original}, {"z", at::zeros({2}, at::kComplexFloat)}}, "ComplexFloat");
  expect_refused({{"a", original}, {"z", at::zeros({2, 2}).to_sparse()}}, "layout");
  expect_refused({{"a", original}, {"z", at::Tensor()}}, "undefined");
  expect_refused({{"__metadata__", original}}, "reserved");
  expect_refused({{"a", at::zeros({2}, at::TensorOptions().device(at::kMeta))}}, "meta");
  {
    const std::string message = error_message_of([&] {
      save_safetensors(path, {{"a", original}}, {{"bad", std::string("\xff", 1)}});
    });
    EXPECT_NE(message.find("JSON"), std::string::npos) << message;
    EXPECT_EQ(read_file_bytes(path), bytes_before);
  }
  EXPECT_EQ(directory_listing(), std::vector<std::string>{"checkpoint.safetensors"});
  const SafetensorsFile reopened = SafetensorsFile::open(path);
  EXPECT_TRUE(reopened.tensor("w").equal(original));
  EXPECT_EQ(reopened.metadata().at("version"), "1");
}

TEST_F(SafetensorsTest, FailedRenameRemovesTheTemporaryFile) {
  // A directory in the way makes the final rename fail after the data has been written and
  // synced: the temporary file must still be cleaned up.
  const fs::path in_the_way = file("occupied.safetensors");
  fs::create_directory(in_the_way);
  const std::string message = error_message_of([&] {
    save_safetensors(in_the_way, {{"w", at::zeros({4})}});
  });
  EXPECT_NE(message.find("renaming"), std::string::npos) << message;
  EXPECT_EQ(directory_listing(), std::vector<std::string>{"occupied.safetensors"});
}

TEST_F(SafetensorsTest, SaveCreatesMissingDirectories) {
  // A new run directory is created on the first checkpoint (AtomicFileWriter does it).
  const fs::path path = folder_.path() / "no" / "such" / "dir" / "x.safetensors";
  save_safetensors(path, {{"w", at::arange(4)}});
  EXPECT_TRUE(at::equal(load_safetensors(path).at("w"), at::arange(4)));
}

TEST_F(SafetensorsTest, SaveUnderAFileIsAnErrorNamingThePath) {
  const fs::path blocker = file("blocker");
  save_safetensors(blocker, {});
  const std::string message =
      error_message_of([&] { save_safetensors(blocker / "x.safetensors", {}); });
  EXPECT_NE(message.find("x.safetensors"), std::string::npos) << message;
}

TEST_F(SafetensorsTest, OverwriteReplacesTheFileAndOldMappingsKeepTheirData) {
  const fs::path path = file("replace.safetensors");
  save_safetensors(path, {{"w", at::ones({1024})}});
  const SafetensorsFile old_file = SafetensorsFile::open(path);
  const at::Tensor old_tensor = old_file.tensor("w");

  save_safetensors(path, {{"v", at::arange(5, at::kLong)}});
  const auto loaded = load_safetensors(path);
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_TRUE(loaded.at("v").equal(at::arange(5, at::kLong)));
  // The rename left the old inode alive for the old mapping: no SIGBUS, old values intact.
  EXPECT_EQ(old_tensor.sum().item<float>(), 1024.0f);
  EXPECT_EQ(directory_listing(), std::vector<std::string>{"replace.safetensors"});
}

}  // namespace
}  // namespace tessera
