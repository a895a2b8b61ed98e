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
  /// The schedule is about to go: record on each kernel which of its results
  /// no launch of it hands to anyone (see kUnreadArgsAttrName).
  void markUnreadResults() {
    ModuleOp module = getOperation();
    llvm::StringMap<llvm::BitVector> read;
    llvm::StringMap<unsigned> operands;
    module.walk([&](LaunchOp launch) {
      operands[launch.getCallee()] = launch.getNumOperands();
      llvm::BitVector &bits = read[launch.getCallee()];
      bits.resize(launch.getNumResults());
      for (auto [i, result] : llvm::enumerate(launch.getResults()))
        if (!result.use_empty() || launch.getTiedOperand(i))
          bits.set(i);
    });
    for (auto fn : module.getOps<func::FuncOp>()) {
      auto it = read.find(fn.getSymName());
      if (!fn->hasAttr(kKernelAttrName) || it == read.end())
        continue;
      // A bufferized kernel's arguments are the launch's operands, then one
      // buffer per result.
      int64_t first = operands.lookup(fn.getSymName());
      SmallVector<int64_t> unread;
      for (unsigned i = 0; i < it->second.size(); ++i)
        if (!it->second.test(i))
          unread.push_back(first + i);
      if (!unread.empty())
        fn->setAttr(kUnreadArgsAttrName,
                    DenseI64ArrayAttr::get(fn.getContext(), unread));
    }
  }

  void runOnOperation() override {
    markUnreadResults();
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
