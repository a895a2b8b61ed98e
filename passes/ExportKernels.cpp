//===- ExportKernels.cpp - the external ABI of kernels -----------*- C++ -*-===//
//
// A bufferized kernel must be `(memref...) -> ()` with static identity-layout
// memrefs: that is what lets the runtime call it with one pointer per buffer.
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include "mlir/IR/BuiltinTypes.h"

namespace mlir::lathe {
#define GEN_PASS_DEF_EXPORTKERNELS
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {
struct ExportKernels : lathe::impl::ExportKernelsBase<ExportKernels> {
  void runOnOperation() override {
    for (auto fn : getOperation().getOps<func::FuncOp>()) {
      if (!fn->hasAttr(kKernelAttrName))
        continue;
      FunctionType type = fn.getFunctionType();
      if (type.getNumResults() != 0) {
        fn.emitOpError("kernel still returns values after bufferization; "
                       "run drop-equivalent-buffer-results first");
        return signalPassFailure();
      }
      for (Type input : type.getInputs()) {
        auto memref = dyn_cast<MemRefType>(input);
        if (!memref || !memref.hasStaticShape() ||
            !memref.getLayout().isIdentity()) {
          fn.emitOpError("kernel argument ")
              << input << " is not a static identity-layout memref";
          return signalPassFailure();
        }
      }
      fn.setPublic();
    }
  }
};
} // namespace
