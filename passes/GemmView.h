//===- GemmView.h - a contraction seen as a GEMM ------------------*- C++ -*-===//
//
// Shared by the back ends' GEMM passes: the host BLAS call on the cpu
// (lathe-contraction-to-blas) and the cuBLASLt descriptor on cuda
// (lathe-contraction-to-gemm) address a bufferized contraction the same way.
//
//===----------------------------------------------------------------------===//
#ifndef LATHE_PASSES_GEMMVIEW_H
#define LATHE_PASSES_GEMMVIEW_H

#include "mlir/Dialect/Linalg/IR/Linalg.h"

#include <optional>

namespace mlir::lathe {

/// For each batch b, C_b (m x n, row-major, ldc) [+]= op(A_b) op(B_{b/groupB})
/// with op(A) m x k and op(B) k x n; strides and leading dimensions in
/// elements.
struct GemmView {
  int64_t m, n, k, transA, transB, lda, ldb, ldc;
  int64_t batch = 1, strideA = 0, strideB = 0, groupB = 1, strideC = 0;
};

/// The body is `out + in0 * in1` (either order of either operation): a
/// contraction's multiply-accumulate. The cpu and cuda GEMM passes and the
/// report's count of GEMM FLOPs share it.
bool isMulAdd(linalg::LinalgOp op);

/// A `linalg.generic` on row-major f32 buffers that accumulates `a * b` over
/// one reduction dimension, as a GEMM; nullopt when no GEMM can address it
/// (every matrix needs a unit stride on one of its two dimensions).
std::optional<GemmView> describeContraction(linalg::GenericOp op);

/// The `linalg.fill` right before `op` that zero-fills exactly its output
/// (the GEMM's beta = 0), or null.
linalg::FillOp zeroFillBefore(linalg::GenericOp op);

} // namespace mlir::lathe

#endif // LATHE_PASSES_GEMMVIEW_H
