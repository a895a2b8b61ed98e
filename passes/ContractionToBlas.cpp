//===- ContractionToBlas.cpp - matrix products through the host BLAS -*- C++ -*-===//
//
// The GEMM view of a contraction (GemmView.h) becomes a call of the host's
// BLAS through the runtime's `lathe_host_gemm`.
//
//===----------------------------------------------------------------------===//

#include "GemmView.h"
#include "Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/SymbolTable.h"

namespace mlir::lathe {
#define GEN_PASS_DEF_CONTRACTIONTOBLAS
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {

constexpr llvm::StringLiteral kGemmName = "lathe_host_gemm";

struct ContractionToBlas
    : lathe::impl::ContractionToBlasBase<ContractionToBlas> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<linalg::GenericOp> candidates;
    module.walk([&](linalg::GenericOp op) { candidates.push_back(op); });
    func::FuncOp decl;
    for (linalg::GenericOp op : candidates) {
      std::optional<GemmView> g = describeContraction(op);
      if (!g)
        continue;
      OpBuilder b(op);
      Location loc = op.getLoc();
      auto i64 = b.getI64Type();
      if (!decl) {
        OpBuilder mb(module.getBodyRegion());
        SmallVector<Type> args(17, i64);
        decl = func::FuncOp::create(mb, loc, kGemmName,
                                    mb.getFunctionType(args, {}));
        decl.setPrivate();
      }
      // A zero fill right before, of exactly the output, is the GEMM's
      // beta = 0.
      Value out = op.getDpsInits()[0];
      int64_t accumulate = 1;
      if (linalg::FillOp fill = zeroFillBefore(op)) {
        fill->erase();
        accumulate = 0;
      }
      auto pointer = [&](Value memref) -> Value {
        Value p = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, memref);
        return arith::IndexCastOp::create(b, loc, i64, p);
      };
      auto cst = [&](int64_t v) -> Value {
        return arith::ConstantIntOp::create(b, loc, i64, v);
      };
      SmallVector<Value> args = {
          pointer(op.getDpsInputs()[0]), pointer(op.getDpsInputs()[1]),
          pointer(out), cst(g->m), cst(g->n), cst(g->k), cst(g->transA),
          cst(g->transB), cst(g->lda), cst(g->ldb), cst(g->ldc),
          cst(g->batch), cst(g->strideA), cst(g->strideB), cst(g->groupB),
          cst(g->strideC), cst(accumulate)};
      func::CallOp::create(b, loc, decl, args);
      op->erase();
    }
  }
};

} // namespace
