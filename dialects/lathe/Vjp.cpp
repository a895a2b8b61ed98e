//===- Vjp.cpp - vector-Jacobian products of the lathe ops --------*- C++ -*-===//
//
// Each differentiable op builds its operands' cotangents in lathe ops
// (VjpOpInterface). The rules are the textbook ones; what is lathe's own is
// that they stay at the architecture level: the backward of an MLP is one
// lathe.swiglu_grad and four products over the hidden values its forward
// saved, which kernel formation can fuse like the forward.
//
// Where an op's attributes select math that has no VJP here yet (a position
// offset, phases), buildVjp fails with an error on the op naming what is
// missing, and lathe-differentiate stops.
//
//===----------------------------------------------------------------------===//

#include "lathe/LatheOps.h"

using namespace mlir;
using namespace mlir::lathe;

namespace {

/// The cotangent list of `op`, one null slot per operand, filled by operand.
struct Cotangents {
  SmallVectorImpl<Value> &out;
  Cotangents(Operation *op, SmallVectorImpl<Value> &out) : out(out) {
    out.assign(op->getNumOperands(), Value());
  }
  void set(OpOperand &operand, Value grad) {
    out[operand.getOperandNumber()] = grad;
  }
  void set(MutableOperandRange range, Value grad) {
    if (!range.empty())
      set(range[0], grad);
  }
};

LogicalResult unsupported(Operation *op, const Twine &what) {
  return op->emitOpError() << "has no vector-Jacobian product " << what
                           << " yet";
}

RankedTensorType tensorType(Value v) {
  return llvm::cast<RankedTensorType>(v.getType());
}

/// dx = dy W and dW = dy^T x for y = x W^T: the two products every linear
/// layer's VJP makes (the weight in nn.Linear layout [out, in]).
std::pair<Value, Value> linearVjp(OpBuilder &b, Location loc, Value x, Value w,
                                  Value dy) {
  Value dx = MatmulOp::create(b, loc, tensorType(x), dy, w, Value(), false);
  Value dw = MatmulOp::create(b, loc, tensorType(w), dy, x, Value(), true);
  return {dx, dw};
}

} // namespace

/// dy where `which` holds for iteration t and the runtime count, else 0.
static Value iterationMask(OpBuilder &b, Location loc, Value dy, Value count,
                           IterationMask which, int64_t t,
                           std::optional<int64_t> backprop = std::nullopt) {
  return IterationMaskOp::create(
      b, loc, dy.getType(), dy, count,
      IterationMaskAttr::get(b.getContext(), which), b.getI64IntegerAttr(t),
      backprop ? b.getI64IntegerAttr(*backprop) : IntegerAttr());
}

/// No gradient: the input is a constant for differentiation; with a runtime
/// count, only at the iteration truncated backprop freezes.
LogicalResult StopGradientOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                       SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (getCount() && dys[0])
    out.set(getInputMutable(),
            iterationMask(b, getLoc(), dys[0], getCount(),
                          IterationMask::unfrozen, *getIteration(),
                          *getBackprop()));
  return success();
}

/// The running iteration's result gets dy, the skipped one's input gets it.
LogicalResult LoopSelectOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                     SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (!dys[0])
    return success();
  auto mask = [&](IterationMask which) {
    return iterationMask(b, getLoc(), dys[0], getCount(), which,
                         getIteration());
  };
  out.set(getNextMutable(), mask(IterationMask::active));
  out.set(getPreviousMutable(), mask(IterationMask::inactive));
  return success();
}

LogicalResult EmbeddingOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                    SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (dys[0])
    out.set(getTableMutable(),
            EmbeddingGradOp::create(b, getLoc(), getTable().getType(),
                                    getTokens(), dys[0], Value()));
  return success();
}

LogicalResult RmsNormOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                  SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (!dys[0])
    return success();
  auto g = RmsNormGradOp::create(b, getLoc(), getInput().getType(),
                                 getGain().getType(), getInput(), getGain(),
                                 dys[0], getEps(), getPhases());
  out.set(getInputMutable(), g.getInputGrad());
  out.set(getGainMutable(), g.getGainGrad());
  return success();
}

LogicalResult LinearOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                 SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  Value dy = dys[0];
  if (!dy)
    return success();
  auto [dx, dw] = linearVjp(b, getLoc(), getInput(), getWeight(), dy);
  out.set(getInputMutable(), dx);
  out.set(getWeightMutable(), dw);
  if (getBias())
    out.set(getBiasMutable(), SumRowsOp::create(b, getLoc(),
                                                getBias().getType(), dy));
  out.set(getAccumulateMutable(), dy);
  return success();
}

LogicalResult LayerNormOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                    SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (!dys[0])
    return success();
  auto g = LayerNormGradOp::create(
      b, getLoc(), getInput().getType(), getGain().getType(),
      getGain().getType(), getInput(), getGain(), dys[0], getEps());
  out.set(getInputMutable(), g.getInputGrad());
  out.set(getGainMutable(), g.getGainGrad());
  out.set(getBiasMutable(), g.getBiasGrad());
  return success();
}

LogicalResult RopeOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                               SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (getOffset())
    return unsupported(*this, "at a position offset");
  if (!dys[0])
    return success();
  // A rotation's transpose is the rotation by minus the angle.
  out.set(getInputMutable(),
          RopeOp::create(b, getLoc(), getType(), dys[0], Value(),
                         getHeads(), getBase(), /*inverse=*/!getInverse(),
                         getWindow()));
  return success();
}

LogicalResult AttentionOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                    SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (getOffset())
    return unsupported(*this, "at a position offset");
  if (!dys[0])
    return success();
  auto g = AttentionGradOp::create(
      b, getLoc(), getQuery().getType(), getKey().getType(),
      getValue().getType(), getQuery(), getKey(), getValue(), dys[0],
      getResult(), getHeads(), getKvHeads(), getNormalizer(), getWindow());
  out.set(getQueryMutable(), g.getQueryGrad());
  out.set(getKeyMutable(), g.getKeyGrad());
  out.set(getValueMutable(), g.getValueGrad());
  return success();
}

LogicalResult MlpOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                              SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  Value dy = dys[0];
  if (!dy)
    return success();
  Location loc = getLoc();
  Value x = getInput(), wu = getUpWeight(), wd = getDownWeight();
  // The hidden values come from the forward when it saved them (see
  // lathe-differentiate), else they are recomputed: [T, width] per layer is
  // a decoder's largest activation, and a product of x is cheap to redo.
  ValueRange saved = getSaved();
  auto hidden = [&](Value w, Value bias) -> Value {
    return LinearOp::create(b, loc, getHiddenType(), x, w, bias, Value());
  };
  auto biasGrad = [&](Value bias, Value d) -> Value {
    return bias ? SumRowsOp::create(b, loc, bias.getType(), d).getResult()
                : Value();
  };
  bool gated = getKind() == MlpKind::swiglu;
  Value u = saved.empty() ? hidden(wu, getUpBias()) : saved[gated ? 1 : 0];
  Value dx, du;
  if (gated) {
    Value wg = getGateWeight();
    Value g = saved.empty() ? hidden(wg, getGateBias()) : saved[0];
    Value h = saved.empty() ? SwigluOp::create(b, loc, g, u).getResult()
                            : saved[2];
    auto [dh, dwd] = linearVjp(b, loc, h, wd, dy);
    out.set(getDownWeightMutable(), dwd);
    auto act = SwigluGradOp::create(b, loc, g.getType(), u.getType(), g, u, dh);
    auto [dxg, dwg] = linearVjp(b, loc, x, wg, act.getGateGrad());
    out.set(getGateWeightMutable(), dwg);
    out.set(getGateBiasMutable(), biasGrad(getGateBias(), act.getGateGrad()));
    du = act.getUpGrad();
    dx = dxg;
  } else {
    Value h = saved.empty()
                  ? ActivationOp::create(b, loc, getKind(), u).getResult()
                  : saved[1];
    auto [dh, dwd] = linearVjp(b, loc, h, wd, dy);
    out.set(getDownWeightMutable(), dwd);
    du = ActivationGradOp::create(b, loc, getKind(), u, dh);
  }
  auto [dxu, dwu] = linearVjp(b, loc, x, wu, du);
  out.set(getUpWeightMutable(), dwu);
  out.set(getUpBiasMutable(), biasGrad(getUpBias(), du));
  out.set(getDownBiasMutable(), biasGrad(getDownBias(), dy));
  out.set(getInputMutable(),
          dx ? AddOp::create(b, loc, dx, dxu).getResult() : dxu);
  out.set(getAccumulateMutable(), dy);
  return success();
}

LogicalResult AddOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                              SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  out.set(getLhsMutable(), dys[0]);
  out.set(getRhsMutable(), dys[0]);
  return success();
}

LogicalResult CrossEntropyOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                       SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (dys[0])
    out.set(getLogitsMutable(),
            CrossEntropyGradOp::create(b, getLoc(), getLogits().getType(),
                                       getLogits(), getTargets(), dys[0]));
  return success();
}

LogicalResult PhaseRotateOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                      SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (!dys[0])
    return success();
  // Orthogonal: x's cotangent is dy turned back; theta's comes from the
  // output and dy.
  out.set(getInputMutable(),
          PhaseRotateOp::create(b, getLoc(), getType(), dys[0], getTheta(),
                                getPhases(), !getInverse()));
  if (getInverse())
    return unsupported(*this, "in theta for the inverse rotation");
  out.set(getThetaMutable(),
          PhaseRotateThetaGradOp::create(b, getLoc(), getTheta().getType(),
                                         getResult(), dys[0], getPhases()));
  return success();
}

LogicalResult DcInjectOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                   SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (dys[0])
    out.set(getInputMutable(), CenterRowsOp::create(b, getLoc(), dys[0]));
  return success();
}

LogicalResult RepeatRowsOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                     SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (dys[0])
    out.set(getInputMutable(), FoldRowsOp::create(b, getLoc(),
                                                  getInput().getType(), dys[0]));
  return success();
}

LogicalResult ParcaeInjectOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                       SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (!dys[0])
    return success();
  Type be = getBe().getType(), c = getALog().getType();
  auto g = ParcaeInjectGradOp::create(b, getLoc(), be, c, c, be, getBe(),
                                      getALog(), getDtBias(), getState(),
                                      dys[0]);
  out.set(getBeMutable(), g.getBeGrad());
  out.set(getDtBiasMutable(), g.getDtBiasGrad());
  if (getState()) {
    out.set(getALogMutable(), g.getALogGrad());
    out.set(getStateMutable(), g.getStateGrad());
  }
  return success();
}

LogicalResult SinusoidOp::buildVjp(OpBuilder &, ArrayRef<Value>,
                                   SmallVectorImpl<Value> &grads) {
  // A function of a compile-time scalar or of a runtime input (the drawn
  // trajectory): nothing upstream that trains.
  Cotangents out(*this, grads);
  return success();
}

LogicalResult SiluOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                               SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (dys[0])
    out.set(getInputMutable(),
            SiluGradOp::create(b, getLoc(), getInput(), dys[0]));
  return success();
}

LogicalResult GatedAddOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                   SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (!dys[0])
    return success();
  auto g = GatedAddGradOp::create(b, getLoc(), getRhs().getType(),
                                  getGate().getType(), getRhs(), getGate(),
                                  dys[0]);
  out.set(getLhsMutable(), dys[0]);
  out.set(getRhsMutable(), g.getRhsGrad());
  out.set(getGateMutable(), g.getGateGrad());
  return success();
}

LogicalResult ModulatedRmsNormOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                           SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (!dys[0])
    return success();
  auto g = ModulatedRmsNormGradOp::create(
      b, getLoc(), getInput().getType(), getScale().getType(), getInput(),
      getScale(), dys[0], getEps());
  out.set(getInputMutable(), g.getInputGrad());
  out.set(getScaleMutable(), g.getScaleGrad());
  return success();
}

namespace {

/// The sources', norms', query's, gain's and null source's cotangents of a
/// routing site, from its recomputing VJP op: the part that depth_attention
/// and routing_entropy share.
template <typename RoutingOp>
DepthAttentionGradOp buildRoutingVjp(OpBuilder &b, RoutingOp op, Value gate,
                                     GateActivation activation, Value dy,
                                     Value entropyGrad, Cotangents &out) {
  auto typesOf = [](ValueRange values) {
    return SmallVector<Type>(values.getTypes());
  };
  Value null = op.getNull();
  auto g = DepthAttentionGradOp::create(
      b, op.getLoc(), typesOf(op.getSources()), typesOf(op.getNorms()),
      op.getQuery().getType(), op.getGain().getType(),
      null ? null.getType() : Type(), gate ? gate.getType() : Type(),
      op.getSources(), op.getNorms(), op.getQuery(), op.getGain(), null, gate,
      dy, entropyGrad, op.getEpsAttr(),
      GateActivationAttr::get(b.getContext(), activation));
  for (auto [i, grad] : llvm::enumerate(g.getSourceGrads()))
    out.set(op.getSourcesMutable()[i], grad);
  for (auto [i, grad] : llvm::enumerate(g.getNormGrads()))
    out.set(op.getNormsMutable()[i], grad);
  out.set(op.getQueryMutable(), g.getQueryGrad());
  out.set(op.getGainMutable(), g.getGainGrad());
  out.set(op.getNullMutable(), g.getNullGrad());
  return g;
}

} // namespace

LogicalResult DepthAttentionOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                         SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (!dys[0])
    return success();
  auto g = buildRoutingVjp(b, *this, getGate(), getGateActivation(), dys[0],
                           Value(), out);
  out.set(getGateMutable(), g.getGateGrad());
  // Additive routing: base + (routed term), so the base passes dy through.
  out.set(getBaseMutable(), dys[0]);
  return success();
}

LogicalResult RoutingEntropyOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                         SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (dys[0])
    buildRoutingVjp(b, *this, Value(), GateActivation::identity, Value(),
                    dys[0], out);
  return success();
}

LogicalResult RowSumSquaresOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                        SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (dys[0])
    out.set(getInputMutable(),
            RowSumSquaresGradOp::create(b, getLoc(), getInput().getType(),
                                        getInput(), dys[0]));
  return success();
}

LogicalResult SubOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                              SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (!dys[0])
    return success();
  out.set(getLhsMutable(), dys[0]);
  out.set(getRhsMutable(),
          ScaleOp::create(b, getLoc(), dys[0], b.getF64FloatAttr(-1.0)));
  return success();
}

LogicalResult ScaleOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (dys[0])
    out.set(getInputMutable(),
            ScaleOp::create(b, getLoc(), dys[0], getFactorAttr()));
  return success();
}

LogicalResult MeanSquaredErrorOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                           SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (!dys[0])
    return success();
  Value d = MeanSquaredErrorGradOp::create(b, getLoc(), getLhs().getType(),
                                           getLhs(), getRhs(), dys[0]);
  out.set(getLhsMutable(), d);
  out.set(getRhsMutable(),
          ScaleOp::create(b, getLoc(), d, b.getF64FloatAttr(-1.0)));
  return success();
}

/// Recomputes delta, the rank-r projection and the pre-activation, then
/// lathe.selective_gate_grad's elementwise core; W_up's and W_down's
/// products are a linear layer's VJP each. result = h + Abar (u - h), so
/// u's cotangent is delta's and h's is dy minus it.
LogicalResult SelectiveGateOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                        SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  Value dy = dys[0];
  if (!dy)
    return success();
  Location loc = getLoc();
  Value wDown = getWDown(), wUp = getWUp();
  auto delta = SubOp::create(b, loc, getProposal(), getState());
  auto rows = RankedTensorType::get(
      {tensorType(delta).getDimSize(0), tensorType(wDown).getDimSize(0)},
      b.getF32Type());
  Value low = LinearOp::create(b, loc, rows, delta, wDown, Value(), Value());
  Value pre = LinearOp::create(b, loc, tensorType(delta), low, wUp, getBias(),
                               Value());
  auto core = SelectiveGateGradOp::create(b, loc, pre.getType(),
                                          getALog().getType(), pre.getType(),
                                          pre, getALog(), delta, dy);
  auto [dLow, dWUp] = linearVjp(b, loc, low, wUp, core.getPreGrad());
  auto [dDelta, dWDown] = linearVjp(b, loc, delta, wDown, dLow);
  Value dd = AddOp::create(b, loc, core.getDirectGrad(), dDelta);
  out.set(getProposalMutable(), dd);
  out.set(getStateMutable(), SubOp::create(b, loc, dy, dd));
  out.set(getWDownMutable(), dWDown);
  out.set(getWUpMutable(), dWUp);
  out.set(getBiasMutable(),
          SumRowsOp::create(b, loc, getBias().getType(), core.getPreGrad()));
  out.set(getALogMutable(), core.getALogGrad());
  return success();
}

LogicalResult BinaryCrossEntropyOp::buildVjp(OpBuilder &b, ArrayRef<Value> dys,
                                             SmallVectorImpl<Value> &grads) {
  Cotangents out(*this, grads);
  if (dys[0])
    out.set(getLogitsMutable(),
            BinaryCrossEntropyGradOp::create(b, getLoc(), getLogits().getType(),
                                             getLogits(), getTarget(), dys[0]));
  return success();
}
