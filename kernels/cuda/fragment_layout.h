#pragma once
// Where each lane of a warp points ldmatrix.x4 so that the four 8x8 matrices it loads are the
// operand fragments of mma.sync.m16n8k16 (bf16 / fp16 inputs, fp32 accumulators). Plain C++ so
// that tests/cuda can check the formulas on the CPU, against an emulation of the two instructions
// written from the PTX ISA's fragment tables (tests/cuda/fragment_layout_test.cpp).
//
// Note [mma.m16n8k16 fragments]
// With g = lane / 4 and t = lane % 4 (PTX ISA, "Matrix Fragments for mma.m16n8k16"):
//   A (16 x 16, m x k), four 32-bit registers of two 16-bit values each (low half first):
//     a0 = (m g,     k 2t..2t+1)   a1 = (m g + 8, k 2t..2t+1)
//     a2 = (m g,     k 2t+8..+9)   a3 = (m g + 8, k 2t+8..+9)
//   B (16 x 8, k x n), two registers:  b0 = (k 2t..2t+1, n g)   b1 = (k 2t+8..+9, n g)
//   C / D (16 x 8, fp32), four floats: c0, c1 = (m g, n 2t, 2t+1)   c2, c3 = (m g + 8, n 2t, 2t+1)
// ldmatrix.x4 loads four 8x8 b16 matrices; lanes 8j..8j+7 give the addresses of the rows of matrix
// j (each row 8 contiguous elements, 16 bytes), and lane l receives in register j the elements
// (row l / 4, columns 2 (l % 4), +1) of matrix j, or with .trans the elements (rows 2 (l % 4), +1;
// column l / 4), i.e. of the transposed matrix.
// So each operand is one ldmatrix.x4 once the lanes point at the right rows:
//   a_rows:  A from an array stored [m][k] (no .trans): matrices (m 0-7, k 0-7), (m 8-15, k 0-7),
//            (m 0-7, k 8-15), (m 8-15, k 8-15) give a0..a3.
//   a_cols:  A from an array stored [k][m] (A is its transpose; .trans): the same four matrices,
//            each read transposed.
//   b_rows:  B for two n-tiles from an array stored [n][k] (no .trans): registers 0, 1 are b0, b1 of
//            n-tile 0 (n 0-7) and registers 2, 3 those of n-tile 1 (n 8-15).
//   b_cols:  B for two n-tiles from an array stored [k][n] (.trans), registers as for b_rows.
// The accumulator of one product (C for n-tiles 2i and 2i+1 of a 16 x 16 block) is, register for
// register, the A fragment of the next product with k = those 16 columns (Note [P from
// registers] in attention_forward.cu).

#if defined(__CUDACC__)
#define TESSERA_HOST_DEVICE __host__ __device__
#else
#define TESSERA_HOST_DEVICE
#endif

namespace tessera::cuda::fragment {

// A position in the stored array: row and column (in elements) of the first of the 8 contiguous
// elements this lane's address points at, relative to the 16 x 16 block being loaded.
struct RowCol {
  int row, col;
};

// A from [m][k] storage: lane l points at row (l % 16), column block (l / 16).
TESSERA_HOST_DEVICE constexpr RowCol a_rows(int lane) { return {lane % 16, (lane / 16) * 8}; }

// A from [k][m] storage (.trans): stored rows are k, stored columns m.
TESSERA_HOST_DEVICE constexpr RowCol a_cols(int lane) {
  return {(lane % 8) + (lane / 16) * 8, ((lane / 8) % 2) * 8};
}

// B (two n-tiles) from [n][k] storage: stored rows are n, stored columns k.
TESSERA_HOST_DEVICE constexpr RowCol b_rows(int lane) {
  return {(lane % 8) + (lane / 16) * 8, ((lane / 8) % 2) * 8};
}

// B (two n-tiles) from [k][n] storage (.trans): stored rows are k, stored columns n.
TESSERA_HOST_DEVICE constexpr RowCol b_cols(int lane) {
  return {(lane % 8) + ((lane / 8) % 2) * 8, (lane / 16) * 8};
}

// Accumulator element i (0..3) of a lane: its row (m) and column (n) in the 16 x 8 tile.
TESSERA_HOST_DEVICE constexpr RowCol c_element(int lane, int i) {
  return {lane / 4 + (i / 2) * 8, (lane % 4) * 2 + (i % 2)};
}

}  // namespace tessera::cuda::fragment
