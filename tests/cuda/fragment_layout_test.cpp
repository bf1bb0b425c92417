// The lane addressing of the CUDA kernels (kernels/cuda/fragment_layout.h) on the CPU: ldmatrix.x4
// and mma.sync.m16n8k16 emulated one lane at a time from the PTX ISA's fragment tables (written
// here independently of the header, see Note [mma.m16n8k16 fragments]), and the products the
// kernels form with them compared with plain matrix products. Runs without a GPU. It checks the
// kernels' index formulas against this reading of the PTX ISA; whether the reading is right only
// a GPU can tell (tests/cuda/cuda_attention_test.cpp).

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <random>
#include <vector>

#include "../../kernels/cuda/fragment_layout.h"

namespace tessera::cuda {
namespace {

// One 32-bit register of two b16 values: lo is the lower-addressed element.
struct Reg {
  float lo = 0, hi = 0;
};
using Fragment = std::array<std::array<Reg, 4>, 32>;  // [lane][register]

// A shared-memory array of `rows` x `stride` elements (row-major); values are small integers so
// that every product below is exact in float.
struct Shared {
  int rows, cols, stride;
  std::vector<float> data;
  Shared(int r, int c, int pad, uint64_t seed) : rows(r), cols(c), stride(c + pad) {
    data.assign(static_cast<size_t>(rows * stride), -1000.f);  // padding: poison
    std::mt19937_64 rng(seed);
    for (int i = 0; i < rows; ++i) {
      for (int j = 0; j < cols; ++j) at(i, j) = static_cast<float>(static_cast<int>(rng() % 7) - 3);
    }
  }
  float& at(int r, int c) { return data[static_cast<size_t>(r * stride + c)]; }
  float at(int r, int c) const { return data[static_cast<size_t>(r * stride + c)]; }
  float get(int offset) const {
    EXPECT_GE(offset, 0);
    EXPECT_LT(offset, rows * stride);
    return data[static_cast<size_t>(offset)];
  }
};

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8j..8j+7 give the element offsets of
// the 8 rows of matrix j; lane l receives in register j the elements (row l/4, columns 2(l%4),
// 2(l%4)+1) of matrix j, or with .trans (rows 2(l%4), 2(l%4)+1; column l/4).
Fragment ldmatrix_x4(const Shared& s, const std::array<int, 32>& row_offset, bool trans) {
  Fragment f{};
  for (int lane = 0; lane < 32; ++lane) {
    for (int j = 0; j < 4; ++j) {
      if (!trans) {
        const int base = row_offset[8 * j + lane / 4] + 2 * (lane % 4);
        f[lane][j] = {s.get(base), s.get(base + 1)};
      } else {
        f[lane][j] = {s.get(row_offset[8 * j + 2 * (lane % 4)] + lane / 4),
                      s.get(row_offset[8 * j + 2 * (lane % 4) + 1] + lane / 4)};
      }
    }
  }
  return f;
}

using Acc = std::array<std::array<float, 4>, 32>;  // [lane][c0..c3]

// mma.sync.aligned.m16n8k16.row.col, fragments as in the PTX ISA (g = lane/4, t = lane%4):
// a0 (g, 2t..), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..); b0 (k 2t.., n g), b1 (k 2t+8..,
// n g); c0, c1 (g, 2t, 2t+1), c2, c3 (g+8, 2t, 2t+1). Every element of A and B is checked to come
// from exactly one lane.
void mma(Acc& c, const Fragment& a, int b_reg0, int b_reg1, const Fragment& b) {
  float A[16][16], B[16][8];
  int seen_a[16][16] = {}, seen_b[16][8] = {};
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    const Reg* r = a[lane].data();
    const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
    for (int i = 0; i < 4; ++i) {
      A[rows[i]][cols[i]] = r[i].lo, A[rows[i]][cols[i] + 1] = r[i].hi;
      ++seen_a[rows[i]][cols[i]], ++seen_a[rows[i]][cols[i] + 1];
    }
    const Reg b0 = b[lane][b_reg0], b1 = b[lane][b_reg1];
    B[2 * t][g] = b0.lo, B[2 * t + 1][g] = b0.hi, B[2 * t + 8][g] = b1.lo, B[2 * t + 9][g] = b1.hi;
    ++seen_b[2 * t][g], ++seen_b[2 * t + 1][g], ++seen_b[2 * t + 8][g], ++seen_b[2 * t + 9][g];
  }
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 16; ++j) ASSERT_EQ(seen_a[i][j], 1);
    for (int j = 0; j < 8; ++j) ASSERT_EQ(seen_b[i][j], 1);
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
      const int row = g + (i / 2) * 8, col = 2 * t + (i % 2);
      float sum = 0;
      for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
      c[lane][i] += sum;
    }
  }
}

// The element (row, col) of a 16 x (8 * tiles) accumulator held as acc[tile][lane][i].
float acc_element(const std::vector<Acc>& acc, int row, int col) {
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 4; ++i) {
      const fragment::RowCol rc = fragment::c_element(lane, i);
      if (rc.row == row && rc.col == col % 8) return acc[static_cast<size_t>(col / 8)][lane][i];
    }
  }
  ADD_FAILURE() << "no lane holds (" << row << ", " << col << ")";
  return 0;
}

template <typename F>
std::array<int, 32> offsets(const Shared& s, int row0, int col0, F&& layout) {
  std::array<int, 32> o{};
  for (int lane = 0; lane < 32; ++lane) {
    const fragment::RowCol rc = layout(lane);
    o[lane] = (row0 + rc.row) * s.stride + col0 + rc.col;
  }
  return o;
}

TEST(FragmentLayout, AccumulatorElementsCoverTheTileOnce) {
  int seen[16][8] = {};
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 4; ++i) {
      const fragment::RowCol rc = fragment::c_element(lane, i);
      ASSERT_TRUE(rc.row >= 0 && rc.row < 16 && rc.col >= 0 && rc.col < 8);
      ++seen[rc.row][rc.col];
    }
  }
  for (auto& row : seen) {
    for (int n : row) EXPECT_EQ(n, 1);
  }
}

// S = Q K^T as the forward kernel forms it: Q stored [rows][D] (a_rows), K stored [keys][D]
// (b_rows), a 16-row band at row 16 (warp 1) and keys 16.. of a padded 48 x 40 tile.
TEST(FragmentLayout, QueryKeyProduct) {
  const int D = 32, warp = 1;
  const Shared q(48, D, 8, 1), k(48, D, 8, 2);
  std::vector<Acc> s(4, Acc{});  // n-tiles over keys 16..47
  for (int kk = 0; kk < D / 16; ++kk) {
    const Fragment a = ldmatrix_x4(q, offsets(q, warp * 16, kk * 16, fragment::a_rows), false);
    for (int np = 0; np < 2; ++np) {
      const Fragment b =
          ldmatrix_x4(k, offsets(k, 16 + np * 16, kk * 16, fragment::b_rows), false);
      mma(s[static_cast<size_t>(2 * np)], a, 0, 1, b);
      mma(s[static_cast<size_t>(2 * np + 1)], a, 2, 3, b);
    }
  }
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 32; ++j) {
      float want = 0;
      for (int d = 0; d < D; ++d) want += q.at(warp * 16 + i, d) * k.at(16 + j, d);
      EXPECT_EQ(acc_element(s, i, j), want) << i << ", " << j;
    }
  }
}

// O = P V with P taken from the S accumulators (Note [P from registers]) and V stored [keys][D]
// (b_cols), as the forward kernel does.
TEST(FragmentLayout, ProbabilitiesFromRegistersTimesValues) {
  const int D = 32, keys = 32;
  const Shared q(16, 16, 8, 3), k(keys, 16, 8, 4), v(keys, D, 8, 5);
  // S = Q K^T, 16 x 32, k = 16.
  std::vector<Acc> s(keys / 8, Acc{});
  const Fragment a = ldmatrix_x4(q, offsets(q, 0, 0, fragment::a_rows), false);
  for (int np = 0; np < keys / 16; ++np) {
    const Fragment b = ldmatrix_x4(k, offsets(k, np * 16, 0, fragment::b_rows), false);
    mma(s[static_cast<size_t>(2 * np)], a, 0, 1, b);
    mma(s[static_cast<size_t>(2 * np + 1)], a, 2, 3, b);
  }
  std::vector<Acc> o(D / 8, Acc{});
  for (int kk = 0; kk < keys / 16; ++kk) {
    Fragment p{};
    for (int lane = 0; lane < 32; ++lane) {
      const auto& s0 = s[static_cast<size_t>(2 * kk)][lane];
      const auto& s1 = s[static_cast<size_t>(2 * kk + 1)][lane];
      p[lane] = {Reg{s0[0], s0[1]}, Reg{s0[2], s0[3]}, Reg{s1[0], s1[1]}, Reg{s1[2], s1[3]}};
    }
    for (int dp = 0; dp < D / 16; ++dp) {
      const Fragment b = ldmatrix_x4(v, offsets(v, kk * 16, dp * 16, fragment::b_cols), true);
      mma(o[static_cast<size_t>(2 * dp)], p, 0, 1, b);
      mma(o[static_cast<size_t>(2 * dp + 1)], p, 2, 3, b);
    }
  }
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < D; ++j) {
      float want = 0;
      for (int key = 0; key < keys; ++key) {
        want += acc_element(s, i, key) * v.at(key, j);
      }
      EXPECT_EQ(acc_element(o, i, j), want) << i << ", " << j;
    }
  }
}

// dV = P^T dO as the backward kernel forms it: P stored [query][key] read transposed (a_cols) at
// key columns 16.. (warp 1), dO stored [query][D] (b_cols).
TEST(FragmentLayout, TransposedProduct) {
  const int D = 32, rows = 32, warp = 1;
  const Shared p(rows, 32, 8, 6), d_o(rows, D, 8, 7);
  std::vector<Acc> dv(D / 8, Acc{});
  for (int kk = 0; kk < rows / 16; ++kk) {
    const Fragment a = ldmatrix_x4(p, offsets(p, kk * 16, warp * 16, fragment::a_cols), true);
    for (int np = 0; np < D / 16; ++np) {
      const Fragment b = ldmatrix_x4(d_o, offsets(d_o, kk * 16, np * 16, fragment::b_cols), true);
      mma(dv[static_cast<size_t>(2 * np)], a, 0, 1, b);
      mma(dv[static_cast<size_t>(2 * np + 1)], a, 2, 3, b);
    }
  }
  for (int key = 0; key < 16; ++key) {
    for (int j = 0; j < D; ++j) {
      float want = 0;
      for (int r = 0; r < rows; ++r) {
        want += p.at(r, warp * 16 + key) * d_o.at(r, j);
      }
      EXPECT_EQ(acc_element(dv, key, j), want) << key << ", " << j;
    }
  }
}

// dQ = dS K as the backward kernel forms it: dS stored [query][key] (a_rows), K stored [key][D]
// read as B [k = key][n = d] (b_cols).
TEST(FragmentLayout, ScoresTimesKeys) {
  const int D = 32, keys = 32;
  const Shared ds(16, keys, 8, 8), k(keys, D, 8, 9);
  std::vector<Acc> dq(D / 8, Acc{});
  for (int np = 0; np < D / 16; ++np) {
    for (int kk = 0; kk < keys / 16; ++kk) {
      const Fragment a = ldmatrix_x4(ds, offsets(ds, 0, kk * 16, fragment::a_rows), false);
      const Fragment b = ldmatrix_x4(k, offsets(k, kk * 16, np * 16, fragment::b_cols), true);
      mma(dq[static_cast<size_t>(2 * np)], a, 0, 1, b);
      mma(dq[static_cast<size_t>(2 * np + 1)], a, 2, 3, b);
    }
  }
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < D; ++j) {
      float want = 0;
      for (int key = 0; key < keys; ++key) {
        want += ds.at(i, key) * k.at(key, j);
      }
      EXPECT_EQ(acc_element(dq, i, j), want) << i << ", " << j;
    }
  }
}

}  // namespace
}  // namespace tessera::cuda
