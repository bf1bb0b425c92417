// Codebook usage and perplexity against closed forms.

#include "tessera/tokenizer/codebook_usage.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "tessera/core/error.h"

namespace tessera {
namespace {

TEST(CodebookUsage, UniformOverKCodesHasPerplexityK) {
  // 4 of 16 codes, each hit 5 times: p = 1/4 each, H = log 4, perplexity 4.
  const at::Tensor ids = at::tensor({3, 7, 11, 15}, at::kLong).repeat({5});
  const CodebookUsage usage = codebook_usage_from_histogram(code_histogram(ids, 16));
  EXPECT_EQ(usage.codebook_size, 16);
  EXPECT_EQ(usage.tokens, 20);
  EXPECT_EQ(usage.used_codes, 4);
  EXPECT_DOUBLE_EQ(usage.used_fraction(), 0.25);
  EXPECT_NEAR(usage.perplexity, 4.0, 1e-12);
}

TEST(CodebookUsage, SkewedHistogramMatchesEntropyFormula) {
  // Counts 1, 2, 5 (and zeros): p = 1/8, 2/8, 5/8.
  const at::Tensor histogram = at::tensor({0, 1, 0, 2, 5, 0}, at::kLong);
  const double p1 = 1.0 / 8, p2 = 2.0 / 8, p3 = 5.0 / 8;
  const double expected = std::exp(-(p1 * std::log(p1) + p2 * std::log(p2) + p3 * std::log(p3)));
  const CodebookUsage usage = codebook_usage_from_histogram(histogram);
  EXPECT_EQ(usage.used_codes, 3);
  EXPECT_EQ(usage.tokens, 8);
  EXPECT_NEAR(usage.perplexity, expected, 1e-12);
}

TEST(CodebookUsage, OneCodeHasPerplexityOneAndEmptyHasZero) {
  EXPECT_NEAR(codebook_usage_from_histogram(at::tensor({0, 9, 0}, at::kLong)).perplexity, 1.0,
              1e-12);
  const CodebookUsage empty = codebook_usage_from_histogram(at::zeros({5}, at::kLong));
  EXPECT_EQ(empty.used_codes, 0);
  EXPECT_EQ(empty.perplexity, 0.0);
}

TEST(CodebookUsage, HistogramCountsIdsOfAnyShape) {
  const at::Tensor ids = at::tensor({0, 2, 2, 1, 2, 0}, at::kLong).view({2, 3});
  const at::Tensor histogram = code_histogram(ids, 4);
  EXPECT_TRUE(at::equal(histogram, at::tensor({2, 1, 3, 0}, at::kLong)));
}

TEST(CodebookUsage, IdsOutsideTheCodebookAreAnError) {
  const at::Tensor ids = at::tensor({0, 4, 1}, at::kLong);
  try {
    (void)code_histogram(ids, 4);
    FAIL() << "expected tessera::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("id 4"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[0, 4)"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)code_histogram(at::tensor({-1}, at::kLong), 4), Error);
  EXPECT_THROW((void)code_histogram(at::tensor({0.5}), 4), Error);
}

}  // namespace
}  // namespace tessera
