//===- ExtractKernels.cpp - keep only kernels for a back end -----*- C++ -*-===//
#include "Passes.h"

namespace mlir::lathe {
#define GEN_PASS_DEF_EXTRACTKERNELS
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {
struct ExtractKernels : lathe::impl::ExtractKernelsBase<ExtractKernels> {
  void runOnOperation() override {
    SmallVector<Operation *> dead;
    for (Operation &op : getOperation().getOps()) {
      if (isa<ParamOp, CacheOp>(op))
        dead.push_back(&op);
      else if (auto fn = dyn_cast<func::FuncOp>(op))
        if (!fn->hasAttr(kKernelAttrName))
          dead.push_back(&op);
    }
    for (Operation *op : dead)
      op->erase();
  }
};
} // namespace
