// Determinism of sampling on the CPU: the same seed gives the same samples from every shipped
// generator, across calls, across processes (a second run: this binary started again, loading the
// file afresh; Note [The second run is another process]), and across intra-op thread counts (1
// and 2).
//
// What is guaranteed, and checked here, on one machine with one LibTorch build:
//   - the sampled tokens are bit-identical across calls, processes and thread counts 1 and 2: a
//     sample is a function of (generator file, seed, sample index, options) alone — not of the
//     batch it is drawn in (Note [Batch-invariant sampling]), not of earlier calls, not of the
//     intra-op thread count;
//   - the decoded images are bit-identical across calls, processes and thread counts 1 and 2: the
//     generator decodes through decode_thread_invariant (Note [Thread-invariant decoding]). A
//     plain Tokenizer::decode is not: oneDNN plans its convolutions for the thread count, and 1
//     and 2 threads gave images differing by about 1e-6 before that function existed.
//
// What is NOT guaranteed:
//   - GPU results. CUDA kernels that reduce with atomics (atomicAdd in split-K GEMMs, scatter-add,
//     some cuDNN/cuBLAS algorithms) sum in an order that changes from run to run, so CUDA samples
//     may differ in the last bits between runs, and from the CPU's; a flipped bit can change a
//     discrete draw, and from then on the tokens.
//   - Different LibTorch builds, BLAS libraries or CPUs: a GEMM's blocking and vector width (AVX2
//     against AVX-512, MKL against OpenBLAS) change the order of floating-point additions, so the
//     same seed may give different bits, and, once a discrete draw flips, different tokens.
//   - Training: bit-identical resume is promised for the same machine, thread count and build
//     only (Note [Training checkpoints]).
//
// Note [The second run is another process]
// A second draw in the same process would share everything a process holds: LibTorch's global
// state and generator, caches, oneDNN's plans, the allocator's heap, the mapped model files. So
// the suite's SetUpTestSuite starts this test binary again, with a filter selecting the same
// cases and TESSERA_DETERMINISM_CHILD_DIR naming a folder; there each case loads its model, draws
// on 1 thread, writes the tokens and images to <folder>/<model>.safetensors (safetensors keeps
// every bit) and returns. Each case of the first process then compares its own draws with that
// file bit for bit. One child for all the cases: starting a process that loads LibTorch costs
// seconds on this machine.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/source_paths.h"
#include "common/temporary_folder.h"
#include "tessera/io/safetensors.h"
#include "tessera/pipeline/generator.h"
#include "tessera/tokenizer/thread_invariant_decode.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"

namespace tessera {
namespace {

const std::filesystem::path kModels = tessera::testing::source_dir() / "models";

// Sets the intra-op thread count for a scope and restores the previous one.
class IntraOpThreads {
 public:
  explicit IntraOpThreads(int threads) : previous_(at::get_num_threads()) {
    at::set_num_threads(threads);
  }
  ~IntraOpThreads() { at::set_num_threads(previous_); }
  IntraOpThreads(const IntraOpThreads&) = delete;
  IntraOpThreads& operator=(const IntraOpThreads&) = delete;

 private:
  int previous_;
};

struct Drawn {
  Tokens tokens;
  at::Tensor images;
};

Drawn draw(Generator& generator, const at::Tensor& labels, uint64_t seed,
           const std::optional<GenerationOptions>& options) {
  Drawn out;
  out.tokens = generator.sample_tokens(labels, {.seed = seed, .options = options});
  at::NoGradGuard no_grad;
  out.images = decode_thread_invariant(generator.tokenizer(), out.tokens);
  return out;
}

void expect_identical_tokens(const Drawn& a, const Drawn& b, const std::string& what) {
  ASSERT_EQ(a.tokens.scales.size(), b.tokens.scales.size()) << what;
  for (size_t s = 0; s < a.tokens.scales.size(); ++s) {
    const at::Tensor& x = a.tokens.scales[s];
    const at::Tensor& y = b.tokens.scales[s];
    EXPECT_EQ(x.scalar_type(), y.scalar_type()) << what << ", scale " << s;
    EXPECT_TRUE(at::equal(x, y)) << what << ": tokens of scale " << s << " differ";
  }
}

double largest_difference(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// The shipped generators with the options the test samples them with: their own defaults, except
// that the continuous heads (MAR's, Hi-MAR's) run 5 diffusion / flow steps instead of 16 (the
// schedule's steps and everything else unchanged), which keeps the test fast without changing
// what is tested — the same code path, the same random streams.
struct Model {
  std::string file;
  bool few_head_steps = false;
};

const std::vector<Model> kShippedModels = {
    {"raster_fashion_mnist.safetensors"},
    {"maskgit_fashion_mnist.safetensors"},
    {"var_fashion_mnist.safetensors"},
    {"hmar_fashion_mnist.safetensors"},
    {"mar_diffusion_fashion_mnist.safetensors", true},
    {"mar_flow_fashion_mnist.safetensors", true},
    {"hi_mar_fashion_mnist.safetensors", true},
};

void PrintTo(const Model& model, std::ostream* out) { *out << model.file; }

std::string case_name(const Model& model) { return model.file.substr(0, model.file.find('.')); }

constexpr const char* kChildDirVariable = "TESSERA_DETERMINISM_CHILD_DIR";

// The folder the second run writes its draws to, in the second run only.
std::optional<std::filesystem::path> child_dir() {
  const char* dir = std::getenv(kChildDirVariable);
  if (dir == nullptr || *dir == '\0') return std::nullopt;
  return std::filesystem::path(dir);
}

// Runs this test binary again with `arguments` and `variable`=`value` added to the environment
// (GoogleTest's own variables left out, so that the child neither shards itself nor writes over
// the first process's XML report), its stdout and stderr into `log`. Returns "" on exit status 0,
// otherwise what went wrong, with the log.
std::string run_this_binary(const std::vector<std::string>& arguments, const std::string& variable,
                            const std::string& value, const std::filesystem::path& log) {
  std::vector<std::string> environment;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    if (entry.starts_with("GTEST_") || entry.starts_with(variable + "=")) continue;
    environment.emplace_back(entry);
  }
  environment.push_back(variable + "=" + value);
  std::vector<std::string> args = {"/proc/self/exe"};
  args.insert(args.end(), arguments.begin(), arguments.end());
  auto pointers = [](std::vector<std::string>& strings) {
    std::vector<char*> out;
    for (std::string& s : strings) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
  };
  std::vector<char*> argv = pointers(args), envp = pointers(environment);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const int spawned =
      posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return std::string("could not start /proc/self/exe: ") + std::strerror(spawned);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return std::string("waitpid: ") + std::strerror(errno);
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
  std::ostringstream what;
  if (WIFEXITED(status)) {
    what << "exit status " << WEXITSTATUS(status);
  } else {
    what << "killed by signal " << WTERMSIG(status);
  }
  std::ifstream in(log);
  what << "; its output:\n" << in.rdbuf();
  return what.str();
}

class SamplingDeterminism : public ::testing::TestWithParam<Model> {
 protected:
  // In the first process: draws every selected case in a second one (Note [The second run is
  // another process]).
  static void SetUpTestSuite() {
    if (child_dir()) return;
    second_run_.emplace("determinism");
    const ::testing::TestSuite* suite = ::testing::UnitTest::GetInstance()->current_test_suite();
    std::string filter = "--gtest_filter=";
    for (int i = 0, selected = 0; suite != nullptr && i < suite->total_test_count(); ++i) {
      const ::testing::TestInfo* test = suite->GetTestInfo(i);
      if (!test->should_run()) continue;
      if (selected++ > 0) filter += ':';
      filter.append(suite->name()).append(".").append(test->name());
    }
    second_run_error_ =
        run_this_binary({filter, "--gtest_color=no"}, kChildDirVariable,
                        second_run_->path().string(), *second_run_ / "second_run.log");
  }
  static void TearDownTestSuite() { second_run_.reset(); }

  static inline std::optional<testing::TemporaryFolder> second_run_;
  static inline std::string second_run_error_;
};

std::map<std::string, at::Tensor> as_tensors(const Drawn& drawn) {
  std::map<std::string, at::Tensor> out{{"images", drawn.images}};
  for (size_t s = 0; s < drawn.tokens.scales.size(); ++s) {
    out["tokens." + std::to_string(s)] = drawn.tokens.scales[s];
  }
  return out;
}

Drawn from_tensors(const std::map<std::string, at::Tensor>& tensors) {
  Drawn drawn;
  drawn.images = tensors.at("images");
  for (size_t s = 0; tensors.contains("tokens." + std::to_string(s)); ++s) {
    drawn.tokens.scales.push_back(tensors.at("tokens." + std::to_string(s)));
  }
  return drawn;
}

TEST_P(SamplingDeterminism, SameSeedSameSamplesAcrossRunsAndThreadCounts) {
  const Model& model = GetParam();
  const auto start = std::chrono::steady_clock::now();
  Generator generator = Generator::load(kModels / model.file);
  std::optional<GenerationOptions> options;
  if (model.few_head_steps) {
    options = generator.config().sampling;
    options->head.diffusion.steps = 5;
    options->head.flow.steps = 5;
  }
  // Four classes, one of them twice: equal labels must still give different samples (each sample
  // draws from its own stream), which also shows the comparison is not vacuous.
  const at::Tensor labels = at::tensor({3, 7, 0, 3}, at::kLong);
  constexpr uint64_t kSeed = 20240917;

  if (const auto dir = child_dir()) {  // the second run: draw on 1 thread, write, done
    IntraOpThreads threads(1);
    save_safetensors(*dir / (case_name(model) + ".safetensors"),
                     as_tensors(draw(generator, labels, kSeed, options)));
    return;
  }
  ASSERT_EQ(second_run_error_, "") << "the second run (this binary, started again) failed";

  Drawn first, two_threads, other_seed;
  {
    IntraOpThreads threads(1);
    first = draw(generator, labels, kSeed, options);
    // One sample is enough to see that the seed matters.
    other_seed = draw(generator, labels.slice(0, 0, 1), kSeed + 1, options);
  }
  {
    IntraOpThreads threads(2);
    two_threads = draw(generator, labels, kSeed, options);  // also a repeated call on `generator`
  }
  const Drawn second_run =
      from_tensors(load_safetensors(*second_run_ / (case_name(model) + ".safetensors")));
  expect_identical_tokens(first, second_run, model.file + ": a second run, in another process");
  EXPECT_TRUE(at::equal(first.images, second_run.images))
      << model.file << ": a second run, in another process, decoded images that differ by up to "
      << largest_difference(first.images, second_run.images);
  expect_identical_tokens(first, two_threads, model.file + ": 1 thread against 2 threads");
  EXPECT_TRUE(at::equal(first.images, two_threads.images))
      << model.file << ": 1 and 2 threads decoded images that differ by up to "
      << largest_difference(first.images, two_threads.images);

  // Samples 0 and 3 ask for the same class but draw from different streams.
  EXPECT_FALSE(at::equal(first.tokens.scales.back()[0], first.tokens.scales.back()[3]))
      << model.file << ": two samples of one class came out identical";
  // A different seed gives a different sample 0 (the seed is not ignored).
  EXPECT_FALSE(at::equal(first.tokens.scales.back()[0], other_seed.tokens.scales.back()[0]))
      << model.file << ": seeds " << kSeed << " and " << kSeed + 1 << " gave the same sample 0";
  std::printf("%s: %.1f s\n", model.file.c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

INSTANTIATE_TEST_SUITE_P(ShippedModels, SamplingDeterminism, ::testing::ValuesIn(kShippedModels),
                         [](const ::testing::TestParamInfo<Model>& info) {
                           return case_name(info.param);
                         });

// decode_thread_invariant on its own, with batches that span several chunks and end in a partial
// one: bit-identical across thread counts 1, 2 and 3, and equal to a plain decode up to rounding
// (the same arithmetic, planned for other thread counts and batch sizes).
TEST(ThreadInvariantDecode, SameBitsOnAnyThreadCountForEveryShippedTokenizer) {
  // The multi-scale tokenizer takes Fashion-MNIST padded to 32 x 32.
  for (const auto& [file, side] : {std::pair{"vq_vae_fashion_mnist.safetensors", 28},
                                   std::pair{"multiscale_vq_vae_fashion_mnist.safetensors", 32},
                                   std::pair{"kl_vae_fashion_mnist.safetensors", 28}}) {
    SCOPED_TRACE(file);
    const std::unique_ptr<Tokenizer> tokenizer =
        load_tokenizer_checkpoint(kModels / "tokenizers" / file);
    at::manual_seed(7);
    const at::Tensor images = at::rand({21, 1, side, side}) * 2 - 1;  // chunks of 8 + 8 + 5
    const Tokens tokens = tokenizer->encode(images);
    at::Tensor one, two, three, plain;
    {
      IntraOpThreads threads(1);
      one = decode_thread_invariant(*tokenizer, tokens);
    }
    {
      IntraOpThreads threads(2);
      two = decode_thread_invariant(*tokenizer, tokens);
      plain = tokenizer->decode(tokens);
    }
    {
      IntraOpThreads threads(3);
      three = decode_thread_invariant(*tokenizer, tokens);
    }
    ASSERT_EQ(one.sizes(), images.sizes());
    EXPECT_TRUE(at::equal(one, two)) << "1 vs 2 threads: " << largest_difference(one, two);
    EXPECT_TRUE(at::equal(one, three)) << "1 vs 3 threads: " << largest_difference(one, three);
    EXPECT_LE(largest_difference(one, plain), 1e-5);
  }
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

// Chunks depend on the image size only: 8 small images, one large one.
TEST(ThreadInvariantDecode, ChunksFollowTheImageSize) {
  EXPECT_EQ(decode_chunk_images(28 * 28), 8);
  EXPECT_EQ(decode_chunk_images(32 * 32), 8);
  EXPECT_EQ(decode_chunk_images(64 * 64), 2);
  EXPECT_EQ(decode_chunk_images(128 * 128), 1);
  EXPECT_EQ(decode_chunk_images(256 * 256), 1);
}

// Large images (one per chunk; the shipped VQ-VAE is convolutional, so it decodes 128-px images
// too): a batch with at least as many images as threads is decoded image by image, one per thread,
// and keeps its bits on 1, 2 and 3 threads; a single image on 2 threads is decoded once on both
// (no idle core), which gives the same bits on every call at that thread count and agrees with
// the 1-thread decode up to float32 rounding: 1.1e-5 measured on images in [-1, 1], whose
// convolutions sum hundreds of products (bound 1e-4; docs/determinism.md).
TEST(ThreadInvariantDecode, LargeImagesUseEveryThread) {
  const std::unique_ptr<Tokenizer> tokenizer =
      load_tokenizer_checkpoint(kModels / "tokenizers" / "vq_vae_fashion_mnist.safetensors");
  at::manual_seed(11);
  const at::Tensor images = at::rand({3, 1, 128, 128}) * 2 - 1;
  const Tokens tokens = tokenizer->encode(images);
  Tokens first = tokens;
  for (at::Tensor& scale : first.scales) scale = scale.slice(0, 0, 1);
  at::Tensor one, two, three, single_one, single_two, single_two_again;
  {
    IntraOpThreads threads(1);
    one = decode_thread_invariant(*tokenizer, tokens);
    single_one = decode_thread_invariant(*tokenizer, first);
  }
  {
    IntraOpThreads threads(2);
    two = decode_thread_invariant(*tokenizer, tokens);
    single_two = decode_thread_invariant(*tokenizer, first);
    single_two_again = decode_thread_invariant(*tokenizer, first);
  }
  {
    IntraOpThreads threads(3);
    three = decode_thread_invariant(*tokenizer, tokens);
  }
  ASSERT_EQ(one.sizes(), images.sizes());
  EXPECT_TRUE(at::equal(one, two)) << "1 vs 2 threads: " << largest_difference(one, two);
  EXPECT_TRUE(at::equal(one, three)) << "1 vs 3 threads: " << largest_difference(one, three);
  EXPECT_TRUE(at::equal(single_one, one.slice(0, 0, 1))) << "batch 1 vs 3 on 1 thread";
  EXPECT_TRUE(at::equal(single_two, single_two_again)) << "the same call on 2 threads";
  const double across = largest_difference(single_one, single_two);
  std::printf("one 128-px image decoded on 1 and on 2 threads: largest difference %.3g\n", across);
  EXPECT_LE(across, 1e-4);
}

}  // namespace
}  // namespace tessera
