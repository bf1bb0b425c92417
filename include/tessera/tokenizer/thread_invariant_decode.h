#pragma once
// Decoding a batch of tokens into images whose bits do not depend on the intra-op thread count
// (Note [Thread-invariant decoding] in src/tokenizer/thread_invariant_decode.cpp): what the
// generator's samples go through, so that the same seed gives the same image bits on 1 thread and
// on 2 (the determinism promise of docs/determinism.md).

#include <ATen/core/Tensor.h>

#include "tessera/tokenizer/tokenizer.h"
#include "tessera/tokenizer/tokens.h"

namespace tessera {

/// Images a decode of this many at a time: the chunks the batch is cut into, whatever the thread
/// count. A constant, so that the cut and with it the bits of every image never change.
inline constexpr int64_t kThreadInvariantDecodeChunk = 8;

/// tokenizer.decode(tokens), computed in chunks of kThreadInvariantDecodeChunk images, each chunk
/// on one thread, the chunks spread over the intra-op threads. On the CPU the result is
/// bit-identical for every thread count; on other devices it is one decode call.
at::Tensor decode_thread_invariant(Tokenizer& tokenizer, const Tokens& tokens);

}  // namespace tessera
