#pragma once
// The Fréchet distance between two Gaussians (the "FID" of Heusel et al. 2017), in float64:
//
//   d² = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2·tr (Σ1^½ Σ2 Σ1^½)^½
//
// Note [Stable Fréchet distance]
// pytorch-fid takes scipy.linalg.sqrtm(Σ1 Σ2), a general (non-symmetric) matrix square root that
// can return complex noise and needs an ε-shift when the product is near singular. Here both
// roots are of symmetric positive semi-definite matrices: S = Σ1^½ from a symmetric
// eigendecomposition (eigenvalues clamped at 0, since round-off makes tiny ones negative), then
// M = S Σ2 S, symmetrised, and tr M^½ = Σ √max(λᵢ(M), 0). M has the same eigenvalues as Σ1 Σ2,
// so this is the same quantity, computed with real arithmetic throughout. A result that round-off
// makes slightly negative is returned as 0.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace tessera {

struct GaussianStats {
  at::Tensor mean{};        ///< float64 [D]
  at::Tensor covariance{};  ///< float64 [D, D], symmetric
  int64_t count = 0;        ///< how many feature vectors were fitted (0 for given statistics)
};  ///< Mean and covariance of features, as FID compares them.

/// Mean and unbiased covariance (divided by N − 1, as numpy.cov) of features [N, D], N >= 2,
/// accumulated in float64.
GaussianStats fit_gaussian(const at::Tensor& features);

/// The squared Fréchet distance above. Throws tessera::Error for mismatched dimensions, non-square
/// or non-finite covariances.
double frechet_distance(const GaussianStats& a, const GaussianStats& b);

}  // namespace tessera
