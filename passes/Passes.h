//===- Passes.h - lathe passes -----------------------------------*- C++ -*-===//
#ifndef LATHE_PASSES_H
#define LATHE_PASSES_H

#include "lathe/LatheOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Pass/Pass.h"

namespace mlir::lathe {

#define GEN_PASS_DECL
#include "Passes.h.inc"

/// The integer attribute by which `lathe-plan-fusion` tells kernel formation
/// which ops form one kernel.
inline constexpr llvm::StringLiteral kFusionGroupAttrName = "lathe.fusion_group";

/// An estimate of a loop nest's work (inner iterations), for the CPU
/// partitioner, where the parallel trip count alone understates it.
inline constexpr llvm::StringLiteral kWorkAttrName = "lathe.work";

/// The position offset of row 0: element 0 of a tensor<1xi32>, or 0 when
/// `offset` is null. Built inside a generic's body, the kernel formed around
/// it takes the offset tensor as an input.
Value positionOffset(OpBuilder &b, Location loc, Value offset);

/// Both attention expansions (the CPU loop nest and the GPU kernels) build
/// these the same way; ExpandFusedAttention.cpp defines them.
///
/// The first key row `row` may see: 0, or in a batch of windows (a
/// fused_attention's `window`, 0 for none) its window's first row,
/// row - row mod window.
Value windowStart(OpBuilder &b, Location loc, Value row, int64_t window);
/// An online softmax's output row: the value sum over the denominator
/// (softpick's denominator plus its 1e-8).
Value normalizedRow(OpBuilder &b, Location loc, bool softpick, Value acc,
                    Value denom);

/// Whether lathe-attention-to-gpu gives `op` its tensor-core kernel when
/// products are formed in `precision` (f32, tf32, bf16, f16): many query
/// rows, no position, head_dim a multiple of 8 and a precision below f32.
/// The cuda report prices such attention's products at the tf32 peak.
bool attentionUsesTensorCores(FusedAttentionOp op, StringRef precision);

/// What one (query row, key) pair contributes to attention's gradient, for
/// the structured lowering of lathe.attention_grad and the GPU's tiled one
/// alike: given the unscaled score s = q . k, dp = dO . v, the row's shift S
/// (its maximum scaled score; softpick's clamped at 0), normaliser and
/// rs = rowsum(dO * o), the weight p (for dV) and ds = dL/d(q . k) (for dQ
/// and dK). With z = s / sqrt(head_dim) and e = e^(z - S): softmax
/// p = e / norm, dz = p (dp - rs); softpick A = e - e^-S,
/// p = max(A, 0) / norm, dz = e / norm ([A > 0] dp - sign(A) rs); then
/// ds = dz / sqrt(head_dim) (`scale`). A pair that is not `valid` gives 0, 0.
struct AttentionPairGrad {
  Value p, ds;
};
AttentionPairGrad attentionPairGrad(OpBuilder &b, Location l, bool softpick,
                                    float scale, Value valid, Value s,
                                    Value dp, Value shift, Value norm,
                                    Value rs);

/// The scf.parallel loops under `root` that no other scf.parallel encloses:
/// the loops the GPU passes map (and vectorize) one kernel launch each.
SmallVector<scf::ParallelOp> outermostParallelLoops(Operation *root);

/// The ops of type OpT under `root`, for a pass that expands them into
/// loops on buffers; failure, with an error naming `pass` on each, where one
/// is still on tensors.
template <typename OpT>
FailureOr<SmallVector<OpT>> bufferizedOps(Operation *root, StringRef pass) {
  SmallVector<OpT> ops;
  bool onTensors = false;
  root->walk([&](OpT op) {
    if (!isa<MemRefType>(op.getInit().getType())) {
      op.emitOpError("must be bufferized before ") << pass;
      onTensors = true;
    }
    ops.push_back(op);
  });
  if (onTensors)
    return failure();
  return ops;
}

#define GEN_PASS_REGISTRATION
#include "Passes.h.inc"

} // namespace mlir::lathe

#endif // LATHE_PASSES_H
