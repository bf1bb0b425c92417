// VAR's and HMAR's samplers against independent references: a full-recomputation sampler written
// here (dense masks from the level rule, every step over the whole prefix, guidance weights from
// VAR's formula), commit bookkeeping, seeds and batch invariance.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "fixtures.h"
#include "tessera/nn/guidance_batch.h"
#include "tessera/schedule/hmar_schedule.h"
#include "tessera/schedule/next_scale_schedule.h"

namespace tessera {
namespace {

using test::SmallModels;

enum class Rule { block_causal, block_diagonal };

// bool [L, L] from the scale of every position: VAR level(q) >= level(k), HMAR equal levels.
at::Tensor dense_rule(const std::vector<TokenGridSize>& grids, Rule rule) {
  std::vector<int64_t> level;
  for (size_t s = 0; s < grids.size(); ++s)
    for (int64_t i = 0; i < grids[s].count(); ++i) level.push_back(static_cast<int64_t>(s));
  const auto L = static_cast<int64_t>(level.size());
  at::Tensor m = at::zeros({L, L}, at::kBool);
  auto a = m.accessor<bool, 2>();
  for (int64_t q = 0; q < L; ++q)
    for (int64_t k = 0; k < L; ++k)
      a[q][k] = rule == Rule::block_causal ? level[q] >= level[k] : level[q] == level[k];
  return m;
}

// A next-scale sampler with no cache and no schedule code: at every scale the backbone runs over
// the whole prefix [0, end) under the dense rule, the head draws the scale's ids with the
// guidance weight w_s = 1 + cfg·s/(S−1) (VAR's t = cfg·ratio) as a constant, f̂ is updated.
Tokens reference_sample(SmallModels& m, const at::Tensor& labels, double cfg, SampleRngs& rngs,
                        Rule rule) {
  at::NoGradGuard no_grad;
  const auto grids = m.grids();
  const auto S = static_cast<int64_t>(grids.size());
  const int64_t B = labels.size(0), W = m.backbone->width();
  const at::Tensor dense = dense_rule(grids, rule);
  const at::Tensor run_labels = guidance_labels(labels, m.backbone->null_class());
  at::Tensor f_hat = m.tokenizer->empty_f_hat(B);
  std::vector<at::Tensor> inputs;  // scales 1.. so far, doubled
  Tokens out;
  out.grids = grids;
  int64_t begin = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t n = grids[s].count(), end = begin + n;
    if (s > 0) inputs.push_back(repeat_for_guidance(m.tokenizer->next_scale_input(f_hat, s)));
    const at::Tensor x = inputs.empty() ? at::Tensor() : at::cat(inputs, 1);
    const BlockMask mask = BlockMask::from_dense(dense.slice(0, 0, end).slice(1, 0, end));
    const BackboneOutput o = m.backbone->forward(x, run_labels, mask);
    const at::Tensor h = o.hidden.slice(1, begin, end).reshape({2 * B * n, W});
    HeadStep step;
    step.condition = o.condition.unsqueeze(1).expand({2 * B, n, W}).reshape({2 * B * n, W});
    const double w = 1.0 + cfg * static_cast<double>(s) / static_cast<double>(S - 1);
    const HeadSample d = m.head->sample(h, Guidance::constant(w), {}, rngs, step);
    const at::Tensor ids = d.values.reshape({B, n});
    m.tokenizer->add_scale_ids(f_hat, s, ids);
    out.scales.push_back(ids);
    begin = end;
  }
  return out;
}

void expect_same_tokens(const Tokens& a, const Tokens& b) {
  ASSERT_EQ(a.num_scales(), b.num_scales());
  for (int64_t s = 0; s < a.num_scales(); ++s)
    EXPECT_TRUE(at::equal(a.scales[s].cpu(), b.scales[s].cpu())) << "scale " << s;
}

at::Tensor some_labels(int64_t B) { return at::arange(B, at::kLong).remainder(test::kClasses); }

GenerationOptions ramp(double cfg) {
  GenerationOptions o;
  o.guidance = Guidance::var_scale_ramp(cfg);
  return o;
}

TEST(NextScaleSampling, KvCacheMatchesFullRecomputationReference) {
  SmallModels m = test::make_small_models(3);
  const at::Tensor labels = some_labels(4);
  NextScaleSchedule schedule;
  SampleRngs rngs(11, 0, 4);
  const Tokens cached = schedule.sample(m.models(), labels, m.grids(), ramp(2.0), rngs);
  SampleRngs ref_rngs(11, 0, 4);
  const Tokens reference = reference_sample(m, labels, 2.0, ref_rngs, Rule::block_causal);
  expect_same_tokens(cached, reference);

  // Without the cache: asked for by the request (the schedule unchanged), or as the defaults.
  GenerationOptions no_cache = ramp(2.0);
  no_cache.schedule = NextScaleSamplingOptions{.use_kv_cache = false};
  SampleRngs rngs2(11, 0, 4);
  expect_same_tokens(schedule.sample(m.models(), labels, m.grids(), no_cache, rngs2), reference);
  NextScaleScheduleConfig no_cache_defaults;
  no_cache_defaults.sampling.use_kv_cache = false;
  SampleRngs rngs3(11, 0, 4);
  expect_same_tokens(NextScaleSchedule(no_cache_defaults)
                         .sample(m.models(), labels, m.grids(), ramp(2.0), rngs3),
                     reference);
}

TEST(NextScaleSampling, HiddenStatesWithCacheMatchRecomputationToFloatTolerance) {
  // The decoded ids agree above; here the hidden states of the last scale, given the same ids.
  SmallModels m = test::make_small_models(4);
  at::NoGradGuard no_grad;
  const auto grids = m.grids();
  const int64_t B = 2, L = 30;
  const at::Tensor labels = some_labels(B);
  std::vector<at::Tensor> ids;
  for (const auto& g : grids) ids.push_back(at::randint(0, 32, {B, g.count()}, at::kLong));
  const at::Tensor x = m.tokenizer->teacher_forcing_input(ids);
  const BlockMask full = NextScaleSchedule().training_mask(grids);
  const at::Tensor whole = m.backbone->forward(x, labels, full).hidden;
  KVCache cache = m.backbone->make_kv_cache(B, L);
  int64_t begin = 0;
  for (size_t s = 0; s < grids.size(); ++s) {
    const int64_t end = begin + grids[s].count();
    const at::Tensor xs = s == 0 ? at::Tensor() : x.slice(1, begin - 1, end - 1);
    BackboneForwardOptions fo;
    fo.cache = &cache;
    const at::Tensor h = m.backbone->forward(xs, labels, full.rows(begin, end), fo).hidden;
    EXPECT_LT((h - whole.slice(1, begin, end)).abs().max().item<double>(), 1e-4) << s;
    begin = end;
  }
}

TEST(NextScaleSampling, EveryPositionCommittedOnceInOneStepPerScale) {
  SmallModels m = test::make_small_models(5);
  NextScaleSchedule schedule;
  std::vector<ScaleStepRecord> records;
  schedule.set_step_observer([&](const ScaleStepRecord& r) { records.push_back(r); });
  SampleRngs rngs(1, 0, 3);
  const Tokens t = schedule.sample(m.models(), some_labels(3), m.grids(), ramp(1.5), rngs);
  ASSERT_EQ(static_cast<int64_t>(records.size()), schedule.num_steps(m.grids()));
  ASSERT_EQ(records.size(), 4u);
  for (size_t s = 0; s < 4; ++s) {
    EXPECT_EQ(records[s].scale, static_cast<int64_t>(s));
    EXPECT_TRUE(records[s].committed.all().item<bool>());
    EXPECT_FALSE(records[s].masked.any().item<bool>());
    EXPECT_TRUE(at::equal(records[s].ids, t.scales[s].cpu()));
    EXPECT_EQ(t.scales[s].sizes().vec(), (std::vector<int64_t>{3, m.grids()[s].count()}));
    EXPECT_GE(t.scales[s].min().item<int64_t>(), 0);
    EXPECT_LT(t.scales[s].max().item<int64_t>(), 32);
  }
  EXPECT_NO_THROW(m.tokenizer->decode(t));
}

TEST(NextScaleSampling, SameSeedSameSamplesAndBatchInvariance) {
  SmallModels m = test::make_small_models(6);
  NextScaleSchedule schedule;
  const at::Tensor labels = some_labels(8);
  SampleRngs a(99, 0, 8), b(99, 0, 8), c(100, 0, 8);
  const Tokens ta = schedule.sample(m.models(), labels, m.grids(), ramp(1.5), a);
  expect_same_tokens(ta, schedule.sample(m.models(), labels, m.grids(), ramp(1.5), b));
  const Tokens tc = schedule.sample(m.models(), labels, m.grids(), ramp(1.5), c);
  EXPECT_FALSE(at::equal(ta.scales.back(), tc.scales.back()));
  for (int64_t i : {0, 5, 7}) {
    SampleRngs alone(99, i, 1);
    const Tokens ti =
        schedule.sample(m.models(), labels.slice(0, i, i + 1), m.grids(), ramp(1.5), alone);
    for (int64_t s = 0; s < ta.num_scales(); ++s)
      EXPECT_TRUE(at::equal(ti.scales[s][0], ta.scales[s][i])) << "sample " << i << " scale " << s;
  }
}

TEST(HmarSampling, OneCallPerScaleMatchesFullSequenceBlockDiagonalReference) {
  SmallModels m = test::make_small_models(7);
  const at::Tensor labels = some_labels(4);
  HmarSchedule schedule;
  SampleRngs rngs(21, 0, 4), ref_rngs(21, 0, 4);
  const Tokens t = schedule.sample(m.models(), labels, m.grids(), ramp(2.0), rngs);
  expect_same_tokens(t, reference_sample(m, labels, 2.0, ref_rngs, Rule::block_diagonal));
  // The same backbone under VAR's mask samples differently (the mask matters).
  SampleRngs var_rngs(21, 0, 4);
  const Tokens v = NextScaleSchedule().sample(m.models(), labels, m.grids(), ramp(2.0), var_rngs);
  bool differs = false;
  for (int64_t s = 1; s < 4; ++s) differs |= !at::equal(v.scales[s], t.scales[s]);
  EXPECT_TRUE(differs);
}

// Masked count after step s of T over n tokens, from MaskGIT's rule with the cosine curve.
int64_t expected_masked_after(int64_t n, int64_t s, int64_t T, int64_t before) {
  if (s == T - 1) return 0;
  const auto target =
      static_cast<int64_t>(std::floor(n * std::cos(std::numbers::pi / 2 * (s + 1.0) / T)));
  return std::max<int64_t>(1, std::min<int64_t>(before - 1, target));
}

TEST(HmarSampling, RefinementRemasksLeastConfidentAndCommitsEachPositionOnce) {
  SmallModels m = test::make_small_models(8, /*extra_channels=*/1);
  HmarScheduleConfig c;
  c.sampling.refinement_steps = {0, 2, 4, 6};
  HmarSchedule schedule(c);
  std::vector<ScaleStepRecord> records;
  schedule.set_step_observer([&](const ScaleStepRecord& r) { records.push_back(r); });
  const int64_t B = 5;
  SampleRngs rngs(3, 0, B);
  const Tokens t = schedule.sample(m.models(), some_labels(B), m.grids(), ramp(1.5), rngs);
  ASSERT_EQ(static_cast<int64_t>(records.size()), schedule.num_steps(m.grids()));
  ASSERT_EQ(records.size(), static_cast<size_t>(4 + 2 + 4 + 6));

  size_t i = 0;
  for (int64_t s = 0; s < 4; ++s) {
    const int64_t n = m.grids()[s].count(), T = 1 + c.sampling.refinement_steps[s];
    at::Tensor commits = at::zeros({B, n}, at::kLong);
    at::Tensor committed_ids = at::full({B, n}, -1, at::kLong);
    int64_t masked_before = n;
    at::Tensor prev_masked = at::ones({B, n}, at::kBool);
    for (int64_t r = 0; r < T; ++r, ++i) {
      const ScaleStepRecord& rec = records[i];
      ASSERT_EQ(rec.scale, s);
      ASSERT_EQ(rec.refinement, r);
      ASSERT_EQ(rec.step, static_cast<int64_t>(i));
      const int64_t after = T == 1 ? 0 : expected_masked_after(n, r, T, masked_before);
      // The re-masked count per sample is the rule's, and only previously masked positions are.
      EXPECT_TRUE(at::equal(rec.masked.sum(1), at::full({B}, after, at::kLong))) << s << "/" << r;
      EXPECT_FALSE(rec.masked.logical_and(prev_masked.logical_not()).any().item<bool>());
      EXPECT_TRUE(at::equal(rec.committed, prev_masked.logical_and(rec.masked.logical_not())));
      // Committed ids never change afterwards.
      const at::Tensor kept = committed_ids.ge(0);
      EXPECT_TRUE(at::equal(at::where(kept, rec.ids, -1), at::where(kept, committed_ids, -1)));
      // The re-masked are the least confident of the candidates (the previously masked).
      for (int64_t b = 0; b < B; ++b) {
        const at::Tensor p = rec.probabilities[b];
        const at::Tensor re = rec.masked[b], kept_now = rec.committed[b];
        if (re.any().item<bool>() && kept_now.any().item<bool>()) {
          EXPECT_LE(p.masked_select(re).max().item<float>(),
                    p.masked_select(kept_now).min().item<float>());
        }
      }
      commits += rec.committed.to(at::kLong);
      committed_ids = at::where(rec.committed, rec.ids, committed_ids);
      prev_masked = rec.masked;
      masked_before = after;
    }
    EXPECT_TRUE(at::equal(commits, at::ones({B, n}, at::kLong))) << "scale " << s;
    EXPECT_TRUE(at::equal(committed_ids, t.scales[s].cpu())) << "scale " << s;
  }
}

TEST(HmarSampling, RefinementIsSeededAndBatchInvariant) {
  SmallModels m = test::make_small_models(9, /*extra_channels=*/1);
  HmarScheduleConfig c;
  c.sampling.refinement_steps = {0, 1, 3, 5};
  HmarSchedule schedule(c);
  const at::Tensor labels = some_labels(8);
  SampleRngs a(5, 0, 8), b(5, 0, 8);
  const Tokens ta = schedule.sample(m.models(), labels, m.grids(), ramp(1.5), a);
  expect_same_tokens(ta, schedule.sample(m.models(), labels, m.grids(), ramp(1.5), b));
  for (int64_t i : {0, 3, 7}) {
    SampleRngs alone(5, i, 1);
    const Tokens ti =
        schedule.sample(m.models(), labels.slice(0, i, i + 1), m.grids(), ramp(1.5), alone);
    for (int64_t s = 0; s < ta.num_scales(); ++s)
      EXPECT_TRUE(at::equal(ti.scales[s][0], ta.scales[s][i])) << "sample " << i << " scale " << s;
  }
  // Without the indicator channel refinement is refused.
  SmallModels plain = test::make_small_models(9);
  SampleRngs r(5, 0, 8);
  EXPECT_NE(tessera::testing::error_message_of([&] {
              schedule.sample(plain.models(), labels, plain.grids(), ramp(1.5), r);
            }).find("indicator"),
            std::string::npos);
}

}  // namespace
}  // namespace tessera
