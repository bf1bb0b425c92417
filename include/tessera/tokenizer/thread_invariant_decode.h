#pragma once
// Decoding a batch of tokens into images on every intra-op thread, with bits that do not depend on
// the thread count wherever that costs no core (Note [Thread-invariant decoding] in
// src/tokenizer/thread_invariant_decode.cpp): what the generator's samples go through. The
// promise (docs/determinism.md):
//   - the same tokens, batch and thread count always give the same image bits;
//   - a batch of at least as many chunks (decode_chunk_images) as threads is decoded chunk by
//     chunk, each chunk on one thread, so its bits are the same on every thread count and in every
//     batch that has that many chunks;
//   - a batch of fewer chunks than threads (one 256-px image on 2 threads) is decoded once on all
//     threads, whose bits may differ from the chunked decode's in the last places (~1e-6).

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "tessera/tokenizer/tokenizer.h"
#include "tessera/tokenizer/tokens.h"

namespace tessera {

/// The most images in a chunk: small images (Fashion-MNIST's 28 and 32 px) go 8 at a time.
inline constexpr int64_t kThreadInvariantDecodeChunk = 8;
/// Pixels a chunk holds at most: 8 images of 32 x 32. Large images (VAR's 256 px) are chunks of
/// one.
inline constexpr int64_t kThreadInvariantDecodePixels = 8 * 32 * 32;

/// Images per chunk for images of `pixels_per_image` pixels: kThreadInvariantDecodePixels /
/// pixels_per_image, clamped to [1, kThreadInvariantDecodeChunk]. A function of the image size
/// only, never of the thread count.
int64_t decode_chunk_images(int64_t pixels_per_image);

/// tokenizer.decode(tokens), on every intra-op thread, as the file's top comment promises. On
/// other devices than the CPU it is one decode call.
at::Tensor decode_thread_invariant(Tokenizer& tokenizer, const Tokens& tokens);

}  // namespace tessera
