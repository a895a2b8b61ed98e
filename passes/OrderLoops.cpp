//===- OrderLoops.cpp - unit-stride loops innermost on the CPU ---*- C++ -*-===//
//
// Kernel formation writes generics in the order the math reads (output
// dimensions first, reductions last). That is the right order when the
// reduced dimension is the contiguous one (a row's softmax), and the wrong
// one when it is not (a column's sum over rows): the innermost loop then
// strides through memory and LLVM cannot vectorize it. Interchange fixes the
// order before the CPU partitioner lowers ops to loops.
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/IR/PatternMatch.h"

namespace mlir::lathe {
#define GEN_PASS_DEF_ORDERLOOPS
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {

/// For each loop, the elements of the operands whose innermost dimension it
/// indexes with unit stride: the data a vectorized inner loop would stream.
static SmallVector<int64_t> contiguityScores(linalg::GenericOp op) {
  SmallVector<int64_t> scores(op.getNumLoops(), 0);
  for (OpOperand &operand : op->getOpOperands()) {
    auto type = dyn_cast<MemRefType>(operand.get().getType());
    if (!type || type.getRank() == 0 || !type.hasStaticShape())
      continue;
    SmallVector<int64_t> strides;
    int64_t offset;
    if (failed(type.getStridesAndOffset(strides, offset)) ||
        strides.back() != 1)
      continue;
    AffineMap map = op.getMatchingIndexingMap(&operand);
    auto dim = dyn_cast<AffineDimExpr>(map.getResults().back());
    if (dim && type.getShape().back() > 1)
      scores[dim.getPosition()] += type.getNumElements();
  }
  return scores;
}

struct OrderLoops : lathe::impl::OrderLoopsBase<OrderLoops> {
  using Base::Base;

  void runOnOperation() override {
    SmallVector<linalg::GenericOp> ops;
    getOperation()->walk([&](func::FuncOp fn) {
      if (fn->hasAttr(kKernelAttrName))
        fn.walk([&](linalg::GenericOp op) { ops.push_back(op); });
    });
    IRRewriter rewriter(&getContext());
    for (linalg::GenericOp op : ops) {
      unsigned loops = op.getNumLoops();
      if (loops < 2 || !op.hasPureBufferSemantics())
        continue;
      SmallVector<int64_t> scores = contiguityScores(op);
      unsigned best = loops - 1;
      for (unsigned d = 0; d < loops; ++d)
        if (scores[d] > scores[best])
          best = d;
      if (best == loops - 1)
        continue;
      SmallVector<unsigned> order;
      for (unsigned d = 0; d < loops; ++d)
        if (d != best)
          order.push_back(d);
      order.push_back(best);
      rewriter.setInsertionPoint(op);
      if (failed(linalg::interchangeGenericOp(rewriter, op, order))) {
        op.emitOpError("cannot interchange its loops");
        return signalPassFailure();
      }
    }
  }
};

} // namespace
