// Train a small VQ-VAE tokenizer on Fashion-MNIST for a few steps, measure its reconstructions and
// save it.
//
//   example_train_tokenizer [steps] [out folder]
//
// The default 200 steps took 6.5 minutes on the project's busy 2-core machine and reached a test
// PSNR of 20.0 dB; `ctest -L packaging` runs 10.
//
// `tessera train-tokenizer` runs these steps through Trainer (src/train/tokenizer_task.cpp, with
// checkpoints, resume and a metrics log); here they are cut to their parts: a tokenizer's training_forward() gives a differentiable reconstruction and its
// regularisation (here the VQ loss); the optimizer updates the parameters by name. The dataset is
// read from $TESSERA_FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist.
#include <ATen/ATen.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "tessera/data/fashion_mnist.h"
#include "tessera/io/image_io.h"
#include "tessera/core/rng.h"
#include "tessera/train/optimizer.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"
#include "tessera/tokenizer/tokenizer_training.h"

int main(int argc, char** argv) {
  try {
    const int64_t steps = argc > 1 ? std::stoll(argv[1]) : 200;
    const std::filesystem::path out = argc > 2 ? argv[2] : "out/example_tokenizer";
    const int64_t batch_size = 32, image_size = 32;

    // 28x28 greys to [-1, 1], padded with -1 to 32x32 (divisible by the downsampling factor 4).
    const tessera::LabeledImages train = tessera::load_fashion_mnist(tessera::DatasetSplit::train);
    const tessera::LabeledImages test = tessera::load_fashion_mnist(tessera::DatasetSplit::test);
    const at::Tensor images = tessera::prepare_fashion_mnist_images(train, image_size, 1);
    const at::Tensor test_images =
        tessera::prepare_fashion_mnist_images(test, image_size, 1).slice(0, 0, 200);

    // A VQ-VAE small enough to train on a CPU: 32x32 images -> 8x8 ids from 256 codes. The same
    // fields are a JSON config's (configs/tokenizer/vq_vae_fashion_mnist.json).
    tessera::TokenizerConfig config;
    config.kind = tessera::TokenizerKind::vq_vae;
    config.vq_vae.emplace();
    config.vq_vae->autoencoder.image_channels = 1;
    config.vq_vae->autoencoder.base_channels = 16;
    config.vq_vae->autoencoder.channel_multipliers = {1, 2, 2};  // two halvings: 32 -> 8
    config.vq_vae->autoencoder.res_blocks_per_level = 1;
    config.vq_vae->autoencoder.lowest_level_attention = false;
    config.vq_vae->autoencoder.middle_attention = false;
    config.vq_vae->autoencoder.latent_channels = 16;
    config.vq_vae->autoencoder.norm_groups = 8;
    config.vq_vae->quantizer.codebook_size = 256;
    config.vq_vae->quantizer.l2_normalized_codes = true;  // LlamaGen's: better codebook usage
    std::unique_ptr<tessera::Tokenizer> tokenizer = tessera::make_tokenizer(config, /*seed=*/0);
    tokenizer->set_training(true);  // tokenizers are built in evaluation mode

    // Tessera's optimizers take parameters by name (their state is checkpointed by name).
    std::map<std::string, at::Tensor> parameters;
    for (const auto& [name, tensor] : tokenizer->state_dict()) {
      if (tensor.requires_grad()) parameters.emplace(name, tensor);  // buffers are not trained
    }
    const auto optimizer = tessera::make_optimizer(
        {.learning_rate = 1e-3, .beta2 = 0.95, .weight_decay = 0.0});

    at::Generator rng = tessera::make_cpu_generator(0);  // which images each batch holds
    for (int64_t step = 1; step <= steps; ++step) {
      const at::Tensor batch = images.index_select(
          0, at::randint(images.size(0), {batch_size}, rng, at::TensorOptions().dtype(at::kLong)));
      const tessera::TokenizerTrainingOutput forward = tokenizer->training_forward(batch);
      const at::Tensor loss = at::mse_loss(forward.reconstruction, batch) + forward.regularization;
      for (auto& [name, p] : parameters) p.mutable_grad() = at::Tensor();  // drop last step's
      loss.backward();
      optimizer->step(parameters, 1e-3);
      if (step % 50 == 0 || step == steps) {
        std::printf("step %lld: loss %.4f\n", static_cast<long long>(step), loss.item<double>());
      }
    }

    // Reconstructions of held-out images, measured on the 28x28 area only (not the padding).
    tokenizer->set_training(false);
    const tessera::ReconstructionMetrics metrics = tessera::evaluate_reconstruction(
        *tokenizer, test_images, 250, tessera::fashion_mnist_region(image_size));
    std::printf("%s\n", tessera::format_reconstruction_metrics(metrics).c_str());

    // A tokenizer checkpoint records its config, so load_tokenizer_checkpoint rebuilds it; it is
    // what a generator config's "tokenizer" names (see examples/train_generator).
    tessera::save_tokenizer_checkpoint(out / "tokenizer.safetensors", *tokenizer);
    const at::Tensor shown = test_images.slice(0, 0, 8);
    tessera::write_image_grid(out / "reconstructions.png",
                              at::cat({shown, tokenizer->reconstruct(shown)}),
                              {.columns = 8, .pad_value = 96, .upscale = 2});
    std::printf("wrote %s and %s (originals above, reconstructions below)\n",
                (out / "tokenizer.safetensors").c_str(), (out / "reconstructions.png").c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "example_train_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
