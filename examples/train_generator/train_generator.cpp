// Train a small class-conditional MaskGIT generator on Fashion-MNIST tokens for a few steps, save
// it, load it back and sample from it.
//
//   example_train_generator [steps] [out folder] [tokenizer.safetensors] [training images]
//
// The default 300 steps on 10,000 images took about 2 minutes on the project's 2-core machine
// (blurry but recognisable classes); `ctest -L packaging` runs 20 steps on 1,000 images.
//
// A Generator is the four parts in one object: the tokenizer (frozen here), a backbone and a head
// (trained) and a schedule (MaskGIT's order; no parameters). `tessera train` runs the same loss
// inside a Trainer that adds EMA, a learning-rate schedule, gradient clipping and resumable
// checkpoints (include/tessera/train/trainer.h); this loop keeps only what is essential.
#include <ATen/ATen.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tessera/data/fashion_mnist.h"
#include "tessera/io/image_io.h"
#include "tessera/core/rng.h"
#include "tessera/pipeline/generator.h"
#include "tessera/train/generator_training.h"
#include "tessera/train/optimizer.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"
#include "tessera/tokenizer/tokenizer_training.h"

int main(int argc, char** argv) {
  try {
    const int64_t steps = argc > 1 ? std::stoll(argv[1]) : 300;
    const std::filesystem::path out = argc > 2 ? argv[2] : "out/example_generator";
    const std::string tokenizer_file =
        argc > 3 ? argv[3] : "models/tokenizers/vq_vae_fashion_mnist.safetensors";
    const int64_t train_images = argc > 4 ? std::stoll(argv[4]) : 10000;
    const int64_t batch_size = 64;

    // A trained tokenizer (tessera train-tokenizer's output, or examples/train_tokenizer's): here
    // a VQ-VAE that maps 32x32 images to 8x8 ids from 256 codes.
    std::shared_ptr<tessera::Tokenizer> tokenizer =
        tessera::load_tokenizer_checkpoint(tokenizer_file);
    const std::vector<tessera::TokenGridSize> grids = tokenizer->token_grids(32, 32);
    const int64_t tokens = grids.at(0).count(), codes = tokenizer->vocab_size();

    // The parts, as a JSON generator config would give them (configs/generator/*.json).
    tessera::GeneratorConfig config;
    // A bidirectional ViT over ids after one class token; its vocabulary has one more id than the
    // codebook: MaskGIT's mask id.
    config.backbone = tessera::maskgit_style_config(/*width=*/64, /*depth=*/2, /*num_heads=*/2,
                                                    tokens, codes + 1, /*num_classes=*/10);
    config.backbone.condition_dropout = 0.1;  // the null class is trained too: needed for guidance
    config.head.kind = tessera::HeadKind::discrete;
    config.head.discrete.width = 64;
    config.head.discrete.vocab_size = codes;
    config.schedule.kind = tessera::ScheduleKind::maskgit;  // default MaskGitScheduleConfig
    config.sampling.guidance = tessera::Guidance::constant(2.0);
    // Checks that the parts fit (segments, vocabularies, widths) and throws naming what does not.
    tessera::Generator generator(config, tokenizer, /*seed=*/0);
    std::printf("%lld trainable parameters\n", static_cast<long long>(generator.num_parameters()));

    // Encode the training images once: a step then costs the backbone and head only.
    const tessera::LabeledImages train = tessera::load_fashion_mnist(tessera::DatasetSplit::train);
    const at::Tensor images = tessera::prepare_fashion_mnist_images(train, 32, 1);
    const tessera::Tokens dataset =
        tessera::encode_dataset(*tokenizer, images.slice(0, 0, train_images), 500);
    const at::Tensor labels = train.labels.slice(0, 0, train_images);

    std::map<std::string, at::Tensor> parameters = generator.trainable_parameters();
    const auto optimizer =
        tessera::make_optimizer({.learning_rate = 6e-4, .weight_decay = 0.05});
    at::Generator rng = tessera::make_cpu_generator(0);  // batches, mask ratios, condition dropout
    generator.set_training(true);
    for (int64_t step = 1; step <= steps; ++step) {
      const at::Tensor rows =
          at::randint(train_images, {batch_size}, rng, at::TensorOptions().dtype(at::kLong));
      tessera::TrainingBatch batch;
      batch.tokens = {{dataset.scales[0].index_select(0, rows)}, dataset.grids};
      batch.labels = labels.index_select(0, rows);
      // The schedule makes the training example (MaskGIT: mask a random fraction of the ids) and
      // returns the head's loss on the positions it predicts.
      const tessera::ScheduleLoss loss = generator.loss(batch, rng);
      for (auto& [name, p] : parameters) p.mutable_grad() = at::Tensor();
      loss.loss.backward();
      optimizer->step(parameters, 6e-4);
      if (step % 50 == 0 || step == steps) {
        std::printf("step %lld: loss %.4f\n", static_cast<long long>(step), loss.loss.item<double>());
      }
    }

    // One file: tokenizer, backbone, head and every config. Generator::load gets it all back.
    const std::filesystem::path file = out / "generator.safetensors";
    generator.save(file);
    tessera::Generator loaded = tessera::Generator::load(file);
    const at::Tensor grid_labels = at::arange(10).repeat_interleave(4);  // 4 samples per class
    tessera::write_image_grid(out / "samples.png", loaded.sample(grid_labels, {.seed = 0}),
                              {.columns = 4, .pad_value = 96, .upscale = 2});
    std::printf("wrote %s and %s (one row per class)\n", file.c_str(),
                (out / "samples.png").c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "example_train_generator: %s\n", e.what());
    return 1;
  }
  return 0;
}
