//===- LowerToLinalg.cpp - lathe decoder ops to linalg -----------*- C++ -*-===//
//
// Each architecture-level op becomes a few `linalg.generic` ops on tensors.
// The generics are deliberately plain (one reduction or one elementwise map
// each): kernel formation decides what runs together, and the targets decide
// how each generic is tiled.
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Transforms/DialectConversion.h"

#include <cmath>
#include <limits>

namespace mlir::lathe {
#define GEN_PASS_DEF_LOWERTOLINALG
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

Value mlir::lathe::positionOffset(OpBuilder &b, Location loc, Value offset) {
  if (!offset)
    return arith::ConstantIndexOp::create(b, loc, 0);
  Value zero = arith::ConstantIndexOp::create(b, loc, 0);
  Value v = tensor::ExtractOp::create(b, loc, offset, ValueRange{zero});
  return arith::IndexCastOp::create(b, loc, b.getIndexType(), v);
}

namespace {

using utils::IteratorType;
constexpr IteratorType kPar = IteratorType::parallel;
constexpr IteratorType kRed = IteratorType::reduction;

/// out + a * b: the body of every product and dot generic below.
static Value mulAdd(OpBuilder &nb, Location l, ValueRange a) {
  return arith::AddFOp::create(nb, l, a[2],
                               arith::MulFOp::create(nb, l, a[0], a[1]));
}

/// Small builder for the generics below: keeps each lowering to its math.
struct GenericBuilder {
  OpBuilder &b;
  Location loc;
  /// The lathe op's `lathe.fusion_group`, carried onto every structured op
  /// built for it, so that kernel formation keeps the group together.
  IntegerAttr group = nullptr;

  template <typename OpT> OpT tag(OpT op) {
    if (group)
      op->setAttr(kFusionGroupAttrName, group);
    return op;
  }

  Value cst(double v) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
  }

  /// A tensor of `shape` filled with `init` (the reduction identity).
  Value filled(ArrayRef<int64_t> shape, double init) {
    Value empty = tensor::EmptyOp::create(b, loc, shape, b.getF32Type());
    return tag(linalg::FillOp::create(b, loc, ValueRange{cst(init)},
                                      ValueRange{empty}))
        .getResult(0);
  }

  Value empty(ArrayRef<int64_t> shape) {
    return tensor::EmptyOp::create(b, loc, shape, b.getF32Type());
  }

  /// Sum of squares of a [T, D] tensor into `shape`, reached through the
  /// (t, d) -> `into` map: per row, or per (row, stripe).
  Value sumSquares(Value x, ArrayRef<int64_t> shape, ArrayRef<AffineExpr> into);

  /// x / sqrt(ss / D + eps), in a generic's body: the RMS normalisation that
  /// RMSNorm, its per-phase form and LoopFormer's modulated form share.
  static Value rmsNormalize(OpBuilder &nb, Location l, Value x, Value ss,
                            float invD, float eps) {
    GenericBuilder in{nb, l};
    Value var = arith::AddFOp::create(
        nb, l, arith::MulFOp::create(nb, l, ss, in.cst(invD)), in.cst(eps));
    Value inv = arith::DivFOp::create(nb, l, in.cst(1.0),
                                      math::SqrtOp::create(nb, l, var));
    return arith::MulFOp::create(nb, l, x, inv);
  }

  /// Maps are written as lists of loop-dimension positions, with an optional
  /// `floordiv` on one result for GQA head sharing.
  AffineMap map(unsigned numLoops, ArrayRef<AffineExpr> results) {
    return AffineMap::get(numLoops, 0, results, b.getContext());
  }
  AffineExpr d(unsigned i) { return b.getAffineDimExpr(i); }
  AffineExpr getAffineConstant(int64_t v) { return b.getAffineConstantExpr(v); }

  Value generic(ValueRange ins, Value out, ArrayRef<AffineMap> maps,
                ArrayRef<IteratorType> iters,
                function_ref<Value(OpBuilder &, Location, ValueRange)> body) {
    auto op = tag(linalg::GenericOp::create(
        b, loc, TypeRange{out.getType()}, ins, ValueRange{out}, maps, iters,
        [&](OpBuilder &nb, Location nloc, ValueRange args) {
          linalg::YieldOp::create(nb, nloc, body(nb, nloc, args));
        }));
    return op.getResult(0);
  }

  /// y[t, o] = (r[t, o] +) sum_i x[t, i] * w[o, i] (+ b[o])   (w in
  /// nn.Linear layout). With r, the product accumulates into r itself.
  Value linear(Value x, Value w, Value bias = nullptr,
               Value accumulate = nullptr) {
    Value y = matmulTransposed(x, w, accumulate);
    if (!bias)
      return y;
    auto shape = llvm::cast<RankedTensorType>(y.getType()).getShape();
    return generic({y, bias}, empty(shape),
                   {map(2, {d(0), d(1)}), map(2, {d(1)}), map(2, {d(0), d(1)})},
                   {IteratorType::parallel, IteratorType::parallel},
                   [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                     return arith::AddFOp::create(nb, l, a[0], a[1]);
                   });
  }

  /// An elementwise map over a tensor of any rank.
  Value elementwise(ValueRange ins,
                    function_ref<Value(OpBuilder &, Location, ValueRange)> fn) {
    auto type = llvm::cast<RankedTensorType>(ins[0].getType());
    AffineMap id =
        AffineMap::getMultiDimIdentityMap(type.getRank(), b.getContext());
    SmallVector<AffineMap> maps(ins.size() + 1, id);
    SmallVector<IteratorType> iters(type.getRank(), IteratorType::parallel);
    return generic(ins, empty(type.getShape()), maps, iters, fn);
  }

  Value matmulTransposed(Value x, Value w, Value accumulate = nullptr) {
    auto xt = llvm::cast<RankedTensorType>(x.getType());
    auto wt = llvm::cast<RankedTensorType>(w.getType());
    Value out = accumulate
                    ? accumulate
                    : filled({xt.getDimSize(0), wt.getDimSize(0)}, 0.0);
    return generic({x, w}, out,
                   {map(3, {d(0), d(2)}), map(3, {d(1), d(2)}),
                    map(3, {d(0), d(1)})},
                   {kPar, kPar, kRed}, mulAdd);
  }
};

Value GenericBuilder::sumSquares(Value x, ArrayRef<int64_t> shape,
                                 ArrayRef<AffineExpr> into) {
  return generic({x}, filled(shape, 0.0), {map(2, {d(0), d(1)}), map(2, into)},
                 {kPar, kRed}, [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                   Value sq = arith::MulFOp::create(nb, l, a[0], a[0]);
                   return arith::AddFOp::create(nb, l, a[1], sq);
                 });
}

static SmallVector<int64_t> shapeOf(Value v) {
  return SmallVector<int64_t>(
      llvm::cast<RankedTensorType>(v.getType()).getShape());
}

static IntegerAttr groupOf(Operation *op) {
  return op->getAttrOfType<IntegerAttr>(kFusionGroupAttrName);
}

/// silu(a) = a / (1 + exp(-a)).
static Value silu(OpBuilder &b, Location l, Value a) {
  Value one = arith::ConstantOp::create(b, l, b.getF32FloatAttr(1.0f));
  Value den = arith::AddFOp::create(
      b, l, one, math::ExpOp::create(b, l, arith::NegFOp::create(b, l, a)));
  return arith::DivFOp::create(b, l, a, den);
}

/// sigmoid(a) = 1 / (1 + exp(-a)).
static Value sigmoid(OpBuilder &b, Location l, Value a) {
  Value one = arith::ConstantOp::create(b, l, b.getF32FloatAttr(1.0f));
  return arith::DivFOp::create(
      b, l, one,
      arith::AddFOp::create(
          b, l, one, math::ExpOp::create(b, l, arith::NegFOp::create(b, l, a))));
}

/// softplus(x) = max(x, 0) + log1p(exp(-|x|)), stable both ways.
static Value softplus(OpBuilder &b, Location l, Value x) {
  GenericBuilder in{b, l};
  return arith::AddFOp::create(
      b, l, arith::MaximumFOp::create(b, l, x, in.cst(0.0)),
      math::Log1pOp::create(
          b, l,
          math::ExpOp::create(
              b, l,
              arith::NegFOp::create(b, l, math::AbsFOp::create(b, l, x)))));
}

/// Index (loop position) as f32, for positions and masks.
static Value indexToF32(OpBuilder &b, Location loc, Value index) {
  Value i64 = arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
  return arith::SIToFPOp::create(b, loc, b.getF32Type(), i64);
}

/// Givens rotation of channel pairs, shared by RoPE and the Three-Phase
/// rotation: column c pairs with p = c + offset when `isFirst(c)` and with
/// p = c - offset otherwise, and turns by the angle whose cos and sin the
/// tables hold at `tableMap`: the pair's first element becomes
/// x_c cos - x_p sin, its second x_c cos + x_p sin.
static Value rotatePairs(GenericBuilder &g, Value x, Value cos, Value sin,
                         AffineMap tableMap, int64_t offset,
                         function_ref<Value(OpBuilder &, Location, Value)> isFirst) {
  SmallVector<int64_t> shape = shapeOf(x);
  AffineMap id = g.map(2, {g.d(0), g.d(1)});
  return g.generic(
      {x, cos, sin}, g.empty(shape), {id, tableMap, tableMap, id},
      {kPar, kPar}, [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
        Value step = arith::ConstantIndexOp::create(nb, l, offset);
        Value row = linalg::IndexOp::create(nb, l, 0);
        Value c = linalg::IndexOp::create(nb, l, 1);
        Value first = isFirst(nb, l, c);
        Value partner = arith::SelectOp::create(
            nb, l, first, arith::AddIOp::create(nb, l, c, step),
            arith::SubIOp::create(nb, l, c, step));
        Value xp = tensor::ExtractOp::create(nb, l, x, ValueRange{row, partner});
        Value xc = arith::MulFOp::create(nb, l, a[0], a[1]);
        Value ps = arith::MulFOp::create(nb, l, xp, a[2]);
        return arith::SelectOp::create(nb, l, first,
                                       arith::SubFOp::create(nb, l, xc, ps),
                                       arith::AddFOp::create(nb, l, xc, ps));
      });
}

struct LowerEmbedding : OpConversionPattern<EmbeddingOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(EmbeddingOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    Value table = adaptor.getTable();
    Value out = g.empty(shapeOf(op.getResult()));
    Value r = g.generic(
        {adaptor.getTokens()}, out, {g.map(2, {g.d(0)}), g.map(2, {g.d(0), g.d(1)})},
        {kPar, kPar}, [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          Value row = arith::IndexCastOp::create(nb, l, nb.getIndexType(), a[0]);
          Value col = linalg::IndexOp::create(nb, l, 1);
          return tensor::ExtractOp::create(nb, l, table, ValueRange{row, col});
        });
    rewriter.replaceOp(op, r);
    return success();
  }
};

/// RMSNorm over each of `phases` contiguous stripes of the row (one stripe
/// for the plain norm): sums of squares per (row, stripe), then the scaling.
struct LowerRmsNorm : OpConversionPattern<RmsNormOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(RmsNormOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getInput());
    int64_t phases = op.getPhases(), stripe = shape[1] / phases;
    Value x = adaptor.getInput();
    AffineExpr stripeOf = g.d(1).floorDiv(stripe);
    SmallVector<AffineExpr> perRow = {g.d(0)};
    if (phases > 1)
      perRow.push_back(stripeOf);
    SmallVector<int64_t> ssShape = {shape[0]};
    if (phases > 1)
      ssShape.push_back(phases);
    // Sum of squares per row (and stripe).
    Value ss = g.sumSquares(x, ssShape, perRow);
    float invD = 1.0f / static_cast<float>(stripe);
    float eps = static_cast<float>(op.getEps().convertToDouble());
    Value r = g.generic(
        {x, ss, adaptor.getGain()}, g.empty(shape),
        {g.map(2, {g.d(0), g.d(1)}), g.map(2, perRow), g.map(2, {g.d(1)}),
         g.map(2, {g.d(0), g.d(1)})},
        {kPar, kPar}, [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          Value y = GenericBuilder::rmsNormalize(nb, l, a[0], a[1], invD, eps);
          return arith::MulFOp::create(nb, l, y, a[2]);
        });
    rewriter.replaceOp(op, r);
    return success();
  }
};

/// Pair (2k, 2k+1) of stripe i turns by theta[k] + 2 pi i / N. Each output
/// element reads its partner, so the rotation is one elementwise pass.
struct LowerPhaseRotate : OpConversionPattern<PhaseRotateOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(PhaseRotateOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getInput());
    int64_t phases = op.getPhases(), stripe = shape[1] / phases;
    Value x = adaptor.getInput();
    double offsetStep = 2.0 * M_PI / static_cast<double>(phases);
    // The angle of column c does not depend on the row: cos and sin are one
    // [D] table each, computed once per call; theta's index for column c is
    // (c mod stripe) / 2.
    auto f32 = rewriter.getF32Type();
    auto tableType = RankedTensorType::get({shape[1]}, f32);
    AffineMap col = g.map(1, {g.d(0)});
    auto table = g.tag(linalg::GenericOp::create(
        rewriter, op.getLoc(), TypeRange{tableType, tableType},
        ValueRange{adaptor.getTheta()},
        ValueRange{g.empty({shape[1]}), g.empty({shape[1]})},
        ArrayRef<AffineMap>{g.map(1, {(g.d(0) % stripe).floorDiv(2)}), col, col},
        ArrayRef<utils::IteratorType>{kPar},
        [&](OpBuilder &nb, Location l, ValueRange a) {
          GenericBuilder in{nb, l};
          Value c = linalg::IndexOp::create(nb, l, 0);
          Value phase = arith::DivUIOp::create(
              nb, l, c, arith::ConstantIndexOp::create(nb, l, stripe));
          Value phi = arith::AddFOp::create(
              nb, l, a[0],
              arith::MulFOp::create(nb, l, indexToF32(nb, l, phase),
                                    in.cst(offsetStep)));
          // The inverse rotation (the VJP in x) turns by -phi.
          if (op.getInverse())
            phi = arith::NegFOp::create(nb, l, phi);
          linalg::YieldOp::create(nb, l,
                                  ValueRange{math::CosOp::create(nb, l, phi),
                                             math::SinOp::create(nb, l, phi)});
        }));
    // Stripes have even width, so a column's parity is its parity within
    // the stripe: even columns start a pair (x_2k c - x_2k+1 s), odd ones
    // end it (x_2k s + x_2k+1 c).
    Value r = rotatePairs(
        g, x, table.getResult(0), table.getResult(1), g.map(2, {g.d(1)}), 1,
        [](OpBuilder &nb, Location l, Value c) -> Value {
          auto idx = [&](int64_t v) {
            return arith::ConstantIndexOp::create(nb, l, v);
          };
          return arith::CmpIOp::create(
              nb, l, arith::CmpIPredicate::eq,
              arith::RemUIOp::create(nb, l, c, idx(2)), idx(0));
        });
    rewriter.replaceOp(op, r);
    return success();
  }
};

/// One routing site of (Delta) Attention Residuals as three generics that
/// kernel formation keeps together: per source, one pass for its sum of
/// squares and its dot product with w * g (so z_n = dot_n / rms_n without
/// forming the normalised key); a softmax over the N scores per token; one
/// weighted sum of the sources (plus the base for additive routing).
/// A routing site's candidates and per-token weights, computed the way
/// lathe.depth_attention computes them; its VJP and routing_entropy
/// recompute them through the same code.
struct RoutingWeights {
  SmallVector<Value> sources; // the null source first, when there is one
  Value null;
  SmallVector<bool> ownSumSq;  // the site computes this source's sum of squares
  SmallVector<Value> alpha;    // [T] per candidate
  SmallVector<Value> score;    // z_n [T], with scores
  SmallVector<Value> invRms;   // 1 / rms_n [T], with scores

  /// (t, d) -> S_n[t, d], or -> null[d] for the null source.
  AffineMap sourceMap(GenericBuilder &g, size_t i) const {
    return sources[i] == null ? g.map(2, {g.d(1)}) : g.map(2, {g.d(0), g.d(1)});
  }
};

static RoutingWeights routingWeights(GenericBuilder &g, ValueRange sourcesIn,
                                     ValueRange given, Value query, Value gain,
                                     Value null, double epsAttr,
                                     bool withScores) {
  OpBuilder &rewriter = g.b;
  Location loc = g.loc;
  RoutingWeights rw;
  SmallVector<int64_t> shape = shapeOf(sourcesIn.front());
  int64_t rows = shape[0];
  // A null source is source 0, read through a (t, d) -> (d) map: the same
  // vector for every token.
  rw.null = null;
  if (null)
    rw.sources.push_back(null);
  llvm::append_range(rw.sources, sourcesIn);
  size_t n = rw.sources.size();
  auto f32 = rewriter.getF32Type();
  auto rowType = RankedTensorType::get({rows}, f32);
  AffineMap td = g.map(2, {g.d(0), g.d(1)}), t = g.map(2, {g.d(0)}),
            d = g.map(2, {g.d(1)});
  // Per source, its dot product with w * g, and its sum of squares unless
  // the op brings it (computed once where the source was produced).
  SmallVector<Value> sumSq, dots;
  for (Value source : rw.sources) {
    bool isNull = source == null;
    bool own = given.empty() || isNull; // computes its sum of squares
    rw.ownSumSq.push_back(own);
    SmallVector<Type> types = {rowType};
    SmallVector<Value> inits = {g.filled({rows}, 0.0)};
    SmallVector<AffineMap> maps = {isNull ? d : td, d, d, t};
    if (own) {
      types.push_back(rowType);
      inits.push_back(g.filled({rows}, 0.0));
      maps.push_back(t);
    }
    auto stats = g.tag(linalg::GenericOp::create(
        rewriter, loc, types, ValueRange{source, query, gain}, inits, maps,
        ArrayRef<utils::IteratorType>{kPar, kRed},
        [&](OpBuilder &nb, Location l, ValueRange a) {
          Value wg = arith::MulFOp::create(nb, l, a[1], a[2]);
          SmallVector<Value> out = {arith::AddFOp::create(
              nb, l, a[3], arith::MulFOp::create(nb, l, a[0], wg))};
          if (own)
            out.push_back(arith::AddFOp::create(
                nb, l, a[4], arith::MulFOp::create(nb, l, a[0], a[0])));
          linalg::YieldOp::create(nb, l, out);
        }));
    dots.push_back(stats.getResult(0));
    if (own)
      sumSq.push_back(stats.getResult(1));
    else
      sumSq.push_back(given[sumSq.size() - (null ? 1 : 0)]);
  }
  // alpha_n = softmax_n(dot_n / sqrt(ss_n / D + eps)) per token (and, with
  // scores, z_n and 1 / rms_n).
  float invD = 1.0f / static_cast<float>(shape[1]);
  float eps = static_cast<float>(epsAttr);
  SmallVector<Value> statIns(sumSq);
  statIns.append(dots);
  size_t outs = withScores ? 3 * n : n;
  SmallVector<Value> inits;
  for (size_t i = 0; i < outs; ++i)
    inits.push_back(g.empty({rows}));
  SmallVector<Type> types(outs, rowType);
  SmallVector<AffineMap> maps(2 * n + outs, g.map(1, {g.d(0)}));
  auto weights = g.tag(linalg::GenericOp::create(
      rewriter, loc, types, statIns, inits, maps,
      ArrayRef<utils::IteratorType>{kPar},
      [&](OpBuilder &nb, Location l, ValueRange a) {
        GenericBuilder in{nb, l};
        SmallVector<Value> z, inv;
        for (size_t i = 0; i < n; ++i) {
          Value ms = arith::AddFOp::create(
              nb, l, arith::MulFOp::create(nb, l, a[i], in.cst(invD)),
              in.cst(eps));
          inv.push_back(arith::DivFOp::create(nb, l, in.cst(1.0),
                                              math::SqrtOp::create(nb, l, ms)));
          z.push_back(arith::MulFOp::create(nb, l, a[n + i], inv.back()));
        }
        Value m = z[0];
        for (size_t i = 1; i < n; ++i)
          m = arith::MaximumFOp::create(nb, l, m, z[i]);
        SmallVector<Value> e;
        Value sum = in.cst(0.0);
        for (size_t i = 0; i < n; ++i) {
          e.push_back(
              math::ExpOp::create(nb, l, arith::SubFOp::create(nb, l, z[i], m)));
          sum = arith::AddFOp::create(nb, l, sum, e.back());
        }
        SmallVector<Value> out;
        for (size_t i = 0; i < n; ++i)
          out.push_back(arith::DivFOp::create(nb, l, e[i], sum));
        if (withScores) {
          out.append(z);
          out.append(inv);
        }
        linalg::YieldOp::create(nb, l, out);
      }));
  ValueRange results = weights.getResults();
  rw.alpha.assign(results.begin(), results.begin() + n);
  if (withScores) {
    rw.score.assign(results.begin() + n, results.begin() + 2 * n);
    rw.invRms.assign(results.begin() + 2 * n, results.end());
  }
  return rw;
}

struct LowerDepthAttention : OpConversionPattern<DepthAttentionOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(DepthAttentionOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getSources().front());
    RoutingWeights rw = routingWeights(
        g, adaptor.getSources(), adaptor.getNorms(), adaptor.getQuery(),
        adaptor.getGain(), adaptor.getNull(), op.getEps().convertToDouble(),
        /*withScores=*/false);
    const SmallVector<Value> &sources = rw.sources;
    Value null = rw.null;
    size_t n = sources.size();
    AffineMap td = g.map(2, {g.d(0), g.d(1)}), t = g.map(2, {g.d(0)}),
              d = g.map(2, {g.d(1)});
    // result = [base +] [act(gate) *] sum_n alpha_n S_n
    SmallVector<Value> mixIns(sources.begin(), sources.end());
    llvm::append_range(mixIns, rw.alpha);
    SmallVector<AffineMap> mixMaps;
    for (Value source : sources)
      mixMaps.push_back(source == null ? d : td);
    mixMaps.append(n, t);
    Value base = adaptor.getBase(), gate = adaptor.getGate();
    if (base) {
      mixIns.push_back(base);
      mixMaps.push_back(td);
    }
    if (gate) {
      mixIns.push_back(gate);
      mixMaps.push_back(shapeOf(op.getGate()).size() == 1
                            ? g.map(2, {g.getAffineConstant(0)})
                            : td);
    }
    mixMaps.push_back(td);
    bool sigmoidGate = op.getGateActivation() == GateActivation::sigmoid;
    Value r = g.generic(mixIns, g.empty(shape), mixMaps, {kPar, kPar},
                        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                          GenericBuilder in{nb, l};
                          Value acc = in.cst(0.0);
                          for (size_t i = 0; i < n; ++i)
                            acc = arith::AddFOp::create(
                                nb, l, acc,
                                arith::MulFOp::create(nb, l, a[n + i], a[i]));
                          if (gate) {
                            Value s = a[2 * n + (base ? 1 : 0)];
                            acc = arith::MulFOp::create(
                                nb, l, sigmoidGate ? sigmoid(nb, l, s) : s, acc);
                          }
                          return base ? arith::AddFOp::create(nb, l, a[2 * n], acc)
                                      : acc;
                        });
    rewriter.replaceOp(op, r);
    return success();
  }
};

/// ln(max(alpha, 1e-30)): alpha ln alpha is 0 where alpha underflowed.
static Value safeLog(OpBuilder &nb, Location l, Value alpha) {
  GenericBuilder in{nb, l};
  return math::LogOp::create(
      nb, l, arith::MaximumFOp::create(nb, l, alpha, in.cst(1e-30)));
}

/// H = -sum_n alpha_n ln alpha_n, in a generic's body.
static Value routingEntropy(OpBuilder &nb, Location l, ValueRange alpha) {
  GenericBuilder in{nb, l};
  Value h = in.cst(0.0);
  for (Value a : alpha)
    h = arith::SubFOp::create(nb, l, h,
                              arith::MulFOp::create(nb, l, a, safeLog(nb, l, a)));
  return h;
}

/// The routing weights, then the mean over tokens of their entropy. Loops
/// (0, t): a unit parallel loop outside the reduction, for the GPU mapping.
struct LowerRoutingEntropy : OpConversionPattern<RoutingEntropyOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(RoutingEntropyOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    int64_t rows = shapeOf(op.getSources().front())[0];
    RoutingWeights rw = routingWeights(
        g, adaptor.getSources(), adaptor.getNorms(), adaptor.getQuery(),
        adaptor.getGain(), adaptor.getNull(), op.getEps().convertToDouble(),
        /*withScores=*/false);
    size_t n = rw.alpha.size();
    SmallVector<AffineMap> maps(n, g.map(2, {g.d(1)}));
    maps.push_back(g.map(2, {g.d(0)}));
    float invT = 1.0f / static_cast<float>(rows);
    rewriter.replaceOp(
        op, g.generic(rw.alpha, g.filled({1}, 0.0), maps, {kPar, kRed},
                      [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                        GenericBuilder in{nb, l};
                        Value h = routingEntropy(nb, l, a.take_front(n));
                        return arith::AddFOp::create(
                            nb, l, a[n],
                            arith::MulFOp::create(nb, l, h, in.cst(invT)));
                      }));
    return success();
  }
};

/// Abar h + Delta be, elementwise, with Delta = softplus(dt_bias) and
/// Abar = exp(-Delta exp(A_log)) recomputed per element (cheap next to the
/// loads, and it keeps the op one pass).
struct LowerParcaeInject : OpConversionPattern<ParcaeInjectOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(ParcaeInjectOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getBe());
    AffineMap td = g.map(2, {g.d(0), g.d(1)}), d = g.map(2, {g.d(1)});
    SmallVector<Value> ins = {adaptor.getBe(), adaptor.getALog(),
                              adaptor.getDtBias()};
    SmallVector<AffineMap> maps = {td, d, d};
    Value state = adaptor.getState();
    if (state) {
      ins.push_back(state);
      maps.push_back(td);
    }
    maps.push_back(td);
    Value r = g.generic(
        ins, g.empty(shape), maps, {kPar, kPar},
        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          Value delta = softplus(nb, l, a[2]);
          Value u = arith::MulFOp::create(nb, l, delta, a[0]);
          if (!state)
            return u;
          Value abar = math::ExpOp::create(
              nb, l,
              arith::NegFOp::create(
                  nb, l,
                  arith::MulFOp::create(nb, l, delta,
                                        math::ExpOp::create(nb, l, a[1]))));
          return arith::AddFOp::create(nb, l, u,
                                       arith::MulFOp::create(nb, l, abar, a[3]));
        });
    rewriter.replaceOp(op, r);
    return success();
  }
};

/// LoopFormer's conditioning ops: sinusoidal features of a compile-time
/// scalar, SiLU, the gain-free RMSNorm scaled by (1 + s), and the gated
/// residual. Each is one or two generics; the [1, D] rows broadcast over
/// tokens through a (0, d) map.
struct LowerSinusoid : OpConversionPattern<SinusoidOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(SinusoidOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getResult());
    int64_t half = shape[1] / 2;
    float logStep = static_cast<float>(-std::log(1e4) / double(half));
    // The scalar: a constant, or a table element read in the body.
    Value table = adaptor.getTable();
    float value =
        table ? 0.0f : static_cast<float>(op.getValue()->convertToDouble());
    int64_t index = op.getIndex().value_or(0);
    Value r = g.generic(
        {}, g.empty(shape), {g.map(2, {g.d(0), g.d(1)})}, {kPar, kPar},
        [&](OpBuilder &nb, Location l, ValueRange) -> Value {
          GenericBuilder in{nb, l};
          Value j = linalg::IndexOp::create(nb, l, 1);
          Value h = arith::ConstantIndexOp::create(nb, l, half);
          Value first = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::ult,
                                              j, h);
          Value k = arith::RemUIOp::create(nb, l, j, h);
          Value freq = math::ExpOp::create(
              nb, l,
              arith::MulFOp::create(nb, l, indexToF32(nb, l, k),
                                    in.cst(logStep)));
          Value s = table ? tensor::ExtractOp::create(
                                nb, l, table,
                                ValueRange{arith::ConstantIndexOp::create(
                                    nb, l, index)})
                                .getResult()
                          : in.cst(value);
          Value angle = arith::MulFOp::create(nb, l, freq, s);
          return arith::SelectOp::create(nb, l, first,
                                         math::CosOp::create(nb, l, angle),
                                         math::SinOp::create(nb, l, angle));
        });
    rewriter.replaceOp(op, r);
    return success();
  }
};

struct LowerSilu : OpConversionPattern<SiluOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(SiluOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    rewriter.replaceOp(
        op, g.elementwise({adaptor.getInput()},
                          [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                            return silu(nb, l, a[0]);
                          }));
    return success();
  }
};

struct LowerModulatedRmsNorm : OpConversionPattern<ModulatedRmsNormOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(ModulatedRmsNormOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getInput());
    Value x = adaptor.getInput();
    AffineMap td = g.map(2, {g.d(0), g.d(1)}), t = g.map(2, {g.d(0)}),
              row = g.map(2, {g.getAffineConstant(0), g.d(1)});
    Value ss = g.sumSquares(x, {shape[0]}, {g.d(0)});
    float invD = 1.0f / static_cast<float>(shape[1]);
    float eps = static_cast<float>(op.getEps().convertToDouble());
    Value r = g.generic(
        {x, ss, adaptor.getScale()}, g.empty(shape), {td, t, row, td},
        {kPar, kPar}, [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          Value y = GenericBuilder::rmsNormalize(nb, l, a[0], a[1], invD, eps);
          return arith::MulFOp::create(
              nb, l, y, arith::AddFOp::create(nb, l, a[2], in.cst(1.0)));
        });
    rewriter.replaceOp(op, r);
    return success();
  }
};

struct LowerGatedAdd : OpConversionPattern<GatedAddOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(GatedAddOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getLhs());
    AffineMap td = g.map(2, {g.d(0), g.d(1)}),
              row = g.map(2, {g.getAffineConstant(0), g.d(1)});
    Value r = g.generic(
        {adaptor.getLhs(), adaptor.getRhs(), adaptor.getGate()},
        g.empty(shape), {td, td, row, td}, {kPar, kPar},
        [](OpBuilder &nb, Location l, ValueRange a) -> Value {
          return arith::AddFOp::create(nb, l, a[0],
                                       arith::MulFOp::create(nb, l, a[2], a[1]));
        });
    rewriter.replaceOp(op, r);
    return success();
  }
};

/// The identity: differentiation has already cut the gradient here.
struct LowerStopGradient : OpConversionPattern<StopGradientOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(StopGradientOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    rewriter.replaceOp(op, adaptor.getInput());
    return success();
  }
};

/// Whether iteration t runs (t < n), or with `skipped` whether it does not
/// (t >= n), in a generic's body reading the count.
static Value iterationRuns(OpBuilder &nb, Location l, Value count, int64_t t,
                           bool skipped = false) {
  Value n = positionOffset(nb, l, count);
  return arith::CmpIOp::create(
      nb, l, skipped ? arith::CmpIPredicate::sge : arith::CmpIPredicate::slt,
      arith::ConstantIndexOp::create(nb, l, t), n);
}

/// next where iteration t runs, previous where it is skipped; elementwise.
struct LowerLoopSelect : OpConversionPattern<LoopSelectOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(LoopSelectOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    Value count = adaptor.getCount();
    int64_t t = op.getIteration();
    rewriter.replaceOp(
        op, g.elementwise({adaptor.getNext(), adaptor.getPrevious()},
                          [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                            return arith::SelectOp::create(
                                nb, l, iterationRuns(nb, l, count, t), a[0],
                                a[1]);
                          }));
    return success();
  }
};

/// x where the mask's condition holds for (t, n), 0 elsewhere.
struct LowerIterationMask : OpConversionPattern<IterationMaskOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(IterationMaskOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    Value count = adaptor.getCount();
    int64_t t = op.getIteration();
    IterationMask mask = op.getMask();
    int64_t backprop = op.getBackprop().value_or(0);
    rewriter.replaceOp(
        op, g.elementwise(
                {adaptor.getInput()},
                [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                  GenericBuilder in{nb, l};
                  Value keep;
                  if (mask == IterationMask::unfrozen) {
                    // frozen at t == n - min(n, backprop) = max(n - k, 0)
                    Value n = positionOffset(nb, l, count);
                    Value k = arith::ConstantIndexOp::create(nb, l, backprop);
                    Value zero = arith::ConstantIndexOp::create(nb, l, 0);
                    Value at = arith::MaxSIOp::create(
                        nb, l, arith::SubIOp::create(nb, l, n, k), zero);
                    keep = arith::CmpIOp::create(
                        nb, l, arith::CmpIPredicate::ne,
                        arith::ConstantIndexOp::create(nb, l, t), at);
                  } else {
                    keep = iterationRuns(nb, l, count, t,
                                         mask == IterationMask::inactive);
                  }
                  return arith::SelectOp::create(nb, l, keep, a[0],
                                                 in.cst(0.0));
                }));
    return success();
  }
};

/// sum_d x[t, d]^2 per row.
struct LowerRowSumSquares : OpConversionPattern<RowSumSquaresOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(RowSumSquaresOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getInput());
    rewriter.replaceOp(op, g.sumSquares(adaptor.getInput(), {shape[0]}, {g.d(0)}));
    return success();
  }
};

/// x + (1/(p+1) - mean(x)) per row: a row mean, then one elementwise pass.
/// The position of a generic's row (loop 0): `offset + row`, or `row mod
/// window` for a batch of windows (which has no offset).
static Value rowPosition(OpBuilder &b, Location l, Value offset,
                         int64_t window) {
  Value row = linalg::IndexOp::create(b, l, 0);
  if (window > 0)
    return arith::RemUIOp::create(b, l, row,
                                  arith::ConstantIndexOp::create(b, l, window));
  return arith::AddIOp::create(b, l, row, positionOffset(b, l, offset));
}

struct LowerDcInject : OpConversionPattern<DcInjectOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(DcInjectOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getInput());
    Value x = adaptor.getInput(), offset = adaptor.getOffset();
    float invD = 1.0f / static_cast<float>(shape[1]);
    AffineMap td = g.map(2, {g.d(0), g.d(1)}), t = g.map(2, {g.d(0)});
    Value mean = g.generic({x}, g.filled({shape[0]}, 0.0), {td, t},
                           {kPar, kRed},
                           [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                             GenericBuilder in{nb, l};
                             return arith::AddFOp::create(
                                 nb, l, a[1],
                                 arith::MulFOp::create(nb, l, a[0],
                                                       in.cst(invD)));
                           });
    Value r = g.generic(
        {x, mean}, g.empty(shape), {td, t, td}, {kPar, kPar},
        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          Value p = rowPosition(nb, l, offset, op.getWindow());
          Value horn = arith::DivFOp::create(
              nb, l, in.cst(1.0),
              arith::AddFOp::create(nb, l, indexToF32(nb, l, p), in.cst(1.0)));
          return arith::AddFOp::create(nb, l, a[0],
                                       arith::SubFOp::create(nb, l, horn, a[1]));
        });
    rewriter.replaceOp(op, r);
    return success();
  }
};

struct LowerLayerNorm : OpConversionPattern<LayerNormOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(LayerNormOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getInput());
    Value x = adaptor.getInput();
    float invD = 1.0f / static_cast<float>(shape[1]);
    AffineMap td = g.map(2, {g.d(0), g.d(1)}), t = g.map(2, {g.d(0)}),
              d = g.map(2, {g.d(1)});
    // Two passes (mean, then the variance around it) rather than E[x^2] -
    // E[x]^2, which cancels badly when |mean| >> std.
    Value mean = g.generic({x}, g.filled({shape[0]}, 0.0), {td, t},
                           {kPar, kRed},
                           [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                             GenericBuilder in{nb, l};
                             Value s = arith::MulFOp::create(nb, l, a[0],
                                                             in.cst(invD));
                             return arith::AddFOp::create(nb, l, a[1], s);
                           });
    Value var = g.generic(
        {x, mean}, g.filled({shape[0]}, 0.0), {td, t, t}, {kPar, kRed},
        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          Value c = arith::SubFOp::create(nb, l, a[0], a[1]);
          Value sq = arith::MulFOp::create(nb, l, c, c);
          Value s = arith::MulFOp::create(nb, l, sq, in.cst(invD));
          return arith::AddFOp::create(nb, l, a[2], s);
        });
    float eps = static_cast<float>(op.getEps().convertToDouble());
    Value r = g.generic(
        {x, mean, var, adaptor.getGain(), adaptor.getBias()}, g.empty(shape),
        {td, t, t, d, d, td}, {kPar, kPar},
        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          Value c = arith::SubFOp::create(nb, l, a[0], a[1]);
          Value sd = math::SqrtOp::create(
              nb, l, arith::AddFOp::create(nb, l, a[2], in.cst(eps)));
          Value n = arith::DivFOp::create(nb, l, c, sd);
          return arith::AddFOp::create(
              nb, l, arith::MulFOp::create(nb, l, n, a[3]), a[4]);
        });
    rewriter.replaceOp(op, r);
    return success();
  }
};

struct LowerLinear : OpConversionPattern<LinearOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(LinearOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    rewriter.replaceOp(op, g.linear(adaptor.getInput(), adaptor.getWeight(),
                                    adaptor.getBias(), adaptor.getAccumulate()));
    return success();
  }
};

struct LowerRope : OpConversionPattern<RopeOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(RopeOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getInput());
    int64_t headDim = shape[1] / op.getHeads(), half = headDim / 2;
    // freq_j = base^(-2j/head_dim) = exp(j * -2 ln(base) / head_dim)
    float logStep = static_cast<float>(
        -2.0 * std::log(op.getBase().convertToDouble()) /
        static_cast<double>(headDim));
    Value x = adaptor.getInput();
    Value offset = adaptor.getOffset();
    // cos and sin of angle (t, j) depend on the position and the pair index
    // only, not on the head: one [T, half] table each, computed once, then
    // read by every head's rotation.
    auto f32 = rewriter.getF32Type();
    auto tableType = RankedTensorType::get({shape[0], half}, f32);
    auto table = linalg::GenericOp::create(
        rewriter, op.getLoc(), TypeRange{tableType, tableType}, ValueRange{},
        ValueRange{g.empty({shape[0], half}), g.empty({shape[0], half})},
        ArrayRef<AffineMap>{g.map(2, {g.d(0), g.d(1)}),
                            g.map(2, {g.d(0), g.d(1)})},
        ArrayRef<utils::IteratorType>{kPar, kPar},
        [&](OpBuilder &nb, Location l, ValueRange) {
          GenericBuilder in{nb, l};
          Value j = linalg::IndexOp::create(nb, l, 1);
          Value t = rowPosition(nb, l, offset, op.getWindow());
          Value freq = math::ExpOp::create(
              nb, l,
              arith::MulFOp::create(nb, l, indexToF32(nb, l, j),
                                    in.cst(logStep)));
          Value angle =
              arith::MulFOp::create(nb, l, indexToF32(nb, l, t), freq);
          // The inverse rotation (RoPE's VJP) turns by minus the angle.
          if (op.getInverse())
            angle = arith::NegFOp::create(nb, l, angle);
          linalg::YieldOp::create(nb, l,
                                  ValueRange{math::CosOp::create(nb, l, angle),
                                             math::SinOp::create(nb, l, angle)});
        });
    g.tag(table);
    // Column c of head h pairs with c +- half; its angle is column c % half
    // of the tables (half divides head_dim).
    // (x_i, x_{i+half}) -> (x_i c - x_{i+half} s, x_{i+half} c + x_i s)
    Value r = rotatePairs(
        g, x, table.getResult(0), table.getResult(1),
        g.map(2, {g.d(0), g.d(1) % half}), half,
        [&](OpBuilder &nb, Location l, Value c) -> Value {
          auto idx = [&](int64_t v) {
            return arith::ConstantIndexOp::create(nb, l, v);
          };
          Value i = arith::RemUIOp::create(nb, l, c, idx(headDim));
          return arith::CmpIOp::create(nb, l, arith::CmpIPredicate::ult, i,
                                       idx(half));
        });
    rewriter.replaceOp(op, r);
    return success();
  }
};

/// Attention is one kernel-level op rather than a chain of generics around a
/// [heads, Tq, Tk] score tensor: its online softmax needs running state per
/// query row, which no single structured op expresses, and the fused form
/// never materialises the scores.
struct LowerAttention : OpConversionPattern<AttentionOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(AttentionOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    Value init = g.empty(shapeOf(op.getQuery()));
    auto fused = rewriter.replaceOpWithNewOp<FusedAttentionOp>(
        op, TypeRange{op.getType()}, adaptor.getQuery(), adaptor.getKey(),
        adaptor.getValue(), adaptor.getOffset(), init, op.getHeadsAttr(),
        op.getKvHeadsAttr(), op.getNormalizerAttr(), op.getWindowAttr());
    g.tag(fused);
    return success();
  }
};

/// GELU, tanh approximation: 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))).
static Value gelu(OpBuilder &b, Location l, Value z) {
  GenericBuilder in{b, l};
  Value z3 = arith::MulFOp::create(b, l, arith::MulFOp::create(b, l, z, z), z);
  Value inner = arith::AddFOp::create(
      b, l, z, arith::MulFOp::create(b, l, z3, in.cst(0.044715)));
  Value t = math::TanhOp::create(
      b, l, arith::MulFOp::create(b, l, inner, in.cst(0.7978845608028654)));
  Value half = arith::MulFOp::create(b, l, z, in.cst(0.5));
  return arith::MulFOp::create(b, l, half,
                               arith::AddFOp::create(b, l, t, in.cst(1.0)));
}

struct LowerMlp : OpConversionPattern<MlpOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(MlpOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    Value x = adaptor.getInput();
    Value up = g.linear(x, adaptor.getUpWeight(), adaptor.getUpBias());
    Value act, gate;
    switch (op.getKind()) {
    case MlpKind::swiglu: {
      gate = g.linear(x, adaptor.getGateWeight(), adaptor.getGateBias());
      act = g.elementwise({gate, up}, [](OpBuilder &nb, Location l,
                                         ValueRange a) -> Value {
        return arith::MulFOp::create(nb, l, silu(nb, l, a[0]), a[1]);
      });
      break;
    }
    case MlpKind::gelu:
      act = g.elementwise({up}, [](OpBuilder &nb, Location l,
                                   ValueRange a) -> Value {
        return gelu(nb, l, a[0]);
      });
      break;
    case MlpKind::relu2:
      act = g.elementwise({up}, [](OpBuilder &nb, Location l,
                                   ValueRange a) -> Value {
        GenericBuilder in{nb, l};
        Value r = arith::MaximumFOp::create(nb, l, a[0], in.cst(0.0));
        return arith::MulFOp::create(nb, l, r, r);
      });
      break;
    }
    SmallVector<Value> results{g.linear(act, adaptor.getDownWeight(),
                                        adaptor.getDownBias(),
                                        adaptor.getAccumulate())};
    // The hidden values the backward reads: the kernel writes them out.
    if (!op.getSaved().empty()) {
      if (gate)
        results.push_back(gate);
      results.append({up, act});
    }
    rewriter.replaceOp(op, results);
    return success();
  }
};

/// lathe.add and lathe.sub: one elementwise generic.
template <typename OpT, typename ArithOpT>
struct LowerBinary : OpConversionPattern<OpT> {
  using OpConversionPattern<OpT>::OpConversionPattern;
  LogicalResult
  matchAndRewrite(OpT op, typename OpT::Adaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    rewriter.replaceOp(
        op, g.elementwise({adaptor.getLhs(), adaptor.getRhs()},
                          [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                            return ArithOpT::create(nb, l, a[0], a[1]);
                          }));
    return success();
  }
};
using LowerAdd = LowerBinary<AddOp, arith::AddFOp>;
using LowerSub = LowerBinary<SubOp, arith::SubFOp>;

//===----------------------------------------------------------------------===//
// Training: the loss and the VJPs' own ops
//===----------------------------------------------------------------------===//

/// factor * x, elementwise.
struct LowerScale : OpConversionPattern<ScaleOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(ScaleOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    float factor = static_cast<float>(op.getFactor().convertToDouble());
    rewriter.replaceOp(
        op, g.elementwise({adaptor.getInput()},
                          [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                            GenericBuilder in{nb, l};
                            return arith::MulFOp::create(nb, l, a[0],
                                                         in.cst(factor));
                          }));
    return success();
  }
};

/// 2 x[t, d] dn[t].
struct LowerRowSumSquaresGrad : OpConversionPattern<RowSumSquaresGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(RowSumSquaresGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    AffineMap td = g.map(2, {g.d(0), g.d(1)}), t = g.map(2, {g.d(0)});
    rewriter.replaceOp(
        op, g.generic({adaptor.getInput(), adaptor.getResultGrad()},
                      g.empty(shapeOf(op.getInput())), {td, t, td},
                      {kPar, kPar},
                      [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                        GenericBuilder in{nb, l};
                        return arith::MulFOp::create(
                            nb, l, arith::MulFOp::create(nb, l, a[0], a[1]),
                            in.cst(2.0));
                      }));
    return success();
  }
};

/// The VJP of a routing site (see the op's description for the math):
/// recompute alpha, z and 1/rms; reduce dalpha_n = <act(gate) dy, S_n>;
/// per token, dz_n and from it the two per-token coefficients of dS_n,
/// a_n = dz_n / rms_n (of w * g) and k_n = -dz_n z_n / (D rms_n^2) (of S_n,
/// or half of it as the norm's cotangent); then one pass per source for
/// dS_n, one reduction over tokens for dw and dg, and the gate's.
struct LowerDepthAttentionGrad : OpConversionPattern<DepthAttentionGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(DepthAttentionGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    Location loc = op.getLoc();
    SmallVector<int64_t> shape = shapeOf(op.getSources().front());
    int64_t rows = shape[0], width = shape[1];
    RoutingWeights rw = routingWeights(
        g, adaptor.getSources(), adaptor.getNorms(), adaptor.getQuery(),
        adaptor.getGain(), adaptor.getNull(), op.getEps().convertToDouble(),
        /*withScores=*/true);
    const SmallVector<Value> &src = rw.sources;
    size_t n = src.size();
    Value dy = adaptor.getResultGrad(), gate = adaptor.getGate(),
          entropy = adaptor.getEntropyGrad(), w = adaptor.getQuery(),
          gain = adaptor.getGain();
    bool scalarGate = gate && shapeOf(op.getGate()).size() == 1;
    bool sigmoidGate = op.getGateActivation() == GateActivation::sigmoid;
    auto f32 = rewriter.getF32Type();
    auto rowType = RankedTensorType::get({rows}, f32);
    AffineMap td = g.map(2, {g.d(0), g.d(1)}), t = g.map(2, {g.d(0)}),
              d = g.map(2, {g.d(1)});
    AffineMap gateMap =
        scalarGate ? g.map(2, {g.getAffineConstant(0)}) : td;
    // dr = act(gate) * dy, in a body reading dy and the gate.
    auto routedGrad = [&](OpBuilder &nb, Location l, Value dyv,
                          Value gatev) -> Value {
      if (!gatev)
        return dyv;
      return arith::MulFOp::create(
          nb, l, sigmoidGate ? sigmoid(nb, l, gatev) : gatev, dyv);
    };

    // dalpha_n[t] = sum_d dr[t, d] S_n[t, d].
    SmallVector<Value> dalpha;
    if (dy) {
      SmallVector<Value> ins(src.begin(), src.end());
      SmallVector<AffineMap> maps;
      for (size_t i = 0; i < n; ++i)
        maps.push_back(rw.sourceMap(g, i));
      ins.push_back(dy);
      maps.push_back(td);
      if (gate) {
        ins.push_back(gate);
        maps.push_back(gateMap);
      }
      SmallVector<Value> inits;
      for (size_t i = 0; i < n; ++i) {
        inits.push_back(g.filled({rows}, 0.0));
        maps.push_back(t);
      }
      auto reduce = g.tag(linalg::GenericOp::create(
          rewriter, loc, SmallVector<Type>(n, rowType), ins, inits, maps,
          ArrayRef<utils::IteratorType>{kPar, kRed},
          [&](OpBuilder &nb, Location l, ValueRange a) {
            Value dr = routedGrad(nb, l, a[n], gate ? a[n + 1] : Value());
            size_t acc = n + 1 + (gate ? 1 : 0);
            SmallVector<Value> out;
            for (size_t i = 0; i < n; ++i)
              out.push_back(arith::AddFOp::create(
                  nb, l, a[acc + i], arith::MulFOp::create(nb, l, dr, a[i])));
            linalg::YieldOp::create(nb, l, out);
          }));
      llvm::append_range(dalpha, reduce.getResults());
    }

    // Per token: dz_n, then a_n and k_n.
    float invD = 1.0f / static_cast<float>(width);
    float invT = 1.0f / static_cast<float>(rows);
    SmallVector<Value> coefIns(rw.alpha);
    coefIns.append(rw.score);
    coefIns.append(rw.invRms);
    coefIns.append(dalpha);
    SmallVector<AffineMap> coefMaps(coefIns.size(), g.map(1, {g.d(0)}));
    if (entropy) {
      coefIns.push_back(entropy);
      coefMaps.push_back(g.map(1, {g.getAffineConstant(0)}));
    }
    SmallVector<Value> coefInits;
    for (size_t i = 0; i < 2 * n; ++i) {
      coefInits.push_back(g.empty({rows}));
      coefMaps.push_back(g.map(1, {g.d(0)}));
    }
    auto coef = g.tag(linalg::GenericOp::create(
        rewriter, loc, SmallVector<Type>(2 * n, rowType), coefIns, coefInits,
        coefMaps, ArrayRef<utils::IteratorType>{kPar},
        [&](OpBuilder &nb, Location l, ValueRange a) {
          GenericBuilder in{nb, l};
          ValueRange alpha = a.slice(0, n), z = a.slice(n, n),
                     inv = a.slice(2 * n, n);
          SmallVector<Value> dz(n, in.cst(0.0));
          if (dy) {
            ValueRange da = a.slice(3 * n, n);
            Value mean = in.cst(0.0);
            for (size_t i = 0; i < n; ++i)
              mean = arith::AddFOp::create(
                  nb, l, mean, arith::MulFOp::create(nb, l, alpha[i], da[i]));
            for (size_t i = 0; i < n; ++i)
              dz[i] = arith::MulFOp::create(
                  nb, l, alpha[i], arith::SubFOp::create(nb, l, da[i], mean));
          }
          if (entropy) {
            // d(mean_t H)/dz_n = -(1/T) alpha_n (ln alpha_n + H).
            Value e = arith::MulFOp::create(nb, l, a[(dy ? 4 : 3) * n],
                                            in.cst(-invT));
            Value h = routingEntropy(nb, l, alpha);
            for (size_t i = 0; i < n; ++i)
              dz[i] = arith::AddFOp::create(
                  nb, l, dz[i],
                  arith::MulFOp::create(
                      nb, l, e,
                      arith::MulFOp::create(
                          nb, l, alpha[i],
                          arith::AddFOp::create(nb, l, safeLog(nb, l, alpha[i]),
                                                h))));
          }
          SmallVector<Value> out;
          for (size_t i = 0; i < n; ++i)
            out.push_back(arith::MulFOp::create(nb, l, dz[i], inv[i]));
          for (size_t i = 0; i < n; ++i) {
            // -dz z / (D rms^2); the norm's cotangent is half of it.
            Value k = arith::MulFOp::create(
                nb, l, arith::MulFOp::create(nb, l, dz[i], z[i]),
                arith::MulFOp::create(nb, l, arith::MulFOp::create(nb, l, inv[i], inv[i]),
                                      in.cst(rw.ownSumSq[i] ? -invD : -0.5f * invD)));
            out.push_back(k);
          }
          linalg::YieldOp::create(nb, l, out);
        }));
    ValueRange aCoef = coef.getResults().take_front(n),
               kCoef = coef.getResults().drop_front(n);

    // dS_n = alpha_n dr + a_n (w g) [+ k_n S_n]; the null source's is summed
    // over tokens (loops (d, t)).
    auto sourceGrad = [&](size_t i) -> Value {
      bool isNull = src[i] == rw.null;
      AffineMap tdL = isNull ? g.map(2, {g.d(1), g.d(0)}) : td;
      AffineMap tL = isNull ? g.map(2, {g.d(1)}) : t;
      AffineMap dL = isNull ? g.map(2, {g.d(0)}) : d;
      SmallVector<Value> ins = {rw.alpha[i], aCoef[i], w, gain};
      SmallVector<AffineMap> maps = {tL, tL, dL, dL};
      bool own = rw.ownSumSq[i];
      if (own) {
        ins.append({kCoef[i], src[i]});
        maps.append({tL, isNull ? dL : td});
      }
      if (dy) {
        ins.push_back(dy);
        maps.push_back(tdL);
        if (gate) {
          ins.push_back(gate);
          maps.push_back(scalarGate ? gateMap : tdL);
        }
      }
      maps.push_back(isNull ? dL : td);
      Value init = isNull ? g.filled({width}, 0.0) : g.empty(shape);
      return g.generic(
          ins, init, maps,
          {kPar, isNull ? kRed : kPar},
          [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
            Value wg = arith::MulFOp::create(nb, l, a[2], a[3]);
            Value v = arith::MulFOp::create(nb, l, a[1], wg);
            size_t next = 4;
            if (own) {
              v = arith::AddFOp::create(
                  nb, l, v, arith::MulFOp::create(nb, l, a[4], a[5]));
              next = 6;
            }
            if (dy) {
              Value dr = routedGrad(nb, l, a[next], gate ? a[next + 1] : Value());
              v = arith::AddFOp::create(nb, l, v,
                                        arith::MulFOp::create(nb, l, a[0], dr));
            }
            return isNull ? arith::AddFOp::create(nb, l, a.back(), v).getResult()
                          : v;
          });
    };
    SmallVector<Value> results;
    Value nullGrad;
    for (size_t i = 0; i < n; ++i) {
      if (src[i] == rw.null)
        nullGrad = sourceGrad(i);
      else
        results.push_back(sourceGrad(i));
    }
    for (size_t i = 0; i < n; ++i)
      if (!rw.ownSumSq[i])
        results.push_back(kCoef[i]);

    // P[d] = sum_t sum_n a_n[t] S_n[t, d]; dw = g P, dg = w P. Loops (d, t).
    SmallVector<Value> pIns;
    SmallVector<AffineMap> pMaps;
    for (size_t i = 0; i < n; ++i) {
      pIns.push_back(src[i]);
      pMaps.push_back(src[i] == rw.null ? g.map(2, {g.d(0)})
                                        : g.map(2, {g.d(1), g.d(0)}));
    }
    for (size_t i = 0; i < n; ++i) {
      pIns.push_back(aCoef[i]);
      pMaps.push_back(g.map(2, {g.d(1)}));
    }
    pMaps.push_back(g.map(2, {g.d(0)}));
    Value p = g.generic(pIns, g.filled({width}, 0.0), pMaps, {kPar, kRed},
                        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                          Value acc = a.back();
                          for (size_t i = 0; i < n; ++i)
                            acc = arith::AddFOp::create(
                                nb, l, acc,
                                arith::MulFOp::create(nb, l, a[n + i], a[i]));
                          return acc;
                        });
    auto times = [](OpBuilder &nb, Location l, ValueRange a) -> Value {
      return arith::MulFOp::create(nb, l, a[0], a[1]);
    };
    results.push_back(g.elementwise({gain, p}, times));
    results.push_back(g.elementwise({w, p}, times));
    if (nullGrad)
      results.push_back(nullGrad);

    // The gate's: dy * r * act'(gate), r = sum_n alpha_n S_n; a scalar
    // gate's sums over tokens and channels (loops (0, t, d)).
    if (gate) {
      unsigned loops = scalarGate ? 3 : 2;
      auto at = [&](ArrayRef<unsigned> dims) {
        SmallVector<AffineExpr> e;
        for (unsigned k : dims)
          e.push_back(g.d(k + (scalarGate ? 1 : 0)));
        return g.map(loops, e);
      };
      SmallVector<Value> ins(src.begin(), src.end());
      SmallVector<AffineMap> maps;
      for (size_t i = 0; i < n; ++i)
        maps.push_back(src[i] == rw.null ? at({1}) : at({0, 1}));
      for (size_t i = 0; i < n; ++i) {
        ins.push_back(rw.alpha[i]);
        maps.push_back(at({0}));
      }
      ins.append({dy, gate});
      maps.append({at({0, 1}), scalarGate ? g.map(3, {g.getAffineConstant(0)})
                                          : at({0, 1})});
      maps.push_back(scalarGate ? g.map(3, {g.d(0)}) : td);
      Value init = scalarGate ? g.filled({1}, 0.0) : g.empty(shape);
      SmallVector<IteratorType> iters =
          scalarGate ? SmallVector<IteratorType>{kPar, kRed, kRed}
                     : SmallVector<IteratorType>{kPar, kPar};
      results.push_back(g.generic(
          ins, init, maps, iters,
          [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
            GenericBuilder in{nb, l};
            Value r = in.cst(0.0);
            for (size_t i = 0; i < n; ++i)
              r = arith::AddFOp::create(
                  nb, l, r, arith::MulFOp::create(nb, l, a[n + i], a[i]));
            Value slope = in.cst(1.0);
            if (sigmoidGate) {
              Value s = sigmoid(nb, l, a[2 * n + 1]);
              slope = arith::MulFOp::create(
                  nb, l, s, arith::SubFOp::create(nb, l, in.cst(1.0), s));
            }
            Value v = arith::MulFOp::create(
                nb, l, arith::MulFOp::create(nb, l, a[2 * n], r), slope);
            return scalarGate ? arith::AddFOp::create(nb, l, a.back(), v).getResult()
                              : v;
          }));
    }
    rewriter.replaceOp(op, results);
    return success();
  }
};

/// mean((a - b)^2): loops (0, t, d), a unit parallel loop outside the
/// reductions for the GPU mapping.
struct LowerMeanSquaredError : OpConversionPattern<MeanSquaredErrorOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(MeanSquaredErrorOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getLhs());
    if (shape.size() != 2)
      return rewriter.notifyMatchFailure(op, "expects [T, D] operands");
    float invN = 1.0f / static_cast<float>(shape[0] * shape[1]);
    AffineMap td = g.map(3, {g.d(1), g.d(2)});
    rewriter.replaceOp(
        op, g.generic({adaptor.getLhs(), adaptor.getRhs()}, g.filled({1}, 0.0),
                      {td, td, g.map(3, {g.d(0)})}, {kPar, kRed, kRed},
                      [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                        GenericBuilder in{nb, l};
                        Value diff = arith::SubFOp::create(nb, l, a[0], a[1]);
                        Value sq = arith::MulFOp::create(nb, l, diff, diff);
                        return arith::AddFOp::create(
                            nb, l, a[2],
                            arith::MulFOp::create(nb, l, sq, in.cst(invN)));
                      }));
    return success();
  }
};

/// 2 (a - b) dy / N, elementwise.
struct LowerMeanSquaredErrorGrad
    : OpConversionPattern<MeanSquaredErrorGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(MeanSquaredErrorGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getLhs());
    if (shape.size() != 2)
      return rewriter.notifyMatchFailure(op, "expects [T, D] operands");
    float twoOverN = 2.0f / static_cast<float>(shape[0] * shape[1]);
    AffineMap td = g.map(2, {g.d(0), g.d(1)});
    rewriter.replaceOp(
        op, g.generic({adaptor.getLhs(), adaptor.getRhs(),
                       adaptor.getResultGrad()},
                      g.empty(shape),
                      {td, td, g.map(2, {g.getAffineConstant(0)}), td},
                      {kPar, kPar},
                      [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                        GenericBuilder in{nb, l};
                        Value diff = arith::SubFOp::create(nb, l, a[0], a[1]);
                        return arith::MulFOp::create(
                            nb, l, diff,
                            arith::MulFOp::create(nb, l, a[2],
                                                  in.cst(twoOverN)));
                      }));
    return success();
  }
};

/// Per row of a [T, V] tensor: the max and the sum of exp(x - max), the two
/// reductions of a stable log-sum-exp.
/// The maximum of each row of a [T, V] tensor.
static Value rowMax(GenericBuilder &g, Value x) {
  AffineMap id = g.map(2, {g.d(0), g.d(1)}), row = g.map(2, {g.d(0)});
  return g.generic({x}, g.filled({shapeOf(x)[0]}, -INFINITY), {id, row},
                   {kPar, kRed},
                   [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                     return arith::MaximumFOp::create(nb, l, a[0], a[1]);
                   });
}

static std::pair<Value, Value> rowLogSumExpParts(GenericBuilder &g, Value x) {
  SmallVector<int64_t> shape = shapeOf(x);
  AffineMap id = g.map(2, {g.d(0), g.d(1)}), row = g.map(2, {g.d(0)});
  Value mx = rowMax(g, x);
  Value se = g.generic(
      {x, mx}, g.filled({shape[0]}, 0.0), {id, row, row}, {kPar, kRed},
      [](OpBuilder &nb, Location l, ValueRange a) -> Value {
        Value e = math::ExpOp::create(nb, l,
                                      arith::SubFOp::create(nb, l, a[0], a[1]));
        return arith::AddFOp::create(nb, l, a[2], e);
      });
  return {mx, se};
}

struct LowerCrossEntropy : OpConversionPattern<CrossEntropyOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(CrossEntropyOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    Value logits = adaptor.getLogits();
    int64_t rows = shapeOf(logits)[0];
    auto [mx, se] = rowLogSumExpParts(g, logits);
    float invT = 1.0f / static_cast<float>(rows);
    // loss = sum over rows of (log se + max - logits[t, target]) / T. Loops
    // (0, t): a unit parallel loop outside the reduction, so that the GPU
    // mapping has a parallel dimension to put on a block.
    Value loss = g.generic(
        {mx, se, adaptor.getTargets()}, g.filled({1}, 0.0),
        {g.map(2, {g.d(1)}), g.map(2, {g.d(1)}), g.map(2, {g.d(1)}),
         g.map(2, {g.d(0)})},
        {kPar, kRed}, [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          Value t = linalg::IndexOp::create(nb, l, 1);
          Value col = arith::IndexCastOp::create(nb, l, nb.getIndexType(), a[2]);
          Value picked =
              tensor::ExtractOp::create(nb, l, logits, ValueRange{t, col});
          Value lse = arith::AddFOp::create(nb, l, math::LogOp::create(nb, l, a[1]),
                                            a[0]);
          Value term = arith::MulFOp::create(
              nb, l, arith::SubFOp::create(nb, l, lse, picked), in.cst(invT));
          return arith::AddFOp::create(nb, l, a[3], term);
        });
    rewriter.replaceOp(op, loss);
    return success();
  }
};

struct LowerCrossEntropyGrad : OpConversionPattern<CrossEntropyGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(CrossEntropyGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    Value logits = adaptor.getLogits();
    SmallVector<int64_t> shape = shapeOf(logits);
    auto [mx, se] = rowLogSumExpParts(g, logits);
    float invT = 1.0f / static_cast<float>(shape[0]);
    AffineMap id = g.map(2, {g.d(0), g.d(1)}), row = g.map(2, {g.d(0)});
    Value r = g.generic(
        {logits, mx, se, adaptor.getTargets(), adaptor.getLossGrad()},
        g.empty(shape), {id, row, row, row, g.map(2, {g.getAffineConstant(0)}), id},
        {kPar, kPar}, [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          Value p = arith::DivFOp::create(
              nb, l,
              math::ExpOp::create(nb, l, arith::SubFOp::create(nb, l, a[0], a[1])),
              a[2]);
          Value v = arith::IndexCastOp::create(
              nb, l, nb.getI32Type(), linalg::IndexOp::create(nb, l, 1));
          Value hit = arith::CmpIOp::create(nb, l, arith::CmpIPredicate::eq, v,
                                            a[3]);
          Value onehot = arith::SelectOp::create(nb, l, hit, in.cst(1.0),
                                                 in.cst(0.0));
          Value scale = arith::MulFOp::create(nb, l, a[4], in.cst(invT));
          return arith::MulFOp::create(
              nb, l, arith::SubFOp::create(nb, l, p, onehot), scale);
        });
    rewriter.replaceOp(op, r);
    return success();
  }
};

struct LowerMatmul : OpConversionPattern<MatmulOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(MatmulOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    // Loops (m, n, k): out[m, n] += op(lhs)[m, k] * rhs[k, n].
    AffineMap lhs = op.getTransposeLhs() ? g.map(3, {g.d(2), g.d(0)})
                                         : g.map(3, {g.d(0), g.d(2)});
    Value init = adaptor.getAccumulate()
                     ? adaptor.getAccumulate()
                     : g.filled(shapeOf(op.getResult()), 0.0);
    Value r = g.generic(
        {adaptor.getLhs(), adaptor.getRhs()}, init,
        {lhs, g.map(3, {g.d(2), g.d(1)}), g.map(3, {g.d(0), g.d(1)})},
        {kPar, kPar, kRed}, mulAdd);
    rewriter.replaceOp(op, r);
    return success();
  }
};

/// With r = 1/sqrt(mean(x^2) + eps) and dot = sum_d dy g x per row:
/// dx = r dy g - x r^3 dot / D, and dg = sum_t dy x r.

/// RMSNorm's VJP (per stripe with phases): with r = 1/sqrt(mean(x^2) + eps)
/// and dot = sum dy g x per row (and stripe), dx = r dy g - x r^3 dot / D
/// and dg = sum_t dy x r. Shared by lathe.rms_norm_grad and the modulated
/// norm's VJP, whose gain is 1 + scale.
static std::pair<Value, Value> rmsNormGrad(GenericBuilder &g, Value x,
                                           Value gain, Value dy,
                                           int64_t phases, float eps) {
    SmallVector<int64_t> shape = shapeOf(x);
    int64_t stripe = shape[1] / phases;
    // Per row, or per (row, stripe) with phases: r and dot live there.
    SmallVector<AffineExpr> perRow = {g.d(0)};
    SmallVector<int64_t> rowShape = {shape[0]};
    if (phases > 1) {
      perRow.push_back(g.d(1).floorDiv(stripe));
      rowShape.push_back(phases);
    }
    AffineMap id = g.map(2, {g.d(0), g.d(1)}), row = g.map(2, perRow),
              col = g.map(2, {g.d(1)});
    AffineMap rowId = AffineMap::getMultiDimIdentityMap(rowShape.size(),
                                                        g.b.getContext());
    SmallVector<IteratorType> rowIters(rowShape.size(), kPar);
    Value ss = g.sumSquares(x, rowShape, perRow);
    float invD = 1.0f / static_cast<float>(stripe);
    Value rinv = g.generic(
        {ss}, g.empty(rowShape), {rowId, rowId}, rowIters,
        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          return GenericBuilder::rmsNormalize(nb, l, in.cst(1.0), a[0], invD,
                                              eps);
        });
    Value dot = g.generic(
        {dy, gain, x}, g.filled(rowShape, 0.0), {id, col, id, row},
        {kPar, kRed}, [](OpBuilder &nb, Location l, ValueRange a) -> Value {
          Value p = arith::MulFOp::create(
              nb, l, arith::MulFOp::create(nb, l, a[0], a[1]), a[2]);
          return arith::AddFOp::create(nb, l, a[3], p);
        });
    Value dx = g.generic(
        {dy, gain, x, rinv, dot}, g.empty(shape), {id, col, id, row, row, id},
        {kPar, kPar}, [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          Value r = a[3];
          Value r3 = arith::MulFOp::create(nb, l,
                                           arith::MulFOp::create(nb, l, r, r), r);
          Value lhs = arith::MulFOp::create(
              nb, l, arith::MulFOp::create(nb, l, a[0], a[1]), r);
          Value rhs = arith::MulFOp::create(
              nb, l,
              arith::MulFOp::create(nb, l, arith::MulFOp::create(nb, l, a[2], r3),
                                    a[4]),
              in.cst(invD));
          return arith::SubFOp::create(nb, l, lhs, rhs);
        });
    // Loops (d, t), t reduced (parallel loops outermost, for the GPU
    // mapping): dg[d] = sum_t dy x r.
    AffineMap td = g.map(2, {g.d(1), g.d(0)});
    SmallVector<AffineExpr> rowOfTd = {g.d(1)};
    if (phases > 1)
      rowOfTd.push_back(g.d(0).floorDiv(stripe));
    Value dg = g.generic(
        {dy, x, rinv}, g.filled({shape[1]}, 0.0),
        {td, td, g.map(2, rowOfTd), g.map(2, {g.d(0)})},
        {kPar, kRed}, [](OpBuilder &nb, Location l, ValueRange a) -> Value {
          Value p = arith::MulFOp::create(
              nb, l, arith::MulFOp::create(nb, l, a[0], a[1]), a[2]);
          return arith::AddFOp::create(nb, l, a[3], p);
        });
    return {dx, dg};
}

struct LowerRmsNormGrad : OpConversionPattern<RmsNormGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(RmsNormGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    auto [dx, dg] = rmsNormGrad(
        g, adaptor.getInput(), adaptor.getGain(), adaptor.getResultGrad(),
        op.getPhases(), static_cast<float>(op.getEps().convertToDouble()));
    rewriter.replaceOp(op, ValueRange{dx, dg});
    return success();
  }
};

/// The gain 1 + scale as a [D] vector, then RMSNorm's VJP; the scale's
/// gradient is the gain's, as a [1, D] row.
struct LowerModulatedRmsNormGrad
    : OpConversionPattern<ModulatedRmsNormGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(ModulatedRmsNormGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    int64_t D = shapeOf(op.getInput())[1];
    Value gain = g.generic(
        {adaptor.getScale()}, g.empty({D}),
        {g.map(1, {g.getAffineConstant(0), g.d(0)}), g.map(1, {g.d(0)})},
        {kPar}, [](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          return arith::AddFOp::create(nb, l, a[0], in.cst(1.0));
        });
    auto [dx, dg] = rmsNormGrad(
        g, adaptor.getInput(), gain, adaptor.getResultGrad(), 1,
        static_cast<float>(op.getEps().convertToDouble()));
    Value ds = g.generic({dg}, g.empty({1, D}),
                         {g.map(2, {g.d(1)}), g.map(2, {g.d(0), g.d(1)})},
                         {kPar, kPar},
                         [](OpBuilder &, Location, ValueRange a) -> Value {
                           return a[0];
                         });
    rewriter.replaceOp(op, ValueRange{dx, ds});
    return success();
  }
};

/// dy = gate dz (the row broadcast); dg[0, d] = sum_t dz y.
struct LowerGatedAddGrad : OpConversionPattern<GatedAddGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(GatedAddGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getRhs());
    AffineMap td = g.map(2, {g.d(0), g.d(1)}),
              row = g.map(2, {g.getAffineConstant(0), g.d(1)});
    Value dy = g.generic({adaptor.getResultGrad(), adaptor.getGate()},
                         g.empty(shape), {td, row, td}, {kPar, kPar},
                         [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                           return arith::MulFOp::create(nb, l, a[0], a[1]);
                         });
    // Loops (0, d, t): the unit row, the channel, the reduced rows.
    AffineMap rows = g.map(3, {g.d(2), g.d(1)});
    Value dg = g.generic({adaptor.getResultGrad(), adaptor.getRhs()},
                         g.filled({1, shape[1]}, 0.0),
                         {rows, rows, g.map(3, {g.d(0), g.d(1)})},
                         {kPar, kPar, kRed}, mulAdd);
    rewriter.replaceOp(op, ValueRange{dy, dg});
    return success();
  }
};

struct LowerSiluGrad : OpConversionPattern<SiluGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(SiluGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    rewriter.replaceOp(
        op, g.elementwise(
                {adaptor.getInput(), adaptor.getResultGrad()},
                [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                  GenericBuilder in{nb, l};
                  Value s = sigmoid(nb, l, a[0]);
                  Value slope = arith::AddFOp::create(
                      nb, l, in.cst(1.0),
                      arith::MulFOp::create(
                          nb, l, a[0],
                          arith::SubFOp::create(nb, l, in.cst(1.0), s)));
                  return arith::MulFOp::create(
                      nb, l, a[1], arith::MulFOp::create(nb, l, s, slope));
                }));
    return success();
  }
};

/// Loops (i, k, t): per stripe i and pair k, the sum over rows of
/// dy_2k+1 y_2k - dy_2k y_2k+1; then the sum over stripes.
struct LowerPhaseRotateThetaGrad
    : OpConversionPattern<PhaseRotateThetaGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(PhaseRotateThetaGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getOutput());
    int64_t phases = op.getPhases(), stripe = shape[1] / phases,
            pairs = stripe / 2;
    Value y = adaptor.getOutput(), dy = adaptor.getResultGrad();
    AffineExpr even = g.d(0) * stripe + g.d(1) * 2;
    AffineMap e = g.map(3, {g.d(2), even}), o = g.map(3, {g.d(2), even + 1});
    Value perStripe = g.generic(
        {y, y, dy, dy}, g.filled({phases, pairs}, 0.0),
        {e, o, e, o, g.map(3, {g.d(0), g.d(1)})}, {kPar, kPar, kRed},
        [](OpBuilder &nb, Location l, ValueRange a) -> Value {
          Value t = arith::SubFOp::create(
              nb, l, arith::MulFOp::create(nb, l, a[3], a[0]),
              arith::MulFOp::create(nb, l, a[2], a[1]));
          return arith::AddFOp::create(nb, l, a[4], t);
        });
    Value r = g.generic({perStripe}, g.filled({pairs}, 0.0),
                        {g.map(2, {g.d(1), g.d(0)}), g.map(2, {g.d(0)})},
                        {kPar, kRed},
                        [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                          return arith::AddFOp::create(nb, l, a[1], a[0]);
                        });
    rewriter.replaceOp(op, r);
    return success();
  }
};

struct LowerCenterRows : OpConversionPattern<CenterRowsOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(CenterRowsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getInput());
    Value x = adaptor.getInput();
    float invD = 1.0f / static_cast<float>(shape[1]);
    AffineMap td = g.map(2, {g.d(0), g.d(1)}), t = g.map(2, {g.d(0)});
    Value sum = g.generic({x}, g.filled({shape[0]}, 0.0), {td, t}, {kPar, kRed},
                          [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                            return arith::AddFOp::create(nb, l, a[1], a[0]);
                          });
    rewriter.replaceOp(
        op, g.generic({x, sum}, g.empty(shape), {td, t, td}, {kPar, kPar},
                      [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                        GenericBuilder in{nb, l};
                        return arith::SubFOp::create(
                            nb, l, a[0],
                            arith::MulFOp::create(nb, l, a[1], in.cst(invD)));
                      }));
    return success();
  }
};


struct LowerSwiglu : OpConversionPattern<SwigluOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(SwigluOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    rewriter.replaceOp(
        op, g.elementwise({adaptor.getGate(), adaptor.getUp()},
                          [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                            return arith::MulFOp::create(nb, l, silu(nb, l, a[0]),
                                                         a[1]);
                          }));
    return success();
  }
};

/// s = sigmoid(g): dg = dh u s (1 + g (1 - s)), du = dh g s.
struct LowerSwigluGrad : OpConversionPattern<SwigluGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(SwigluGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<Value> ins = {adaptor.getGate(), adaptor.getUp(),
                              adaptor.getResultGrad()};
    Value dg = g.elementwise(
        ins, [](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          Value s = sigmoid(nb, l, a[0]);
          Value slope = arith::AddFOp::create(
              nb, l, in.cst(1.0),
              arith::MulFOp::create(nb, l, a[0],
                                    arith::SubFOp::create(nb, l, in.cst(1.0), s)));
          Value ds = arith::MulFOp::create(nb, l, s, slope);
          return arith::MulFOp::create(
              nb, l, arith::MulFOp::create(nb, l, a[2], a[1]), ds);
        });
    Value du = g.elementwise(
        ins, [](OpBuilder &nb, Location l, ValueRange a) -> Value {
          return arith::MulFOp::create(nb, l, a[2], silu(nb, l, a[0]));
        });
    rewriter.replaceOp(op, ValueRange{dg, du});
    return success();
  }
};

/// The table's gradient as a scatter of the T cotangent rows into a zeroed
/// table (or into the gradient it accumulates into): T D additions. The
/// one-hot product onehot(tokens)^T dy it replaces cost V T D multiply-adds,
/// 20 GFLOP per step for GPT-2's 50304-row table at 4 x 64 tokens.
struct LowerEmbeddingGrad : OpConversionPattern<EmbeddingGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(EmbeddingGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    Value init = adaptor.getAccumulate()
                     ? adaptor.getAccumulate()
                     : g.filled(shapeOf(op.getResult()), 0.0);
    auto scatter = ScatterAddRowsOp::create(
        rewriter, op.getLoc(), TypeRange{op.getType()}, adaptor.getTokens(),
        adaptor.getResultGrad(), init);
    g.tag(scatter);
    rewriter.replaceOp(op, scatter.getResult());
    return success();
  }
};

/// Attention's VJP over the whole causal window, on materialised
/// probabilities (training windows are short; a fused backward kernel like
/// the forward's is the next step): S = s q k^T, P = softmax(S) under the
/// causal mask, dP = dO v^T, dS = s P (dP - rowsum(P dP)) (the row sum
/// taken as dO . o from the forward's output when the op has it), then
/// dQ = dS k, dK = dS^T q and dV = P^T dO. q and dO are first copied into
/// [KV, G T, hd] (K/V head a; row g T + i for query head a G + g at row i)
/// and k, v into [KV, T, hd], so that the five products are batched GEMMs
/// over the K/V heads with one contraction each, which the host BLAS runs
/// (a K/V head's gradient then sums its group inside the GEMM's k); the
/// probabilities are [KV, G T, T].
struct LowerAttentionGrad : OpConversionPattern<AttentionGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(AttentionGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    // A batch of windows (window = W) is N = rows / W sequences, each its
    // own causal attention: the products are then batched over (sequence,
    // K/V head) pairs, b = n KV + a, and T below is the window.
    int64_t rows = shapeOf(op.getQuery())[0], H = op.getHeads(),
            KV = op.getKvHeads();
    int64_t T = op.getWindow() > 0 ? op.getWindow() : rows, N = rows / T,
            B = N * KV;
    int64_t hd = shapeOf(op.getQuery())[1] / H, G = H / KV, GT = G * T;
    float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    auto copy = [](OpBuilder &, Location, ValueRange a) -> Value { return a[0]; };
    auto dot = mulAdd;
    AffineMap id3 = g.map(3, {g.d(0), g.d(1), g.d(2)});
    // Batch b's first row in the op's layout, and its K/V head.
    auto seqRow = [&](AffineExpr b) {
      return N == 1 ? g.getAffineConstant(0) : b.floorDiv(KV) * T;
    };
    auto kvHead = [&](AffineExpr b) { return N == 1 ? b : b % KV; };
    // The batch of the op's row R whose K/V head is a.
    auto batchOf = [&](AffineExpr R, AffineExpr a) {
      return N == 1 ? a : R.floorDiv(T) * KV + a;
    };
    // q [rows, H hd] -> [B, G T, hd]: row r = g T + i of batch (n, a) reads
    // q[n T + i, (a G + g) hd + c].
    auto splitQ = [&](Value x) {
      return g.generic(
          {x}, g.empty({B, GT, hd}),
          {g.map(3, {seqRow(g.d(0)) + g.d(1) % T,
                     (kvHead(g.d(0)) * G + g.d(1).floorDiv(T)) * hd + g.d(2)}),
           id3},
          {kPar, kPar, kPar}, copy);
    };
    auto splitKv = [&](Value x) {
      return g.generic(
          {x}, g.empty({B, T, hd}),
          {g.map(3, {seqRow(g.d(0)) + g.d(1), kvHead(g.d(0)) * hd + g.d(2)}),
           id3},
          {kPar, kPar, kPar}, copy);
    };
    Value q = splitQ(adaptor.getQuery()), dO = splitQ(adaptor.getResultGrad());
    Value k = splitKv(adaptor.getKey()), v = splitKv(adaptor.getValue());

    // Loops (b, r, j, c): [B, G T, T] products of rows with keys/values.
    auto headProduct = [&](Value rowsOf, Value cols) {
      return g.generic({rowsOf, cols}, g.filled({B, GT, T}, 0.0),
                       {g.map(4, {g.d(0), g.d(1), g.d(3)}),
                        g.map(4, {g.d(0), g.d(2), g.d(3)}),
                        g.map(4, {g.d(0), g.d(1), g.d(2)})},
                       {kPar, kPar, kPar, kRed}, dot);
    };
    Value S = headProduct(q, k);
    Value dP = headProduct(dO, v);
    AffineMap full = id3, row = g.map(3, {g.d(0), g.d(1)});
    SmallVector<IteratorType> rowReduce = {kPar, kPar, kRed},
                              all = {kPar, kPar, kPar};
    auto visible = [&](OpBuilder &nb, Location l) -> Value {
      Value r = linalg::IndexOp::create(nb, l, 1);
      Value i = arith::RemUIOp::create(nb, l, r,
                                       arith::ConstantIndexOp::create(nb, l, T));
      Value j = linalg::IndexOp::create(nb, l, 2);
      return arith::CmpIOp::create(nb, l, arith::CmpIPredicate::ule, j, i);
    };
    Value mx = g.generic(
        {S}, g.filled({B, GT}, -INFINITY), {full, row}, rowReduce,
        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          Value s = arith::SelectOp::create(nb, l, visible(nb, l), a[0],
                                            in.cst(-INFINITY));
          return arith::MaximumFOp::create(nb, l, a[1], s);
        });
    // On the scaled scores z = s S, shifted by the row's visible maximum
    // (softpick: by max(0, that), as its forward kernel, so e^-m <= 1):
    // E = e^(z - m) and, for softpick, A = E - e^-m = e^-m (e^z - 1).
    bool softpick = op.getNormalizer() == Normalizer::softpick;
    auto shift = [&](OpBuilder &nb, Location l, Value rowMax) -> Value {
      GenericBuilder in{nb, l};
      Value m = arith::MulFOp::create(nb, l, rowMax, in.cst(scale));
      return softpick ? arith::MaximumFOp::create(nb, l, m, in.cst(0.0)) : m;
    };
    auto expShifted = [&](OpBuilder &nb, Location l, Value s, Value rowMax) {
      GenericBuilder in{nb, l};
      Value z = arith::MulFOp::create(nb, l, s, in.cst(scale));
      Value e = math::ExpOp::create(
          nb, l, arith::SubFOp::create(nb, l, z, shift(nb, l, rowMax)));
      return arith::SelectOp::create(nb, l, visible(nb, l), e, in.cst(0.0))
          .getResult();
    };
    // softpick's A, 0 where masked.
    auto pickA = [&](OpBuilder &nb, Location l, Value e, Value rowMax) {
      GenericBuilder in{nb, l};
      Value floor = math::ExpOp::create(
          nb, l, arith::NegFOp::create(nb, l, shift(nb, l, rowMax)));
      Value a = arith::SubFOp::create(nb, l, e, floor);
      return arith::SelectOp::create(nb, l, visible(nb, l), a, in.cst(0.0))
          .getResult();
    };
    // The normaliser: sum of E (softmax), or sum |A| + 1e-8 e^-m (softpick,
    // whose eps is 1e-8 before the shift).
    Value se = g.generic(
        {S, mx}, g.filled({B, GT}, 0.0), {full, row, row}, rowReduce,
        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          Value e = expShifted(nb, l, a[0], a[1]);
          if (softpick)
            e = math::AbsFOp::create(nb, l, pickA(nb, l, e, a[1]));
          return arith::AddFOp::create(nb, l, a[2], e);
        });
    if (softpick)
      se = g.generic({se, mx}, g.empty({B, GT}),
                     SmallVector<AffineMap>(3, g.map(2, {g.d(0), g.d(1)})),
                     {kPar, kPar},
                     [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                       GenericBuilder in{nb, l};
                       Value floor = math::ExpOp::create(
                           nb, l, arith::NegFOp::create(nb, l, shift(nb, l, a[1])));
                       return arith::AddFOp::create(
                           nb, l, a[0],
                           arith::MulFOp::create(nb, l, floor, in.cst(1e-8)));
                     });
    // A pair's weight P and score gradient dS (the scores being scaled),
    // from S, dP, its row's maximum, normaliser and rs: the formulas the
    // GPU's tiled gradient uses too (attentionPairGrad).
    auto pair = [&](OpBuilder &nb, Location l, Value dp, Value r, Value s,
                    Value rowMax, Value norm) {
      return attentionPairGrad(nb, l, softpick, scale, visible(nb, l), s, dp,
                               shift(nb, l, rowMax), norm, r);
    };
    Value P, dS;
    if (Value o = adaptor.getOutput()) {
      // rs = rowsum(P dP) = dO . o per query row (o = P V, the forward's
      // output): hd columns per row instead of T keys. Then P (for dV) and
      // dS come out of one pass over S and dP.
      Value rs = g.generic({dO, splitQ(o)}, g.filled({B, GT}, 0.0),
                           {full, full, row}, rowReduce, dot);
      auto scores = RankedTensorType::get({B, GT, T}, rewriter.getF32Type());
      auto both = g.tag(linalg::GenericOp::create(
          rewriter, op.getLoc(), TypeRange{scores, scores},
          ValueRange{dP, rs, S, mx, se},
          ValueRange{g.empty({B, GT, T}), g.empty({B, GT, T})},
          ArrayRef<AffineMap>{full, row, full, row, row, full, full}, all,
          [&](OpBuilder &nb, Location l, ValueRange a) {
            AttentionPairGrad pg = pair(nb, l, a[0], a[1], a[2], a[3], a[4]);
            linalg::YieldOp::create(nb, l, ValueRange{pg.p, pg.ds});
          }));
      P = both.getResult(0);
      dS = both.getResult(1);
    } else {
      P = g.generic({S, mx, se}, g.empty({B, GT, T}), {full, row, row, full},
                    all, [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                      // The weight needs no dP or rs (its dS is dead code).
                      GenericBuilder in{nb, l};
                      return pair(nb, l, in.cst(0.0), in.cst(0.0), a[0], a[1],
                                  a[2]).p;
                    });
      Value rs = g.generic({P, dP}, g.filled({B, GT}, 0.0), {full, full, row},
                           rowReduce, dot);
      dS = g.generic({dP, rs, S, mx, se}, g.empty({B, GT, T}),
                     {full, row, full, row, row, full}, all,
                     [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                       return pair(nb, l, a[0], a[1], a[2], a[3], a[4]).ds;
                     });
    }
    // Loops (a, r, c, j): dQ[a, r, c] = sum_j dS[a, r, j] k[a, j, c].
    Value dQ = g.generic({dS, k}, g.filled({B, GT, hd}, 0.0),
                         {g.map(4, {g.d(0), g.d(1), g.d(3)}),
                          g.map(4, {g.d(0), g.d(3), g.d(2)}),
                          g.map(4, {g.d(0), g.d(1), g.d(2)})},
                         {kPar, kPar, kPar, kRed}, dot);
    // Loops (a, j, c, r): out[a, j, c] = sum_r w[a, r, j] x[a, r, c], the
    // sum over r = (g, i) covering the whole group of the K/V head.
    auto toKv = [&](Value w, Value x) {
      return g.generic({w, x}, g.filled({B, T, hd}, 0.0),
                       {g.map(4, {g.d(0), g.d(3), g.d(1)}),
                        g.map(4, {g.d(0), g.d(3), g.d(2)}),
                        g.map(4, {g.d(0), g.d(1), g.d(2)})},
                       {kPar, kPar, kPar, kRed}, dot);
    };
    Value dK = toKv(dS, q), dV = toKv(P, dO);
    // Back to the ops' layouts: row n T + i, column h hd + c (or a hd + c).
    Value dQ2 = g.generic(
        {dQ}, g.empty({rows, H * hd}),
        {g.map(2, {batchOf(g.d(0), g.d(1).floorDiv(G * hd)),
                   (g.d(1).floorDiv(hd) % G) * T + (N == 1 ? g.d(0) : g.d(0) % T),
                   g.d(1) % hd}),
         g.map(2, {g.d(0), g.d(1)})},
        {kPar, kPar}, copy);
    auto joinKv = [&](Value x) {
      return g.generic({x}, g.empty({rows, KV * hd}),
                       {g.map(2, {batchOf(g.d(0), g.d(1).floorDiv(hd)),
                                  N == 1 ? g.d(0) : g.d(0) % T, g.d(1) % hd}),
                        g.map(2, {g.d(0), g.d(1)})},
                       {kPar, kPar}, copy);
    };
    rewriter.replaceOp(op, ValueRange{dQ2, joinKv(dK), joinKv(dV)});
    return success();
  }
};

/// Loops (n, t), t reduced: result[n] = sum_t input[t, n].
struct LowerSumRows : OpConversionPattern<SumRowsOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(SumRowsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    rewriter.replaceOp(
        op, g.generic({adaptor.getInput()}, g.filled(shapeOf(op.getResult()), 0.0),
                      {g.map(2, {g.d(1), g.d(0)}), g.map(2, {g.d(0)})},
                      {kPar, kRed},
                      [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                        return arith::AddFOp::create(nb, l, a[1], a[0]);
                      }));
    return success();
  }
};

/// result[r, c] = input[r mod T, c].
struct LowerRepeatRows : OpConversionPattern<RepeatRowsOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(RepeatRowsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    int64_t T = shapeOf(op.getInput())[0];
    auto copy = [](OpBuilder &, Location, ValueRange a) -> Value { return a[0]; };
    rewriter.replaceOp(
        op, g.generic({adaptor.getInput()}, g.empty(shapeOf(op.getResult())),
                      {g.map(2, {g.d(0) % T, g.d(1)}), g.map(2, {g.d(0), g.d(1)})},
                      {kPar, kPar}, copy));
    return success();
  }
};

/// result[t, c] = sum_s input[s T + t, c], the N reads unrolled in the body
/// (a loop over s would appear in no operand's indexing map, which linalg
/// refuses): N is the few sequences of a training pass.
struct LowerFoldRows : OpConversionPattern<FoldRowsOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(FoldRowsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getResult());
    int64_t T = shape[0], N = shapeOf(op.getInput())[0] / T;
    Value in = adaptor.getInput();
    rewriter.replaceOp(
        op, g.generic({}, g.empty(shape), {g.map(2, {g.d(0), g.d(1)})},
                      {kPar, kPar},
                      [&](OpBuilder &nb, Location l, ValueRange) -> Value {
                        Value t = linalg::IndexOp::create(nb, l, 0);
                        Value c = linalg::IndexOp::create(nb, l, 1);
                        Value sum;
                        for (int64_t s = 0; s < N; ++s) {
                          Value row = arith::AddIOp::create(
                              nb, l, t,
                              arith::ConstantIndexOp::create(nb, l, s * T));
                          Value v = tensor::ExtractOp::create(
                              nb, l, in, ValueRange{row, c});
                          sum = sum ? arith::AddFOp::create(nb, l, sum, v)
                                          .getResult()
                                    : v;
                        }
                        return sum;
                      }));
    return success();
  }
};

/// result[i, d] = i < T ? input[i, d] : 0, reading a clamped row.
struct LowerPadRows : OpConversionPattern<PadRowsOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(PadRowsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    Value in = adaptor.getInput();
    int64_t rows = shapeOf(in)[0];
    rewriter.replaceOp(
        op, g.generic({}, g.empty(shapeOf(op.getResult())),
                      {g.map(2, {g.d(0), g.d(1)})}, {kPar, kPar},
                      [&](OpBuilder &nb, Location l, ValueRange) -> Value {
                        GenericBuilder b2{nb, l};
                        Value i = linalg::IndexOp::create(nb, l, 0);
                        Value c = linalg::IndexOp::create(nb, l, 1);
                        Value last = arith::ConstantIndexOp::create(nb, l, rows - 1);
                        Value inside = arith::CmpIOp::create(
                            nb, l, arith::CmpIPredicate::ule, i, last);
                        Value row = arith::MinUIOp::create(nb, l, i, last);
                        Value v = tensor::ExtractOp::create(nb, l, in,
                                                            ValueRange{row, c});
                        return arith::SelectOp::create(nb, l, inside, v,
                                                       b2.cst(0.0));
                      }));
    return success();
  }
};

/// mean and r = 1/sqrt(var + eps) per row, e = dy g, then
/// dx = r (e - mean(e) - n mean(e n)) with n = (x - mean) r;
/// dg = sum_t dy n, db = sum_t dy.
struct LowerLayerNormGrad : OpConversionPattern<LayerNormGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(LayerNormGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getInput());
    Value x = adaptor.getInput(), gain = adaptor.getGain(),
          dy = adaptor.getResultGrad();
    AffineMap id = g.map(2, {g.d(0), g.d(1)}), row = g.map(2, {g.d(0)}),
              col = g.map(2, {g.d(1)});
    float invD = 1.0f / static_cast<float>(shape[1]);
    float eps = static_cast<float>(op.getEps().convertToDouble());
    auto add = [](OpBuilder &nb, Location l, ValueRange a) -> Value {
      return arith::AddFOp::create(nb, l, a[1], a[0]);
    };
    Value sum = g.generic({x}, g.filled({shape[0]}, 0.0), {id, row},
                          {kPar, kRed}, add);
    Value mean = g.generic({sum}, g.empty({shape[0]}),
                           {g.map(1, {g.d(0)}), g.map(1, {g.d(0)})}, {kPar},
                           [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                             GenericBuilder in{nb, l};
                             return arith::MulFOp::create(nb, l, a[0], in.cst(invD));
                           });
    Value ss = g.generic(
        {x, mean}, g.filled({shape[0]}, 0.0), {id, row, row}, {kPar, kRed},
        [](OpBuilder &nb, Location l, ValueRange a) -> Value {
          Value c = arith::SubFOp::create(nb, l, a[0], a[1]);
          return arith::AddFOp::create(nb, l, a[2],
                                       arith::MulFOp::create(nb, l, c, c));
        });
    Value rinv = g.generic(
        {ss}, g.empty({shape[0]}), {g.map(1, {g.d(0)}), g.map(1, {g.d(0)})},
        {kPar}, [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          return GenericBuilder::rmsNormalize(nb, l, in.cst(1.0), a[0], invD, eps);
        });
    // n = (x - mean) r, in a body.
    auto normed = [](OpBuilder &nb, Location l, Value xv, Value m, Value r) {
      return arith::MulFOp::create(nb, l, arith::SubFOp::create(nb, l, xv, m), r)
          .getResult();
    };
    Value sumE = g.generic(
        {dy, gain}, g.filled({shape[0]}, 0.0), {id, col, row}, {kPar, kRed},
        mulAdd);
    Value sumEN = g.generic(
        {dy, gain, x, mean, rinv}, g.filled({shape[0]}, 0.0),
        {id, col, id, row, row, row}, {kPar, kRed},
        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          Value e = arith::MulFOp::create(nb, l, a[0], a[1]);
          Value n = normed(nb, l, a[2], a[3], a[4]);
          return arith::AddFOp::create(nb, l, a[5],
                                       arith::MulFOp::create(nb, l, e, n));
        });
    Value dx = g.generic(
        {dy, gain, x, mean, rinv, sumE, sumEN}, g.empty(shape),
        {id, col, id, row, row, row, row, id}, {kPar, kPar},
        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          Value e = arith::MulFOp::create(nb, l, a[0], a[1]);
          Value n = normed(nb, l, a[2], a[3], a[4]);
          Value meanE = arith::MulFOp::create(nb, l, a[5], in.cst(invD));
          Value meanEN = arith::MulFOp::create(nb, l, a[6], in.cst(invD));
          Value inner = arith::SubFOp::create(
              nb, l, arith::SubFOp::create(nb, l, e, meanE),
              arith::MulFOp::create(nb, l, n, meanEN));
          return arith::MulFOp::create(nb, l, a[4], inner);
        });
    AffineMap td = g.map(2, {g.d(1), g.d(0)}), tRow = g.map(2, {g.d(1)}),
              out = g.map(2, {g.d(0)});
    Value dg = g.generic(
        {dy, x, mean, rinv}, g.filled({shape[1]}, 0.0), {td, td, tRow, tRow, out},
        {kPar, kRed}, [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          Value n = normed(nb, l, a[1], a[2], a[3]);
          return arith::AddFOp::create(nb, l, a[4],
                                       arith::MulFOp::create(nb, l, a[0], n));
        });
    Value db = g.generic({dy}, g.filled({shape[1]}, 0.0), {td, out},
                         {kPar, kRed}, add);
    rewriter.replaceOp(op, ValueRange{dx, dg, db});
    return success();
  }
};

struct LowerActivation : OpConversionPattern<ActivationOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(ActivationOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    bool isGelu = op.getKind() == MlpKind::gelu;
    rewriter.replaceOp(
        op, g.elementwise({adaptor.getInput()},
                          [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                            if (isGelu)
                              return gelu(nb, l, a[0]);
                            GenericBuilder in{nb, l};
                            Value r = arith::MaximumFOp::create(nb, l, a[0],
                                                                in.cst(0.0));
                            return arith::MulFOp::create(nb, l, r, r);
                          }));
    return success();
  }
};

/// GELU (tanh): with k = sqrt(2/pi), u = k (z + 0.044715 z^3), t = tanh u:
/// 0.5 (1 + t) + 0.5 z (1 - t^2) k (1 + 0.134145 z^2). ReLU²: 2 relu(z).
struct LowerActivationGrad : OpConversionPattern<ActivationGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(ActivationGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    bool isGelu = op.getKind() == MlpKind::gelu;
    rewriter.replaceOp(
        op, g.elementwise(
                {adaptor.getInput(), adaptor.getResultGrad()},
                [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                  GenericBuilder in{nb, l};
                  auto mul = [&](Value x, Value y) {
                    return arith::MulFOp::create(nb, l, x, y).getResult();
                  };
                  auto add = [&](Value x, Value y) {
                    return arith::AddFOp::create(nb, l, x, y).getResult();
                  };
                  Value z = a[0], slope;
                  if (isGelu) {
                    const float k = 0.7978845608028654f;
                    Value z2 = mul(z, z);
                    Value u = mul(in.cst(k), add(z, mul(in.cst(0.044715), mul(z2, z))));
                    Value t = math::TanhOp::create(nb, l, u);
                    Value left = mul(in.cst(0.5), add(in.cst(1.0), t));
                    Value sech2 = arith::SubFOp::create(nb, l, in.cst(1.0), mul(t, t));
                    Value du = mul(in.cst(k), add(in.cst(1.0), mul(in.cst(0.134145), z2)));
                    slope = add(left, mul(mul(in.cst(0.5), z), mul(sech2, du)));
                  } else {
                    slope = mul(in.cst(2.0),
                                arith::MaximumFOp::create(nb, l, z, in.cst(0.0)));
                  }
                  return mul(a[1], slope);
                }));
    return success();
  }
};

/// Parcae's injection VJP: Delta, Abar and their slopes per channel, then
/// the elementwise cotangents and the two per-channel reductions over rows.
struct LowerParcaeInjectGrad : OpConversionPattern<ParcaeInjectGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(ParcaeInjectGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getBe());
    int64_t C = shape[1];
    Value be = adaptor.getBe(), du = adaptor.getResultGrad(),
          h = adaptor.getState();
    AffineMap c1 = g.map(1, {g.d(0)});
    // Per channel: Delta = softplus(dt), sigmoid(dt), E = exp(A_log), Abar.
    auto chan = [&](function_ref<Value(OpBuilder &, Location, Value, Value)> f) {
      return g.generic({adaptor.getALog(), adaptor.getDtBias()}, g.empty({C}),
                       {c1, c1, c1}, {kPar},
                       [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
                         return f(nb, l, a[0], a[1]);
                       });
    };
    Value delta = chan([&](OpBuilder &nb, Location l, Value, Value dt) {
      return softplus(nb, l, dt);
    });
    Value slope = chan([&](OpBuilder &nb, Location l, Value, Value dt) {
      return sigmoid(nb, l, dt);
    });
    Value expA = chan([&](OpBuilder &nb, Location l, Value aLog, Value) {
      return math::ExpOp::create(nb, l, aLog).getResult();
    });
    Value abar = g.generic(
        {delta, expA}, g.empty({C}), {c1, c1, c1}, {kPar},
        [](OpBuilder &nb, Location l, ValueRange a) -> Value {
          return math::ExpOp::create(
              nb, l, arith::NegFOp::create(nb, l, arith::MulFOp::create(
                                                      nb, l, a[0], a[1])));
        });
    AffineMap td = g.map(2, {g.d(0), g.d(1)}), d = g.map(2, {g.d(1)});
    auto scaleRows = [&](Value perChannel) {
      return g.generic({du, perChannel}, g.empty(shape), {td, d, td},
                       {kPar, kPar},
                       [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                         return arith::MulFOp::create(nb, l, a[0], a[1]);
                       });
    };
    Value dbe = scaleRows(delta), dh = scaleRows(abar);
    // Loops (c, t), t reduced.
    AffineMap ct = g.map(2, {g.d(1), g.d(0)}), cc = g.map(2, {g.d(0)});
    Value stateOrZero = h ? h : g.filled(shape, 0.0);
    Value ddt = g.generic(
        {du, be, stateOrZero, expA, abar, slope}, g.filled({C}, 0.0),
        {ct, ct, ct, cc, cc, cc, cc}, {kPar, kRed},
        [](OpBuilder &nb, Location l, ValueRange a) -> Value {
          // du (be - h E Abar) sigmoid(dt)
          Value hea = arith::MulFOp::create(
              nb, l, arith::MulFOp::create(nb, l, a[2], a[3]), a[4]);
          Value inner = arith::SubFOp::create(nb, l, a[1], hea);
          Value t = arith::MulFOp::create(
              nb, l, arith::MulFOp::create(nb, l, a[0], inner), a[5]);
          return arith::AddFOp::create(nb, l, a[6], t);
        });
    Value da = g.generic(
        {du, stateOrZero, delta, expA, abar}, g.filled({C}, 0.0),
        {ct, ct, cc, cc, cc, cc}, {kPar, kRed},
        [](OpBuilder &nb, Location l, ValueRange a) -> Value {
          // -du h Delta E Abar
          Value t = arith::MulFOp::create(
              nb, l,
              arith::MulFOp::create(nb, l, arith::MulFOp::create(nb, l, a[0], a[1]),
                                    arith::MulFOp::create(nb, l, a[2], a[3])),
              a[4]);
          return arith::SubFOp::create(nb, l, a[5], t);
        });
    rewriter.replaceOp(op, ValueRange{dbe, da, ddt, dh});
    return success();
  }
};

/// Loops (0, dims...): every gradient's sum of squares into one [1]
/// accumulator (the unit parallel loop gives the GPU mapping a block), then
/// norm = scale sqrt(sum) and factor = min(1, max_norm / norm).
struct LowerGlobalNorm : OpConversionPattern<GlobalNormOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(GlobalNormOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    Value acc = g.filled({1}, 0.0);
    for (Value grad : adaptor.getGrads()) {
      unsigned rank = llvm::cast<RankedTensorType>(grad.getType()).getRank();
      SmallVector<AffineExpr> dims;
      SmallVector<IteratorType> iters = {kPar};
      for (unsigned i = 0; i < rank; ++i) {
        dims.push_back(g.d(i + 1));
        iters.push_back(kRed);
      }
      acc = g.generic({grad}, acc, {g.map(rank + 1, dims), g.map(rank + 1, {g.d(0)})},
                      iters, [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                        return arith::AddFOp::create(
                            nb, l, a[1], arith::MulFOp::create(nb, l, a[0], a[0]));
                      });
    }
    Value scale = adaptor.getScale();
    Value norm = g.elementwise({acc, scale}, [](OpBuilder &nb, Location l,
                                                ValueRange a) -> Value {
      return arith::MulFOp::create(nb, l, math::SqrtOp::create(nb, l, a[0]), a[1]);
    });
    float maxNorm = static_cast<float>(op.getMaxNorm().convertToDouble());
    Value factor = g.elementwise({norm}, [&](OpBuilder &nb, Location l,
                                             ValueRange a) -> Value {
      GenericBuilder in{nb, l};
      Value over = arith::CmpFOp::create(nb, l, arith::CmpFPredicate::OGT, a[0],
                                         in.cst(maxNorm));
      return arith::SelectOp::create(
          nb, l, over, arith::DivFOp::create(nb, l, in.cst(maxNorm), a[0]),
          in.cst(1.0));
    });
    rewriter.replaceOp(op, ValueRange{norm, factor});
    return success();
  }
};

/// One elementwise generic with three results: the parameter and both
/// moments, so that one pass over memory updates all three.
struct LowerAdamw : OpConversionPattern<AdamwOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(AdamwOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    auto type = llvm::cast<RankedTensorType>(op.getParam().getType());
    unsigned rank = type.getRank();
    AffineMap id = AffineMap::getMultiDimIdentityMap(rank, rewriter.getContext());
    AffineMap scalar = g.map(rank, {g.getAffineConstant(0)});
    SmallVector<AffineMap> maps = {id, id, id, id, scalar, scalar, scalar, scalar,
                                   id, id, id};
    SmallVector<IteratorType> iters(rank, kPar);
    float b1 = static_cast<float>(op.getBeta1().convertToDouble());
    float b2 = static_cast<float>(op.getBeta2().convertToDouble());
    float eps = static_cast<float>(op.getEps().convertToDouble());
    float wd = static_cast<float>(op.getWeightDecay().convertToDouble());
    float logB1 = std::log(b1 > 0 ? b1 : 1e-30f), logB2 = std::log(b2 > 0 ? b2 : 1e-30f);
    auto generic = g.tag(linalg::GenericOp::create(
        rewriter, op.getLoc(), TypeRange{type, type, type},
        ValueRange{adaptor.getParam(), adaptor.getGrad(), adaptor.getM(),
                   adaptor.getV(), adaptor.getLr(), adaptor.getStep(),
                   adaptor.getScale(), adaptor.getFactor()},
        ValueRange{g.empty(type.getShape()), g.empty(type.getShape()),
                   g.empty(type.getShape())},
        maps, iters, [&](OpBuilder &nb, Location l, ValueRange a) {
          GenericBuilder in{nb, l};
          auto mul = [&](Value x, Value y) { return arith::MulFOp::create(nb, l, x, y); };
          auto add = [&](Value x, Value y) { return arith::AddFOp::create(nb, l, x, y); };
          auto sub = [&](Value x, Value y) { return arith::SubFOp::create(nb, l, x, y); };
          Value p = a[0], lr = a[4], t = a[5];
          Value grad = mul(mul(a[1], a[6]), a[7]);
          Value m = add(mul(in.cst(b1), a[2]), mul(in.cst(1.0f - b1), grad));
          Value v = add(mul(in.cst(b2), a[3]), mul(in.cst(1.0f - b2), mul(grad, grad)));
          // 1 - beta^t = 1 - exp(t ln beta).
          Value c1 = sub(in.cst(1.0), math::ExpOp::create(nb, l, mul(t, in.cst(logB1))));
          Value c2 = sub(in.cst(1.0), math::ExpOp::create(nb, l, mul(t, in.cst(logB2))));
          Value denom = add(math::SqrtOp::create(nb, l, arith::DivFOp::create(nb, l, v, c2)),
                            in.cst(eps));
          Value stepSize = arith::DivFOp::create(nb, l, arith::DivFOp::create(nb, l, m, c1),
                                                 denom);
          Value decayed = mul(p, sub(in.cst(1.0), mul(lr, in.cst(wd))));
          Value np = sub(decayed, mul(lr, stepSize));
          linalg::YieldOp::create(nb, l, ValueRange{np, m, v});
        }));
    rewriter.replaceOp(op, generic.getResults());
    return success();
  }
};

/// Muon: the Nesterov momentum and the scaled gradient in one generic, the
/// Frobenius norm under a unit parallel loop, then X (transposed for a tall
/// matrix, so that X X^T is the small Gram matrix) through five
/// Newton-Schulz steps, each three products, and the decayed update.
struct LowerMuon : OpConversionPattern<MuonOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(MuonOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    auto type = llvm::cast<RankedTensorType>(op.getParam().getType());
    int64_t rows = type.getDimSize(0), cols = type.getDimSize(1);
    AffineMap id = g.map(2, {g.d(0), g.d(1)}), scalar = g.map(2, {g.getAffineConstant(0)}),
              swapped = g.map(2, {g.d(1), g.d(0)});
    float mu = static_cast<float>(op.getMomentum().convertToDouble());
    auto momentum = g.tag(linalg::GenericOp::create(
        rewriter, op.getLoc(), TypeRange{type, type},
        ValueRange{adaptor.getGrad(), adaptor.getBuffer(), adaptor.getScale(),
                   adaptor.getFactor()},
        ValueRange{g.empty(type.getShape()), g.empty(type.getShape())},
        ArrayRef<AffineMap>{id, id, scalar, scalar, id, id},
        ArrayRef<utils::IteratorType>{kPar, kPar},
        [&](OpBuilder &nb, Location l, ValueRange a) {
          GenericBuilder in{nb, l};
          Value grad = arith::MulFOp::create(
              nb, l, arith::MulFOp::create(nb, l, a[0], a[2]), a[3]);
          Value buf = arith::AddFOp::create(
              nb, l, arith::MulFOp::create(nb, l, in.cst(mu), a[1]), grad);
          Value u = arith::AddFOp::create(
              nb, l, grad, arith::MulFOp::create(nb, l, in.cst(mu), buf));
          linalg::YieldOp::create(nb, l, ValueRange{buf, u});
        }));
    Value buffer = momentum.getResult(0), u = momentum.getResult(1);
    Value ss = g.generic({u}, g.filled({1}, 0.0),
                         {g.map(3, {g.d(1), g.d(2)}), g.map(3, {g.d(0)})},
                         {kPar, kRed, kRed},
                         [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                           return arith::AddFOp::create(
                               nb, l, a[1], arith::MulFOp::create(nb, l, a[0], a[0]));
                         });
    bool tall = rows > cols;
    int64_t r = std::min(rows, cols), c = std::max(rows, cols);
    Value x = g.generic({u, ss}, g.empty({r, c}), {tall ? swapped : id, scalar, id},
                        {kPar, kPar},
                        [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                          GenericBuilder in{nb, l};
                          return arith::DivFOp::create(
                              nb, l, a[0],
                              arith::AddFOp::create(
                                  nb, l, math::SqrtOp::create(nb, l, a[1]),
                                  in.cst(1e-7)));
                        });
    const float qa = 3.4445f, qb = -4.7750f, qc = 2.0315f;
    for (int i = 0; i < 5; ++i) {
      Value gram = g.matmulTransposed(x, x);       // A = X X^T, [r, r]
      Value gram2 = g.matmulTransposed(gram, gram); // A A (A is symmetric)
      Value poly = g.elementwise({gram, gram2}, [&](OpBuilder &nb, Location l,
                                                    ValueRange a) -> Value {
        GenericBuilder in{nb, l};
        return arith::AddFOp::create(
            nb, l, arith::MulFOp::create(nb, l, in.cst(qb), a[0]),
            arith::MulFOp::create(nb, l, in.cst(qc), a[1]));
      });
      Value ax = g.elementwise({x}, [&](OpBuilder &nb, Location l,
                                        ValueRange a) -> Value {
        GenericBuilder in{nb, l};
        return arith::MulFOp::create(nb, l, in.cst(qa), a[0]);
      });
      // X = a X + (b A + c A^2) X
      x = g.generic({poly, x}, ax,
                    {g.map(3, {g.d(0), g.d(2)}), g.map(3, {g.d(2), g.d(1)}),
                     g.map(3, {g.d(0), g.d(1)})},
                    {kPar, kPar, kRed}, mulAdd);
    }
    float lrScale = static_cast<float>(op.getLrScale().convertToDouble());
    float wd = static_cast<float>(op.getWeightDecay().convertToDouble());
    float shapeScale = std::sqrt(std::max(1.0f, float(rows) / float(cols)));
    Value param = g.generic(
        {adaptor.getParam(), x, adaptor.getLr()}, g.empty(type.getShape()),
        {id, tall ? swapped : id, scalar, id}, {kPar, kPar},
        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          Value lr = arith::MulFOp::create(nb, l, a[2], in.cst(lrScale));
          Value decayed = arith::MulFOp::create(
              nb, l, a[0],
              arith::SubFOp::create(nb, l, in.cst(1.0),
                                    arith::MulFOp::create(nb, l, lr, in.cst(wd))));
          return arith::SubFOp::create(
              nb, l, decayed,
              arith::MulFOp::create(
                  nb, l, arith::MulFOp::create(nb, l, lr, in.cst(shapeScale)), a[1]));
        });
    rewriter.replaceOp(op, ValueRange{param, buffer});
    return success();
  }
};

/// x + linear(a, W) and x + mlp(h) are residual connections: fused into the
/// last GEMM as `accumulate x` when the sum is the product's only use.
static void foldResidualAdds(ModuleOp module) {
  SmallVector<AddOp> adds;
  module.walk([&](AddOp add) { adds.push_back(add); });
  for (AddOp add : adds) {
    for (unsigned i = 0; i < 2; ++i) {
      Operation *product = add->getOperand(i).getDefiningOp();
      Value residual = add->getOperand(1 - i);
      // Only the product's result counts: an MLP's saved hidden values are
      // read by the backward and stay results of the fused op.
      if (!product || !product->getResult(0).hasOneUse() ||
          residual == add->getOperand(i))
        continue;
      OpBuilder b(add);
      Operation *fused = nullptr;
      if (auto linear = dyn_cast<LinearOp>(product)) {
        if (linear.getAccumulate())
          continue;
        fused = LinearOp::create(b, add.getLoc(), add.getType(),
                                 linear.getInput(), linear.getWeight(),
                                 linear.getBias(), residual);
      } else if (auto mlp = dyn_cast<MlpOp>(product)) {
        if (mlp.getAccumulate())
          continue;
        MlpOp fusedMlp = mlp.cloneWith(b, mlp.getSaved().getTypes(), residual);
        mlp.getSaved().replaceAllUsesWith(fusedMlp.getSaved());
        fused = fusedMlp;
      } else {
        continue;
      }
      // The fused product keeps the product's fusion group.
      fused->setDiscardableAttrs(product->getDiscardableAttrDictionary());
      add.replaceAllUsesWith(fused->getResult(0));
      add.erase();
      product->erase();
      break;
    }
  }
}


/// The row of the last real token, inside a generic's body: length - 1, or
/// the last of `rows` without a length.
static Value lastRow(OpBuilder &b, Location l, Value length, int64_t rows) {
  if (!length)
    return arith::ConstantIndexOp::create(b, l, rows - 1);
  return arith::SubIOp::create(b, l, positionOffset(b, l, length),
                               arith::ConstantIndexOp::create(b, l, 1));
}

/// x[n-1] - y[n-1] for [T, D] x and y: the last real token's row, read
/// directly (no pass over the window) as a [D] tensor.
static Value lastRowDiff(GenericBuilder &g, Value x, Value y, Value length) {
  auto type = llvm::cast<RankedTensorType>(x.getType());
  int64_t rows = type.getDimSize(0);
  return g.generic({}, g.empty({type.getDimSize(1)}), {g.map(1, {g.d(0)})},
                   {kPar}, [&](OpBuilder &b, Location l, ValueRange) -> Value {
                     Value t = lastRow(b, l, length, rows);
                     Value d = linalg::IndexOp::create(b, l, 0);
                     return arith::SubFOp::create(
                         b, l, tensor::ExtractOp::create(b, l, x, ValueRange{t, d}),
                         tensor::ExtractOp::create(b, l, y, ValueRange{t, d}));
                   });
}

/// LoopUS's gate: delta = u - h, y = (delta W_down^T) W_up^T + b (two thin
/// products), then per element Abar = exp(-softplus(y) exp(A_log)) and
/// Abar u + (1 - Abar) h.
struct LowerSelectiveGate : OpConversionPattern<SelectiveGateOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(SelectiveGateOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    Value u = adaptor.getProposal(), h = adaptor.getState();
    Value delta = g.elementwise({u, h}, [](OpBuilder &nb, Location l,
                                           ValueRange a) -> Value {
      return arith::SubFOp::create(nb, l, a[0], a[1]);
    });
    Value y = g.matmulTransposed(
        g.matmulTransposed(delta, adaptor.getWDown()), adaptor.getWUp());
    AffineMap td = g.map(2, {g.d(0), g.d(1)}), d = g.map(2, {g.d(1)});
    Value r = g.generic(
        {y, adaptor.getBias(), adaptor.getALog(), u, h}, g.empty(shapeOf(u)),
        {td, d, d, td, td, td}, {kPar, kPar},
        [](OpBuilder &nb, Location l, ValueRange a) -> Value {
          Value dt = softplus(nb, l, arith::AddFOp::create(nb, l, a[0], a[1]));
          Value abar = math::ExpOp::create(
              nb, l,
              arith::NegFOp::create(
                  nb, l,
                  arith::MulFOp::create(nb, l, dt,
                                        math::ExpOp::create(nb, l, a[2]))));
          // h + Abar (u - h): the convex mix, in one rounding of (u - h).
          return arith::AddFOp::create(
              nb, l, a[4],
              arith::MulFOp::create(
                  nb, l, abar, arith::SubFOp::create(nb, l, a[3], a[4])));
        });
    rewriter.replaceOp(op, r);
    return success();
  }
};

/// Abar = exp(-softplus(pre) exp(a_log)), recomputed in each generic below.
static Value gateAbar(OpBuilder &b, Location l, Value pre, Value aLog,
                      Value *dt = nullptr, Value *e = nullptr) {
  Value d = softplus(b, l, pre);
  Value ex = math::ExpOp::create(b, l, aLog);
  if (dt)
    *dt = d;
  if (e)
    *e = ex;
  return math::ExpOp::create(
      b, l, arith::NegFOp::create(b, l, arith::MulFOp::create(b, l, d, ex)));
}

/// Three generics: direct = dy Abar and pre_grad elementwise over [T, D];
/// a_log's gradient reduces over rows, loops (d, t) with the channel
/// parallel outside.
struct LowerSelectiveGateGrad : OpConversionPattern<SelectiveGateGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(SelectiveGateGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getPre());
    Value pre = adaptor.getPre(), aLog = adaptor.getALog(),
          delta = adaptor.getDelta(), dy = adaptor.getResultGrad();
    AffineMap td = g.map(2, {g.d(0), g.d(1)}), chan = g.map(2, {g.d(1)});
    Value direct = g.generic(
        {pre, aLog, dy}, g.empty(shape), {td, chan, td, td}, {kPar, kPar},
        [](OpBuilder &nb, Location l, ValueRange a) -> Value {
          return arith::MulFOp::create(nb, l, a[2],
                                       gateAbar(nb, l, a[0], a[1]));
        });
    // -dy delta Abar e, the cotangent of Dt e.
    auto scaled = [](OpBuilder &nb, Location l, ValueRange a, Value *dt,
                     Value *e) -> Value {
      Value abar = gateAbar(nb, l, a[0], a[1], dt, e);
      return arith::NegFOp::create(
          nb, l,
          arith::MulFOp::create(nb, l, arith::MulFOp::create(nb, l, a[3], a[2]),
                                abar));
    };
    Value preGrad = g.generic(
        {pre, aLog, delta, dy}, g.empty(shape), {td, chan, td, td, td},
        {kPar, kPar}, [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          Value e;
          Value s = scaled(nb, l, a, nullptr, &e);
          return arith::MulFOp::create(nb, l, arith::MulFOp::create(nb, l, s, e),
                                       sigmoid(nb, l, a[0]));
        });
    AffineMap dt2 = g.map(2, {g.d(1), g.d(0)}), d0 = g.map(2, {g.d(0)});
    Value aGrad = g.generic(
        {pre, aLog, delta, dy}, g.filled({shape[1]}, 0.0),
        {dt2, d0, dt2, dt2, d0}, {kPar, kRed},
        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          Value dt, e;
          Value s = scaled(nb, l, a, &dt, &e);
          return arith::AddFOp::create(
              nb, l, a[4],
              arith::MulFOp::create(nb, l, s, arith::MulFOp::create(nb, l, dt, e)));
        });
    rewriter.replaceOp(op, {preGrad, aGrad, direct});
    return success();
  }
};

/// Per row, the target's logit against the row's maximum (a tie counts as a
/// hit); then the mean over rows under a unit parallel loop.
struct LowerTokenAccuracy : OpConversionPattern<TokenAccuracyOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(TokenAccuracyOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    Value logits = adaptor.getLogits();
    SmallVector<int64_t> shape = shapeOf(logits);
    Value mx = rowMax(g, logits);
    float invT = 1.0f / static_cast<float>(shape[0]);
    Value acc = g.generic(
        {mx, adaptor.getTargets()}, g.filled({1}, 0.0),
        {g.map(2, {g.d(1)}), g.map(2, {g.d(1)}), g.map(2, {g.d(0)})},
        {kPar, kRed}, [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          Value t = linalg::IndexOp::create(nb, l, 1);
          Value col = arith::IndexCastOp::create(nb, l, nb.getIndexType(), a[1]);
          Value picked =
              tensor::ExtractOp::create(nb, l, logits, ValueRange{t, col});
          Value hit = arith::CmpFOp::create(nb, l, arith::CmpFPredicate::OGE,
                                            picked, a[0]);
          return arith::AddFOp::create(
              nb, l, a[2],
              arith::SelectOp::create(nb, l, hit, in.cst(invT), in.cst(0.0)));
        });
    rewriter.replaceOp(op, acc);
    return success();
  }
};

/// max(z, 0) - z a + log1p(exp(-|z|)) of the last row's logit: one unit
/// generic that reads the row directly.
struct LowerBinaryCrossEntropy : OpConversionPattern<BinaryCrossEntropyOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(BinaryCrossEntropyOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    Value logits = adaptor.getLogits();
    int64_t last = shapeOf(logits)[0] - 1;
    Value r = g.generic(
        {adaptor.getTarget()}, g.empty({1}), {g.map(1, {g.d(0)}), g.map(1, {g.d(0)})},
        {kPar}, [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          Value row = arith::ConstantIndexOp::create(nb, l, last);
          Value col = arith::ConstantIndexOp::create(nb, l, 0);
          Value z = tensor::ExtractOp::create(nb, l, logits, ValueRange{row, col});
          return arith::SubFOp::create(
              nb, l, softplus(nb, l, z), arith::MulFOp::create(nb, l, z, a[0]));
        });
    rewriter.replaceOp(op, r);
    return success();
  }
};

/// (sigmoid(z) - a) dy in the last row, 0 elsewhere.
struct LowerBinaryCrossEntropyGrad
    : OpConversionPattern<BinaryCrossEntropyGradOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(BinaryCrossEntropyGradOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getLogits());
    AffineMap id = g.map(2, {g.d(0), g.d(1)}),
              scalar = g.map(2, {g.getAffineConstant(0)});
    Value r = g.generic(
        {adaptor.getLogits(), adaptor.getTarget(), adaptor.getResultGrad()},
        g.empty(shape), {id, scalar, scalar, id}, {kPar, kPar},
        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          Value t = linalg::IndexOp::create(nb, l, 0);
          Value isLast = arith::CmpIOp::create(
              nb, l, arith::CmpIPredicate::eq, t,
              arith::ConstantIndexOp::create(nb, l, shape[0] - 1));
          Value grad = arith::MulFOp::create(
              nb, l, arith::SubFOp::create(nb, l, sigmoid(nb, l, a[0]), a[1]),
              a[2]);
          return arith::SelectOp::create(nb, l, isLast, grad, in.cst(0.0));
        });
    rewriter.replaceOp(op, r);
    return success();
  }
};

/// q = sigmoid(w_q . LayerNorm(u[n-1] - h[n-1]) + b_q): the last real row
/// of delta read directly (no pass over the window), then its sum, its
/// centred sum of squares and the dot, each a reduction over D under a
/// unit parallel loop (which gives the GPU mapping a block).
struct LowerHaltConfidence : OpConversionPattern<HaltConfidenceOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(HaltConfidenceOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    int64_t D = shapeOf(op.getProposal())[1];
    Value u = adaptor.getProposal(), h = adaptor.getState(),
          length = adaptor.getLength();
    Value row = lastRowDiff(g, u, h, length);
    AffineMap perD = g.map(2, {g.d(1)}), unit = g.map(2, {g.d(0)}),
              wq = g.map(2, {g.d(0), g.d(1)});
    float invD = 1.0f / float(D);
    float eps = static_cast<float>(op.getEps().convertToDouble());
    Value sum = g.generic({row}, g.filled({1}, 0.0), {perD, unit}, {kPar, kRed},
                          [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                            return arith::AddFOp::create(nb, l, a[1], a[0]);
                          });
    auto centred = [invD](OpBuilder &nb, Location l, Value x, Value s) {
      GenericBuilder in{nb, l};
      return arith::SubFOp::create(
          nb, l, x, arith::MulFOp::create(nb, l, s, in.cst(invD)));
    };
    Value ss = g.generic(
        {row, sum}, g.filled({1}, 0.0), {perD, unit, unit}, {kPar, kRed},
        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          Value c = centred(nb, l, a[0], a[1]);
          return arith::AddFOp::create(nb, l, a[2],
                                       arith::MulFOp::create(nb, l, c, c));
        });
    Value dot = g.generic(
        {row, sum, ss, adaptor.getLnWeight(), adaptor.getLnBias(),
         adaptor.getWQ()},
        g.filled({1}, 0.0), {perD, unit, unit, perD, perD, wq, unit},
        {kPar, kRed}, [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          Value n = GenericBuilder::rmsNormalize(
              nb, l, centred(nb, l, a[0], a[1]), a[2], invD, eps);
          Value y = arith::AddFOp::create(
              nb, l, arith::MulFOp::create(nb, l, n, a[3]), a[4]);
          return arith::AddFOp::create(nb, l, a[6],
                                       arith::MulFOp::create(nb, l, y, a[5]));
        });
    Value q = g.elementwise({dot, adaptor.getBQ()},
                            [](OpBuilder &nb, Location l, ValueRange a) -> Value {
                              return sigmoid(nb, l,
                                             arith::AddFOp::create(nb, l, a[0], a[1]));
                            });
    rewriter.replaceOp(op, q);
    return success();
  }
};

/// The halting status [phase, prod (1 - q)] in one two-element generic
/// (tagged as the loop's exit status), then the kept state: `next` while
/// the phase is 0 or 1, the previous kept state after, updated in place.
struct LowerHaltIf : OpConversionPattern<HaltIfOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(HaltIfOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    GenericBuilder g{rewriter, op.getLoc(), groupOf(op)};
    SmallVector<int64_t> shape = shapeOf(op.getNext());
    Value next = adaptor.getNext(), prev = adaptor.getPrev(),
          length = adaptor.getLength(), previous = adaptor.getStatus();
    HaltMode mode = op.getMode();
    AffineMap first = g.map(1, {g.getAffineConstant(0)}),
              second = g.map(1, {g.getAffineConstant(1)});
    SmallVector<Value> ins = {adaptor.getQ()};
    SmallVector<AffineMap> maps = {first};
    if (previous) {
      ins.append({previous, previous});
      maps.append({first, second});
    }
    if (mode == HaltMode::convergence) {
      // ||next[n-1] - prev[n-1]||^2, under a unit parallel loop.
      Value dist = g.generic(
          {lastRowDiff(g, next, prev, length)}, g.filled({1}, 0.0),
          {g.map(2, {g.d(1)}), g.map(2, {g.d(0)})}, {kPar, kRed},
          [](OpBuilder &nb, Location l, ValueRange a) -> Value {
            return arith::AddFOp::create(nb, l, a[1],
                                         arith::MulFOp::create(nb, l, a[0], a[0]));
          });
      ins.push_back(dist);
      maps.push_back(first);
    }
    maps.push_back(g.map(1, {g.d(0)}));
    float threshold = static_cast<float>(op.getThreshold().convertToDouble());
    float tolerance = static_cast<float>(op.getTolerance().convertToDouble());
    bool hasPrevious = bool(previous);
    Value status = g.generic(
        ins, g.empty({2}), maps, {kPar},
        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          GenericBuilder in{nb, l};
          Value q = a[0];
          Value phase = hasPrevious ? a[1] : in.cst(0.0);
          Value survival = hasPrevious ? a[2] : in.cst(1.0);
          survival = arith::MulFOp::create(
              nb, l, survival, arith::SubFOp::create(nb, l, in.cst(1.0), q));
          Value halt;
          auto gt = [&](Value x, float v) {
            return arith::CmpFOp::create(nb, l, arith::CmpFPredicate::OGT, x,
                                         in.cst(v));
          };
          switch (mode) {
          case HaltMode::none:
            halt = arith::ConstantIntOp::create(nb, l, 0, 1);
            break;
          case HaltMode::threshold:
            halt = gt(q, threshold);
            break;
          case HaltMode::cdf:
            halt = gt(arith::SubFOp::create(nb, l, in.cst(1.0), survival),
                      threshold);
            break;
          case HaltMode::convergence:
            halt = arith::CmpFOp::create(
                nb, l, arith::CmpFPredicate::OLT,
                math::SqrtOp::create(nb, l, a[hasPrevious ? 3 : 1]),
                in.cst(tolerance));
            break;
          }
          Value running = arith::CmpFOp::create(nb, l, arith::CmpFPredicate::OEQ,
                                                phase, in.cst(0.0));
          Value newPhase = arith::SelectOp::create(
              nb, l, running,
              arith::SelectOp::create(nb, l, halt, in.cst(1.0), in.cst(0.0)),
              in.cst(2.0));
          Value isPhase = arith::CmpIOp::create(
              nb, l, arith::CmpIPredicate::eq, linalg::IndexOp::create(nb, l, 0),
              arith::ConstantIndexOp::create(nb, l, 0));
          return arith::SelectOp::create(nb, l, isPhase, newPhase, survival);
        });
    status.getDefiningOp()->setAttr(kExitStatusAttrName, rewriter.getUnitAttr());

    AffineMap td = g.map(2, {g.d(0), g.d(1)}),
              scalar = g.map(2, {g.getAffineConstant(0)});
    Value kept = adaptor.getKept();
    Value out = kept ? kept : g.empty(shape);
    bool hasKept = bool(kept);
    Value newKept = g.generic(
        {status, next}, out, {scalar, td, td}, {kPar, kPar},
        [&](OpBuilder &nb, Location l, ValueRange a) -> Value {
          if (!hasKept)
            return a[1];
          GenericBuilder in{nb, l};
          Value open = arith::CmpFOp::create(nb, l, arith::CmpFPredicate::OLT,
                                             a[0], in.cst(1.5));
          return arith::SelectOp::create(nb, l, open, a[1], a[2]);
        });
    newKept.getDefiningOp()->setAttr(kLoopStateAttrName, rewriter.getUnitAttr());
    rewriter.replaceOp(op, ValueRange{status, newKept});
    return success();
  }
};

/// Attention's gradient as one kernel-level op: the cuda target's tiled
/// kernels recompute the scores per tile, where the structured lowering
/// keeps [heads, T, T] scores, weights and their gradient in memory. It
/// needs the forward's output (rowsum(dO * o) stands for rowsum(dP * P)).
static void fuseAttentionGrads(ModuleOp module) {
  SmallVector<AttentionGradOp> grads;
  module.walk([&](AttentionGradOp op) {
    if (op.getOutput())
      grads.push_back(op);
  });
  for (AttentionGradOp op : grads) {
    OpBuilder b(op);
    GenericBuilder g{b, op.getLoc(), groupOf(op)};
    int64_t rows = shapeOf(op.getQuery())[0];
    Value stats = g.empty({rows, 3 * int64_t(op.getHeads())});
    auto fused = FusedAttentionGradOp::create(
        b, op.getLoc(),
        TypeRange{op.getQueryGrad().getType(), op.getKeyGrad().getType(),
                  op.getValueGrad().getType(), stats.getType()},
        op.getQuery(), op.getKey(), op.getValue(), op.getResultGrad(),
        op.getOutput(), g.empty(shapeOf(op.getQuery())),
        g.empty(shapeOf(op.getKey())), g.empty(shapeOf(op.getKey())), stats,
        op.getHeadsAttr(), op.getKvHeadsAttr(), op.getNormalizerAttr(),
        op.getWindowAttr());
    g.tag(fused);
    op.replaceAllUsesWith(fused.getResults().take_front(3));
    op.erase();
  }
}

struct LowerToLinalg : lathe::impl::LowerToLinalgBase<LowerToLinalg> {
  using Base::Base;
  void runOnOperation() override {
    foldResidualAdds(getOperation());
    if (gpuAttentionGrad)
      fuseAttentionGrads(getOperation());
    MLIRContext *ctx = &getContext();
    ConversionTarget target(*ctx);
    target.addLegalDialect<linalg::LinalgDialect, tensor::TensorDialect,
                           arith::ArithDialect, math::MathDialect,
                           func::FuncDialect>();
    // Cache writes stay: kernel formation expands them right where it
    // outlines them, so no pass in between can drop the write as unused.
    target.addLegalOp<ParamOp, WeightOp, LaunchOp, CacheOp, CacheReadOp,
                      CacheWriteOp, AssignOp, FusedAttentionOp,
                      FusedAttentionGradOp, ScatterAddRowsOp>();
    target.addIllegalDialect<LatheDialect>();
    RewritePatternSet patterns(ctx);
    patterns.add<LowerEmbedding, LowerRmsNorm, LowerLayerNorm, LowerLinear,
                 LowerRope, LowerPhaseRotate, LowerDcInject, LowerDepthAttention, LowerRoutingEntropy,
                 LowerScale, LowerRowSumSquaresGrad, LowerDepthAttentionGrad,
                 LowerParcaeInject, LowerSub, LowerSinusoid, LowerSilu,
                 LowerModulatedRmsNorm, LowerGatedAdd, LowerRowSumSquares,
                 LowerAttention, LowerMlp, LowerAdd, LowerCrossEntropy,
                 LowerCrossEntropyGrad, LowerMatmul, LowerRmsNormGrad,
                 LowerSwiglu, LowerSwigluGrad, LowerEmbeddingGrad,
                 LowerAttentionGrad, LowerGlobalNorm, LowerAdamw, LowerSumRows,
                 LowerRepeatRows, LowerFoldRows,
                 LowerPadRows, LowerLayerNormGrad, LowerActivation,
                 LowerActivationGrad, LowerPhaseRotateThetaGrad,
                 LowerCenterRows, LowerParcaeInjectGrad,
                 LowerModulatedRmsNormGrad, LowerGatedAddGrad,
                 LowerSiluGrad, LowerSelectiveGate, LowerHaltConfidence,
                 LowerHaltIf, LowerMuon, LowerStopGradient, LowerLoopSelect,
                 LowerIterationMask, LowerMeanSquaredError,
                 LowerMeanSquaredErrorGrad, LowerSelectiveGateGrad,
                 LowerTokenAccuracy, LowerBinaryCrossEntropy,
                 LowerBinaryCrossEntropyGrad>(ctx);
    if (failed(applyPartialConversion(getOperation(), target,
                                      std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
