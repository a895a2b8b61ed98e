//===- Differentiate.cpp - the backward graph in lathe ops -------*- C++ -*-===//
//
// Reverse-mode differentiation at the architecture level: the pass walks a
// loss function backwards and lets every op state its own vector-Jacobian
// product (VjpOpInterface, dialects/lathe/Vjp.cpp). The result is a lathe
// function again, so `--emit=lathe` shows the backward graph and the rest of
// the pipeline lowers and fuses it like any forward graph.
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

namespace mlir::lathe {
#define GEN_PASS_DEF_DIFFERENTIATE
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {

constexpr llvm::StringLiteral kDifferentiateAttr = "lathe.differentiate";
constexpr llvm::StringLiteral kGradientsAttr = "lathe.gradients";
constexpr llvm::StringLiteral kAccumulateAttr = "lathe.accumulate_gradients";

/// A tensor of `type` filled with `value`: a linalg.fill rather than a
/// dense constant, which would become a global that GPU kernels cannot read.
Value filled(OpBuilder &b, Location loc, Type type, float value) {
  auto t = llvm::cast<RankedTensorType>(type);
  Value empty = tensor::EmptyOp::create(b, loc, t.getShape(), t.getElementType());
  Value v = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(value));
  return linalg::FillOp::create(b, loc, ValueRange{v}, ValueRange{empty})
      .getResult(0);
}

/// The MLPs of `fn`'s body, rebuilt to also return their hidden values
/// (lathe.mlp's `saved`), so that their VJPs read them instead of
/// recomputing the up projection.
void saveMlpHiddenValues(func::FuncOp fn) {
  SmallVector<MlpOp> mlps;
  for (Operation &op : fn.getBody().front())
    if (auto mlp = llvm::dyn_cast<MlpOp>(op); mlp && mlp.getSaved().empty())
      mlps.push_back(mlp);
  for (MlpOp mlp : mlps) {
    OpBuilder b(mlp);
    SmallVector<Type> saved(mlp.getNumHidden(), mlp.getHiddenType());
    MlpOp full = mlp.cloneWith(b, saved, mlp.getAccumulate());
    mlp.getResult().replaceAllUsesWith(full.getResult());
    mlp.erase();
  }
}

LogicalResult differentiate(func::FuncOp fn, ArrayRef<ParamOp> params,
                            bool recomputeMlp) {
  if (!recomputeMlp)
    saveMlpHiddenValues(fn);
  auto ret = llvm::cast<func::ReturnOp>(fn.getBody().front().getTerminator());
  auto lossType = RankedTensorType::get({1}, Float32Type::get(fn.getContext()));
  if (ret.getNumOperands() != 1 || ret.getOperand(0).getType() != lossType)
    return fn.emitOpError() << "marked " << kDifferentiateAttr
                            << " must return one tensor<1xf32>, the loss";
  Value loss = ret.getOperand(0);
  OpBuilder b(ret);

  // Cotangents so far; a second contribution to a value is summed in.
  DenseMap<Value, Value> cotangent;
  llvm::StringMap<Value> paramGrad;
  auto accumulate = [&](Value &slot, Value grad, Location loc) {
    // A table's scattered rows go straight into a gradient it already has
    // (a tied LM head's): no [V, D] zero table, no [V, D] sum.
    if (auto scatter = grad.getDefiningOp<EmbeddingGradOp>();
        slot && scatter && !scatter.getAccumulate() && grad.use_empty()) {
      scatter.getAccumulateMutable().assign(slot);
      slot = grad;
      return;
    }
    slot = slot ? AddOp::create(b, loc, slot, grad).getResult() : grad;
  };
  cotangent[loss] = filled(b, loss.getLoc(), lossType, 1.0f);

  SmallVector<Operation *> ops;
  for (Operation &op : fn.getBody().front().without_terminator())
    ops.push_back(&op);
  for (Operation *op : llvm::reverse(ops)) {
    SmallVector<Value> dys;
    bool any = false;
    for (Value r : op->getResults()) {
      dys.push_back(cotangent.lookup(r));
      any |= bool(dys.back());
    }
    if (!any)
      continue;
    if (auto weight = llvm::dyn_cast<WeightOp>(op)) {
      accumulate(paramGrad[weight.getName()], dys[0], op->getLoc());
      continue;
    }
    if (auto slice = llvm::dyn_cast<tensor::ExtractSliceOp>(op)) {
      // Leading rows of a table (a learned position table read by a window
      // shorter than max_seq): the rows' cotangent, padded with zeros.
      auto srcType = llvm::cast<RankedTensorType>(slice.getSourceType());
      bool leadingRows =
          srcType.getRank() == 2 && slice.hasUnitStride() &&
          llvm::all_of(slice.getStaticOffsets(),
                       [](int64_t o) { return o == 0; }) &&
          slice.getStaticSizes()[1] == srcType.getDimSize(1);
      if (!leadingRows)
        return op->emitOpError()
               << "lies between the parameters and the loss, and only a "
                  "slice of leading rows has a vector-Jacobian product";
      accumulate(cotangent[slice.getSource()],
                 PadRowsOp::create(b, op->getLoc(), srcType, dys[0]),
                 op->getLoc());
      continue;
    }
    auto vjp = llvm::dyn_cast<VjpOpInterface>(op);
    if (!vjp)
      return op->emitOpError()
             << "lies between the parameters and the loss but has no "
                "vector-Jacobian product";
    SmallVector<Value> grads;
    if (failed(vjp.buildVjp(b, dys, grads)))
      return failure();
    for (auto [operand, grad] : llvm::zip(op->getOperands(), grads))
      if (grad)
        accumulate(cotangent[operand], grad, op->getLoc());
  }

  SmallVector<Value> results{loss};
  SmallVector<Attribute> names;
  bool accumulateIntoState = fn->hasAttr(kAccumulateAttr);
  for (ParamOp p : params) {
    Value g = paramGrad.lookup(p.getSymName());
    names.push_back(FlatSymbolRefAttr::get(p.getSymNameAttr()));
    if (!accumulateIntoState) {
      results.push_back(g ? g : filled(b, p.getLoc(), p.getTensorType(), 0.0f));
      continue;
    }
    // Gradient accumulation: add into the session state grad.<name>, which
    // the optimizer step reads and clears.
    if (!g)
      continue;
    std::string state = ("grad." + p.getSymName()).str();
    auto cache = SymbolTable::lookupNearestSymbolFrom<CacheOp>(
        fn, StringAttr::get(fn.getContext(), state));
    if (!cache || cache.getTensorType() != p.getTensorType())
      return fn.emitOpError() << "accumulates gradients, but there is no "
                                 "lathe.cache @\"" << state << "\" of type "
                              << p.getTensorType();
    // A weight's gradient product accumulates into the state in its GEMM
    // (beta = 1), where the product was: its operands die there as before.
    auto product = g.getDefiningOp<MatmulOp>();
    if (product && (product.getAccumulate() || !g.use_empty()))
      product = nullptr;
    OpBuilder::InsertionGuard guard(b);
    if (product)
      b.setInsertionPointAfter(product);
    Value sum = CacheReadOp::create(b, p.getLoc(), p.getTensorType(),
                                    FlatSymbolRefAttr::get(cache.getSymNameAttr()));
    Value added;
    if (product) {
      added = MatmulOp::create(b, product.getLoc(), product.getType(),
                               product.getLhs(), product.getRhs(), sum,
                               product.getTransposeLhs());
      product.erase();
    } else {
      added = AddOp::create(b, p.getLoc(), sum, g);
    }
    AssignOp::create(b, p.getLoc(), sum, added);
  }
  func::ReturnOp::create(b, ret.getLoc(), results);
  ret.erase();
  fn.setFunctionType(FunctionType::get(
      fn.getContext(), fn.getArgumentTypes(), ValueRange(results).getTypes()));
  fn->removeAttr(kDifferentiateAttr);
  fn->removeAttr(kAccumulateAttr);
  fn->setAttr(kGradientsAttr, b.getArrayAttr(names));
  return success();
}

struct Differentiate : lathe::impl::DifferentiateBase<Differentiate> {
  using Base::Base;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<ParamOp> params(module.getOps<ParamOp>());
    for (auto fn : llvm::make_early_inc_range(module.getOps<func::FuncOp>()))
      if (fn->hasAttr(kDifferentiateAttr) &&
          failed(differentiate(fn, params, recomputeMlp)))
        return signalPassFailure();
  }
};

} // namespace
