#include "tessera/tokenizer/thread_invariant_decode.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <exception>
#include <vector>

namespace tessera {

// Note [Thread-invariant decoding]
// The tokenizers' decoders are convolution stacks, which LibTorch runs through oneDNN. oneDNN
// picks its kernel, and with it the order of floating-point additions, from the shapes and from
// the number of threads it may use, so the same tokens decoded on 1 and on 2 intra-op threads gave
// images differing by about 1e-6 (tests/hardening/determinism_test.cpp measured it). Here the
// thread count is taken out of what the kernels see:
//   - the batch is cut into chunks of kThreadInvariantDecodeChunk images, a constant, so the
//     shapes every convolution sees do not depend on the thread count;
//   - each chunk is decoded inside one thread of an OpenMP loop over the chunks, with that
//     thread's OpenMP thread count set to 1, so oneDNN both plans and runs for one thread, and
//     ATen and MKL, finding themselves inside a parallel region, run on the calling thread;
//   - with one intra-op thread the same loop runs on one thread, the same situation; with more,
//     the loop's team has at least two threads even for a single chunk, so that the region is
//     active and nothing nested spreads over the idle one.
// On two cores it is also no slower than one decode of the whole batch on both threads (batches of
// 100 with the three shipped tokenizers took 0.7 to 1.0 times as long): the chunks keep both
// threads busy without splitting small convolutions between them.

at::Tensor decode_thread_invariant(Tokenizer& tokenizer, const Tokens& tokens) {
  tokens.validate();
  if (!tokens.scales.front().device().is_cpu()) return tokenizer.decode(tokens);
  const int64_t batch = tokens.batch_size();
  const int64_t chunks = (batch + kThreadInvariantDecodeChunk - 1) / kThreadInvariantDecodeChunk;
  std::vector<at::Tensor> images(static_cast<size_t>(chunks));
  const int threads = at::get_num_threads() <= 1
                          ? 1
                          : static_cast<int>(std::max<int64_t>(
                                2, std::min<int64_t>(at::get_num_threads(), chunks)));
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
      const int64_t begin = chunk * kThreadInvariantDecodeChunk;
      const int64_t end = std::min(batch, begin + kThreadInvariantDecodeChunk);
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

}  // namespace tessera
