#include "tessera/core/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tessera/core/error.h"

namespace tessera {
namespace {

enum class Shape { square, circle };

}  // namespace

template <>
struct ConfigEnum<Shape> {
  static constexpr std::pair<Shape, const char*> values[] = {{Shape::square, "square"},
                                                             {Shape::circle, "circle"}};
};

namespace {

struct OptimizerConfig {
  double learning_rate = 3e-4;
  int64_t warmup_steps = 1000;
  template <class V>
  void visit(V& v) {
    v("learning_rate", learning_rate);
    v("warmup_steps", warmup_steps);
  }
  void validate() const {
    TESSERA_CHECK(learning_rate > 0, "learning_rate must be > 0, got {}", learning_rate);
  }
};

struct TrainConfig {
  std::string name = "run";
  bool use_ema = true;
  uint32_t batch_size = 64;
  Shape shape = Shape::square;
  std::vector<int64_t> patch_nums = {1, 2, 3};
  std::optional<double> clip;
  OptimizerConfig optimizer;
  template <class V>
  void visit(V& v) {
    v("name", name);
    v("use_ema", use_ema);
    v("batch_size", batch_size);
    v("shape", shape);
    v("patch_nums", patch_nums);
    v("clip", clip);
    v("optimizer", optimizer);
  }
};

std::string error_of(const nlohmann::json& j) {
  try {
    (void)config_from_json<TrainConfig>(j, "train");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, DefaultsFillAbsentKeys) {
  auto c = config_from_json<TrainConfig>(nlohmann::json::parse(R"({"batch_size": 8})"));
  EXPECT_EQ(c.batch_size, 8u);
  EXPECT_EQ(c.name, "run");
  EXPECT_EQ(c.patch_nums, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_FALSE(c.clip.has_value());
  EXPECT_DOUBLE_EQ(c.optimizer.learning_rate, 3e-4);
}

TEST(Config, RoundTripsThroughJson) {
  TrainConfig c;
  c.name = "x";
  c.use_ema = false;
  c.shape = Shape::circle;
  c.patch_nums = {1, 2, 4, 8};
  c.clip = 1.5;
  c.optimizer.warmup_steps = 7;
  const nlohmann::json j = config_to_json(c);
  EXPECT_EQ(j["shape"], "circle");
  EXPECT_EQ(j["optimizer"]["warmup_steps"], 7);
  auto back = config_from_json<TrainConfig>(j);
  EXPECT_EQ(config_to_json(back), j);
  EXPECT_EQ(back.patch_nums, c.patch_nums);
  EXPECT_EQ(back.clip, c.clip);
}

TEST(Config, UnknownKeyIsAnErrorWithASuggestion) {
  const std::string e = error_of(nlohmann::json::parse(R"({"optimizer": {"lerning_rate": 1}})"));
  EXPECT_NE(e.find("unknown key 'lerning_rate' in train.optimizer"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'learning_rate'"), std::string::npos) << e;
  EXPECT_NE(error_of(nlohmann::json::parse(R"({"zzz": 1})")).find("unknown key 'zzz'"),
            std::string::npos);
}

TEST(Config, WrongTypesNameTheKey) {
  EXPECT_NE(error_of(nlohmann::json::parse(R"({"batch_size": "8"})")).find("train.batch_size: expected an integer, got string"),
            std::string::npos);
  EXPECT_NE(error_of(nlohmann::json::parse(R"({"batch_size": 2.5})")).find("expected an integer"),
            std::string::npos);
  EXPECT_NE(error_of(nlohmann::json::parse(R"({"batch_size": -1})")).find("out of range"),
            std::string::npos);
  EXPECT_NE(error_of(nlohmann::json::parse(R"({"use_ema": 1})")).find("expected a boolean"),
            std::string::npos);
  EXPECT_NE(error_of(nlohmann::json::parse(R"({"patch_nums": [1, "2"]})")).find("train.patch_nums[1]"),
            std::string::npos);
  EXPECT_NE(error_of(nlohmann::json::parse(R"({"shape": "sqare"})")).find("did you mean 'square'"),
            std::string::npos);
  EXPECT_NE(error_of(nlohmann::json::parse(R"({"optimizer": 3})")).find("expected an object"),
            std::string::npos);
  // 4.0 is an integer written as a float: accepted.
  EXPECT_EQ(config_from_json<TrainConfig>(nlohmann::json::parse(R"({"batch_size": 4.0})")).batch_size, 4u);
}

TEST(Config, ValidateRunsOnNestedStructs) {
  const std::string e = error_of(nlohmann::json::parse(R"({"optimizer": {"learning_rate": -1}})"));
  EXPECT_NE(e.find("train.optimizer"), std::string::npos) << e;
  EXPECT_NE(e.find("learning_rate must be > 0"), std::string::npos) << e;
}

TEST(Config, FilesRoundTripAndSyntaxErrorsNameTheFile) {
  const auto dir = std::filesystem::temp_directory_path() / "tessera_config_test";
  std::filesystem::create_directories(dir);
  TrainConfig c;
  c.batch_size = 3;
  save_config(dir / "train.json", c);
  EXPECT_EQ(load_config<TrainConfig>(dir / "train.json").batch_size, 3u);
  {
    std::ofstream out(dir / "bad.json");
    out << "{\"batch_size\": 3,,}";
  }
  try {
    (void)load_config<TrainConfig>(dir / "bad.json");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)load_config<TrainConfig>(dir / "missing.json"), Error);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tessera
