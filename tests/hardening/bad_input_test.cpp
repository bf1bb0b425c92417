// docs/errors.md, checked: every row of its table of bad inputs is a case here and every case here
// is a row there; each case makes the row's bad input and the error it gets must contain the
// message fragment the row quotes. A message that changes, a row without a case or a case without
// a row fails this test, so the page cannot drift from what users see.
//
// Library rows catch the tessera::Error a call throws; command-line rows run build/bin/tessera
// and read its stderr (the binary comes from the tessera_cli target).

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/error_message.h"
#include "common/source_paths.h"
#include "common/temporary_folder.h"
#include "tessera/compat/llamagen.h"
#include "tessera/compat/llamagen_vq.h"
#include "tessera/compat/mar.h"
#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/data/fashion_mnist.h"
#include "tessera/distributed/distributed_environment.h"
#include "tessera/distributed/process_group.h"
#include "tessera/io/image_io.h"
#include "tessera/io/safetensors.h"
#include "tessera/pipeline/generator.h"
#include "tessera/tokenizer/tokenizer_checkpoint.h"
#include "tessera/train/generator_training.h"

namespace tessera {
namespace {

using testing::error_message_of;
using testing::TemporaryFolder;

const std::filesystem::path kSource = tessera::testing::source_dir();
const std::filesystem::path kErrorsPage = kSource / "docs/errors.md";
const std::filesystem::path kMaskGit = kSource / "models/maskgit_fashion_mnist.safetensors";
const std::filesystem::path kVqVae = kSource / "models/tokenizers/vq_vae_fashion_mnist.safetensors";
const std::filesystem::path kMaskGitConfig =
    kSource / "configs/generator/maskgit_fashion_mnist.json";
const std::filesystem::path kMarConfig = kSource / "configs/generator/mar_flow_fashion_mnist.json";

// ---------------------------------------------------------------------------------------------
// The page's table: "| E<n> | ... | `fragment` |" rows; the fragment is the code span of the last
// cell.

std::map<std::string, std::string> fragments_of_the_page() {
  std::ifstream in(kErrorsPage);
  EXPECT_TRUE(in.good()) << "cannot read " << kErrorsPage;
  std::map<std::string, std::string> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.starts_with("| E")) continue;
    std::vector<std::string> cells;
    std::stringstream stream(line.substr(1));
    std::string cell;
    while (std::getline(stream, cell, '|')) cells.push_back(cell);
    if (cells.size() < 2) continue;
    const auto trim = [](std::string s) {
      s.erase(0, s.find_first_not_of(' '));
      s.erase(s.find_last_not_of(' ') + 1);
      return s;
    };
    const std::string id = trim(cells.front());
    // The line ends with '|', so the last cell is the message column.
    const std::string message = trim(cells.back());
    const size_t open = message.find('`'), close = message.rfind('`');
    const std::string fragment =
        open != std::string::npos && close > open ? message.substr(open + 1, close - open - 1) : "";
    EXPECT_FALSE(rows.contains(id)) << "docs/errors.md: row " << id << " appears twice";
    EXPECT_FALSE(fragment.empty()) << "docs/errors.md: row " << id
                                   << " quotes no message fragment in `...` in its last column";
    rows[id] = fragment;
  }
  return rows;
}

const std::map<std::string, std::string>& page() {
  static const std::map<std::string, std::string> rows = fragments_of_the_page();
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Helpers that make bad inputs.

// The error DistributedEnvironment::from_variables() gives with exactly these of torchrun's
// variables set (the process's own are restored afterwards).
std::string environment_error(const std::map<std::string, std::string>& variables) {
  const char* names[] = {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"};
  std::map<std::string, std::string> saved;
  for (const char* name : names) {
    if (const char* value = std::getenv(name)) saved[name] = value;
    unsetenv(name);
  }
  for (const auto& [name, value] : variables) setenv(name.c_str(), value.c_str(), 1);
  const std::string error =
      error_message_of([] { (void)DistributedEnvironment::from_variables(); });
  for (const char* name : names) unsetenv(name);
  for (const auto& [name, value] : saved) setenv(name.c_str(), value.c_str(), 1);
  return error;
}

// The stderr of `tessera <arguments>`, which must fail.
std::string cli_error(const std::string& arguments) {
  // fmt rather than operator+ on string temporaries: GCC 12 misreports those (-Wrestrict).
  const std::filesystem::path binary = tessera::testing::binary_dir() / "bin" / "tessera";
  if (!std::filesystem::exists(binary)) {
    return fmt::format("(no {}: build the tessera_cli target first)", binary.string());
  }
  const std::string command = fmt::format("'{}' {} 2>&1 1>/dev/null", binary.string(), arguments);
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return fmt::format("(popen failed for {})", command);
  std::string output;
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
  const int status = ::pclose(pipe);
  if (!WIFEXITED(status)) return fmt::format("(the command did not exit normally) {}", output);
  if (WEXITSTATUS(status) == 0) return fmt::format("(the command succeeded) {}", output);
  return output;
}

// `tessera <subcommand> --model M ... --out <folder>/<file>`, paths quoted for the shell.
std::string with_model(const std::string& subcommand, const std::filesystem::path& model,
                       const std::string& options, const std::filesystem::path& out) {
  return fmt::format("{} --model '{}' {} --out '{}'", subcommand, model.string(), options,
                     out.string());
}

// The error of building a generator the way `tessera train` does (config, tokenizer, generator)
// from the shipped MaskGIT (or MAR) config with `edit` applied to its JSON.
std::string config_error(const std::function<void(nlohmann::json&)>& edit,
                         const std::filesystem::path& original = kMaskGitConfig) {
  TemporaryFolder folder("errors");
  nlohmann::json j = read_json_file(original);
  edit(j);
  const auto path = folder / "bad.json";
  std::ofstream(path) << j.dump(2);
  return error_message_of([&] {
    const auto config = load_config<GeneratorTrainConfig>(path);
    config.validate();
    Generator generator(config.generator, load_tokenizer_checkpoint(kSource / config.tokenizer),
                        config.init_seed);
  });
}

// The error of loading the shipped MaskGIT file after `edit` changed its tensors.
std::string generator_file_error(
    const std::function<void(std::map<std::string, at::Tensor>&)>& edit) {
  TemporaryFolder folder("errors");
  const SafetensorsFile file = SafetensorsFile::open(kMaskGit);
  std::map<std::string, at::Tensor> tensors = file.all();
  edit(tensors);
  const auto path = folder / "edited.safetensors";
  save_safetensors(path, tensors, file.metadata());
  return error_message_of([&] { Generator::load(path); });
}

// The error of loading a file holding these bytes as a generator.
std::string bytes_error(const std::string& bytes) {
  TemporaryFolder folder("errors");
  const auto path = folder / "bad.safetensors";
  std::ofstream(path, std::ios::binary) << bytes;
  return error_message_of([&] { Generator::load(path); });
}

std::string file_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// An IDX file of unsigned bytes: big-endian magic and dimensions, then `data`. Written without
// compression under the .gz name the loader looks for (zlib reads plain files transparently).
void write_idx(const std::filesystem::path& path, uint32_t magic,
               const std::vector<uint32_t>& dimensions, const std::string& data) {
  std::string bytes;
  const auto put = [&](uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8)
      bytes.push_back(static_cast<char>((v >> shift) & 0xff));
  };
  put(magic);
  for (uint32_t d : dimensions) put(d);
  std::ofstream(path, std::ios::binary) << bytes << data;
}

// The error of loading the training split from a folder that `make` fills.
// The bytes of a file under tests/io/images/, edited, decoded as read_image would decode them.
std::string image_error(const char* fixture,
                        const std::function<void(std::vector<uint8_t>&)>& edit) {
  std::ifstream in(tessera::testing::source_dir() / "tests" / "io" / "images" / fixture,
                   std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  EXPECT_FALSE(bytes.empty()) << fixture << " is missing";
  edit(bytes);
  return error_message_of([&] { (void)decode_image(bytes, 0, fixture); });
}

std::string dataset_error(const std::function<void(const std::filesystem::path&)>& make) {
  TemporaryFolder folder("errors");
  make(folder.path());
  FashionMnistOptions options;
  options.directory = folder.path();
  return error_message_of([&] { load_fashion_mnist(DatasetSplit::train, options); });
}

// The shipped MaskGIT generator, loaded once for the sampling rows.
Generator& maskgit() {
  static Generator generator = Generator::load(kMaskGit);
  return generator;
}

std::string sample_error(const at::Tensor& labels) {
  return error_message_of([&] { maskgit().sample_tokens(labels, {.seed = 1}); });
}

std::string sampling_error(const std::function<void(GenerationOptions&)> edit) {
  GenerationOptions options = maskgit().config().sampling;
  edit(options);
  return error_message_of([&] {
    maskgit().sample_tokens(at::tensor({4}, at::kLong), {.seed = 1, .options = options});
  });
}

// ---------------------------------------------------------------------------------------------
// The cases, one per row of docs/errors.md, in its order.

struct BadInput {
  std::string id;
  std::function<std::string()> error;  // the message the bad input gets
};

void PrintTo(const BadInput& c, std::ostream* out) { *out << c.id; }

const std::vector<BadInput>& cases() {
  static const std::vector<BadInput> table = {
      // Command line.
      {"E1", [] { return cli_error("sample"); }},
      {"E2", [] { return cli_error("sample --preset var-d99"); }},
      {"E3", [] { return cli_error("sample --model /nonexistent/generator.safetensors"); }},
      {"E4",
       [] {
         TemporaryFolder folder("errors");
         return cli_error(
             with_model("sample", kMaskGit, R"(--sampling '{"head": 0.9')", folder / "grid.png"));
       }},
      {"E5",
       [] {
         TemporaryFolder folder("errors");
         return cli_error(with_model("sample", kMaskGit, "--classes 3,12", folder / "grid.png"));
       }},
      {"E6",
       [] {
         TemporaryFolder folder("errors");
         return cli_error(with_model("sample", kMaskGit, "--per-class 0", folder / "grid.png"));
       }},
      {"E7",
       [] {
         TemporaryFolder folder("errors");
         return cli_error(with_model("sample", kMaskGit, "--threads -3", folder / "grid.png"));
       }},
      {"E8",
       [] {
         TemporaryFolder folder("errors");
         return cli_error(fmt::format("convert --checkpoint '{}' --tokenizer '{}' --out '{}'",
                                      kMaskGit.string(), kVqVae.string(),
                                      (folder / "g.safetensors").string()));
       }},
      // Configs.
      {"E9",
       [] {
         return config_error(
             [](nlohmann::json& j) { j["trainer"]["optimizer"]["learning_rat"] = 1e-3; });
       }},
      {"E10",
       [] { return config_error([](nlohmann::json& j) { j["trainer"]["batch_size"] = "64"; }); }},
      {"E11",
       [] { return config_error([](nlohmann::json& j) { j["trainer"]["batch_size"] = 0; }); }},
      {"E12",
       [] {
         return config_error(
             [](nlohmann::json& j) { j["generator"]["schedule"]["kind"] = "maskgat"; });
       }},
      {"E13",
       [] {
         TemporaryFolder folder("errors");
         std::ofstream(folder / "bad.json") << "{\"trainer\": {\"steps\": 10,}}";
         return error_message_of([&] { load_config<GeneratorTrainConfig>(folder / "bad.json"); });
       }},
      {"E14",
       [] {
         return config_error(
             [](nlohmann::json& j) { j["generator"]["backbone"]["vocab_size"] = 256; });
       }},
      {"E15",
       [] {
         return config_error([](nlohmann::json& j) {
           j["tokenizer"] = "models/tokenizers/kl_vae_fashion_mnist.safetensors";
         });
       }},
      {"E16",
       [] {
         return config_error(
             [](nlohmann::json& j) { j["tokenizer"] = "models/tokenizers/missing.safetensors"; });
       }},
      // Generator files and checkpoints.
      {"E17", [] { return error_message_of([] { Generator::load(kVqVae); }); }},
      {"E18",
       [] {
         return generator_file_error(
             [](auto& t) { t.erase("backbone.blocks.0.attn.mat_qkv.bias"); });
       }},
      {"E19",
       [] {
         return generator_file_error(
             [](auto& t) { t["backbone.blocks.0.attn.mat_qkv.bias"] = at::zeros({1152}); });
       }},
      {"E20",
       [] {
         return generator_file_error([](auto& t) {
           t["backbone.blocks.0.attn.mat_qkv.bias"] = at::zeros({576}, at::kShort);
         });
       }},
      {"E21",
       [] { return generator_file_error([](auto& t) { t["extra.weight"] = at::zeros({2}); }); }},
      {"E22",
       [] {
         const std::string bytes = file_bytes(kMaskGit);
         return bytes_error(bytes.substr(0, bytes.size() / 2));
       }},
      {"E23", [] { return bytes_error("this is a text file, not a safetensors file\n"); }},
      {"E24",
       [] {
         // A valid length field and a header that is not JSON.
         const std::string header = "{\"a\": [1, 2,, 3]";
         std::string bytes(8, '\0');
         bytes[0] = static_cast<char>(header.size());
         return bytes_error(bytes + header);
       }},
      {"E47",
       [] {
         // A LlamaGen GPT (a tiny architecture, as a converted checkpoint's metadata gives it)
         // whose state dict holds only the head.
         const LlamagenArchitecture a =
             llamagen_architecture_from_metadata({{"gpt.model_type", "c2i"},
                                                  {"gpt.rope", "2d"},
                                                  {"gpt.dim", "64"},
                                                  {"gpt.n_layer", "1"},
                                                  {"gpt.n_head", "1"},
                                                  {"gpt.vocab_size", "16"},
                                                  {"gpt.num_classes", "2"},
                                                  {"grid_size", "2"},
                                                  {"gpt.block_size", "4"},
                                                  {"gpt.cls_token_num", "1"},
                                                  {"gpt.norm_eps", "1e-5"},
                                                  {"gpt.rope_base", "10000"}});
         Backbone backbone(llamagen_backbone_config(a), 0);
         DiscreteHead head(llamagen_head_config(a), 0);
         return error_message_of([&] {
           load_llamagen_transformer(backbone, head, {{"output.weight", at::zeros({16, 64})}});
         });
       }},
      {"E48",
       [] {
         return error_message_of([] {
           llamagen_vq_config({{"decoder.conv_in.weight", at::zeros({8, 4, 3, 3})}});
         });
       }},
      {"E49",
       [] {
         // An encoder without MAR's decoder (e.g. an MAE's state dict).
         return error_message_of([] {
           mar_architecture({{"z_proj.weight", at::zeros({64, 16})},
                             {"encoder_blocks.0.norm1.weight", at::zeros({64})},
                             {"encoder_blocks.0.mlp.fc1.weight", at::zeros({256, 64})}});
         });
       }},
      // Datasets.
      {"E25",
       [] {
         return error_message_of([] {
           FashionMnistOptions options;
           options.directory = "/nonexistent/fashion-mnist";
           load_fashion_mnist(DatasetSplit::train, options);
         });
       }},
      {"E26", [] { return dataset_error([](const std::filesystem::path&) {}); }},
      {"E27",
       [] {
         return dataset_error([](const std::filesystem::path& d) {
           write_idx(d / "train-images-idx3-ubyte.gz", 0x00000801, {2}, std::string(2, '\0'));
         });
       }},
      {"E28",
       [] {
         return dataset_error([](const std::filesystem::path& d) {
           write_idx(d / "train-images-idx3-ubyte.gz", 0x00000803, {10, 28, 28},
                     std::string(100, '\0'));
         });
       }},
      {"E29",
       [] {
         return dataset_error([](const std::filesystem::path& d) {
           write_idx(d / "train-images-idx3-ubyte.gz", 0x00000803, {2, 28, 28},
                     std::string(2 * 28 * 28, '\0'));
           write_idx(d / "train-labels-idx1-ubyte.gz", 0x00000801, {2}, std::string{3, 12});
         });
       }},
      // Images.
      {"E40",
       [] {
         return image_error("png/ct2_d8_adam7.png", [](std::vector<uint8_t>& b) {
           const std::string gif = "GIF89a";
           b.assign(gif.begin(), gif.end());
         });
       }},
      {"E41",
       [] {
         return image_error("png/ct2_d8_adam7.png",
                            [](std::vector<uint8_t>& b) { b.resize(b.size() / 2); });
       }},
      {"E42",
       [] {
         return image_error("jpeg/baseline_420_61x45.jpg",
                            [](std::vector<uint8_t>& b) { b.resize(b.size() / 2); });
       }},
      {"E43",
       [] {
         return image_error("jpeg/baseline_420_61x45.jpg", [](std::vector<uint8_t>& b) {
           // The frame header's marker SOF0 (FF C0) made SOF3, lossless coding.
           for (size_t i = 2; i + 1 < b.size(); ++i) {
             if (b[i] == 0xFF && b[i + 1] == 0xC0) {
               b[i + 1] = 0xC3;
               break;
             }
           }
         });
       }},
      {"E44",
       [] {
         // A BMP header (4 x 4 pixels at 8 bits, RLE8): BMP is not read at all.
         return image_error("png/ct2_d8_adam7.png", [](std::vector<uint8_t>& b) {
           b.assign(54, 0);
           b[0] = 'B', b[1] = 'M', b[10] = 54, b[14] = 40, b[18] = 4, b[22] = 4, b[26] = 1;
           b[28] = 8, b[30] = 1;
         });
       }},
      // Tensor shapes.
      {"E30",
       [] {
         return sample_error(at::zeros({2, 2}, at::kLong));
       }},
      {"E31",
       [] {
         return sample_error(at::tensor({1, 2}, at::kInt));
       }},
      {"E32",
       [] {
         return sample_error(at::tensor({0, 12}, at::kLong));
       }},
      // Sampling options.
      {"E33", [] { return sampling_error([](GenerationOptions& o) { o.head.temperature = 0; }); }},
      {"E34",
       [] { return sampling_error([](GenerationOptions& o) { o.head.discrete.top_p = 1.5; }); }},
      {"E35",
       [] { return sampling_error([](GenerationOptions& o) { o.head.discrete.top_k = 300; }); }},
      {"E36", [] { return sampling_error([](GenerationOptions& o) { o.guidance.scale = -1; }); }},
      {"E37",
       [] { return sampling_error([](GenerationOptions& o) { o.head.diffusion.steps = 0; }); }},
      {"E38",
       [] {
         return config_error(
             [](nlohmann::json& j) { j["generator"]["schedule"]["maskgit"]["steps"] = 100; });
       }},
      {"E39",
       [] {
         return config_error(
             [](nlohmann::json& j) { j["generator"]["schedule"]["mar"]["steps"] = 65; },
             kMarConfig);
       }},
      {"E45",
       [] {
         TemporaryFolder folder("errors");
         return cli_error(with_model("sample", kMaskGit,
                                     R"(--sampling '{"schedule": {"condition_tokens": 0}}')",
                                     folder / "grid.png"));
       }},
      {"E46",
       [] {
         TemporaryFolder folder("errors");
         const auto out = folder / "g.safetensors";
         const std::string error = cli_error(fmt::format(
             R"(convert --in '{}' --out '{}' --sampling '{{"schedule": {{"steps": 100}}}}')",
             kMaskGit.string(), out.string()));
         return std::filesystem::exists(out) ? "(g.safetensors was written) " + error : error;
       }},
      // Data-parallel training.
      {"E50",
       [] {
         return environment_error(
             {{"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}});
       }},
      {"E51",
       [] {
         return environment_error({{"WORLD_SIZE", "2"},
                                   {"RANK", "2"},
                                   {"MASTER_ADDR", "127.0.0.1"},
                                   {"MASTER_PORT", "29500"}});
       }},
      {"E52",
       [] {
         return error_message_of([] {
           DistributedConfig config;
           config.backend = "mpi";
           config.validate();
         });
       }},
  };
  return table;
}

TEST(ErrorsPage, EveryRowHasACaseAndEveryCaseARow) {
  std::set<std::string> documented, tested;
  for (const auto& [id, fragment] : page()) documented.insert(id);
  for (const BadInput& c : cases()) {
    EXPECT_TRUE(tested.insert(c.id).second) << "case " << c.id << " appears twice in the test";
  }
  for (const std::string& id : documented) {
    EXPECT_TRUE(tested.contains(id)) << "docs/errors.md row " << id << " has no case in this test";
  }
  for (const std::string& id : tested) {
    EXPECT_TRUE(documented.contains(id)) << "case " << id << " has no row in docs/errors.md";
  }
  EXPECT_GE(documented.size(), 25u);
}

class ErrorsPageRow : public ::testing::TestWithParam<BadInput> {};

TEST_P(ErrorsPageRow, TheBadInputGetsTheDocumentedMessage) {
  const BadInput& c = GetParam();
  const auto row = page().find(c.id);
  ASSERT_TRUE(row != page().end()) << "no row " << c.id << " in docs/errors.md";
  const std::string message = c.error();
  ASSERT_FALSE(message.empty()) << c.id << ": the bad input was accepted (no error)";
  EXPECT_NE(message.find(row->second), std::string::npos)
      << c.id << ": the message does not contain the page's fragment\n  fragment: " << row->second
      << "\n  message:  " << message;
}

INSTANTIATE_TEST_SUITE_P(BadInputs, ErrorsPageRow, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<BadInput>& info) {
                           return info.param.id;
                         });

}  // namespace
}  // namespace tessera
