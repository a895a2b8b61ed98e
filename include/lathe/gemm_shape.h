//===- gemm_shape.h - what a GEMM descriptor may address ----------*- C++ -*-===//
//
// Shared by the compiler (lathe.gemm's verifier) and the runtime (the
// artifact's Launch.gemm): both refuse a descriptor that would make the GEMM
// library read or write outside its buffers, with the same words. Header-only
// and free of MLIR and flatbuffers, so that both sides include it.
//
//===----------------------------------------------------------------------===//
#ifndef LATHE_GEMM_SHAPE_H
#define LATHE_GEMM_SHAPE_H

#include <cstdint>
#include <string>

namespace lathe {

/// Row-major: for each batch i < batch, D_i (m x n, ldd) = op(A_i) op(B_i)
/// with op(A) m x k (trans_a: A stored k x m) and op(B) k x n (trans_b: B
/// stored n x k). Sizes in elements; a negative size: operand absent.
struct GemmShape {
  int64_t m = 0, n = 0, k = 0, batch = 1;
  bool transA = false, transB = false;
  int64_t lda = 0, ldb = 0, ldd = 0;
  int64_t strideA = 0, strideB = 0, strideD = 0;
  int64_t sizeA = 0, sizeB = 0, sizeD = 0;
  int64_t sizeC = -1, sizeBias = -1, sizeAux = -1;
};

/// Empty when the descriptor stays inside its buffers; otherwise why not.
/// `aux` (GELU's input, kept for the backward) has cuBLASLt's constraint: a
/// leading dimension divisible by 8.
inline std::string checkGemmShape(const GemmShape &g) {
  const int64_t limit = int64_t(1) << 31; // cuBLASLt's int dimensions
  if (g.m < 1 || g.n < 1 || g.k < 1 || g.batch < 1)
    return "needs m, n, k and batch >= 1";
  if (g.m >= limit || g.n >= limit || g.k >= limit || g.batch >= limit)
    return "has a dimension of 2^31 or more";
  if (g.strideA < 0 || g.strideB < 0 || g.strideD < 0)
    return "has a negative batch stride";
  auto fits = [&](const char *name, int64_t size, int64_t rows, int64_t cols,
                  int64_t ld, int64_t stride) -> std::string {
    if (ld < cols || ld >= limit)
      return std::string("has a leading dimension ") + std::to_string(ld) +
             " for the " + std::to_string(cols) + " columns of " + name;
    // The last element any batch touches, in 128-bit arithmetic's stead:
    // every factor is below 2^31, so each product fits in 63 bits.
    int64_t last = (g.batch - 1) * stride + (rows - 1) * ld + cols - 1;
    if (last >= size)
      return std::string("addresses element ") + std::to_string(last) +
             " of " + name + ", which has " + std::to_string(size);
    return {};
  };
  if (g.strideA >= limit || g.strideB >= limit || g.strideD >= limit)
    return "has a batch stride of 2^31 or more";
  std::string why;
  if (!(why = fits("a", g.sizeA, g.transA ? g.k : g.m, g.transA ? g.m : g.k,
                   g.lda, g.strideA))
           .empty() ||
      !(why = fits("b", g.sizeB, g.transB ? g.n : g.k, g.transB ? g.k : g.n,
                   g.ldb, g.strideB))
           .empty() ||
      !(why = fits("d", g.sizeD, g.m, g.n, g.ldd, g.strideD)).empty())
    return why;
  if (g.sizeC >= 0 &&
      !(why = fits("c", g.sizeC, g.m, g.n, g.ldd, g.strideD)).empty())
    return why;
  if (g.sizeAux >= 0) {
    if (!(why = fits("aux", g.sizeAux, g.m, g.n, g.ldd, g.strideD)).empty())
      return why;
    if (g.ldd % 8 != 0 || g.strideD % 8 != 0)
      return "keeps aux with a leading dimension or batch stride not "
             "divisible by 8";
  }
  if (g.sizeBias >= 0 && g.sizeBias != g.n)
    return "needs a bias of n = " + std::to_string(g.n) + " elements, not " +
           std::to_string(g.sizeBias);
  return {};
}

} // namespace lathe

#endif // LATHE_GEMM_SHAPE_H
