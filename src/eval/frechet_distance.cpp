#include "tessera/eval/frechet_distance.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/format.h"

namespace tessera {

namespace {

using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

Matrix to_matrix(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kDouble).contiguous();
  return Eigen::Map<const Matrix>(c.data_ptr<double>(), c.size(0), c.size(1));
}

void check_stats(const GaussianStats& s, const char* which) {
  TESSERA_CHECK(s.mean.defined() && s.mean.dim() == 1,
                "frechet_distance: {} mean must be a vector [D], got {}", which,
                s.mean.defined() ? fmt::format("{}", s.mean.sizes()) : std::string("undefined"));
  const int64_t d = s.mean.size(0);
  TESSERA_CHECK(s.covariance.defined() && s.covariance.dim() == 2 && s.covariance.size(0) == d &&
                    s.covariance.size(1) == d,
                "frechet_distance: {} covariance must be [{}, {}], got {}", which, d, d,
                s.covariance.defined() ? fmt::format("{}", s.covariance.sizes())
                                       : std::string("undefined"));
  TESSERA_CHECK(at::isfinite(s.mean).all().item<bool>() &&
                    at::isfinite(s.covariance).all().item<bool>(),
                "frechet_distance: {} statistics contain NaN or Inf", which);
}

}  // namespace

GaussianStats fit_gaussian(const at::Tensor& features) {
  TESSERA_CHECK(features.defined() && features.dim() == 2,
                "fit_gaussian: expected features [N, D], got {}",
                features.defined() ? fmt::format("{}", features.sizes()) : std::string("undefined"));
  TESSERA_CHECK(features.size(0) >= 2, "fit_gaussian: need at least 2 feature vectors, got {}",
                features.size(0));
  at::NoGradGuard no_grad;
  const at::Tensor x = features.detach().to(at::kCPU, at::kDouble);
  TESSERA_CHECK(at::isfinite(x).all().item<bool>(), "fit_gaussian: features contain NaN or Inf");
  const at::Tensor mean = x.mean(0);
  const at::Tensor centred = x - mean;
  at::Tensor covariance = centred.t().matmul(centred) / static_cast<double>(x.size(0) - 1);
  covariance = (covariance + covariance.t()) * 0.5;  // exactly symmetric
  return {mean, covariance, x.size(0)};
}

double frechet_distance(const GaussianStats& a, const GaussianStats& b) {
  check_stats(a, "first");
  check_stats(b, "second");
  TESSERA_CHECK(a.mean.size(0) == b.mean.size(0),
                "frechet_distance: dimensions differ ({} and {})", a.mean.size(0), b.mean.size(0));
  const Matrix sigma1 = to_matrix(a.covariance), sigma2 = to_matrix(b.covariance);
  const at::Tensor diff = a.mean.to(at::kDouble) - b.mean.to(at::kDouble);
  const double mean_term = diff.dot(diff).item<double>();

  // See Note [Stable Fréchet distance].
  Eigen::SelfAdjointEigenSolver<Matrix> eig1(0.5 * (sigma1 + sigma1.transpose()));
  TESSERA_CHECK(eig1.info() == Eigen::Success, "frechet_distance: eigendecomposition failed");
  const Eigen::VectorXd root1 = eig1.eigenvalues().cwiseMax(0.0).cwiseSqrt();
  const Matrix s = eig1.eigenvectors() * root1.asDiagonal() * eig1.eigenvectors().transpose();
  Matrix m = s * sigma2 * s;
  m = 0.5 * (m + m.transpose());
  Eigen::SelfAdjointEigenSolver<Matrix> eig2(m, Eigen::EigenvaluesOnly);
  TESSERA_CHECK(eig2.info() == Eigen::Success, "frechet_distance: eigendecomposition failed");
  const double trace_sqrt = eig2.eigenvalues().cwiseMax(0.0).cwiseSqrt().sum();
  const double d = mean_term + sigma1.trace() + sigma2.trace() - 2.0 * trace_sqrt;
  return std::max(0.0, d);
}

}  // namespace tessera
