#include "tessera/tokenizer/thread_invariant_decode.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <exception>
#include <optional>
#include <vector>

#include "tessera/core/phase_profile.h"
#include "tessera/nn/autocast.h"

namespace tessera {

// Note [Thread-invariant decoding]
// The tokenizers' decoders are convolution stacks, which LibTorch runs through oneDNN. oneDNN
// picks its kernel, and with it the order of floating-point additions, from the shapes and from
// the number of threads it may use, so the same tokens decoded on 1 and on 2 intra-op threads gave
// images differing by about 1e-6 (tests/hardening/determinism_test.cpp measured it). Here the
// thread count is taken out of what the kernels see wherever there is enough work to do so
// without idling a core:
//   - the batch is cut into chunks of decode_chunk_images(pixels) images, a function of the image
//     size alone, so the shapes every convolution sees do not depend on the thread count;
//   - each chunk is decoded inside one thread of an OpenMP loop over the chunks, with that
//     thread's OpenMP thread count set to 1, so oneDNN both plans and runs for one thread, and
//     ATen and MKL, finding themselves inside a parallel region, run on the calling thread;
//   - with one intra-op thread the same loop runs on one thread, the same situation.
// With fewer chunks than threads that loop would leave threads idle (one 256-px VAR image on two
// threads ran on one core for a third of the sampling call), so such a batch is decoded once on
// all threads instead: the same arithmetic, planned by oneDNN for the thread count. Its bits then
// depend on the thread count, which docs/determinism.md states. Chunks stay at 8 images of 28 or
// 32 px (the shipped Fashion-MNIST models, whose recorded samples keep their bits), so a few such
// images keep the chunked, invariant path: their decode is milliseconds, not worth a second core.

int64_t decode_chunk_images(int64_t pixels_per_image) {
  return std::clamp<int64_t>(kThreadInvariantDecodePixels / std::max<int64_t>(1, pixels_per_image),
                             1, kThreadInvariantDecodeChunk);
}

namespace {

at::Tensor decode_chunks(Tokenizer& tokenizer, const Tokens& tokens, int64_t chunk_images,
                         int threads) {
  const int64_t batch = tokens.batch_size();
  const int64_t chunks = (batch + chunk_images - 1) / chunk_images;
  std::vector<at::Tensor> images(static_cast<size_t>(chunks));
  // Autocast is per thread: the workers take the caller's (bf16 sampling converts the tokenizer's
  // convolution weights and runs under it; tessera/nn/inference_precision.h).
  const bool autocast = at::autocast::is_autocast_enabled(at::kCPU);
  const at::ScalarType autocast_dtype = at::autocast::get_autocast_dtype(at::kCPU);
  // Exceptions may not leave an OpenMP region: the first is kept and rethrown after it.
  std::exception_ptr failure;
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    try {
      // ATen initialises each thread's OpenMP thread count on the thread's first ATen call to
      // the global intra-op count; that call comes first, so that it cannot undo the next line
      // (a worker's first decode differed from its later ones before this).
      (void)at::get_num_threads();
      omp_set_num_threads(1);  // this thread's nested regions, and what oneDNN plans for
      std::optional<AutocastGuard> autocast_guard;
      if (autocast) autocast_guard.emplace(at::kCPU, autocast_dtype);
      const int64_t begin = chunk * chunk_images;
      const int64_t end = std::min(batch, begin + chunk_images);
      Tokens part{.scales = {}, .grids = tokens.grids};
      part.scales.reserve(tokens.scales.size());
      for (const at::Tensor& scale : tokens.scales) {
        part.scales.push_back(scale.slice(0, begin, end));
      }
      images[static_cast<size_t>(chunk)] = tokenizer.decode(part);
    } catch (...) {
#pragma omp critical(tessera_thread_invariant_decode)
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
  return at::cat(images);
}

}  // namespace

at::Tensor decode_thread_invariant(Tokenizer& tokenizer, const Tokens& tokens) {
  const PhaseScope phase(Phase::decode);
  tokens.validate();
  if (!tokens.scales.front().device().is_cpu()) return tokenizer.decode(tokens);
  const int64_t batch = tokens.batch_size();
  const TokenGridSize& finest = tokens.grids.back();
  const int64_t side = tokenizer.downsampling_factor();
  const int64_t chunk_images = decode_chunk_images(finest.height * side * finest.width * side);
  const int64_t chunks = (batch + chunk_images - 1) / chunk_images;
  const int threads = at::get_num_threads();
  if (threads <= 1) return decode_chunks(tokenizer, tokens, chunk_images, 1);
  // Fewer chunks of large images than threads: one decode on every thread (Note above).
  if (chunk_images == 1 && chunks < threads) return tokenizer.decode(tokens);
  // At least two threads in the loop's team even for one chunk, so that the region is active and
  // nothing nested spreads over the idle one.
  return decode_chunks(tokenizer, tokens, chunk_images,
                       static_cast<int>(std::max<int64_t>(2, std::min<int64_t>(threads, chunks))));
}

}  // namespace tessera
