#include "tessera/io/image_io.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <csetjmp>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

// libjpeg's headers need <cstdio> first.
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "tessera/core/atomic_file.h"
#include "tessera/core/error.h"
#include "tessera/core/format.h"

namespace tessera {
namespace {

// Output images past this side are a mistake (a wrong `columns`, a batch of thousands), not a
// picture anyone will look at; refusing them also keeps every size within libpng's range.
constexpr int64_t kMaxImageSide = int64_t{1} << 16;

// uint8 stays as it is; floating point maps [low, high] onto 0..255 (clamped, NaN -> low).
at::Tensor to_uint8_pixels(const at::Tensor& images, const ImageGridOptions& options) {
  if (images.scalar_type() == at::kByte) return images;
  TESSERA_CHECK(at::isFloatingType(images.scalar_type()),
                "image grid expects uint8 or floating-point images, got {}",
                c10::toString(images.scalar_type()));
  TESSERA_CHECK(
      std::isfinite(options.low) && std::isfinite(options.high) && options.low < options.high,
      "image grid value range [{}, {}] is invalid: expected finite low < high", options.low,
      options.high);
  const double scale = 255.0 / (options.high - options.low);
  return images.to(at::kFloat)
      .sub(options.low)
      .mul_(scale)
      .nan_to_num_(0.0, 255.0, 0.0)
      .clamp_(0.0, 255.0)
      .round_()
      .to(at::kByte);
}

// Note [Image decoding with libpng and libjpeg-turbo]
// Tessera first decoded images with Debian 12's stb_image (v2.27), which fuzz/fuzz_image showed
// unsafe on corrupt files, then with decoders of its own; it now reads PNG with libpng and JPEG
// with libjpeg-turbo, Debian's maintained libraries (fuzzed upstream on OSS-Fuzz). BMP is not
// read (a clear error). What this file adds around them:
// - limits before allocation: the header is read first, and an image of more than
//   kMaxPixels (8192 x 8192), or a PNG whose declared image data its file cannot hold even at
//   deflate's best ratio, is refused before the pixel buffer exists; libpng's own limits (user
//   limits, chunk sizes and counts) and libjpeg's memory limit and scan count are set too;
// - errors: both libraries report errors by longjmp. Each setjmp lives in a small function below
//   (png_read_header, jpeg_decode_pixels, ...) whose locals are plain C values; the state the
//   callbacks share is a plain struct, and every C++ object with a destructor (the pixel buffer,
//   the row pointers, the guard that destroys the library's structs) lives in the caller, above
//   the setjmp frame, so a longjmp never skips one. A failed step returns 0, and the caller throws
//   tessera::Error with the library's reason;
// - strictness: missing data is an error ("truncated"), not grey pixels. libjpeg's warnings that
//   mean the pixels are made up (corrupt entropy-coded data, a bad progression) end the decode;
//   libpng's benign errors (an ancillary chunk with a bad CRC or a bad length) skip that chunk;
// - the sample conversion stb_image defined and read_image has always followed: 16-bit samples
//   keep their high byte, grey below 8 bits is scaled to 0..255, a palette expands to RGB (RGBA
//   with a tRNS chunk; an index past the palette is an error), a tRNS colour key adds an alpha
//   channel (compared at full depth), CMYK/YCCK JPEGs become RGB as stb_image converts them.
// stb_image stays the tests' independent reference on valid files (tests/common/stb_reference.h).

// Above this many pixels an image is refused from its header (67 M: 8192 x 8192, as before).
constexpr int64_t kMaxPixels = int64_t{1} << 26;
// libpng: the largest ancillary chunk it may buffer, and how many it may keep.
constexpr png_alloc_size_t kMaxPngChunkBytes = 8u << 20;
constexpr png_uint_32 kMaxPngChunks = 1000;
// deflate codes at most 258 bytes in 2 bits: no zlib stream inflates to more than 1032 times its
// size. A header declaring more image data than that many times the file is refused unread.
constexpr int64_t kMaxDeflateRatio = 1032;
// libjpeg: more scans than this is a progressive file built to be slow (a normal encoder writes
// about 10), and its own memory (the coefficients of a progressive image) is capped.
constexpr int kMaxJpegScans = 256;
constexpr long kMaxJpegMemory = 1L << 30;

constexpr size_t kMessageSize = 320;

// snprintf into a message buffer (kMessageSize bytes); usable between setjmp and longjmp (no
// allocation, no throw).
[[gnu::format(printf, 2, 3)]] void set_message(char* out, const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::vsnprintf(out, kMessageSize, format, args);
  va_end(args);
}

struct Decoded {
  int64_t width = 0;
  int64_t height = 0;
  int channels = 0;             // 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA
  std::vector<uint8_t> pixels;  // rows top to bottom, samples interleaved
};

// --- PNG (libpng) ---------------------------------------------------------------------------------

// Plain C state shared by the setjmp functions and libpng's callbacks.
struct PngReadState {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t offset = 0;
  bool truncated = false;  // the file ended where libpng needed more
  char error[kMessageSize] = {};
  char warnings[kMessageSize] = {};  // libpng's warnings, "; "-separated, cut at the buffer's end
  png_structp png = nullptr;
  png_infop info = nullptr;
  // From the header.
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, colour_type = 0, interlace = 0;
  // After the transforms are set.
  int channels = 0;  // per pixel as libpng hands rows over (a palette index counts 1)
  size_t row_bytes = 0;
  png_color palette[256] = {};
  int palette_size = 0;
  png_byte palette_alpha[256] = {};
  int palette_alpha_size = 0;
};

void png_on_error(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngReadState*>(png_get_error_ptr(png));
  set_message(state->error, "%s", message ? message : "unknown error");
  png_longjmp(png, 1);  // never back into libpng, and not through libpng's own stderr printing
}

void png_on_warning(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngReadState*>(png_get_error_ptr(png));
  const size_t used = std::strlen(state->warnings);
  if (used + 3 < kMessageSize) {
    std::snprintf(state->warnings + used, kMessageSize - used, "%s%s", used ? "; " : "",
                  message ? message : "");
  }
}

void png_read_from_memory(png_structp png, png_bytep out, size_t length) {
  auto* state = static_cast<PngReadState*>(png_get_io_ptr(png));
  if (length > state->size - state->offset) {
    state->truncated = true;
    png_error(png, "file is truncated");
  }
  std::memcpy(out, state->data + state->offset, length);
  state->offset += length;
}

// Ancillary chunks Tessera has no use for (no colour management, no text): libpng skips them
// (after their CRC) rather than parse or inflate them.
constexpr png_byte kIgnoredPngChunks[] =
    "bKGD\0cHRM\0eXIf\0gAMA\0hIST\0iCCP\0iTXt\0oFFs\0pCAL\0pHYs\0sBIT\0sCAL\0sPLT\0sRGB\0sTER\0"
    "tEXt\0tIME\0zTXt";

// Signature, IHDR and every chunk up to the image data. Returns 0 on an error (state->error).
int png_read_header(PngReadState* state) {
  if (setjmp(png_jmpbuf(state->png))) return 0;
  png_structp png = state->png;
  // Our pixel limit is the real one (checked by the caller, with its own message); libpng's
  // per-side limits only have to let every image within it through.
  png_set_user_limits(png, static_cast<png_uint_32>(kMaxPixels),
                       static_cast<png_uint_32>(kMaxPixels));
  png_set_chunk_malloc_max(png, kMaxPngChunkBytes);
  png_set_chunk_cache_max(png, kMaxPngChunks);
  png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, kIgnoredPngChunks,
                              static_cast<int>(sizeof(kIgnoredPngChunks) / 5));
#ifdef TESSERA_PNG_FUZZ_IGNORE_CRC
  // Note [PNG fuzzing without CRCs]: fuzz/fuzz_png builds this file with CRCs and zlib's Adler-32
  // ignored, so that mutated chunks reach inflation, the filters and the conversion instead of
  // stopping at their checksums. Never in the library.
  png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
#ifdef PNG_IGNORE_ADLER32
  png_set_option(png, PNG_IGNORE_ADLER32, PNG_OPTION_ON);
#endif
#endif
  png_set_read_fn(png, state, png_read_from_memory);
  png_read_info(png, state->info);
  png_get_IHDR(png, state->info, &state->width, &state->height, &state->bit_depth,
               &state->colour_type, &state->interlace, nullptr, nullptr);
  return 1;
}

// Sets the transforms to 8-bit samples (palette images stay indices, one a byte: expanded by
// the caller, which checks each index against the palette). Returns 0 on an error.
int png_set_transforms(PngReadState* state) {
  if (setjmp(png_jmpbuf(state->png))) return 0;
  png_structp png = state->png;
  png_infop info = state->info;
  if (state->bit_depth == 16) png_set_strip_16(png);  // the high byte, as stb_image keeps
  if (state->colour_type == PNG_COLOR_TYPE_PALETTE) {
    png_set_packing(png);
    png_colorp palette = nullptr;
    int count = 0;
    if (png_get_PLTE(png, info, &palette, &count) != 0 && palette != nullptr) {
      state->palette_size = count < 0 ? 0 : count > 256 ? 256 : count;
      std::memcpy(state->palette, palette, sizeof(png_color) * static_cast<size_t>(state->palette_size));
    }
    png_bytep alpha = nullptr;
    int alpha_count = 0;
    if (png_get_tRNS(png, info, &alpha, &alpha_count, nullptr) != 0 && alpha != nullptr) {
      state->palette_alpha_size = alpha_count < 0 ? 0 : alpha_count > 256 ? 256 : alpha_count;
      std::memcpy(state->palette_alpha, alpha, static_cast<size_t>(state->palette_alpha_size));
    }
  } else {
    if (state->colour_type == PNG_COLOR_TYPE_GRAY && state->bit_depth < 8) {
      png_set_expand_gray_1_2_4_to_8(png);  // scaled to 0..255
    }
    // A colour key becomes an alpha channel; libpng compares it before dropping the low byte.
    if (png_get_valid(png, info, PNG_INFO_tRNS) != 0) png_set_tRNS_to_alpha(png);
  }
  (void)png_set_interlace_handling(png);
  png_read_update_info(png, info);
  state->channels = png_get_channels(png, info);
  state->row_bytes = png_get_rowbytes(png, info);
  return 1;
}

// Reads every row (every Adam7 pass) into `rows`. Returns 0 on an error.
int png_read_pixels(PngReadState* state, png_bytepp rows) {
  if (setjmp(png_jmpbuf(state->png))) return 0;
  // The file may end after the image data: IEND and what follows are not read.
  png_read_image(state->png, rows);
  return 1;
}

// Destroys libpng's structs on every path out of decode_png.
struct PngReadGuard {
  PngReadState& state;
  ~PngReadGuard() {
    if (state.png) png_destroy_read_struct(&state.png, state.info ? &state.info : nullptr, nullptr);
  }
};

[[noreturn]] void fail_png(const PngReadState& state) {
  if (state.truncated) {
    if (state.warnings[0]) {
      TESSERA_FAIL("PNG file is truncated: it ends before its image data is complete "
                   "(libpng warned: {})", state.warnings);
    }
    TESSERA_FAIL("PNG file is truncated: it ends before its image data is complete");
  }
  if (state.warnings[0]) {
    TESSERA_FAIL("corrupt or unsupported PNG file: {} (libpng warned: {})", state.error,
                 state.warnings);
  }
  TESSERA_FAIL("corrupt or unsupported PNG file: {}", state.error);
}

Decoded decode_png(std::span<const uint8_t> bytes) {
  PngReadState state;
  state.data = bytes.data();
  state.size = bytes.size();
  PngReadGuard guard{state};
  state.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, png_on_error, png_on_warning);
  TESSERA_CHECK(state.png != nullptr, "libpng could not start (out of memory?)");
  state.info = png_create_info_struct(state.png);
  TESSERA_CHECK(state.info != nullptr, "libpng could not start (out of memory?)");
  if (!png_read_header(&state)) fail_png(state);

  const int64_t width = state.width, height = state.height;
  TESSERA_CHECK(width * height <= kMaxPixels,
                "PNG image of {}x{} pixels exceeds the limit of {} pixels (8192 x 8192)", width,
                height, kMaxPixels);
  // The image data as filtered rows (a filter byte each), the least any PNG of this header holds
  // (Adam7 adds a filter byte per pass row).
  const int samples_per_pixel = state.colour_type == PNG_COLOR_TYPE_GRAY         ? 1
                                : state.colour_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                                : state.colour_type == PNG_COLOR_TYPE_RGB        ? 3
                                : state.colour_type == PNG_COLOR_TYPE_RGB_ALPHA  ? 4
                                                                                 : 1;
  const int64_t raw_bytes = height * (1 + (width * samples_per_pixel * state.bit_depth + 7) / 8);
  TESSERA_CHECK(raw_bytes <= kMaxDeflateRatio * static_cast<int64_t>(bytes.size()) + 4096,
                "PNG file is truncated: its header declares {}x{} pixels ({} bytes of image "
                "data), more than its {} bytes can hold",
                width, height, raw_bytes, bytes.size());
  if (!png_set_transforms(&state)) fail_png(state);

  const bool palette = state.colour_type == PNG_COLOR_TYPE_PALETTE;
  TESSERA_CHECK(state.channels >= 1 && state.channels <= 4 &&
                    state.row_bytes == static_cast<size_t>(width) * static_cast<size_t>(state.channels),
                "PNG decoding set up {} channels of {} bytes per row for {} pixels", state.channels,
                state.row_bytes, width);
  std::vector<uint8_t> samples(static_cast<size_t>(height) * state.row_bytes);
  std::vector<png_bytep> rows(static_cast<size_t>(height));
  for (size_t y = 0; y < rows.size(); ++y) rows[y] = samples.data() + y * state.row_bytes;
  if (!png_read_pixels(&state, rows.data())) fail_png(state);

  Decoded image;
  image.width = width;
  image.height = height;
  if (!palette) {
    image.channels = state.channels;
    image.pixels = std::move(samples);
    return image;
  }
  // Palette indices to RGB, or RGBA with the tRNS alphas (entries past them are opaque).
  image.channels = state.palette_alpha_size > 0 ? 4 : 3;
  image.pixels.resize(samples.size() * static_cast<size_t>(image.channels));
  uint8_t* out = image.pixels.data();
  for (const uint8_t index : samples) {
    TESSERA_CHECK(index < state.palette_size,
                  "corrupt PNG file: palette index {} out of range (the palette has {} entries)",
                  index, state.palette_size);
    const png_color& colour = state.palette[index];
    *out++ = colour.red;
    *out++ = colour.green;
    *out++ = colour.blue;
    if (image.channels == 4) *out++ = index < state.palette_alpha_size ? state.palette_alpha[index] : 255;
  }
  return image;
}

// --- JPEG (libjpeg-turbo) -------------------------------------------------------------------------

// Plain C state shared by the setjmp functions and libjpeg's callbacks; `error` first, so that
// libjpeg's j_common_ptr->err is a pointer to it.
struct JpegReadState {
  jpeg_error_mgr error_manager;
  jmp_buf jump;
  jpeg_progress_mgr progress;
  jpeg_decompress_struct info;
  bool created = false;
  bool end_of_file = false;  // libjpeg ran out of bytes and made up an end marker
  char error[kMessageSize] = {};
};

JpegReadState* jpeg_state(j_common_ptr info) {
  // error_manager is the first member of JpegReadState, and info->err points at it.
  return reinterpret_cast<JpegReadState*>(info->err);
}

// A message for libjpeg's current error code; the kinds a user meets named plainly.
void jpeg_describe_error(j_common_ptr info, char* out) {
  const jpeg_error_mgr& err = *info->err;
  switch (err.msg_code) {
    case JERR_SOF_UNSUPPORTED: {
      const int marker = err.msg_parm.i[0];
      const char* kind = marker == 0xC3 || marker == 0xCB   ? "lossless coding"
                         : (marker >= 0xC5 && marker <= 0xC7) || marker >= 0xCD ? "hierarchical coding"
                                                                                 : "an unknown process";
      set_message(out, "JPEG with %s (SOF%d) is not supported", kind, marker - 0xC0);
      return;
    }
    case JERR_BAD_PRECISION:
      set_message(out, "JPEG with %d-bit samples is not supported (only 8-bit)", err.msg_parm.i[0]);
      return;
    case JERR_EMPTY_IMAGE:
      set_message(out, "JPEG declares an empty image (width or height 0)");
      return;
    case JERR_FRACT_SAMPLE_NOTIMPL:
      set_message(out, "JPEG with fractional chroma sampling ratios (e.g. 3:2) is not supported");
      return;
    default: {
      char text[JMSG_LENGTH_MAX] = {};
      (*err.format_message)(info, text);
      set_message(out, "corrupt or unsupported JPEG: %s", text);
      return;
    }
  }
}

[[noreturn]] void jpeg_on_error(j_common_ptr info) {
  JpegReadState* state = jpeg_state(info);
  jpeg_describe_error(info, state->error);
  std::longjmp(state->jump, 1);
}

// Warnings (level -1): those meaning the pixels would be made up end the decode; the rest are
// ignored, as are trace messages (levels 0 and up).
void jpeg_on_message(j_common_ptr info, int level) {
  if (level >= 0) return;
  JpegReadState* state = jpeg_state(info);
  switch (info->err->msg_code) {
    case JWRN_JPEG_EOF:  // fatal only if data past the end is then needed (JWRN_HIT_MARKER)
      state->end_of_file = true;
      return;
    case JWRN_EXTRANEOUS_DATA:  // bytes between segments; the segments themselves are fine
    case JWRN_JFIF_MAJOR:
    case JWRN_ADOBE_XFORM:
    case JWRN_BOGUS_ICC:
      return;
    default:
      jpeg_on_error(info);
  }
}

void jpeg_on_progress(j_common_ptr info) {
  if (!info->is_decompressor) return;
  const auto* decompress = reinterpret_cast<j_decompress_ptr>(info);
  if (decompress->input_scan_number > kMaxJpegScans) {
    JpegReadState* state = jpeg_state(info);
    set_message(state->error, "progressive JPEG with more than %d scans is refused", kMaxJpegScans);
    std::longjmp(state->jump, 1);
  }
}

// Header up to the first scan, and the output size. Returns 0 on an error (state->error).
int jpeg_read_header_and_size(JpegReadState* state, const uint8_t* data, size_t size) {
  state->info.err = jpeg_std_error(&state->error_manager);
  state->error_manager.error_exit = jpeg_on_error;
  state->error_manager.emit_message = jpeg_on_message;
  if (setjmp(state->jump)) return 0;
  jpeg_create_decompress(&state->info);
  state->created = true;
  state->progress.progress_monitor = jpeg_on_progress;
  state->info.progress = &state->progress;
  state->info.mem->max_memory_to_use = kMaxJpegMemory;
  jpeg_mem_src(&state->info, data, static_cast<unsigned long>(size));
  if (jpeg_read_header(&state->info, TRUE) != JPEG_HEADER_OK) {
    set_message(state->error, "JPEG holds tables but no image");
    return 0;
  }
  switch (state->info.jpeg_color_space) {
    case JCS_GRAYSCALE:
      state->info.out_color_space = JCS_GRAYSCALE;
      break;
    case JCS_YCbCr:
    case JCS_RGB:
      state->info.out_color_space = JCS_RGB;
      break;
    case JCS_CMYK:
    case JCS_YCCK:
      state->info.out_color_space = JCS_CMYK;  // to RGB by the caller
      break;
    default:
      set_message(state->error,
                  "JPEG with %d components is not supported (expected 1 grey, 3 colour or 4 CMYK)",
                  state->info.num_components);
      return 0;
  }
  jpeg_calc_output_dimensions(&state->info);
  return 1;
}

// Decodes every scanline into `out` (output_height rows of `row_bytes`). Returns 0 on an error.
int jpeg_decode_pixels(JpegReadState* state, uint8_t* out, size_t row_bytes) {
  if (setjmp(state->jump)) return 0;
  j_decompress_ptr info = &state->info;
  (void)jpeg_start_decompress(info);
  while (info->output_scanline < info->output_height) {
    JSAMPROW row = out + static_cast<size_t>(info->output_scanline) * row_bytes;
    if (jpeg_read_scanlines(info, &row, 1) != 1) {
      set_message(state->error, "libjpeg stopped at row %u", info->output_scanline);
      return 0;
    }
  }
  // Anything after the image (an end marker, trailing bytes) is not read.
  return 1;
}

struct JpegReadGuard {
  JpegReadState& state;
  ~JpegReadGuard() {
    if (state.created) jpeg_destroy_decompress(&state.info);
  }
};

[[noreturn]] void fail_jpeg(const JpegReadState& state) {
  if (state.end_of_file) {
    TESSERA_FAIL("JPEG file is truncated: it ends before its image data is complete ({})",
                 state.error);
  }
  TESSERA_FAIL("{}", state.error);
}

// stb_image's CMYK to RGB (Adobe's inverted CMYK, which libjpeg also makes of YCCK): R = C K / 255
// rounded as stb rounds it.
uint8_t blend(uint8_t x, uint8_t y) {
  const unsigned t = unsigned{x} * y + 128;
  return static_cast<uint8_t>((t + (t >> 8)) >> 8);
}

Decoded decode_jpeg(std::span<const uint8_t> bytes) {
  // Heap-allocated: libjpeg's structs are large, and the state must not move.
  auto state = std::make_unique<JpegReadState>();
  JpegReadGuard guard{*state};
  if (!jpeg_read_header_and_size(state.get(), bytes.data(), bytes.size())) fail_jpeg(*state);
  const int64_t width = state->info.output_width, height = state->info.output_height;
  TESSERA_CHECK(width * height <= kMaxPixels,
                "JPEG image of {}x{} pixels is larger than the limit of {} pixels (8192 x 8192)",
                width, height, kMaxPixels);
  const int components = state->info.output_components;
  TESSERA_CHECK(components == 1 || components == 3 || components == 4,
                "JPEG decoding set up {} output components", components);
  const size_t row_bytes = static_cast<size_t>(width) * static_cast<size_t>(components);
  std::vector<uint8_t> samples(row_bytes * static_cast<size_t>(height));
  if (!jpeg_decode_pixels(state.get(), samples.data(), row_bytes)) fail_jpeg(*state);

  Decoded image;
  image.width = width;
  image.height = height;
  if (components != 4) {
    image.channels = components;
    image.pixels = std::move(samples);
    return image;
  }
  image.channels = 3;
  image.pixels.resize(static_cast<size_t>(width * height) * 3);
  for (size_t i = 0, pixels = static_cast<size_t>(width * height); i < pixels; ++i) {
    const uint8_t* cmyk = samples.data() + 4 * i;
    uint8_t* rgb = image.pixels.data() + 3 * i;
    rgb[0] = blend(cmyk[0], cmyk[3]);
    rgb[1] = blend(cmyk[1], cmyk[3]);
    rgb[2] = blend(cmyk[2], cmyk[3]);
  }
  return image;
}

// --- PNG writing (libpng) -------------------------------------------------------------------------

struct PngWriteState {
  unsigned char* data = nullptr;  // malloc'ed, grown by png_write_to_memory
  size_t size = 0;
  size_t capacity = 0;
  char error[kMessageSize] = {};
  png_structp png = nullptr;
  png_infop info = nullptr;
};

void png_on_write_error(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngWriteState*>(png_get_error_ptr(png));
  set_message(state->error, "%s", message ? message : "unknown error");
  png_longjmp(png, 1);
}

void png_on_write_warning(png_structp, png_const_charp) {}

void png_write_to_memory(png_structp png, png_bytep bytes, size_t length) {
  auto* state = static_cast<PngWriteState*>(png_get_io_ptr(png));
  if (length > state->capacity - state->size) {
    size_t capacity = state->capacity ? state->capacity : 4096;
    while (capacity - state->size < length) capacity *= 2;
    auto* grown = static_cast<unsigned char*>(std::realloc(state->data, capacity));
    if (grown == nullptr) png_error(png, "out of memory");
    state->data = grown;
    state->capacity = capacity;
  }
  std::memcpy(state->data + state->size, bytes, length);
  state->size += length;
}

void png_flush_memory(png_structp) {}

int png_encode(PngWriteState* state, png_bytepp rows, png_uint_32 width, png_uint_32 height,
               int colour_type) {
  if (setjmp(png_jmpbuf(state->png))) return 0;
  png_set_write_fn(state->png, state, png_write_to_memory, png_flush_memory);
  png_set_IHDR(state->png, state->info, width, height, 8, colour_type, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(state->png, state->info);
  png_write_image(state->png, rows);
  png_write_end(state->png, nullptr);
  return 1;
}

struct PngWriteGuard {
  PngWriteState& state;
  ~PngWriteGuard() {
    if (state.png) png_destroy_write_struct(&state.png, state.info ? &state.info : nullptr);
    std::free(state.data);
  }
};

// stb_image's conversion rules, which read_image has always followed: grey from colour as
// (77 R + 150 G + 29 B) >> 8, a missing alpha 255, a dropped alpha simply dropped.
std::vector<uint8_t> convert_channels(const Decoded& image, int to) {
  const int from = image.channels;
  const size_t pixels = static_cast<size_t>(image.width * image.height);
  std::vector<uint8_t> out(pixels * static_cast<size_t>(to));
  for (size_t i = 0; i < pixels; ++i) {
    const uint8_t* p = image.pixels.data() + i * static_cast<size_t>(from);
    uint8_t* q = out.data() + i * static_cast<size_t>(to);
    const bool colour = from >= 3;
    const uint8_t grey =
        colour ? static_cast<uint8_t>((p[0] * 77 + p[1] * 150 + p[2] * 29) >> 8) : p[0];
    const uint8_t alpha = from == 2 ? p[1] : from == 4 ? p[3] : 255;
    if (to <= 2) {
      q[0] = grey;
    } else {
      q[0] = colour ? p[0] : grey;
      q[1] = colour ? p[1] : grey;
      q[2] = colour ? p[2] : grey;
    }
    if (to == 2) q[1] = alpha;
    if (to == 4) q[3] = alpha;
  }
  return out;
}

// The message without its " [file:line]" suffix: the caller's error adds its own.
std::string without_location(const std::string& message) {
  const size_t open = message.rfind(" [");
  if (open != std::string::npos && !message.empty() && message.back() == ']') {
    return message.substr(0, open);
  }
  return message;
}

}  // namespace

at::Tensor decode_image(std::span<const uint8_t> bytes, int channels, std::string_view name) {
  TESSERA_CHECK(channels >= 0 && channels <= 4,
                "image channels must be 0 (as stored) or 1..4, got {}", channels);
  const auto starts_with = [&](std::initializer_list<uint8_t> prefix) {
    return bytes.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), bytes.begin());
  };
  Decoded image;
  try {
    if (starts_with({0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'})) {
      image = decode_png(bytes);
    } else if (starts_with({0xFF, 0xD8})) {
      image = decode_jpeg(bytes);
    } else if (starts_with({'B', 'M'})) {
      TESSERA_FAIL("BMP files are not supported (convert the image to PNG)");
    } else {
      TESSERA_FAIL("not a PNG or JPEG file (its first bytes match neither signature)");
    }
  } catch (const Error& e) {
    TESSERA_FAIL("cannot decode image '{}': {}", name, without_location(e.what()));
  }
  const int out_channels = channels ? channels : image.channels;
  const std::vector<uint8_t> pixels =
      out_channels == image.channels ? std::move(image.pixels) : convert_channels(image, out_channels);
  // The decoders hand back interleaved rows (H, W, C); the library's convention is channels first.
  return at::from_blob(const_cast<uint8_t*>(pixels.data()), {image.height, image.width, out_channels},
                       at::kByte)
      .permute({2, 0, 1})
      .clone(at::MemoryFormat::Contiguous);
}

at::Tensor read_image(const std::filesystem::path& path, int channels) {
  std::error_code error;
  TESSERA_CHECK(std::filesystem::is_regular_file(path, error), "image file '{}' does not exist",
                path.string());
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in.good(), "cannot open image file '{}'", path.string());
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)),
                                         std::istreambuf_iterator<char>());
  TESSERA_CHECK(bytes.size() <= static_cast<size_t>(INT32_MAX),
                "image file '{}' is larger than 2 GiB", path.string());
  return decode_image(bytes, channels, path.string());
}

void write_png(const std::filesystem::path& path, const at::Tensor& image) {
  TESSERA_CHECK(image.defined() && image.dim() == 3,
                "write_png expects an image [C, H, W], got {} dimensions",
                image.defined() ? image.dim() : 0);
  TESSERA_CHECK(image.scalar_type() == at::kByte, "write_png expects uint8 pixels, got {}",
                c10::toString(image.scalar_type()));
  const int64_t channels = image.size(0), height = image.size(1), width = image.size(2);
  TESSERA_CHECK(channels >= 1 && channels <= 4, "write_png expects 1 to 4 channels, got {}",
                channels);
  TESSERA_CHECK(height >= 1 && width >= 1 && height <= kMaxImageSide && width <= kMaxImageSide,
                "write_png image size {}x{} is outside 1..{} pixels per side", height, width,
                kMaxImageSide);
  const at::Tensor interleaved = image.to(at::kCPU).permute({1, 2, 0}).contiguous();
  std::vector<png_bytep> rows(static_cast<size_t>(height));
  for (int64_t y = 0; y < height; ++y) {
    rows[static_cast<size_t>(y)] = interleaved.data_ptr<uint8_t>() + y * width * channels;
  }
  static constexpr int kColourTypes[] = {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                         PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
  PngWriteState state;
  PngWriteGuard guard{state};
  state.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &state, png_on_write_error,
                                      png_on_write_warning);
  TESSERA_CHECK(state.png != nullptr, "libpng could not start (out of memory?)");
  state.info = png_create_info_struct(state.png);
  TESSERA_CHECK(state.info != nullptr, "libpng could not start (out of memory?)");
  TESSERA_CHECK(png_encode(&state, rows.data(), static_cast<png_uint_32>(width),
                           static_cast<png_uint_32>(height), kColourTypes[channels - 1]) != 0 &&
                    state.size > 0,
                "cannot encode '{}' as PNG: {}", path.string(), state.error);
  // See Note [Atomic writes]: a reader (a viewer refreshing, a later run) never sees half a PNG.
  write_file_atomically(
      path, std::string_view(reinterpret_cast<const char*>(state.data), state.size));
}

at::Tensor make_image_grid(const at::Tensor& images, const ImageGridOptions& options) {
  TESSERA_CHECK(images.defined() && (images.dim() == 3 || images.dim() == 4),
                "image grid expects images [N, C, H, W] or one image [C, H, W], got {} dimensions",
                images.defined() ? images.dim() : 0);
  at::Tensor batch = images.dim() == 3 ? images.unsqueeze(0) : images;
  const int64_t count = batch.size(0), channels = batch.size(1);
  const int64_t height = batch.size(2), width = batch.size(3);
  TESSERA_CHECK(count >= 1, "image grid needs at least one image, got none");
  TESSERA_CHECK(channels == 1 || channels == 3,
                "image grid expects 1 (grey) or 3 (RGB) channels, got {}", channels);
  TESSERA_CHECK(height >= 1 && width >= 1, "image grid got empty images of size {}x{}", height,
                width);
  TESSERA_CHECK(options.columns >= 1, "image grid columns must be >= 1, got {}", options.columns);
  TESSERA_CHECK(options.padding >= 0, "image grid padding must be >= 0, got {}", options.padding);
  TESSERA_CHECK(options.upscale >= 1, "image grid upscale must be >= 1, got {}", options.upscale);

  const int64_t columns = std::min(options.columns, count);
  const int64_t rows = (count + columns - 1) / columns;
  // Sizes are checked in floating point first so that absurd options cannot overflow int64.
  const double tile_height = static_cast<double>(height) * static_cast<double>(options.upscale);
  const double tile_width = static_cast<double>(width) * static_cast<double>(options.upscale);
  const double pad = static_cast<double>(options.padding);
  const double out_height = static_cast<double>(rows) * (tile_height + pad) + pad;
  const double out_width = static_cast<double>(columns) * (tile_width + pad) + pad;
  TESSERA_CHECK(out_height <= static_cast<double>(kMaxImageSide) &&
                    out_width <= static_cast<double>(kMaxImageSide),
                "image grid of {} x {} tiles of {}x{} (upscale {}, padding {}) would be {}x{} "
                "pixels, more than {} per side",
                rows, columns, height, width, options.upscale, options.padding, out_height,
                out_width, kMaxImageSide);

  at::Tensor tiles = to_uint8_pixels(batch.to(at::kCPU), options);
  const int64_t scale = options.upscale;
  if (scale > 1) {
    // Nearest-neighbour enlargement: each pixel becomes a scale x scale block.
    tiles = tiles.view({count, channels, height, 1, width, 1})
                .expand({count, channels, height, scale, width, scale})
                .reshape({count, channels, height * scale, width * scale});
  }
  const int64_t tile_h = height * scale, tile_w = width * scale, padding = options.padding;
  at::Tensor canvas = at::full(
      {channels, rows * (tile_h + padding) + padding, columns * (tile_w + padding) + padding},
      options.pad_value, at::kByte);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t top = padding + (i / columns) * (tile_h + padding);
    const int64_t left = padding + (i % columns) * (tile_w + padding);
    canvas.narrow(1, top, tile_h).narrow(2, left, tile_w).copy_(tiles[i]);
  }
  return canvas;
}

void write_image_grid(const std::filesystem::path& path, const at::Tensor& images,
                      const ImageGridOptions& options) {
  write_png(path, make_image_grid(images, options));
}

}  // namespace tessera
