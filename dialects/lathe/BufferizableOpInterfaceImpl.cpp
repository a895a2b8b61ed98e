//===- BufferizableOpInterfaceImpl.cpp - bufferizing kernel ops --*- C++ -*-===//
//
// lathe.fused_attention, lathe.fused_attention_grad and
// lathe.scatter_add_rows are in destination-passing style, so one-shot
// bufferization handles them like linalg ops: the results are the inits'
// buffers, and the op is recreated on buffers with no results.
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

/// The same op on the operands' buffers, with no results, in place of `op`:
/// its inits' buffers stand for its results. Every kernel-level op here
/// bufferizes this way; they differ only in whether the init is also read.
static LogicalResult bufferizeOnBuffers(Operation *op, RewriterBase &rewriter,
                                        const BufferizationOptions &options,
                                        BufferizationState &state) {
  SmallVector<Value> buffers;
  if (failed(getBuffers(op, rewriter, options, state, buffers)))
    return failure();
  rewriter.setInsertionPoint(op);
  OperationState onBuffers(op->getLoc(), op->getName());
  onBuffers.addOperands(buffers);
  onBuffers.addAttributes(op->getAttrs());
  rewriter.create(onBuffers);
  auto dps = cast<DestinationStyleOpInterface>(op);
  SmallVector<Value> inits;
  for (OpOperand &init : dps.getDpsInitsMutable())
    inits.push_back(buffers[init.getOperandNumber()]);
  replaceOpWithBufferizedValues(rewriter, op, inits);
  return success();
}

/// lathe.fused_attention and lathe.fused_attention_grad overwrite their
/// inits (the output; the gradients and the stats workspace).
template <typename OpT>
struct OverwritingKernelBufferization
    : DstBufferizableOpInterfaceExternalModel<
          OverwritingKernelBufferization<OpT>, OpT> {
  LogicalResult bufferize(Operation *op, RewriterBase &rewriter,
                          const BufferizationOptions &options,
                          BufferizationState &state) const {
    return bufferizeOnBuffers(op, rewriter, options, state);
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
    return bufferizeOnBuffers(op, rewriter, options, state);
  }
};
} // namespace

void mlir::lathe::registerBufferizableOpInterfaceExternalModels(
    DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, LatheDialect *) {
    FusedAttentionOp::attachInterface<
        OverwritingKernelBufferization<FusedAttentionOp>>(*ctx);
    FusedAttentionGradOp::attachInterface<
        OverwritingKernelBufferization<FusedAttentionGradOp>>(*ctx);
    ScatterAddRowsOp::attachInterface<ScatterAddRowsBufferization>(*ctx);
  });
}
