//===- LatheOps.cpp - lathe op verifiers -------------------------*- C++ -*-===//
//
// Every static invariant of the architecture-level ops is checked here, so
// that passes downstream may assume well-formed shapes.
//
//===----------------------------------------------------------------------===//

#include "lathe/LatheOps.h"
#include "lathe/gemm_shape.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"

#include <cmath>

using namespace mlir;
using namespace mlir::lathe;

#include "lathe/LatheEnums.cpp.inc"
#include "lathe/LatheInterfaces.cpp.inc"

/// Checks that `type` is static with `rank` dimensions; names it `what`.
static LogicalResult expectStatic(Operation *op, Type type, int64_t rank,
                                  StringRef what) {
  auto tensor = llvm::cast<ShapedType>(type);
  if (!tensor.hasRank() || tensor.getRank() != rank)
    return op->emitOpError() << "expects " << what << " of rank " << rank
                             << ", got " << type;
  if (!tensor.hasStaticShape())
    return op->emitOpError() << "expects " << what
                             << " to have a static shape, got " << type;
  return success();
}

static int64_t dim(Value v, unsigned i) {
  return llvm::cast<ShapedType>(v.getType()).getDimSize(i);
}

//===----------------------------------------------------------------------===//
// ParamOp / WeightOp
//===----------------------------------------------------------------------===//

LogicalResult ParamOp::verify() {
  if (!getTensorType().hasStaticShape())
    return emitOpError() << "expects a static shape, got " << getType();
  if (getInit() == InitKind::normal) {
    if (!getStd())
      return emitOpError("with init 'normal' needs a std");
    if (!(getStd()->convertToDouble() > 0.0))
      return emitOpError("expects std > 0, got ") << getStd()->convertToDouble();
  } else if (getStd()) {
    return emitOpError("takes a std only with init 'normal'");
  }
  if (getInit() == InitKind::uniform) {
    if (!getValue() || !(getValue()->convertToDouble() > 0.0) ||
        !std::isfinite(getValue()->convertToDouble()))
      return emitOpError("with init 'uniform' needs a finite bound value > 0");
  } else if (getInit() == InitKind::constant) {
    if (!getValue())
      return emitOpError("with init 'constant' needs a value");
    if (!std::isfinite(getValue()->convertToDouble()))
      return emitOpError("expects a finite constant value");
  } else if (getValue()) {
    return emitOpError("takes a value only with init 'constant' or 'uniform'");
  }
  if (getInit() == InitKind::identity &&
      (getTensorType().getRank() != 2 ||
       getTensorType().getDimSize(0) != getTensorType().getDimSize(1)))
    return emitOpError() << "with init 'identity' needs a square matrix, got "
                         << getType();
  return success();
}

LogicalResult WeightOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  auto param =
      symbolTable.lookupNearestSymbolFrom<ParamOp>(*this, getNameAttr());
  if (!param)
    return emitOpError() << "refers to unknown parameter " << getNameAttr();
  if (param.getType() != getType())
    return emitOpError() << "has type " << getType() << " but parameter "
                         << getNameAttr() << " has type " << param.getType();
  return success();
}

LogicalResult CacheOp::verify() {
  // A KV cache is [N, W]; training's states (gradient sums, Adam moments)
  // have their parameter's shape.
  if (!getTensorType().hasStaticShape() || getTensorType().getRank() < 1)
    return emitOpError() << "expects a static tensor of rank >= 1, got "
                         << getType();
  return success();
}

LogicalResult CacheReadOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  auto cache =
      symbolTable.lookupNearestSymbolFrom<CacheOp>(*this, getNameAttr());
  if (!cache)
    return emitOpError() << "refers to unknown cache " << getNameAttr();
  if (cache.getType() != getType())
    return emitOpError() << "has type " << getType() << " but cache "
                         << getNameAttr() << " has type " << cache.getType();
  return success();
}

/// A scalar position passed as a tensor<1xi32>.
static LogicalResult verifyOffset(Operation *op, Value offset) {
  if (offset && (!llvm::cast<ShapedType>(offset.getType()).hasRank() ||
                 llvm::cast<ShapedType>(offset.getType()).getShape() !=
                     ArrayRef<int64_t>{1} ||
                 !llvm::cast<ShapedType>(offset.getType())
                      .getElementType()
                      .isInteger(32)))
    return op->emitOpError() << "expects the offset as tensor<1xi32> (or "
                                "memref<1xi32> once bufferized), got "
                             << offset.getType();
  return success();
}

/// A batch of sequences packed as rows: `window` rows each, from position
/// 0, so there is no offset, and the windows tile the rows.
static LogicalResult verifyWindow(Operation *op, Value rowsOf, int64_t window,
                                  Value offset) {
  if (window == 0)
    return success();
  int64_t rows = llvm::cast<ShapedType>(rowsOf.getType()).getDimSize(0);
  if (window < 0 || rows % window != 0)
    return op->emitOpError() << "window (" << window
                             << ") must be positive and divide the "
                             << rows << " rows";
  if (offset)
    return op->emitOpError("takes a window or an offset, not both: a batch "
                           "of windows starts every sequence at position 0");
  return success();
}

LogicalResult CacheWriteOp::verify() {
  if (failed(expectStatic(*this, getCache().getType(), 2, "cache")) ||
      failed(expectStatic(*this, getRows().getType(), 2, "rows")) ||
      failed(verifyOffset(*this, getOffset())))
    return failure();
  if (getType() != getCache().getType())
    return emitOpError("result type must equal the cache type");
  if (dim(getRows(), 1) != dim(getCache(), 1))
    return emitOpError() << "rows are " << dim(getRows(), 1)
                         << " wide but the cache is " << dim(getCache(), 1);
  if (dim(getRows(), 0) > dim(getCache(), 0))
    return emitOpError() << "writes " << dim(getRows(), 0)
                         << " rows into a cache of " << dim(getCache(), 0);
  if (!getCache().getDefiningOp<CacheReadOp>() &&
      !getCache().getDefiningOp<CacheWriteOp>())
    return emitOpError("updates in place, so its cache operand must come from "
                       "lathe.cache_read or lathe.cache_write");
  return success();
}

//===----------------------------------------------------------------------===//
// Decoder ops
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingOp::verify() {
  if (failed(expectStatic(*this, getTokens().getType(), 1, "tokens")) ||
      failed(expectStatic(*this, getTable().getType(), 2, "table")) ||
      failed(expectStatic(*this, getType(), 2, "result")))
    return failure();
  if (dim(getResult(), 0) != dim(getTokens(), 0) ||
      dim(getResult(), 1) != dim(getTable(), 1))
    return emitOpError() << "result must be [T, D] = ["
                         << dim(getTokens(), 0) << ", " << dim(getTable(), 1)
                         << "], got " << getType();
  return success();
}

LogicalResult RmsNormOp::verify() {
  if (failed(expectStatic(*this, getInput().getType(), 2, "input")) ||
      failed(expectStatic(*this, getGain().getType(), 1, "gain")))
    return failure();
  if (getType() != getInput().getType())
    return emitOpError("result type must equal the input type");
  if (dim(getGain(), 0) != dim(getInput(), 1))
    return emitOpError() << "gain has " << dim(getGain(), 0)
                         << " elements but the normalised axis has "
                         << dim(getInput(), 1);
  if (!(getEps().convertToDouble() > 0.0))
    return emitOpError("expects eps > 0");
  int64_t phases = getPhases(), width = dim(getInput(), 1);
  if (phases <= 0 || width % phases != 0)
    return emitOpError() << "phases (" << phases
                         << ") must be positive and divide the width ("
                         << width << ")";
  return success();
}

//===----------------------------------------------------------------------===//
// Three-Phase Transformer
//===----------------------------------------------------------------------===//

LogicalResult PhaseRotateOp::verify() {
  if (failed(expectStatic(*this, getInput().getType(), 2, "input")) ||
      failed(expectStatic(*this, getTheta().getType(), 1, "theta")))
    return failure();
  if (getType() != getInput().getType())
    return emitOpError("result type must equal the input type");
  int64_t phases = getPhases(), width = dim(getInput(), 1);
  if (phases <= 0 || width % phases != 0)
    return emitOpError() << "phases (" << phases
                         << ") must be positive and divide the width ("
                         << width << ")";
  int64_t stripe = width / phases;
  if (stripe % 2 != 0)
    return emitOpError() << "stripe width D / phases = " << stripe
                         << " must be even: channels rotate in pairs";
  if (dim(getTheta(), 0) != stripe / 2)
    return emitOpError() << "theta must have D / (2 phases) = " << stripe / 2
                         << " angles, got " << dim(getTheta(), 0);
  return success();
}

LogicalResult DcInjectOp::verify() {
  if (failed(expectStatic(*this, getInput().getType(), 2, "input")) ||
      failed(verifyOffset(*this, getOffset())))
    return failure();
  if (getType() != getInput().getType())
    return emitOpError("result type must equal the input type");
  return verifyWindow(*this, getInput(), getWindow(), getOffset());
}

//===----------------------------------------------------------------------===//
// DepthAttentionOp
//===----------------------------------------------------------------------===//

/// What every routing op (depth_attention, routing_entropy and the VJP of
/// both) checks alike: equal [T, D] sources, one [T] norm per source when
/// given, [D] query, gain and null source, and eps > 0.
static LogicalResult verifyRouting(Operation *op, ValueRange sources,
                                   ValueRange norms, Value query, Value gain,
                                   Value null, APFloat eps) {
  if (sources.empty())
    return op->emitOpError("needs at least one source");
  Type type = sources.front().getType();
  if (failed(expectStatic(op, type, 2, "sources")))
    return failure();
  for (Value s : sources)
    if (s.getType() != type)
      return op->emitOpError() << "sources must all have type " << type
                               << ", got " << s.getType();
  if (!norms.empty()) {
    if (norms.size() != sources.size())
      return op->emitOpError() << "has " << norms.size() << " norms for "
                               << sources.size() << " sources";
    for (Value n : norms)
      if (failed(expectStatic(op, n.getType(), 1, "norms")) ||
          dim(n, 0) != dim(sources.front(), 0))
        return op->emitOpError() << "norms must be one value per token, got "
                                 << n.getType();
  }
  int64_t width = dim(sources.front(), 1);
  SmallVector<std::pair<const char *, Value>> vectors = {{"query", query},
                                                         {"gain", gain}};
  if (null)
    vectors.push_back({"null", null});
  for (auto [what, v] : vectors) {
    if (failed(expectStatic(op, v.getType(), 1, what)))
      return failure();
    if (dim(v, 0) != width)
      return op->emitOpError() << what << " has " << dim(v, 0)
                               << " elements but the sources are " << width
                               << " wide";
  }
  if (!(eps.convertToDouble() > 0.0))
    return op->emitOpError("expects eps > 0");
  return success();
}

/// A gate is one scalar or one value per token and channel, with an
/// activation only when present.
static LogicalResult verifyRoutingGate(Operation *op, Type type, Value gate,
                                       GateActivation activation) {
  if (!gate) {
    if (activation != GateActivation::identity)
      return op->emitOpError("has a gate activation but no gate");
    return success();
  }
  auto gateType = llvm::cast<RankedTensorType>(gate.getType());
  bool scalar = gateType.getRank() == 1 && gateType.getDimSize(0) == 1;
  if (!scalar && gateType != type)
    return op->emitOpError() << "gate must be one scalar (tensor<1xf32>) or "
                                "one value per token and channel ("
                             << type << "), got " << gateType;
  return success();
}

LogicalResult DepthAttentionOp::verify() {
  if (failed(verifyRouting(*this, getSources(), getNorms(), getQuery(),
                           getGain(), getNull(), getEps())))
    return failure();
  Type type = getSources().front().getType();
  if (getType() != type)
    return emitOpError("result type must equal the sources' type");
  if (getBase() && getBase().getType() != type)
    return emitOpError("base must have the sources' type");
  if (getGate() && !getBase())
    return emitOpError("takes a gate only with a base: it gates the routed "
                       "term added to the stream (additive routing)");
  return verifyRoutingGate(*this, type, getGate(), getGateActivation());
}

LogicalResult RoutingEntropyOp::verify() {
  if (failed(verifyRouting(*this, getSources(), getNorms(), getQuery(),
                           getGain(), getNull(), getEps())))
    return failure();
  auto type = llvm::cast<RankedTensorType>(getType());
  if (type.getRank() != 1 || type.getDimSize(0) != 1)
    return emitOpError() << "result must be tensor<1xf32>, got " << type;
  return success();
}

LogicalResult DepthAttentionGradOp::verify() {
  if (failed(verifyRouting(*this, getSources(), getNorms(), getQuery(),
                           getGain(), getNull(), getEps())))
    return failure();
  Type type = getSources().front().getType();
  if (!getResultGrad() && !getEntropyGrad())
    return emitOpError("needs a cotangent, an entropy cotangent or both");
  if (getResultGrad() && getResultGrad().getType() != type)
    return emitOpError() << "cotangent must have the sources' type " << type;
  if (getEntropyGrad()) {
    auto e = llvm::cast<RankedTensorType>(getEntropyGrad().getType());
    if (e.getRank() != 1 || e.getDimSize(0) != 1)
      return emitOpError() << "entropy cotangent must be tensor<1xf32>, got "
                           << e;
  }
  if (getGate() && !getResultGrad())
    return emitOpError("takes a gate only with a cotangent of the routed term");
  if (failed(verifyRoutingGate(*this, type, getGate(), getGateActivation())))
    return failure();
  // One gradient per differentiated operand, of its type.
  auto sameTypes = [&](ValueRange grads, ValueRange of,
                       StringRef what) -> LogicalResult {
    if (grads.size() != of.size())
      return emitOpError() << "has " << grads.size() << " " << what
                           << " gradients for " << of.size() << " " << what;
    for (auto [g, v] : llvm::zip(grads, of))
      if (g.getType() != v.getType())
        return emitOpError() << what << " gradient type " << g.getType()
                             << " differs from " << v.getType();
    return success();
  };
  auto sameType = [&](Value grad, Value of, StringRef what) -> LogicalResult {
    if (bool(grad) != bool(of))
      return emitOpError() << "has a " << what << " gradient exactly when it "
                           << "has a " << what;
    if (grad && grad.getType() != of.getType())
      return emitOpError() << what << " gradient type " << grad.getType()
                           << " differs from " << of.getType();
    return success();
  };
  return success(
      succeeded(sameTypes(getSourceGrads(), getSources(), "sources")) &&
      succeeded(sameTypes(getNormGrads(), getNorms(), "norms")) &&
      succeeded(sameType(getQueryGrad(), getQuery(), "query")) &&
      succeeded(sameType(getGainGrad(), getGain(), "gain")) &&
      succeeded(sameType(getNullGrad(), getNull(), "null")) &&
      succeeded(sameType(getGateGrad(), getGate(), "gate")));
}

LogicalResult ParcaeInjectOp::verify() {
  if (failed(expectStatic(*this, getBe().getType(), 2, "be")))
    return failure();
  if (getType() != getBe().getType())
    return emitOpError("result type must equal be's type");
  if (getState() && getState().getType() != getBe().getType())
    return emitOpError("state must have be's type");
  int64_t width = dim(getBe(), 1);
  for (auto [what, v] : {std::pair<const char *, Value>{"A_log", getALog()},
                         {"dt_bias", getDtBias()}}) {
    if (failed(expectStatic(*this, v.getType(), 1, what)))
      return failure();
    if (dim(v, 0) != width)
      return emitOpError() << what << " has " << dim(v, 0)
                           << " elements but the state is " << width
                           << " wide";
  }
  return success();
}

//===----------------------------------------------------------------------===//
// LoopUS: the selective gate and early exit
//===----------------------------------------------------------------------===//

/// A [D] vector of a [T, D] state's width.
static LogicalResult expectChannels(Operation *op, Value v, int64_t width,
                                    StringRef what) {
  if (failed(expectStatic(op, v.getType(), 1, what)))
    return failure();
  if (dim(v, 0) != width)
    return op->emitOpError() << what << " has " << dim(v, 0)
                             << " elements but the state is " << width
                             << " wide";
  return success();
}

/// The window length operand of the early-exit ops: one i32.
static LogicalResult expectLength(Operation *op, Value length) {
  if (failed(expectStatic(op, length.getType(), 1, "length")) ||
      dim(length, 0) != 1)
    return op->emitOpError() << "expects length as one i32, got "
                             << length.getType();
  return success();
}

LogicalResult SelectiveGateOp::verify() {
  if (failed(expectStatic(*this, getProposal().getType(), 2, "proposal")) ||
      failed(expectStatic(*this, getWDown().getType(), 2, "w_down")) ||
      failed(expectStatic(*this, getWUp().getType(), 2, "w_up")))
    return failure();
  int64_t width = dim(getProposal(), 1), rank = dim(getWDown(), 0);
  if (dim(getWDown(), 1) != width)
    return emitOpError() << "w_down must be [r, " << width << "], got "
                         << getWDown().getType();
  if (dim(getWUp(), 0) != width || dim(getWUp(), 1) != rank)
    return emitOpError() << "w_up must be [" << width << ", " << rank
                         << "] to undo w_down's [" << rank << ", " << width
                         << "], got " << getWUp().getType();
  if (failed(expectChannels(*this, getBias(), width, "bias")))
    return failure();
  return success();
}

LogicalResult HaltConfidenceOp::verify() {
  if (failed(expectStatic(*this, getProposal().getType(), 2, "proposal")) ||
      (getLength() && failed(expectLength(*this, getLength()))))
    return failure();
  int64_t width = dim(getProposal(), 1);
  if (failed(expectChannels(*this, getLnWeight(), width, "ln_weight")))
    return failure();
  if (failed(expectStatic(*this, getWQ().getType(), 2, "w_q")) ||
      dim(getWQ(), 0) != 1 || dim(getWQ(), 1) != width)
    return emitOpError() << "w_q must be [1, " << width << "], got "
                         << getWQ().getType();
  if (failed(expectStatic(*this, getType(), 1, "result")) ||
      dim(getResult(), 0) != 1)
    return emitOpError() << "expects one confidence, got " << getType();
  if (!(getEps().convertToDouble() > 0.0))
    return emitOpError("expects eps > 0");
  return success();
}

LogicalResult HaltIfOp::verify() {
  if (failed(expectStatic(*this, getNext().getType(), 2, "next")) ||
      (getLength() && failed(expectLength(*this, getLength()))))
    return failure();
  if (failed(expectStatic(*this, getQ().getType(), 1, "q")) ||
      dim(getQ(), 0) != 1)
    return emitOpError() << "expects q as one confidence, got "
                         << getQ().getType();
  auto status = RankedTensorType::get({2}, Float32Type::get(getContext()));
  if (getNewStatus().getType() != status)
    return emitOpError() << "status must be " << status << ", got "
                         << getNewStatus().getType();
  if (bool(getStatus()) != bool(getKept()))
    return emitOpError("takes status and kept together: both come from the "
                       "previous iteration's lathe.halt_if");
  if (getStatus() && getStatus().getType() != status)
    return emitOpError() << "status must be " << status << ", got "
                         << getStatus().getType();
  if (getKept() && getKept().getType() != getNext().getType())
    return emitOpError("kept must have next's type");
  double threshold = getThreshold().convertToDouble();
  if (getMode() != HaltMode::none && getMode() != HaltMode::convergence &&
      !(threshold > 0.0 && threshold < 1.0))
    return emitOpError() << "expects a threshold in (0, 1), got " << threshold;
  if (getMode() == HaltMode::convergence &&
      !(getTolerance().convertToDouble() > 0.0))
    return emitOpError() << "expects a tolerance > 0, got "
                         << getTolerance().convertToDouble();
  return success();
}

//===----------------------------------------------------------------------===//
// LoopFormer conditioning
//===----------------------------------------------------------------------===//

LogicalResult SinusoidOp::verify() {
  if (failed(expectStatic(*this, getType(), 2, "result")))
    return failure();
  if (dim(getResult(), 0) != 1 || dim(getResult(), 1) % 2 != 0 ||
      dim(getResult(), 1) == 0)
    return emitOpError() << "expects one row of an even, nonzero number of "
                            "features, got "
                         << getType();
  if (getTable()) {
    if (getValue() || !getIndex())
      return emitOpError("with a table takes an index, not a value");
    if (failed(expectStatic(*this, getTable().getType(), 1, "table")))
      return failure();
    if (*getIndex() < 0 || *getIndex() >= dim(getTable(), 0))
      return emitOpError() << "index " << *getIndex() << " is outside the "
                           << dim(getTable(), 0) << "-element table";
  } else if (!getValue() || getIndex()) {
    return emitOpError("takes a value, or a table and an index");
  }
  return success();
}

LogicalResult MeanSquaredErrorOp::verify() {
  auto type = llvm::cast<RankedTensorType>(getType());
  if (type.getRank() != 1 || type.getDimSize(0) != 1)
    return emitOpError() << "result must be tensor<1xf32>, got " << type;
  if (!llvm::cast<RankedTensorType>(getLhs().getType()).hasStaticShape())
    return emitOpError("expects static shapes");
  return success();
}

/// A [1, D] row that modulates every token of a [T, D] input.
static LogicalResult verifyRow(Operation *op, Value input, Value row,
                               StringRef what) {
  if (failed(expectStatic(op, input.getType(), 2, "input")) ||
      failed(expectStatic(op, row.getType(), 2, what)))
    return failure();
  if (dim(row, 0) != 1 || dim(row, 1) != dim(input, 1))
    return op->emitOpError() << what << " must be one row of " << dim(input, 1)
                             << " values, got " << row.getType();
  return success();
}

LogicalResult ModulatedRmsNormOp::verify() {
  if (failed(verifyRow(*this, getInput(), getScale(), "scale")))
    return failure();
  if (getType() != getInput().getType())
    return emitOpError("result type must equal the input type");
  if (!(getEps().convertToDouble() > 0.0))
    return emitOpError("expects eps > 0");
  return success();
}

LogicalResult GatedAddOp::verify() {
  if (failed(verifyRow(*this, getLhs(), getGate(), "gate")))
    return failure();
  if (getLhs().getType() != getRhs().getType() ||
      getType() != getLhs().getType())
    return emitOpError("lhs, rhs and result must have one type");
  return success();
}

LogicalResult RowSumSquaresOp::verify() {
  if (failed(expectStatic(*this, getInput().getType(), 2, "input")) ||
      failed(expectStatic(*this, getType(), 1, "result")))
    return failure();
  if (dim(getResult(), 0) != dim(getInput(), 0))
    return emitOpError("has one result per row of its input");
  return success();
}

LogicalResult RowSumSquaresGradOp::verify() {
  if (failed(expectStatic(*this, getInput().getType(), 2, "input")) ||
      failed(expectStatic(*this, getResultGrad().getType(), 1, "result_grad")))
    return failure();
  if (dim(getResultGrad(), 0) != dim(getInput(), 0))
    return emitOpError("takes one cotangent per row of its input");
  if (getType() != getInput().getType())
    return emitOpError("result type must equal the input type");
  return success();
}

LogicalResult LayerNormOp::verify() {
  if (failed(expectStatic(*this, getInput().getType(), 2, "input")) ||
      failed(expectStatic(*this, getGain().getType(), 1, "gain")) ||
      failed(expectStatic(*this, getBias().getType(), 1, "bias")))
    return failure();
  if (getType() != getInput().getType())
    return emitOpError("result type must equal the input type");
  if (dim(getGain(), 0) != dim(getInput(), 1) ||
      dim(getBias(), 0) != dim(getInput(), 1))
    return emitOpError() << "gain and bias must have " << dim(getInput(), 1)
                         << " elements, the normalised axis";
  if (!(getEps().convertToDouble() > 0.0))
    return emitOpError("expects eps > 0");
  return success();
}

/// A bias of a layer with `out` outputs is [out].
static LogicalResult verifyBias(Operation *op, Value bias, int64_t out,
                                StringRef what) {
  if (!bias)
    return success();
  if (failed(expectStatic(op, bias.getType(), 1, what)))
    return failure();
  if (dim(bias, 0) != out)
    return op->emitOpError() << what << " must have " << out
                             << " elements, got " << bias.getType();
  return success();
}

LogicalResult LinearOp::verify() {
  if (failed(expectStatic(*this, getInput().getType(), 2, "input")) ||
      failed(expectStatic(*this, getWeight().getType(), 2, "weight")) ||
      failed(expectStatic(*this, getType(), 2, "result")))
    return failure();
  if (dim(getWeight(), 1) != dim(getInput(), 1))
    return emitOpError() << "weight [out, in] has in = " << dim(getWeight(), 1)
                         << " but the input has " << dim(getInput(), 1)
                         << " features";
  if (dim(getResult(), 0) != dim(getInput(), 0) ||
      dim(getResult(), 1) != dim(getWeight(), 0))
    return emitOpError() << "result must be [" << dim(getInput(), 0) << ", "
                         << dim(getWeight(), 0) << "], got " << getType();
  return verifyBias(*this, getBias(), dim(getWeight(), 0), "bias");
}

LogicalResult RopeOp::verify() {
  if (failed(expectStatic(*this, getInput().getType(), 2, "input")))
    return failure();
  if (getType() != getInput().getType())
    return emitOpError("result type must equal the input type");
  int64_t width = dim(getInput(), 1), heads = getHeads();
  if (heads <= 0 || width % heads != 0)
    return emitOpError() << "heads (" << heads << ") must divide the width ("
                         << width << ")";
  if ((width / heads) % 2 != 0)
    return emitOpError() << "head_dim (" << width / heads << ") must be even";
  if (!(getBase().convertToDouble() > 0.0))
    return emitOpError("expects base > 0");
  if (failed(verifyOffset(*this, getOffset())))
    return failure();
  return verifyWindow(*this, getInput(), getWindow(), getOffset());
}

/// The shape rules `lathe.attention` and `lathe.fused_attention` share.
static LogicalResult verifyAttention(Operation *op, Value query, Value key,
                                     Value value, Value offset, int64_t heads,
                                     int64_t kvHeads, int64_t window) {
  if (failed(expectStatic(op, query.getType(), 2, "query")) ||
      failed(expectStatic(op, key.getType(), 2, "key")) ||
      failed(expectStatic(op, value.getType(), 2, "value")))
    return failure();
  if (heads <= 0 || kvHeads <= 0)
    return op->emitOpError("expects positive heads and kv_heads");
  if (heads % kvHeads != 0)
    return op->emitOpError() << "kv_heads (" << kvHeads
                             << ") must divide heads (" << heads << ")";
  int64_t width = dim(query, 1);
  if (width % heads != 0)
    return op->emitOpError() << "heads (" << heads
                             << ") must divide the query width (" << width
                             << ")";
  int64_t headDim = width / heads;
  if (key.getType() != value.getType())
    return op->emitOpError("key and value must have the same type");
  if (failed(verifyOffset(op, offset)))
    return failure();
  if (!offset && dim(key, 0) != dim(query, 0))
    return op->emitOpError("query and key must have the same sequence length");
  if (offset && dim(query, 0) > dim(key, 0))
    return op->emitOpError("has more query rows than key rows");
  if (dim(key, 1) != kvHeads * headDim)
    return op->emitOpError() << "key width must be kv_heads * head_dim = "
                             << kvHeads * headDim << ", got " << dim(key, 1);
  return verifyWindow(op, query, window, offset);
}

LogicalResult AttentionOp::verify() {
  if (failed(verifyAttention(*this, getQuery(), getKey(), getValue(),
                             getOffset(), getHeads(), getKvHeads(),
                             getWindow())))
    return failure();
  if (getType() != getQuery().getType())
    return emitOpError("result type must equal the query type");
  int64_t phases = getPhases();
  if (phases <= 0 || getHeads() % phases != 0 || getKvHeads() % phases != 0)
    return emitOpError() << "phases (" << phases
                         << ") must divide heads (" << getHeads()
                         << ") and kv_heads (" << getKvHeads()
                         << ") so that every head lies in one phase stripe";
  return success();
}

//===----------------------------------------------------------------------===//
// FusedAttentionOp
//===----------------------------------------------------------------------===//

/// The rule of lathe's kernel-level ops in destination-passing style: all
/// operands tensors (a result per init, the updated init, of its type) or
/// all memrefs (no results).
static LogicalResult verifyKernelForm(DestinationStyleOpInterface op) {
  bool tensors = isa<RankedTensorType>(op->getOperand(0).getType());
  for (Value v : op->getOperands())
    if (isa<RankedTensorType>(v.getType()) != tensors)
      return op->emitOpError("operands must be all tensors or all memrefs");
  unsigned want = tensors ? op.getNumDpsInits() : 0;
  if (op->getNumResults() != want)
    return op->emitOpError() << "expects " << want << " results with "
                             << (tensors ? "tensor" : "memref")
                             << " operands, got " << op->getNumResults();
  for (OpResult result : op->getResults())
    if (result.getType() != op.getDpsInits()[result.getResultNumber()].getType())
      return op->emitOpError("result type must equal the init type");
  return success();
}

LogicalResult FusedAttentionOp::verify() {
  if (failed(verifyAttention(*this, getQuery(), getKey(), getValue(),
                             getOffset(), getHeads(), getKvHeads(),
                             getWindow())) ||
      failed(verifyKernelForm(*this)))
    return failure();
  auto init = cast<ShapedType>(getInit().getType());
  auto query = cast<ShapedType>(getQuery().getType());
  if (init.getShape() != query.getShape() ||
      init.getElementType() != query.getElementType())
    return emitOpError("init must have the query's shape and element type");
  return success();
}

/// The effects of a kernel-level op in destination-passing style: on
/// tensors none; on buffers it reads its inputs and writes its init, which
/// it also reads where `initRead` (an update rather than an overwrite).
static void addBufferEffects(
    Operation *op, OpOperand &init, bool initRead,
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  for (OpOperand &operand : op->getOpOperands()) {
    if (!isa<MemRefType>(operand.get().getType()))
      continue;
    bool isInit = &operand == &init;
    if (!isInit || initRead)
      effects.emplace_back(MemoryEffects::Read::get(), &operand,
                           SideEffects::DefaultResource::get());
    if (isInit)
      effects.emplace_back(MemoryEffects::Write::get(), &operand,
                           SideEffects::DefaultResource::get());
  }
}

void FusedAttentionOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  addBufferEffects(*this, getInitMutable(), /*initRead=*/false, effects);
}

RankedTensorType MlpOp::getHiddenType() {
  return RankedTensorType::get({dim(getInput(), 0), dim(getUpWeight(), 0)},
                               Float32Type::get(getContext()));
}

MlpOp MlpOp::cloneWith(OpBuilder &b, TypeRange saved, Value accumulate) {
  auto mlp = MlpOp::create(b, getLoc(), getResult().getType(), saved,
                           getKind(), getInput(), getGateWeight(),
                           getGateBias(), getUpWeight(), getUpBias(),
                           getDownWeight(), getDownBias(), accumulate);
  mlp->setDiscardableAttrs(getOperation()->getDiscardableAttrDictionary());
  return mlp;
}

LogicalResult MlpOp::verify() {
  bool gated = getKind() == MlpKind::swiglu;
  if (gated && !getGateWeight())
    return emitOpError("swiglu needs a gate weight");
  if (!gated && (getGateWeight() || getGateBias()))
    return emitOpError() << stringifyMlpKind(getKind())
                         << " has no gate: drop the gate weight";
  if (failed(expectStatic(*this, getInput().getType(), 2, "input")) ||
      failed(expectStatic(*this, getUpWeight().getType(), 2, "up weight")) ||
      failed(expectStatic(*this, getDownWeight().getType(), 2, "down weight")))
    return failure();
  int64_t d = dim(getInput(), 1), width = dim(getUpWeight(), 0);
  if (dim(getUpWeight(), 1) != d)
    return emitOpError() << "up weight must be [width, " << d << "], got "
                         << getUpWeight().getType();
  if (gated && getGateWeight().getType() != getUpWeight().getType())
    return emitOpError("gate and up weights must have the same type");
  if (dim(getDownWeight(), 0) != d || dim(getDownWeight(), 1) != width)
    return emitOpError() << "down weight must be [" << d << ", " << width
                         << "], got " << getDownWeight().getType();
  if (failed(verifyBias(*this, getGateBias(), width, "gate bias")) ||
      failed(verifyBias(*this, getUpBias(), width, "up bias")) ||
      failed(verifyBias(*this, getDownBias(), d, "down bias")))
    return failure();
  if (getResult().getType() != getInput().getType())
    return emitOpError("result type must equal the input type");
  if (getAccumulate() && getAccumulate().getType() != getResult().getType())
    return emitOpError("accumulates into a tensor of another type");
  if (!getSaved().empty() && getSaved().size() != getNumHidden())
    return emitOpError() << "saves " << getSaved().size()
                         << " hidden values; " << stringifyMlpKind(getKind())
                         << " saves " << getNumHidden() << " or none";
  RankedTensorType savedType = getHiddenType();
  for (Value v : getSaved())
    if (v.getType() != savedType)
      return emitOpError() << "saved hidden values must be " << savedType
                           << ", got " << v.getType();
  return success();
}

//===----------------------------------------------------------------------===//
// LaunchOp
//===----------------------------------------------------------------------===//

LogicalResult LaunchOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  auto fn = symbolTable.lookupNearestSymbolFrom<func::FuncOp>(
      *this, getCalleeAttr());
  if (!fn)
    return emitOpError() << "refers to unknown kernel " << getCalleeAttr();
  if (!fn->hasAttr(kKernelAttrName))
    return emitOpError() << getCalleeAttr() << " is not a lathe.kernel";
  FunctionType type = fn.getFunctionType();
  unsigned numIn = getNumOperands(), numOut = getNumResults();
  if (type.getNumInputs() != numIn + numOut ||
      type.getNumResults() != numOut)
    return emitOpError() << "kernel " << getCalleeAttr() << " of type " << type
                         << " does not take " << numIn
                         << " operands plus one buffer per result";
  for (unsigned i = 0; i < numIn; ++i)
    if (type.getInput(i) != getOperand(i).getType())
      return emitOpError() << "operand " << i << " has type "
                           << getOperand(i).getType() << ", kernel expects "
                           << type.getInput(i);
  for (unsigned i = 0; i < numOut; ++i)
    if (type.getInput(numIn + i) != getResult(i).getType() ||
        type.getResult(i) != getResult(i).getType())
      return emitOpError() << "result " << i << " type does not match kernel";
  if (auto offsets = getOffsets())
    if (offsets->size() != numOut)
      return emitOpError("needs one offset per result");
  if (auto tied = getTied()) {
    if (tied->size() != numOut)
      return emitOpError("needs one tied entry per result");
    for (auto [i, t] : llvm::enumerate(*tied))
      if (t != -1 && (t < 0 || t >= static_cast<int64_t>(numIn) ||
                      getOperand(t).getType() != getResult(i).getType()))
        return emitOpError() << "result " << i
                             << " is tied to an invalid operand " << t;
  }
  return success();
}

//===----------------------------------------------------------------------===//
// Training
//===----------------------------------------------------------------------===//

/// `a` and `b` must have the same type; names them in the message.
static LogicalResult expectSameType(Operation *op, Value a, StringRef aName,
                                    Type b, StringRef bName) {
  if (a.getType() != b)
    return op->emitOpError() << aName << " must have the type of " << bName
                             << " (" << b << "), got " << a.getType();
  return success();
}

static LogicalResult verifyLogitsTargets(Operation *op, Value logits,
                                         Value targets) {
  if (failed(expectStatic(op, logits.getType(), 2, "logits")) ||
      failed(expectStatic(op, targets.getType(), 1, "targets")))
    return failure();
  if (dim(targets, 0) != dim(logits, 0))
    return op->emitOpError() << "has " << dim(targets, 0) << " targets for "
                             << dim(logits, 0) << " rows of logits";
  return success();
}

static LogicalResult expectScalar(Operation *op, Value v, StringRef what) {
  if (failed(expectStatic(op, v.getType(), 1, what)))
    return failure();
  if (dim(v, 0) != 1)
    return op->emitOpError() << "expects " << what
                             << " to be a tensor<1xf32>, got " << v.getType();
  return success();
}

LogicalResult TokenAccuracyOp::verify() {
  if (failed(verifyLogitsTargets(*this, getLogits(), getTargets())))
    return failure();
  return expectScalar(*this, getResult(), "the result");
}

LogicalResult BinaryCrossEntropyOp::verify() {
  if (failed(expectStatic(*this, getLogits().getType(), 2, "logits")))
    return failure();
  if (dim(getLogits(), 1) != 1)
    return emitOpError() << "expects one logit per row ([T, 1]), got "
                         << getLogits().getType();
  if (failed(expectScalar(*this, getTarget(), "the target")))
    return failure();
  return expectScalar(*this, getResult(), "the result");
}

LogicalResult SelectiveGateGradOp::verify() {
  if (failed(expectStatic(*this, getPre().getType(), 2, "pre")))
    return failure();
  return expectChannels(*this, getALog(), dim(getPre(), 1), "a_log");
}

LogicalResult CrossEntropyOp::verify() {
  if (failed(verifyLogitsTargets(*this, getLogits(), getTargets())))
    return failure();
  return expectScalar(*this, getLoss(), "the loss");
}

LogicalResult CrossEntropyGradOp::verify() {
  if (failed(verifyLogitsTargets(*this, getLogits(), getTargets())) ||
      failed(expectScalar(*this, getLossGrad(), "loss_grad")))
    return failure();
  return expectSameType(*this, getResult(), "the result",
                        getLogits().getType(), "the logits");
}

LogicalResult MatmulOp::verify() {
  if (failed(expectStatic(*this, getLhs().getType(), 2, "lhs")) ||
      failed(expectStatic(*this, getRhs().getType(), 2, "rhs")) ||
      failed(expectStatic(*this, getType(), 2, "result")))
    return failure();
  bool t = getTransposeLhs();
  int64_t m = dim(getLhs(), t ? 1 : 0), k = dim(getLhs(), t ? 0 : 1);
  if (k != dim(getRhs(), 0))
    return emitOpError() << "contracts " << k << " columns of "
                         << (t ? "lhs^T" : "lhs") << " with "
                         << dim(getRhs(), 0) << " rows of rhs";
  if (dim(getResult(), 0) != m || dim(getResult(), 1) != dim(getRhs(), 1))
    return emitOpError() << "result must be [" << m << ", "
                         << dim(getRhs(), 1) << "], got " << getType();
  return success();
}

/// A norm's (or its VJP's) input [T, D], gain [D] and eps > 0.
static LogicalResult verifyNormShapes(Operation *op, Value input, Value gain,
                                      APFloat eps) {
  if (failed(expectStatic(op, input.getType(), 2, "input")) ||
      failed(expectStatic(op, gain.getType(), 1, "gain")))
    return failure();
  if (dim(gain, 0) != dim(input, 1))
    return op->emitOpError() << "gain has " << dim(gain, 0)
                             << " elements but the normalised axis has "
                             << dim(input, 1);
  if (!(eps.convertToDouble() > 0.0))
    return op->emitOpError("expects eps > 0");
  return success();
}

LogicalResult RmsNormGradOp::verify() {
  if (failed(verifyNormShapes(*this, getInput(), getGain(), getEps())))
    return failure();
  int64_t phases = getPhases(), width = dim(getInput(), 1);
  if (phases <= 0 || width % phases != 0)
    return emitOpError() << "phases (" << phases
                         << ") must be positive and divide the width ("
                         << width << ")";
  Type x = getInput().getType();
  if (failed(expectSameType(*this, getResultGrad(), "result_grad", x,
                            "the input")) ||
      failed(expectSameType(*this, getInputGrad(), "input_grad", x,
                            "the input")))
    return failure();
  return expectSameType(*this, getGainGrad(), "gain_grad",
                        getGain().getType(), "the gain");
}

LogicalResult AttentionGradOp::verify() {
  if (failed(verifyAttention(*this, getQuery(), getKey(), getValue(),
                             /*offset=*/nullptr, getHeads(), getKvHeads(),
                             getWindow())))
    return failure();
  Type q = getQuery().getType(), k = getKey().getType();
  if (failed(expectSameType(*this, getResultGrad(), "result_grad", q,
                            "the query")) ||
      failed(expectSameType(*this, getQueryGrad(), "query_grad", q,
                            "the query")) ||
      failed(expectSameType(*this, getKeyGrad(), "key_grad", k, "the key")))
    return failure();
  return expectSameType(*this, getValueGrad(), "value_grad", k, "the key");
}

//===----------------------------------------------------------------------===//
// FusedAttentionGradOp
//===----------------------------------------------------------------------===//

LogicalResult FusedAttentionGradOp::verify() {
  if (failed(verifyAttention(*this, getQuery(), getKey(), getValue(),
                             /*offset=*/nullptr, getHeads(), getKvHeads(),
                             getWindow())) ||
      failed(verifyKernelForm(*this)))
    return failure();
  Type q = getQuery().getType(), k = getKey().getType();
  for (auto [name, v, like, likeName] :
       {std::tuple<StringRef, Value, Type, StringRef>{
            "result_grad", getResultGrad(), q, "the query"},
        {"output", getOutput(), q, "the query"},
        {"query_grad_init", getQueryGradInit(), q, "the query"},
        {"key_grad_init", getKeyGradInit(), k, "the key"},
        {"value_grad_init", getValueGradInit(), k, "the key"}})
    if (failed(expectSameType(*this, v, name, like, likeName)))
      return failure();
  auto stats = cast<ShapedType>(getStatsInit().getType());
  int64_t rows = dim(getQuery(), 0);
  if (!stats.hasStaticShape() || stats.getRank() != 2 ||
      stats.getDimSize(0) != rows ||
      stats.getDimSize(1) != 3 * int64_t(getHeads()) ||
      !stats.getElementType().isF32())
    return emitOpError() << "stats_init must be f32 [" << rows << ", "
                         << 3 * int64_t(getHeads())
                         << "] (rows, 3 * heads), got " << stats;
  return success();
}

void FusedAttentionGradOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  // Inputs read; the four inits written, not read.
  for (OpOperand &operand : getOperation()->getOpOperands()) {
    if (!isa<MemRefType>(operand.get().getType()))
      continue;
    if (isDpsInit(&operand))
      effects.emplace_back(MemoryEffects::Write::get(), &operand,
                           SideEffects::DefaultResource::get());
    else
      effects.emplace_back(MemoryEffects::Read::get(), &operand,
                           SideEffects::DefaultResource::get());
  }
}

LogicalResult SwigluGradOp::verify() {
  Type g = getGate().getType();
  for (auto [name, v] :
       {std::pair<StringRef, Value>{"up", getUp()},
        {"result_grad", getResultGrad()},
        {"gate_grad", getGateGrad()},
        {"up_grad", getUpGrad()}})
    if (failed(expectSameType(*this, v, name, g, "the gate")))
      return failure();
  return success();
}

LogicalResult EmbeddingGradOp::verify() {
  if (failed(expectStatic(*this, getTokens().getType(), 1, "tokens")) ||
      failed(expectStatic(*this, getResultGrad().getType(), 2,
                          "result_grad")) ||
      failed(expectStatic(*this, getType(), 2, "result")))
    return failure();
  if (dim(getResultGrad(), 0) != dim(getTokens(), 0))
    return emitOpError() << "has " << dim(getResultGrad(), 0)
                         << " gradient rows for " << dim(getTokens(), 0)
                         << " tokens";
  if (dim(getResult(), 1) != dim(getResultGrad(), 1))
    return emitOpError() << "result width " << dim(getResult(), 1)
                         << " differs from the gradient's "
                         << dim(getResultGrad(), 1);
  if (Value acc = getAccumulate())
    return expectSameType(*this, acc, "accumulate", getType(), "the result");
  return success();
}

LogicalResult ScatterAddRowsOp::verify() {
  auto indices = cast<ShapedType>(getIndices().getType());
  auto rows = cast<ShapedType>(getRows().getType());
  auto init = cast<ShapedType>(getInit().getType());
  bool tensors = isa<RankedTensorType>(init);
  for (Value v : getOperands())
    if (isa<RankedTensorType>(v.getType()) != tensors)
      return emitOpError("operands must be all tensors or all memrefs");
  if (!indices.hasStaticShape() || indices.getRank() != 1 ||
      !indices.getElementType().isInteger(32))
    return emitOpError() << "expects static i32 indices [T], got " << indices;
  if (!rows.hasStaticShape() || !init.hasStaticShape() || rows.getRank() != 2 ||
      init.getRank() != 2 || !rows.getElementType().isF32() ||
      rows.getElementType() != init.getElementType())
    return emitOpError() << "expects static f32 rows [T, D] and init [V, D], "
                            "got "
                         << rows << " and " << init;
  if (rows.getDimSize(0) != indices.getDimSize(0) ||
      rows.getDimSize(1) != init.getDimSize(1))
    return emitOpError() << "has " << rows.getDimSize(0) << " rows of width "
                         << rows.getDimSize(1) << " for "
                         << indices.getDimSize(0) << " indices into a table "
                         << "of width " << init.getDimSize(1);
  if (getNumResults() != (tensors ? 1u : 0u) ||
      (tensors && getResult()[0].getType() != init))
    return emitOpError() << "expects " << (tensors ? "one result of the init's "
                                                     "type"
                                                   : "no results")
                         << " with " << (tensors ? "tensor" : "memref")
                         << " operands";
  return success();
}

void ScatterAddRowsOp::getEffects(
    SmallVectorImpl<SideEffects::EffectInstance<MemoryEffects::Effect>>
        &effects) {
  // The rows add to what the table holds.
  addBufferEffects(*this, getInitMutable(), /*initRead=*/true, effects);
}

LogicalResult SumRowsOp::verify() {
  if (failed(expectStatic(*this, getInput().getType(), 2, "input")) ||
      failed(expectStatic(*this, getType(), 1, "result")))
    return failure();
  if (dim(getResult(), 0) != dim(getInput(), 1))
    return emitOpError() << "result must have " << dim(getInput(), 1)
                         << " elements, one per column, got " << getType();
  return success();
}

LogicalResult PadRowsOp::verify() {
  if (failed(expectStatic(*this, getInput().getType(), 2, "input")) ||
      failed(expectStatic(*this, getType(), 2, "result")))
    return failure();
  if (dim(getResult(), 1) != dim(getInput(), 1) ||
      dim(getResult(), 0) < dim(getInput(), 0))
    return emitOpError() << "pads " << getInput().getType() << " to "
                         << getType()
                         << ": the width must match and rows only grow";
  return success();
}

/// repeat_rows [T, D] -> [N T, D] and fold_rows [N T, D] -> [T, D]:
/// `few` is the side with T rows.
static LogicalResult verifyRowBlocks(Operation *op, Value few, Value many) {
  if (failed(expectStatic(op, few.getType(), 2, "the shorter side")) ||
      failed(expectStatic(op, many.getType(), 2, "the longer side")))
    return failure();
  if (dim(few, 1) != dim(many, 1) || dim(few, 0) == 0 ||
      dim(many, 0) % dim(few, 0) != 0)
    return op->emitOpError()
           << "needs the same width and a row count that is a multiple of "
           << dim(few, 0) << " on the repeated side, got " << few.getType()
           << " and " << many.getType();
  return success();
}

LogicalResult RepeatRowsOp::verify() {
  return verifyRowBlocks(*this, getInput(), getResult());
}

LogicalResult FoldRowsOp::verify() {
  return verifyRowBlocks(*this, getResult(), getInput());
}

LogicalResult LayerNormGradOp::verify() {
  if (failed(verifyNormShapes(*this, getInput(), getGain(), getEps())))
    return failure();
  Type x = getInput().getType(), g = getGain().getType();
  if (failed(expectSameType(*this, getResultGrad(), "result_grad", x,
                            "the input")) ||
      failed(expectSameType(*this, getInputGrad(), "input_grad", x,
                            "the input")) ||
      failed(expectSameType(*this, getGainGrad(), "gain_grad", g,
                            "the gain")))
    return failure();
  return expectSameType(*this, getBiasGrad(), "bias_grad", g, "the gain");
}

static LogicalResult expectUngated(Operation *op, MlpKind kind) {
  if (kind == MlpKind::swiglu)
    return op->emitOpError("is GELU or ReLU²; SwiGLU's gating is "
                           "lathe.swiglu");
  return success();
}

LogicalResult ActivationOp::verify() {
  return expectUngated(*this, getKind());
}

LogicalResult ActivationGradOp::verify() {
  return expectUngated(*this, getKind());
}

LogicalResult PhaseRotateThetaGradOp::verify() {
  if (failed(expectStatic(*this, getOutput().getType(), 2, "output")) ||
      failed(expectSameType(*this, getResultGrad(), "result_grad",
                            getOutput().getType(), "the output")) ||
      failed(expectStatic(*this, getType(), 1, "result")))
    return failure();
  int64_t phases = getPhases(), width = dim(getOutput(), 1);
  if (phases <= 0 || width % (2 * phases) != 0)
    return emitOpError() << "needs stripes of even width: phases (" << phases
                         << ") and a width of " << width;
  if (dim(getResult(), 0) != width / phases / 2)
    return emitOpError() << "has one angle per pair of a stripe, "
                         << width / phases / 2 << ", not " << dim(getResult(), 0);
  return success();
}

LogicalResult ParcaeInjectGradOp::verify() {
  Type be = getBe().getType(), c = getALog().getType();
  if (failed(expectStatic(*this, be, 2, "be")) ||
      failed(expectStatic(*this, c, 1, "a_log")))
    return failure();
  if (dim(getALog(), 0) != dim(getBe(), 1))
    return emitOpError() << "a_log has " << dim(getALog(), 0)
                         << " channels but be is " << dim(getBe(), 1)
                         << " wide";
  for (auto [name, v, want, what] :
       {std::tuple<StringRef, Value, Type, StringRef>{
            "dt_bias", getDtBias(), c, "a_log"},
        {"result_grad", getResultGrad(), be, "be"},
        {"be_grad", getBeGrad(), be, "be"},
        {"state_grad", getStateGrad(), be, "be"},
        {"a_log_grad", getALogGrad(), c, "a_log"},
        {"dt_bias_grad", getDtBiasGrad(), c, "a_log"}})
    if (failed(expectSameType(*this, v, name, want, what)))
      return failure();
  if (getState() &&
      failed(expectSameType(*this, getState(), "state", be, "be")))
    return failure();
  return success();
}

/// x [T, D] with one row [1, D] (a gate or a scale) and their cotangents.
static LogicalResult verifyRowOperand(Operation *op, Value x, Value row,
                                      Value dx, Value drow) {
  if (failed(expectStatic(op, x.getType(), 2, "the rows")) ||
      failed(expectStatic(op, row.getType(), 2, "the row")))
    return failure();
  if (dim(row, 0) != 1 || dim(row, 1) != dim(x, 1))
    return op->emitOpError() << "needs one row of " << dim(x, 1)
                             << " values, got " << row.getType();
  if (failed(expectSameType(op, dx, "the rows' cotangent", x.getType(),
                            "the rows")))
    return failure();
  return expectSameType(op, drow, "the row's cotangent", row.getType(),
                        "the row");
}

LogicalResult GatedAddGradOp::verify() {
  if (failed(expectSameType(*this, getResultGrad(), "result_grad",
                            getRhs().getType(), "rhs")))
    return failure();
  return verifyRowOperand(*this, getRhs(), getGate(), getRhsGrad(),
                          getGateGrad());
}

LogicalResult ModulatedRmsNormGradOp::verify() {
  if (!(getEps().convertToDouble() > 0.0))
    return emitOpError("expects eps > 0");
  if (failed(expectSameType(*this, getResultGrad(), "result_grad",
                            getInput().getType(), "the input")))
    return failure();
  return verifyRowOperand(*this, getInput(), getScale(), getInputGrad(),
                          getScaleGrad());
}

LogicalResult AssignOp::verify() {
  if (!getTarget().getDefiningOp<WeightOp>() &&
      !getTarget().getDefiningOp<CacheReadOp>())
    return emitOpError("writes in place, so its target must come from "
                       "lathe.weight or lathe.cache_read");
  return success();
}

LogicalResult GlobalNormOp::verify() {
  if (getGrads().empty())
    return emitOpError("needs at least one gradient");
  if (failed(expectScalar(*this, getScale(), "scale")) ||
      failed(expectScalar(*this, getNorm(), "the norm")) ||
      failed(expectScalar(*this, getFactor(), "the factor")))
    return failure();
  if (!(getMaxNorm().convertToDouble() > 0.0))
    return emitOpError("expects max_norm > 0");
  return success();
}

LogicalResult AdamwOp::verify() {
  for (auto [name, v] : {std::pair<StringRef, Value>{"lr", getLr()},
                         {"step", getStep()},
                         {"scale", getScale()},
                         {"factor", getFactor()}})
    if (failed(expectScalar(*this, v, name)))
      return failure();
  double b1 = getBeta1().convertToDouble(), b2 = getBeta2().convertToDouble();
  if (!(b1 >= 0.0 && b1 < 1.0) || !(b2 >= 0.0 && b2 < 1.0))
    return emitOpError("expects betas in [0, 1)");
  if (!(getEps().convertToDouble() > 0.0) ||
      !(getWeightDecay().convertToDouble() >= 0.0))
    return emitOpError("expects eps > 0 and weight_decay >= 0");
  return success();
}

LogicalResult MuonOp::verify() {
  for (auto [name, v] : {std::pair<StringRef, Value>{"lr", getLr()},
                         {"scale", getScale()},
                         {"factor", getFactor()}})
    if (failed(expectScalar(*this, v, name)))
      return failure();
  if (failed(expectStatic(*this, getParam().getType(), 2, "param")))
    return failure();
  double mu = getMomentum().convertToDouble();
  if (!(mu >= 0.0 && mu < 1.0))
    return emitOpError("expects a momentum in [0, 1)");
  if (!(getLrScale().convertToDouble() > 0.0) ||
      !(getWeightDecay().convertToDouble() >= 0.0))
    return emitOpError("expects lr_scale > 0 and weight_decay >= 0");
  return success();
}

#define GET_OP_CLASSES
#include "lathe/LatheOps.cpp.inc"

//===----------------------------------------------------------------------===//
// Loops with a runtime iteration count (Parcae's sampled depth)
//===----------------------------------------------------------------------===//

/// A runtime iteration count is one i32; iterations count from 0.
static LogicalResult verifyCount(Operation *op, Value count,
                                 std::optional<int64_t> iteration) {
  auto type = llvm::cast<RankedTensorType>(count.getType());
  if (type.getRank() != 1 || type.getDimSize(0) != 1)
    return op->emitOpError() << "count must be tensor<1xi32>, got " << type;
  if (!iteration)
    return op->emitOpError("with a count needs the iteration it stands at");
  if (*iteration < 0)
    return op->emitOpError() << "iteration must be >= 0, got " << *iteration;
  return success();
}

LogicalResult StopGradientOp::verify() {
  if (!getCount()) {
    if (getIteration() || getBackprop())
      return emitOpError("takes iteration and backprop only with a count");
    return success();
  }
  if (failed(verifyCount(*this, getCount(), getIteration())))
    return failure();
  if (!getBackprop() || *getBackprop() < 1)
    return emitOpError("with a count needs backprop >= 1: how many of the "
                       "iterations that run get a gradient");
  return success();
}

LogicalResult LoopSelectOp::verify() {
  return verifyCount(*this, getCount(), getIteration());
}

LogicalResult IterationMaskOp::verify() {
  if (failed(verifyCount(*this, getCount(), getIteration())))
    return failure();
  bool frozen = getMask() == IterationMask::unfrozen;
  if (frozen && (!getBackprop() || *getBackprop() < 1))
    return emitOpError("unfrozen needs backprop >= 1");
  if (!frozen && getBackprop())
    return emitOpError("takes backprop only with the unfrozen mask");
  return success();
}

LogicalResult GemmOp::verify() {
  for (Value v : getOperands()) {
    auto type = cast<MemRefType>(v.getType());
    if (!type.hasStaticShape() || !type.getLayout().isIdentity())
      return emitOpError("needs static row-major buffers, not ") << type;
  }
  auto size = [](Value v) -> int64_t {
    return v ? cast<MemRefType>(v.getType()).getNumElements() : -1;
  };
  ::lathe::GemmShape g;
  g.m = getM();
  g.n = getN();
  g.k = getK();
  g.batch = getBatch();
  g.transA = getTransA();
  g.transB = getTransB();
  g.lda = getLda();
  g.ldb = getLdb();
  g.ldd = getLdd();
  g.strideA = getStrideA();
  g.strideB = getStrideB();
  g.strideD = getStrideD();
  g.sizeA = size(getA());
  g.sizeB = size(getB());
  g.sizeD = size(getD());
  g.sizeC = size(getC());
  g.sizeBias = size(getBias());
  g.sizeAux = size(getAux());
  // The runtime checks an artifact's descriptors with the same function.
  if (std::string why = ::lathe::checkGemmShape(g); !why.empty())
    return emitOpError(why);
  // cuBLASLt keeps the value before the epilogue only for GELU (ReLU's is a
  // bit mask).
  if (getAux() && getEpilogue() != GemmEpilogue::gelu)
    return emitOpError("keeps an aux value only before a gelu epilogue");
  return success();
}
