// Writes the committed seed corpora (fuzz/corpus/<target>/): small valid inputs of every kind the
// readers accept, made with Tessera's own writers (and stb_image_write for JPEG), so that
// the fuzzers start from the formats' interesting paths. Run once when the readers learn a new
// kind of input: build-fuzz/fuzz_seed_writer fuzz/corpus
#include <ATen/ATen.h>
// stb_image_write's implementation, for the JPEG seeds only (the library writes PNGs with libpng
// and has no JPEG writer); third-party C, its warnings are not ours.
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Weverything"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb_image_write.h>
#pragma clang diagnostic pop
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tessera/core/config.h"
#include "tessera/io/image_io.h"
#include "tessera/io/safetensors.h"
#include "tessera/nn/backbone_config.h"

namespace fs = std::filesystem;
using namespace tessera;

namespace {

void write_bytes(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void write_gzip(const fs::path& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

// An IDX file: zero, zero, type 0x08 (unsigned byte), the number of dimensions, each dimension as
// a big-endian 32-bit integer, then the bytes.
std::vector<uint8_t> idx(const std::vector<uint32_t>& dims) {
  std::vector<uint8_t> out = {0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  size_t count = 1;
  for (uint32_t d : dims) {
    for (int shift : {24, 16, 8, 0}) out.push_back(static_cast<uint8_t>(d >> shift));
    count *= d;
  }
  for (size_t i = 0; i < count; ++i) out.push_back(static_cast<uint8_t>(i * 37));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus folder>\n", argv[0]);
    return 2;
  }
  const fs::path root = argv[1];
  for (const char* target : {"safetensors", "config", "idx", "image"}) {
    fs::create_directories(root / target);
  }

  // safetensors: several dtypes, a zero-element tensor, a scalar, metadata, none at all.
  save_safetensors(root / "safetensors" / "mixed.safetensors",
                   {{"weight", at::arange(6, at::kFloat).reshape({2, 3})},
                    {"ids", at::arange(4, at::kLong)},
                    {"half", at::ones({3}, at::kHalf)},
                    {"bf16", at::ones({2, 2}, at::kBFloat16)},
                    {"mask", at::tensor({1, 0}, at::kByte).to(at::kBool)},
                    {"empty", at::zeros({0, 4})},
                    {"scalar", at::tensor(2.5, at::kDouble)}},
                   {{"format", "pt"}, {"note", "seed"}});
  save_safetensors(root / "safetensors" / "one.safetensors", {{"x", at::ones({1}, at::kByte)}});
  save_safetensors(root / "safetensors" / "none.safetensors", {});

  // configs: the backbone configs of every model family.
  const std::vector<std::pair<std::string, BackboneConfig>> configs = {
      {"var", var_style_config(64, 2, 2, {1, 2, 3}, 8, 10, false)},
      {"var_shared", var_style_config(64, 2, 2, {1, 2}, 8, 10, true)},
      {"llamagen", llamagen_style_config(64, 2, 2, 4, 50, 10)},
      {"maskgit", maskgit_style_config(64, 2, 2, 16, 50, 10)},
      {"mar", mar_style_config(64, 2, 2, 16, 8, 10, 8)}};
  for (const auto& [name, config] : configs) {
    std::ofstream(root / "config" / (name + ".json")) << config_to_json(config).dump(1);
  }
  std::ofstream(root / "config" / "partial.json") << R"({"width": 32, "depth": 1, "num_heads": 2})";

  // IDX: images and labels, plain and gzip.
  write_bytes(root / "idx" / "images.idx", idx({2, 3, 3}));
  write_bytes(root / "idx" / "labels.idx", idx({5}));
  write_gzip(root / "idx" / "images.idx.gz", idx({3, 2, 2}));
  write_gzip(root / "idx" / "labels.idx.gz", idx({4}));

  // images: 4x3 grey, RGB and RGBA as PNG and JPEG (BMP is not read).
  for (int channels : {1, 3, 4}) {
    std::vector<uint8_t> pixels(static_cast<size_t>(4 * 3 * channels));
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 29);
    const std::string stem = (root / "image" / ("c" + std::to_string(channels))).string();
    tessera::write_png(stem + ".png", at::from_blob(pixels.data(), {3, 4, channels}, at::kByte)
                                          .permute({2, 0, 1}));
    stbi_write_jpg((stem + ".jpg").c_str(), 4, 3, channels, pixels.data(), 80);
  }
  std::printf("seed corpora written under %s\n", root.c_str());
  return 0;
}
