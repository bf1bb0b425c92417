// Branch blocks (BackboneConfig::branch_blocks, HMAR's mask_blocks): a branch forward is the
// backbone with its tail replaced. The reference is a second backbone without branch blocks whose
// last blocks hold the branch's parameters: both run the same blocks in the same order, so the
// outputs must be equal; the ordinary forward never reads the branch.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <map>
#include <string>

#include "common/error_message.h"
#include "tessera/attention/block_mask.h"
#include "tessera/core/error.h"
#include "tessera/core/rng.h"
#include "tessera/nn/backbone.h"
#include "tessera/nn/kv_cache.h"

namespace tessera {
namespace {

// VAR-like, 3 blocks, pyramid 1,2,3 (14 tokens), vectors of 5 channels.
BackboneConfig branch_config(int64_t branch_blocks) {
  BackboneConfig c = var_style_config(/*width=*/32, /*depth=*/3, /*num_heads=*/2, {1, 2, 3},
                                      /*input_channels=*/5, /*num_classes=*/4, false);
  c.condition_dropout = 0;
  c.branch_blocks = branch_blocks;
  return c;
}

void randomize(Backbone& backbone, uint64_t seed) {
  at::NoGradGuard no_grad;
  at::Generator gen = make_cpu_generator(seed);
  for (at::Tensor& p : backbone.parameters()) {
    p.copy_(at::empty(p.sizes(), at::kFloat).normal_(0.0, 0.3, gen));
  }
}

struct Inputs {
  at::Tensor x, labels;
};
Inputs inputs() {
  at::Generator gen = make_cpu_generator(3);
  return {at::empty({2, 13, 5}).normal_(0.0, 1.0, gen), at::tensor({1, 3}, at::kLong)};
}

TEST(BackboneBranch, BranchForwardIsTheBackboneWithTheTailReplaced) {
  at::NoGradGuard no_grad;
  Backbone with_branch(branch_config(2), 0);
  randomize(with_branch, 11);
  with_branch.set_training(false);
  // The reference: blocks 0 from `with_branch`, blocks 1 and 2 from its branch_blocks 0 and 1.
  Backbone tail_swapped(branch_config(0), 0);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [key, t] : with_branch.state_dict()) {
    if (key.starts_with("blocks.1.") || key.starts_with("blocks.2.")) continue;
    if (key.starts_with("branch_blocks.")) {
      const int64_t j = key[std::string("branch_blocks.").size()] - '0';
      tensors["blocks." + std::to_string(1 + j) + key.substr(std::string("branch_blocks.0").size())] = t;
    } else {
      tensors[key] = t;
    }
  }
  tail_swapped.load_state_dict(tensors);  // strict
  tail_swapped.set_training(false);
  Backbone plain(branch_config(0), 0);
  std::map<std::string, at::Tensor> plain_tensors;
  for (const auto& [key, t] : with_branch.state_dict())
    if (!key.starts_with("branch_blocks.")) plain_tensors[key] = t;
  plain.load_state_dict(plain_tensors);
  plain.set_training(false);

  const Inputs in = inputs();
  const BlockMask mask = BlockMask::block_causal(with_branch.layout());
  BackboneForwardOptions branch;
  branch.branch = true;
  const BackboneOutput b = with_branch.forward(in.x, in.labels, mask, branch);
  const BackboneOutput ordinary = with_branch.forward(in.x, in.labels, mask);
  EXPECT_TRUE(at::equal(b.hidden, tail_swapped.forward(in.x, in.labels, mask).hidden));
  EXPECT_TRUE(at::equal(ordinary.hidden, plain.forward(in.x, in.labels, mask).hidden));
  EXPECT_FALSE(at::allclose(b.hidden, ordinary.hidden));

  // The ordinary forward never reads the branch: changing it changes only branch forwards.
  for (auto& item : with_branch.module()->named_parameters(/*recurse=*/true))
    if (item.key() == "branch_blocks.1.ffn.fc2.weight") item.value().add_(1.0);
  EXPECT_TRUE(at::equal(with_branch.forward(in.x, in.labels, mask).hidden, ordinary.hidden));
  EXPECT_FALSE(at::equal(with_branch.forward(in.x, in.labels, mask, branch).hidden, b.hidden));
}

TEST(BackboneBranch, ParameterCountIncludesTheBranch) {
  for (int64_t k : {0, 1, 3}) {
    const BackboneConfig c = branch_config(k);
    Backbone backbone(c, 0);
    EXPECT_EQ(c.parameter_count(), backbone.num_parameters()) << "branch_blocks " << k;
  }
  EXPECT_EQ(branch_config(2).parameter_count() - branch_config(0).parameter_count(),
            2 * (branch_config(1).parameter_count() - branch_config(0).parameter_count()));
}

TEST(BackboneBranch, BadUseIsAClearError) {
  EXPECT_NE(testing::error_message_of([] { Backbone(branch_config(4), 0); })
                .find("branch_blocks must be in [0, depth = 3]"),
            std::string::npos);
  Backbone none(branch_config(0), 0);
  const Inputs in = inputs();
  BackboneForwardOptions branch;
  branch.branch = true;
  EXPECT_NE(testing::error_message_of([&] {
              none.forward(in.x, in.labels, BlockMask::block_causal(none.layout()), branch);
            }).find("no branch blocks"),
            std::string::npos);
  Backbone with(branch_config(1), 0);
  KVCache cache = with.make_kv_cache(2, with.layout().length());
  branch.cache = &cache;
  EXPECT_NE(testing::error_message_of([&] {
              with.forward(at::Tensor(), in.labels,
                           BlockMask::block_causal(with.layout()).rows(0, 1), branch);
            }).find("cannot use a KV cache"),
            std::string::npos);
}

}  // namespace
}  // namespace tessera
