//===- ContractionToGemm.cpp - matrix products to the GEMM library -*- C++ -*-===//
//
// On the cuda path a kernel's contraction leaves the GPU kernels and becomes
// a `lathe.gemm` between their launches, so cuBLASLt computes it. What the
// kernel did around the product (zero fill, residual copy, bias, activation)
// folds into the descriptor, so that fusion survives the library call.
//
//===----------------------------------------------------------------------===//

#include "GemmView.h"
#include "Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

#include <cmath>

namespace mlir::lathe {
#define GEN_PASS_DEF_CONTRACTIONTOGEMM
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {

/// Evaluates a one-input elementwise body at `x` (double precision), for the
/// few ops an activation is built from; nullopt for anything else.
static std::optional<double> evaluate(Block &body, double x) {
  DenseMap<Value, double> value;
  value[body.getArgument(0)] = x;
  auto get = [&](Value v) -> std::optional<double> {
    auto it = value.find(v);
    if (it != value.end())
      return it->second;
    return std::nullopt;
  };
  for (Operation &op : body) {
    if (auto yield = dyn_cast<linalg::YieldOp>(op))
      return yield.getNumOperands() == 1 ? get(yield.getOperand(0))
                                         : std::nullopt;
    SmallVector<double, 2> in;
    for (Value operand : op.getOperands()) {
      std::optional<double> v = get(operand);
      if (!v) {
        // A constant defined outside the body.
        auto cst = operand.getDefiningOp<arith::ConstantOp>();
        auto f = cst ? dyn_cast<FloatAttr>(cst.getValue()) : nullptr;
        if (!f)
          return std::nullopt;
        v = f.getValueAsDouble();
      }
      in.push_back(*v);
    }
    double r;
    if (auto cst = dyn_cast<arith::ConstantOp>(op)) {
      auto f = dyn_cast<FloatAttr>(cst.getValue());
      if (!f)
        return std::nullopt;
      r = f.getValueAsDouble();
    } else if (isa<arith::MulFOp>(op)) {
      r = in[0] * in[1];
    } else if (isa<arith::AddFOp>(op)) {
      r = in[0] + in[1];
    } else if (isa<arith::SubFOp>(op)) {
      r = in[0] - in[1];
    } else if (isa<arith::DivFOp>(op)) {
      r = in[0] / in[1];
    } else if (isa<arith::NegFOp>(op)) {
      r = -in[0];
    } else if (isa<arith::MaximumFOp, arith::MaxNumFOp>(op)) {
      r = std::max(in[0], in[1]);
    } else if (isa<math::TanhOp>(op)) {
      r = std::tanh(in[0]);
    } else {
      return std::nullopt;
    }
    value[op.getResult(0)] = r;
  }
  return std::nullopt;
}

/// The epilogue an elementwise one-input generic computes, if any: its body
/// agrees with GELU's tanh form or with ReLU at sample points spanning both
/// signs and the curved part of GELU.
static std::optional<GemmEpilogue> activationOf(linalg::GenericOp op) {
  if (op.getNumDpsInputs() != 1 || op.getNumDpsInits() != 1 ||
      op.getNumReductionLoops() != 0 ||
      !llvm::all_of(op.getIndexingMapsArray(),
                    [](AffineMap m) { return m.isIdentity(); }))
    return std::nullopt;
  Block &body = op.getRegion().front();
  if (!body.getArgument(1).use_empty())
    return std::nullopt;
  auto gelu = [](double x) {
    return 0.5 * x *
           (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  };
  bool isGelu = true, isRelu = true;
  for (double x : {-4.0, -1.5, -0.7, -0.1, 0.0, 0.3, 1.0, 2.5, 6.0}) {
    std::optional<double> y = evaluate(body, x);
    if (!y)
      return std::nullopt;
    double tol = 1e-6 * std::max(1.0, std::fabs(*y));
    isGelu &= std::fabs(*y - gelu(x)) <= tol;
    isRelu &= std::fabs(*y - std::max(x, 0.0)) <= tol;
  }
  if (isGelu)
    return GemmEpilogue::gelu;
  if (isRelu)
    return GemmEpilogue::relu;
  return std::nullopt;
}

/// `out[i, j] = in[i, j] + bias[j]` on a 2-D buffer: the bias it adds.
static Value biasOf(linalg::GenericOp op, Value in) {
  if (op.getNumDpsInputs() != 2 || op.getNumDpsInits() != 1 ||
      op.getNumReductionLoops() != 0 || op.getNumLoops() != 2)
    return {};
  SmallVector<AffineMap> maps = op.getIndexingMapsArray();
  MLIRContext *ctx = op.getContext();
  AffineMap identity = AffineMap::getMultiDimIdentityMap(2, ctx);
  AffineMap columns = AffineMap::get(2, 0, getAffineDimExpr(1, ctx));
  if (maps[2] != identity)
    return {};
  Block &body = op.getRegion().front();
  auto yield = cast<linalg::YieldOp>(body.getTerminator());
  auto add = yield.getOperand(0).getDefiningOp<arith::AddFOp>();
  if (body.getOperations().size() != 2 || !add)
    return {};
  for (int self : {0, 1}) {
    int other = 1 - self;
    if (op.getDpsInputs()[self] == in && maps[self] == identity &&
        maps[other] == columns &&
        ((add.getLhs() == body.getArgument(self) &&
          add.getRhs() == body.getArgument(other)) ||
         (add.getRhs() == body.getArgument(self) &&
          add.getLhs() == body.getArgument(other))))
      return op.getDpsInputs()[other];
  }
  return {};
}

struct ContractionToGemm
    : lathe::impl::ContractionToGemmBase<ContractionToGemm> {
  using Base::Base;

  void runOnOperation() override {
    std::optional<GemmPrecision> format = symbolizeGemmPrecision(precision);
    if (!format) {
      getOperation().emitError("lathe-contraction-to-gemm: unknown precision '")
          << precision << "' (f32, tf32, bf16 or f16)";
      return signalPassFailure();
    }
    for (auto fn : getOperation().getOps<func::FuncOp>())
      if (fn->hasAttr(kKernelAttrName) && !fn.isExternal())
        convert(fn, *format);
  }

  void convert(func::FuncOp fn, GemmPrecision format) {
    llvm::SmallDenseSet<int64_t> unread;
    if (auto attr = fn->getAttrOfType<DenseI64ArrayAttr>(kUnreadArgsAttrName))
      unread.insert(attr.asArrayRef().begin(), attr.asArrayRef().end());
    auto isArg = [&](Value v) {
      auto arg = dyn_cast<BlockArgument>(v);
      return arg && arg.getOwner() == &fn.getBody().front();
    };
    // Nothing outside `except` reads `v`, here or after the kernel.
    auto readOnlyBy = [&](Value v, ArrayRef<Operation *> except) {
      if (!unread.contains(cast<BlockArgument>(v).getArgNumber()))
        return false;
      return llvm::all_of(v.getUsers(), [&](Operation *user) {
        return llvm::is_contained(except, user);
      });
    };

    SmallVector<linalg::GenericOp> candidates(
        fn.getBody().front().getOps<linalg::GenericOp>());
    // Epilogues folded into an earlier product are gone from the list.
    llvm::SmallPtrSet<Operation *, 8> erased;
    for (linalg::GenericOp op : candidates) {
      if (erased.contains(op))
        continue;
      std::optional<GemmView> g = describeContraction(op);
      if (!g || g->groupB != 1)
        continue; // cuBLASLt cannot share B between batches
      Value a = op.getDpsInputs()[0], b = op.getDpsInputs()[1];
      Value out = op.getDpsInits()[0];
      if (!isArg(a) || !isArg(b) || !isArg(out))
        continue;

      // What C is: nothing (zero fill), a copied residual, or D itself.
      SmallVector<Operation *> folded = {op};
      Value c = out;
      if (linalg::FillOp fill = zeroFillBefore(op)) {
        folded.push_back(fill);
        c = nullptr;
      } else if (auto copy =
                     dyn_cast_or_null<linalg::CopyOp>(op->getPrevNode());
                 copy && copy.getOutputs()[0] == out &&
                 isArg(copy.getInputs()[0]) &&
                 copy.getInputs()[0].getType() == out.getType()) {
        folded.push_back(copy);
        c = copy.getInputs()[0];
      }

      // The epilogue: a bias along rows, then an activation, each folded
      // when the value it consumes is needed by nobody else.
      Value d = out, bias, aux;
      GemmEpilogue epilogue = GemmEpilogue::none;
      Operation *last = op;
      if (g->batch == 1) {
        auto next = dyn_cast_or_null<linalg::GenericOp>(last->getNextNode());
        if (next && isArg(next.getDpsInits()[0])) {
          Value b2 = biasOf(next, d);
          SmallVector<Operation *> users(folded);
          users.push_back(next);
          if (b2 && isArg(b2) && readOnlyBy(d, users)) {
            folded.push_back(next);
            bias = b2;
            d = next.getDpsInits()[0];
            last = next;
          }
        }
        next = dyn_cast_or_null<linalg::GenericOp>(last->getNextNode());
        std::optional<GemmEpilogue> act;
        if (next && next.getDpsInputs().size() == 1 &&
            next.getDpsInputs()[0] == d && isArg(next.getDpsInits()[0]) &&
            (act = activationOf(next))) {
          SmallVector<Operation *> users(folded);
          users.push_back(next);
          if (!readOnlyBy(d, users)) {
            // Still read: keep the pre-activation value as the aux output.
            // cuBLASLt keeps GELU's (ReLU's is a bit mask), with a leading
            // dimension divisible by 8, and C must not be that buffer.
            bool keepable = *act == GemmEpilogue::gelu && g->ldc % 8 == 0 &&
                            d != c;
            aux = keepable ? d : Value();
          }
          if (aux || readOnlyBy(d, users)) {
            folded.push_back(next);
            epilogue = *act;
            d = next.getDpsInits()[0];
          }
        }
      }

      OpBuilder builder(op);
      auto i64 = [&](int64_t v) { return builder.getI64IntegerAttr(v); };
      auto gemm = GemmOp::create(
          builder, op.getLoc(), a, b, d, c, bias, aux, i64(g->m), i64(g->n),
          i64(g->k), builder.getBoolAttr(g->transA),
          builder.getBoolAttr(g->transB), i64(g->lda), i64(g->ldb),
          i64(g->ldc), i64(g->batch), i64(g->strideA), i64(g->strideB),
          i64(g->strideC), GemmEpilogueAttr::get(&getContext(), epilogue),
          GemmPrecisionAttr::get(&getContext(), format));
      (void)gemm;
      for (Operation *dead : folded) {
        erased.insert(dead);
        dead->erase();
      }
    }
  }
};

} // namespace
