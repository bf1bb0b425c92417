// Sample a class-conditional grid from a shipped generator: one row per Fashion-MNIST class.
//
//   example_sample [model.safetensors] [out.png] [samples per class]
//
// A generator file holds everything sampling needs (tokenizer, backbone, head, schedule and the
// sampling defaults it was shipped with), so loading it is the whole set-up.
#include <ATen/ATen.h>

#include <cstdio>
#include <exception>
#include <string>

#include "tessera/io/image_io.h"
#include "tessera/pipeline/generator.h"

int main(int argc, char** argv) {
  try {
    const std::string model = argc > 1 ? argv[1] : "models/maskgit_fashion_mnist.safetensors";
    const std::string out = argc > 2 ? argv[2] : "samples.png";
    const int64_t per_class = argc > 3 ? std::stoll(argv[3]) : 8;

    tessera::Generator generator = tessera::Generator::load(model);

    // Labels 0,0,…,1,1,…: sample i asks for class i / per_class, so row c of the grid is class c.
    const at::Tensor labels = at::arange(generator.num_classes()).repeat_interleave(per_class);

    // Sample i draws only from its own stream (seed, i): the same image whatever the batch size.
    // Options left unset keep the file's defaults (guidance, temperature, steps).
    const at::Tensor images = generator.sample(labels, {.seed = 7});  // [N, C, H, W] in [-1, 1]

    tessera::write_image_grid(out, images, {.columns = per_class, .pad_value = 96, .upscale = 2});
    std::printf("wrote %s: %lld samples, %s schedule, %lld backbone calls each\n", out.c_str(),
                static_cast<long long>(images.size(0)), generator.schedule().name().c_str(),
                static_cast<long long>(generator.schedule().num_steps(generator.token_grids())));
  } catch (const std::exception& e) {  // tessera::Error says what was wrong and what was expected
    std::fprintf(stderr, "example_sample: %s\n", e.what());
    return 1;
  }
  return 0;
}
