// Tessera's PNG decoder (PNG specification, 2nd edition / ISO 15948): chunk parsing with CRC
// checks, zlib inflation of the IDAT stream, the five scanline filters, Adam7 and the conversion
// of every colour type and bit depth to 8-bit samples. See image_decoders.h for the contract.
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "core/image_codecs/image_decoders.h"
#include "tessera/core/error.h"

// Note [PNG decoder robustness]
// Every byte comes from an untrusted file. The decoder therefore:
//  - reads chunks only through read_chunk, which checks that the 12 framing bytes and the data
//    lie inside the buffer before it hands out a span over them;
//  - refuses width * height above DecodeLimits::max_pixels from IHDR alone, and computes every
//    size (row bytes, pass sizes, output size) with checked arithmetic;
//  - inflates into a buffer that grows with the data actually inflated, capped at the exact
//    size the header implies, so a tiny file that declares a huge image fails on truncation
//    after inflating only what it contains, and never costs the declared size in memory;
//  - stops inflating as soon as that buffer is full: data after the image is ignored, and no
//    time is spent on it (a deflate stream can expand ~1000x, so trailing data could otherwise
//    cost far more than the pixels);
//  - checks every palette index against the palette (libpng reports such files too).
// Time is linear in the file size plus the decoded pixels: each chunk is visited once, each
// inflated byte is produced once, and defiltering and conversion are single passes.

// Note [PNG fuzzing without CRCs]
// A fuzzer almost never produces a chunk whose CRC-32 matches, so with CRC checks on it would
// spend its time on the chunk framing and never reach inflation, filters or conversion. A build
// defining TESSERA_PNG_FUZZ_IGNORE_CRC (a fuzzing build only; never the library) treats every
// CRC as matching and switches off zlib's Adler-32 check for the same reason.

namespace tessera::image_codecs {
namespace {

#ifdef TESSERA_PNG_FUZZ_IGNORE_CRC
constexpr bool kCheckCrc = false;  // See Note [PNG fuzzing without CRCs]
#else
constexpr bool kCheckCrc = true;
#endif

constexpr std::array<uint8_t, 8> kSignature = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
constexpr uint32_t kMaxChunkLength = 0x7fffffffu;  // PNG limits lengths and sizes to 2^31 - 1

constexpr uint32_t chunk_tag(const char (&name)[5]) {
  return (uint32_t{static_cast<uint8_t>(name[0])} << 24) |
         (uint32_t{static_cast<uint8_t>(name[1])} << 16) |
         (uint32_t{static_cast<uint8_t>(name[2])} << 8) | uint32_t{static_cast<uint8_t>(name[3])};
}
constexpr uint32_t kIHDR = chunk_tag("IHDR");
constexpr uint32_t kPLTE = chunk_tag("PLTE");
constexpr uint32_t kIDAT = chunk_tag("IDAT");
constexpr uint32_t kIEND = chunk_tag("IEND");
constexpr uint32_t kTRNS = chunk_tag("tRNS");

uint32_t read_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
uint16_t read_u16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

// Sizes that overflow are refused as too large rather than wrapped.
size_t checked_mul(size_t a, size_t b) {
  size_t result = 0;
  TESSERA_CHECK(!__builtin_mul_overflow(a, b, &result),
                "PNG image is too large: its size overflows ({} x {})", a, b);
  return result;
}
size_t checked_add(size_t a, size_t b) {
  size_t result = 0;
  TESSERA_CHECK(!__builtin_add_overflow(a, b, &result),
                "PNG image is too large: its size overflows ({} + {})", a, b);
  return result;
}

std::string chunk_name(uint32_t tag) {
  std::string name(4, '?');
  for (int i = 0; i < 4; ++i) {
    const char c = static_cast<char>((tag >> (24 - 8 * i)) & 0xff);
    // Only letters are legal; anything else is shown as '?' so messages stay printable.
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) name[static_cast<size_t>(i)] = c;
  }
  return name;
}

// Bit 5 of the first type byte (a lowercase first letter) marks an ancillary chunk: a decoder
// may skip it, which is what happens to one that is unknown or whose CRC is wrong.
bool is_ancillary(uint32_t tag) { return (tag >> 24) & 0x20; }

struct Chunk {
  uint32_t tag = 0;
  std::span<const uint8_t> data;
  bool crc_ok = true;
};

// Reads the chunks after the signature, one at a time, bounds-checked.
class ChunkReader {
 public:
  explicit ChunkReader(std::span<const uint8_t> bytes) : bytes_(bytes), position_(kSignature.size()) {}

  bool at_end() const { return position_ >= bytes_.size(); }

  // The next chunk; `what` says what was being looked for, for the truncation message.
  Chunk next(const char* what) {
    const size_t left = bytes_.size() - position_;
    TESSERA_CHECK(left >= 12, "PNG file is truncated: it ends inside a chunk header ({} bytes "
                  "left, a chunk needs at least 12) while looking for {}", left, what);
    const uint8_t* p = bytes_.data() + position_;
    const uint32_t length = read_u32(p);
    Chunk chunk;
    chunk.tag = read_u32(p + 4);
    for (int i = 4; i < 8; ++i) {
      const uint8_t c = p[i];
      TESSERA_CHECK((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'),
                    "PNG file is corrupt: invalid chunk type bytes {:02x} {:02x} {:02x} {:02x} at "
                    "offset {} (expected four ASCII letters)",
                    p[4], p[5], p[6], p[7], position_ + 4);
    }
    TESSERA_CHECK(length <= kMaxChunkLength,
                  "PNG file is corrupt: {} chunk length {} exceeds the PNG limit of 2^31-1",
                  chunk_name(chunk.tag), length);
    TESSERA_CHECK(length <= left - 12,
                  "PNG file is truncated: the {} chunk declares {} data bytes but only {} remain",
                  chunk_name(chunk.tag), length, left - 12);
    chunk.data = bytes_.subspan(position_ + 8, length);
    if constexpr (kCheckCrc) {
      // The CRC covers the type and the data (PNG spec 5.3).
      const uint32_t stored = read_u32(p + 8 + length);
      const uint32_t computed =
          static_cast<uint32_t>(crc32(0L, p + 4, static_cast<uInt>(4 + length)));
      chunk.crc_ok = stored == computed;
    }
    TESSERA_CHECK(chunk.crc_ok || is_ancillary(chunk.tag),
                  "PNG file is corrupt: CRC mismatch in critical chunk {}", chunk_name(chunk.tag));
    position_ += 12 + static_cast<size_t>(length);
    return chunk;
  }

 private:
  std::span<const uint8_t> bytes_;
  size_t position_;
};

struct Header {
  uint32_t width = 0;
  uint32_t height = 0;
  int bit_depth = 0;
  int colour_type = 0;
  bool interlaced = false;
  int samples_per_pixel = 0;  // in the file: 1 grey/palette, 2 grey+alpha, 3 RGB, 4 RGBA
  int bits_per_pixel = 0;
};

Header parse_ihdr(const Chunk& chunk) {
  TESSERA_CHECK(chunk.tag == kIHDR, "PNG file is corrupt: the first chunk is {}, expected IHDR",
                chunk_name(chunk.tag));
  TESSERA_CHECK(chunk.data.size() == 13, "PNG file is corrupt: IHDR has {} bytes, expected 13",
                chunk.data.size());
  const uint8_t* p = chunk.data.data();
  Header h;
  h.width = read_u32(p);
  h.height = read_u32(p + 4);
  h.bit_depth = p[8];
  h.colour_type = p[9];
  TESSERA_CHECK(h.width >= 1 && h.width <= kMaxChunkLength,
                "PNG file is corrupt: invalid width {} (expected 1..2^31-1)", h.width);
  TESSERA_CHECK(h.height >= 1 && h.height <= kMaxChunkLength,
                "PNG file is corrupt: invalid height {} (expected 1..2^31-1)", h.height);
  bool depth_ok = false;
  switch (h.colour_type) {
    case 0:  // grey
      depth_ok = h.bit_depth == 1 || h.bit_depth == 2 || h.bit_depth == 4 || h.bit_depth == 8 ||
                 h.bit_depth == 16;
      h.samples_per_pixel = 1;
      break;
    case 3:  // palette
      depth_ok = h.bit_depth == 1 || h.bit_depth == 2 || h.bit_depth == 4 || h.bit_depth == 8;
      h.samples_per_pixel = 1;
      break;
    case 2:  // RGB
    case 4:  // grey + alpha
    case 6:  // RGBA
      depth_ok = h.bit_depth == 8 || h.bit_depth == 16;
      h.samples_per_pixel = h.colour_type == 2 ? 3 : h.colour_type == 4 ? 2 : 4;
      break;
    default:
      TESSERA_FAIL("PNG file is corrupt: invalid colour type {} (expected 0, 2, 3, 4 or 6)",
                   h.colour_type);
  }
  TESSERA_CHECK(depth_ok, "PNG file is corrupt: invalid bit depth {} for colour type {}",
                h.bit_depth, h.colour_type);
  TESSERA_CHECK(p[10] == 0, "PNG file is corrupt: unknown compression method {} (expected 0)",
                p[10]);
  TESSERA_CHECK(p[11] == 0, "PNG file is corrupt: unknown filter method {} (expected 0)", p[11]);
  TESSERA_CHECK(p[12] <= 1, "PNG file is corrupt: unknown interlace method {} (expected 0 or 1)",
                p[12]);
  h.interlaced = p[12] == 1;
  h.bits_per_pixel = h.samples_per_pixel * h.bit_depth;
  return h;
}

// One reduced image of the scan: the whole image, or one of Adam7's seven passes.
struct Pass {
  size_t x0 = 0, y0 = 0, dx = 1, dy = 1;  // pixel (i, j) of the pass is (x0 + i dx, y0 + j dy)
  size_t width = 0, height = 0;           // in pixels; 0 when the pass is empty
  size_t row_bytes = 0;                   // filtered row without its filter-type byte
};

// Note [Adam7]
// Pass p covers the pixels (x0 + i dx, y0 + j dy); a pass with no pixels (a narrow or short
// image) has no rows at all, not even filter bytes (PNG spec 8.2).
std::vector<Pass> make_passes(const Header& h) {
  struct Origin {
    size_t x0, y0, dx, dy;
  };
  static constexpr Origin kAdam7[7] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                       {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
  std::vector<Pass> passes;
  const auto add = [&](const Origin& o) {
    Pass pass{o.x0, o.y0, o.dx, o.dy, 0, 0, 0};
    pass.width = h.width > o.x0 ? (h.width - o.x0 + o.dx - 1) / o.dx : 0;
    pass.height = h.height > o.y0 ? (h.height - o.y0 + o.dy - 1) / o.dy : 0;
    if (pass.width == 0 || pass.height == 0) return;
    // bits_per_pixel <= 64 and width < 2^31, so this cannot overflow a 64-bit size_t; checked
    // anyway for 32-bit builds.
    pass.row_bytes = checked_add(checked_mul(pass.width, static_cast<size_t>(h.bits_per_pixel)), 7) / 8;
    passes.push_back(pass);
  };
  if (h.interlaced) {
    for (const Origin& o : kAdam7) add(o);
  } else {
    add({0, 0, 1, 1});
  }
  return passes;
}

// The palette (RGBA) and transparency information gathered from PLTE and tRNS.
struct Colours {
  std::vector<uint8_t> palette;  // 4 bytes per entry; alpha 255 unless tRNS says otherwise
  size_t palette_entries = 0;
  bool has_trns = false;         // palette images: output RGBA
  bool has_key = false;          // grey / RGB: the colour key, at the file's bit depth
  std::array<uint16_t, 3> key{};
};

void parse_plte(const Chunk& chunk, const Header& h, Colours& colours) {
  TESSERA_CHECK(colours.palette_entries == 0, "PNG file is corrupt: more than one PLTE chunk");
  // A suggested palette in a grey image is illegal but harmless, and in an RGB(A) image merely
  // a hint: only palette images use it (libpng ignores it in grey images too).
  if (h.colour_type != 3) return;
  const size_t size = chunk.data.size();
  TESSERA_CHECK(size % 3 == 0 && size >= 3 && size <= 3 * 256,
                "PNG file is corrupt: PLTE has {} bytes, expected 3 per entry and 1..256 entries",
                size);
  colours.palette_entries = size / 3;
  colours.palette.assign(colours.palette_entries * 4, 255);
  for (size_t i = 0; i < colours.palette_entries; ++i) {
    std::memcpy(colours.palette.data() + 4 * i, chunk.data.data() + 3 * i, 3);
  }
}

void parse_trns(const Chunk& chunk, const Header& h, Colours& colours) {
  // A second tRNS is ignored, as libpng does.
  if (colours.has_trns || colours.has_key) return;
  const size_t size = chunk.data.size();
  switch (h.colour_type) {
    case 0:
      TESSERA_CHECK(size == 2, "PNG file is corrupt: tRNS for a grey image has {} bytes, "
                    "expected 2", size);
      colours.key[0] = read_u16(chunk.data.data());
      colours.has_key = true;
      break;
    case 2:
      TESSERA_CHECK(size == 6, "PNG file is corrupt: tRNS for an RGB image has {} bytes, "
                    "expected 6", size);
      for (size_t i = 0; i < 3; ++i) colours.key[i] = read_u16(chunk.data.data() + 2 * i);
      colours.has_key = true;
      break;
    case 3:
      TESSERA_CHECK(colours.palette_entries > 0,
                    "PNG file is corrupt: tRNS comes before PLTE in a palette image");
      TESSERA_CHECK(size <= colours.palette_entries,
                    "PNG file is corrupt: tRNS has {} entries but the palette only {}", size,
                    colours.palette_entries);
      // Entries past tRNS's length stay opaque (PNG spec 11.3.2.1).
      for (size_t i = 0; i < size; ++i) colours.palette[4 * i + 3] = chunk.data[i];
      colours.has_trns = true;
      break;
    default:
      TESSERA_FAIL("PNG file is corrupt: tRNS is not allowed for colour type {}, which has an "
                   "alpha channel", h.colour_type);
  }
}

// Inflates the concatenated IDAT data into exactly `expected` bytes. See Note [PNG decoder
// robustness] for why the buffer grows with the data and why inflation stops once it is full.
class IdatInflater {
 public:
  IdatInflater() {
    stream_.zalloc = Z_NULL;
    stream_.zfree = Z_NULL;
    stream_.opaque = Z_NULL;
    stream_.next_in = Z_NULL;
    stream_.avail_in = 0;
    const int status = inflateInit(&stream_);
    TESSERA_CHECK(status == Z_OK, "cannot start zlib inflation (zlib status {})", status);
#ifdef TESSERA_PNG_FUZZ_IGNORE_CRC
    inflateValidate(&stream_, 0);  // See Note [PNG fuzzing without CRCs]
#endif
  }
  ~IdatInflater() { inflateEnd(&stream_); }
  IdatInflater(const IdatInflater&) = delete;
  IdatInflater& operator=(const IdatInflater&) = delete;

  // `first` is the first IDAT chunk's data; `reader` yields the rest.
  std::vector<uint8_t> run(std::span<const uint8_t> first, ChunkReader& reader, size_t expected) {
    std::vector<uint8_t> out;
    size_t filled = 0;
    std::span<const uint8_t> input = first;
    while (filled < expected) {
      if (input.empty()) {
        input = next_idat(reader, filled, expected);
        continue;  // the next IDAT may be empty too
      }
      if (filled == out.size()) {
        // Double, from 64 KiB, up to exactly `expected`: reserve first so that the capacity
        // never exceeds the declared size.
        const size_t grown = std::min(expected, std::max<size_t>(out.size() * 2, size_t{1} << 16));
        out.reserve(grown);
        out.resize(grown);
      }
      // zlib counts in uInt; chunks are below 2^31 and the output window is capped at 2^30.
      stream_.next_in = const_cast<Bytef*>(input.data());
      stream_.avail_in = static_cast<uInt>(input.size());
      stream_.next_out = out.data() + filled;
      stream_.avail_out = static_cast<uInt>(std::min<size_t>(out.size() - filled, size_t{1} << 30));
      const uInt avail_in_before = stream_.avail_in;
      const uInt avail_out_before = stream_.avail_out;
      const int status = inflate(&stream_, Z_NO_FLUSH);
      input = input.subspan(avail_in_before - stream_.avail_in);
      filled += avail_out_before - stream_.avail_out;
      switch (status) {
        case Z_OK:
          break;
        case Z_STREAM_END:
          TESSERA_CHECK(filled == expected,
                        "PNG image data is truncated: the compressed stream ends after {} of the "
                        "{} bytes the header implies",
                        filled, expected);
          break;
        case Z_BUF_ERROR:
          // No progress was possible; with input and output space both available that cannot
          // happen, so this guards against looping forever rather than expecting it.
          TESSERA_CHECK(avail_in_before != stream_.avail_in || avail_out_before != stream_.avail_out,
                        "PNG image data is corrupt: zlib made no progress");
          break;
        case Z_NEED_DICT:
          TESSERA_FAIL("PNG image data is corrupt: the zlib stream asks for a preset dictionary, "
                       "which PNG does not allow");
        case Z_MEM_ERROR:
          TESSERA_FAIL("PNG image data could not be inflated: zlib ran out of memory");
        default:
          TESSERA_FAIL("PNG image data is corrupt: zlib reports '{}'",
                       stream_.msg ? stream_.msg : "unknown error");
      }
    }
    return out;
  }

 private:
  // The data of the next IDAT chunk. Ancillary chunks between IDATs are skipped (stb does the
  // same; the spec wants IDATs consecutive, but nothing is ambiguous about such a file).
  static std::span<const uint8_t> next_idat(ChunkReader& reader, size_t filled, size_t expected) {
    while (true) {
      TESSERA_CHECK(!reader.at_end(),
                    "PNG image data is truncated: the file ends after {} of the {} bytes the "
                    "header implies", filled, expected);
      const Chunk chunk = reader.next("more image data (IDAT)");
      if (chunk.tag == kIDAT) return chunk.data;
      TESSERA_CHECK(chunk.tag != kIEND,
                    "PNG image data is truncated: IEND comes after {} of the {} bytes the header "
                    "implies", filled, expected);
      TESSERA_CHECK(is_ancillary(chunk.tag),
                    "PNG file is corrupt: critical chunk {} after the image data has started",
                    chunk_name(chunk.tag));
      // tRNS and other ancillary chunks here are too late to matter, and skipped.
    }
  }

  z_stream stream_{};
};

// Undoes the scanline filters in place (PNG spec 9). `rows` holds `height` rows of a filter-type
// byte followed by `row_bytes` bytes; `unit` is the byte distance to the corresponding byte of
// the previous pixel (at least 1). The first row's "previous row" is all zeros.
void unfilter(uint8_t* rows, size_t height, size_t row_bytes, size_t unit) {
  const size_t stride = row_bytes + 1;
  for (size_t y = 0; y < height; ++y) {
    uint8_t* row = rows + y * stride + 1;
    const uint8_t* prior = y > 0 ? row - stride : nullptr;
    const int type = row[-1];
    const size_t head = std::min(unit, row_bytes);  // bytes with no pixel to their left
    switch (type) {
      case 0:
        break;
      case 1:  // Sub
        for (size_t i = unit; i < row_bytes; ++i) row[i] = static_cast<uint8_t>(row[i] + row[i - unit]);
        break;
      case 2:  // Up
        if (prior) {
          for (size_t i = 0; i < row_bytes; ++i) row[i] = static_cast<uint8_t>(row[i] + prior[i]);
        }
        break;
      case 3:  // Average
        if (prior) {
          for (size_t i = 0; i < head; ++i) row[i] = static_cast<uint8_t>(row[i] + (prior[i] >> 1));
          for (size_t i = unit; i < row_bytes; ++i) {
            row[i] = static_cast<uint8_t>(row[i] + ((row[i - unit] + prior[i]) >> 1));
          }
        } else {
          for (size_t i = unit; i < row_bytes; ++i) row[i] = static_cast<uint8_t>(row[i] + (row[i - unit] >> 1));
        }
        break;
      case 4:  // Paeth
        if (prior) {
          for (size_t i = 0; i < head; ++i) row[i] = static_cast<uint8_t>(row[i] + prior[i]);
          for (size_t i = unit; i < row_bytes; ++i) {
            const int a = row[i - unit], b = prior[i], c = prior[i - unit];
            const int p = a + b - c;
            const int pa = p > a ? p - a : a - p;
            const int pb = p > b ? p - b : b - p;
            const int pc = p > c ? p - c : c - p;
            const int predictor = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
            row[i] = static_cast<uint8_t>(row[i] + predictor);
          }
        } else {
          // With an all-zero previous row Paeth always predicts the left byte: Sub.
          for (size_t i = unit; i < row_bytes; ++i) row[i] = static_cast<uint8_t>(row[i] + row[i - unit]);
        }
        break;
      default:
        TESSERA_FAIL("PNG image data is corrupt: invalid filter type {} in row {} of {} "
                     "(expected 0..4)", type, y, height);
    }
  }
}

// Converts one pass's unfiltered rows to 8-bit output samples at their place in the image.
// Output may alias the input (see decode_png): every output byte lies at or before the input
// bytes of the same pixel and is written only after they are read.
class RowConverter {
 public:
  RowConverter(const Header& h, const Colours& colours, int out_channels)
      : h_(h), colours_(colours), out_channels_(static_cast<size_t>(out_channels)) {}

  void convert(const uint8_t* rows, const Pass& pass, uint8_t* out, size_t image_width) const {
    const size_t stride = pass.row_bytes + 1;
    for (size_t j = 0; j < pass.height; ++j) {
      const uint8_t* src = rows + j * stride + 1;
      uint8_t* dst = out + ((pass.y0 + j * pass.dy) * image_width + pass.x0) * out_channels_;
      const size_t step = pass.dx * out_channels_;
      convert_row(src, pass.width, dst, step);
    }
  }

 private:
  void convert_row(const uint8_t* src, size_t count, uint8_t* dst, size_t step) const {
    const int depth = h_.bit_depth;
    if (h_.colour_type == 3) {
      const uint8_t* palette = colours_.palette.data();
      const size_t entries = colours_.palette_entries;
      const size_t channels = out_channels_;  // 3 or 4
      for (size_t i = 0; i < count; ++i, dst += step) {
        const size_t index = depth == 8 ? src[i] : sub_byte_sample(src, i, depth);
        TESSERA_CHECK(index < entries,
                      "PNG image data is corrupt: palette index {} out of range (the palette has "
                      "{} entries)", index, entries);
        std::memcpy(dst, palette + 4 * index, channels);
      }
      return;
    }
    if (depth < 8) {  // grey at 1, 2 or 4 bits, scaled to 0..255 (255 / (2^depth - 1))
      const unsigned scale = depth == 1 ? 255u : depth == 2 ? 85u : 17u;
      for (size_t i = 0; i < count; ++i, dst += step) {
        const unsigned value = sub_byte_sample(src, i, depth);
        dst[0] = static_cast<uint8_t>(value * scale);
        if (colours_.has_key) dst[1] = value == colours_.key[0] ? 0 : 255;
      }
      return;
    }
    const size_t samples = static_cast<size_t>(h_.samples_per_pixel);
    if (depth == 8) {
      for (size_t i = 0; i < count; ++i, dst += step, src += samples) {
        bool keyed = colours_.has_key;
        for (size_t s = 0; s < samples; ++s) {
          keyed = keyed && src[s] == colours_.key[s];
          dst[s] = src[s];
        }
        if (colours_.has_key) dst[samples] = keyed ? 0 : 255;
      }
      return;
    }
    // 16 bits: the high byte is kept; the colour key compares the full 16-bit sample.
    for (size_t i = 0; i < count; ++i, dst += step, src += 2 * samples) {
      bool keyed = colours_.has_key;
      for (size_t s = 0; s < samples; ++s) {
        keyed = keyed && read_u16(src + 2 * s) == colours_.key[s];
        dst[s] = src[2 * s];
      }
      if (colours_.has_key) dst[samples] = keyed ? 0 : 255;
    }
  }

  // Sample i of a row packed at 1, 2 or 4 bits, leftmost sample in the high bits (PNG spec 7.2).
  static unsigned sub_byte_sample(const uint8_t* src, size_t i, int depth) {
    const size_t bit = i * static_cast<size_t>(depth);
    const unsigned shift = 8u - static_cast<unsigned>(depth) - static_cast<unsigned>(bit % 8);
    return (src[bit / 8] >> shift) & ((1u << depth) - 1u);
  }

  const Header& h_;
  const Colours& colours_;
  size_t out_channels_;
};

}  // namespace

DecodedImage decode_png(std::span<const uint8_t> bytes, const DecodeLimits& limits) {
  TESSERA_CHECK(bytes.size() >= kSignature.size() &&
                    std::equal(kSignature.begin(), kSignature.end(), bytes.begin()),
                "not a PNG file (bad signature)");
  ChunkReader reader(bytes);
  const Header h = parse_ihdr(reader.next("the IHDR chunk"));
  const int64_t pixels = int64_t{h.width} * int64_t{h.height};  // both < 2^31: no overflow
  TESSERA_CHECK(pixels <= limits.max_pixels,
                "PNG image of {} x {} pixels exceeds the limit of {} pixels", h.width, h.height,
                limits.max_pixels);

  // Chunks before the image data: PLTE and tRNS matter, other ancillary chunks are skipped.
  Colours colours;
  Chunk chunk;
  while (true) {
    TESSERA_CHECK(!reader.at_end(), "PNG file is truncated: it ends before any image data (IDAT)");
    chunk = reader.next("the image data (IDAT)");
    if (chunk.tag == kIDAT) break;
    TESSERA_CHECK(chunk.tag != kIEND, "PNG file has no image data: IEND comes before any IDAT");
    TESSERA_CHECK(chunk.tag != kIHDR, "PNG file is corrupt: more than one IHDR chunk");
    if (!chunk.crc_ok) continue;  // an ancillary chunk with a bad CRC is skipped
    if (chunk.tag == kPLTE) {
      parse_plte(chunk, h, colours);
    } else if (chunk.tag == kTRNS) {
      parse_trns(chunk, h, colours);
    } else {
      TESSERA_CHECK(is_ancillary(chunk.tag),
                    "PNG file uses unknown critical chunk {}, which cannot be skipped",
                    chunk_name(chunk.tag));
    }
  }
  TESSERA_CHECK(h.colour_type != 3 || colours.palette_entries > 0,
                "PNG file is corrupt: a palette image (colour type 3) has no PLTE chunk before "
                "its image data");

  const std::vector<Pass> passes = make_passes(h);
  size_t raw_size = 0;
  for (const Pass& pass : passes) {
    raw_size = checked_add(raw_size, checked_mul(pass.height, checked_add(pass.row_bytes, 1)));
  }
  IdatInflater inflater;
  std::vector<uint8_t> raw = inflater.run(chunk.data, reader, raw_size);
  // Whatever follows the image data (IEND, trailing chunks, or nothing) is not read.

  const size_t unit = static_cast<size_t>(std::max(1, h.bits_per_pixel / 8));
  {
    size_t offset = 0;
    for (const Pass& pass : passes) {
      unfilter(raw.data() + offset, pass.height, pass.row_bytes, unit);
      offset += pass.height * (pass.row_bytes + 1);
    }
  }

  int out_channels = h.samples_per_pixel;
  if (h.colour_type == 3) out_channels = colours.has_trns ? 4 : 3;
  if (colours.has_key) out_channels += 1;

  DecodedImage image;
  image.width = h.width;
  image.height = h.height;
  image.channels = out_channels;
  const size_t out_size = checked_mul(static_cast<size_t>(pixels), static_cast<size_t>(out_channels));
  const RowConverter converter(h, colours, out_channels);
  // A non-interlaced image of 8 or 16 bits that gains no channel converts in place: each
  // output row is no longer than its input row and starts no later, so the raw buffer becomes
  // the pixels without a second image-sized allocation.
  const bool in_place = !h.interlaced && h.bit_depth >= 8 && h.colour_type != 3 && !colours.has_key;
  if (in_place) {
    converter.convert(raw.data(), passes[0], raw.data(), h.width);
    raw.resize(out_size);
    image.pixels = std::move(raw);
  } else {
    image.pixels.assign(out_size, 0);
    size_t offset = 0;
    for (const Pass& pass : passes) {
      converter.convert(raw.data() + offset, pass, image.pixels.data(), h.width);
      offset += pass.height * (pass.row_bytes + 1);
    }
  }
  return image;
}

}  // namespace tessera::image_codecs
