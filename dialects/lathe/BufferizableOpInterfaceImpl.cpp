//===- BufferizableOpInterfaceImpl.cpp - bufferizing kernel ops --*- C++ -*-===//
//
// lathe.fused_attention and lathe.scatter_add_rows are in destination-passing
// style, so one-shot bufferization handles them like linalg ops: the result
// is the init's buffer, and the op is recreated on buffers with no results.
//
//===----------------------------------------------------------------------===//

#include "lathe/LatheOps.h"

#include "mlir/Dialect/Bufferization/IR/BufferizableOpInterface.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Bufferization/IR/DstBufferizableOpInterfaceImpl.h"
#include "mlir/IR/DialectRegistry.h"

using namespace mlir;
using namespace mlir::lathe;
using namespace mlir::bufferization;

namespace {
/// Every operand's buffer, in operand order.
LogicalResult getBuffers(Operation *op, RewriterBase &rewriter,
                         const BufferizationOptions &options,
                         BufferizationState &state,
                         SmallVectorImpl<Value> &buffers) {
  for (Value operand : op->getOperands()) {
    FailureOr<Value> buffer = getBuffer(rewriter, operand, options, state);
    if (failed(buffer))
      return failure();
    buffers.push_back(*buffer);
  }
  return success();
}

struct FusedAttentionBufferization
    : DstBufferizableOpInterfaceExternalModel<FusedAttentionBufferization,
                                              FusedAttentionOp> {
  LogicalResult bufferize(Operation *op, RewriterBase &rewriter,
                          const BufferizationOptions &options,
                          BufferizationState &state) const {
    auto attention = cast<FusedAttentionOp>(op);
    SmallVector<Value> buffers;
    if (failed(getBuffers(op, rewriter, options, state, buffers)))
      return failure();
    rewriter.setInsertionPoint(op);
    // Operand order: query, key, value, [offset], init.
    Value offset = attention.getOffset() ? buffers[3] : Value();
    FusedAttentionOp::create(rewriter, op->getLoc(), TypeRange{}, buffers[0],
                             buffers[1], buffers[2], offset, buffers.back(),
                             attention.getHeadsAttr(),
                             attention.getKvHeadsAttr(),
                             attention.getNormalizerAttr(),
                             attention.getWindowAttr());
    replaceOpWithBufferizedValues(rewriter, op, buffers.back());
    return success();
  }
};

/// lathe.scatter_add_rows updates its init in place: the init is read as
/// well as written (the rows add to what is there).
struct ScatterAddRowsBufferization
    : DstBufferizableOpInterfaceExternalModel<ScatterAddRowsBufferization,
                                              ScatterAddRowsOp> {
  bool bufferizesToMemoryRead(Operation *, OpOperand &,
                              const AnalysisState &) const {
    return true;
  }
  LogicalResult bufferize(Operation *op, RewriterBase &rewriter,
                          const BufferizationOptions &options,
                          BufferizationState &state) const {
    SmallVector<Value> buffers;
    if (failed(getBuffers(op, rewriter, options, state, buffers)))
      return failure();
    rewriter.setInsertionPoint(op);
    ScatterAddRowsOp::create(rewriter, op->getLoc(), TypeRange{}, buffers[0],
                             buffers[1], buffers[2]);
    replaceOpWithBufferizedValues(rewriter, op, buffers[2]);
    return success();
  }
};
} // namespace

void mlir::lathe::registerBufferizableOpInterfaceExternalModels(
    DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, LatheDialect *) {
    FusedAttentionOp::attachInterface<FusedAttentionBufferization>(*ctx);
    ScatterAddRowsOp::attachInterface<ScatterAddRowsBufferization>(*ctx);
  });
}
