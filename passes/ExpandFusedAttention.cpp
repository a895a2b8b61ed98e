//===- ExpandFusedAttention.cpp - attention as one loop nest -----*- C++ -*-===//
//
// One (head, query row) pair is one iteration of the parallel loop: the query
// slice stays in registers as a vector<head_dim>, and each visible key row
// is read once for its score and its value row once for the running sum.
// This is the FlashAttention recurrence with a tile of one query row, which
// is what both targets want from the same IR: on the CPU a row is a few
// vector registers and the head loop is split across threads; on the GPU a
// row is one thread of work after lathe-map-kernels-to-gpu.
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/PatternMatch.h"

#include <cmath>
#include <limits>

namespace mlir::lathe {
#define GEN_PASS_DEF_EXPANDFUSEDATTENTION
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

Value mlir::lathe::windowStart(OpBuilder &b, Location loc, Value row,
                               int64_t window) {
  if (window == 0)
    return arith::ConstantIndexOp::create(b, loc, 0);
  return arith::SubIOp::create(
      b, loc, row,
      arith::RemUIOp::create(b, loc, row,
                             arith::ConstantIndexOp::create(b, loc, window)));
}

Value mlir::lathe::normalizedRow(OpBuilder &b, Location loc, bool softpick,
                                 Value acc, Value denom) {
  if (softpick)
    denom = arith::AddFOp::create(
        b, loc, denom, arith::ConstantOp::create(b, loc, b.getF32FloatAttr(1e-8)));
  return arith::DivFOp::create(
      b, loc, acc,
      vector::BroadcastOp::create(b, loc, cast<VectorType>(acc.getType()),
                                  denom));
}

AttentionPairGrad mlir::lathe::attentionPairGrad(OpBuilder &b, Location l,
                                                bool softpick, float scale,
                                                Value valid, Value s, Value dp,
                                                Value shift, Value norm,
                                                Value rs) {
  auto cst = [&](double v) -> Value {
    return arith::ConstantOp::create(b, l, b.getF32FloatAttr(v));
  };
  Value zero = cst(0.0);
  Value z = arith::MulFOp::create(b, l, s, cst(scale));
  Value e = arith::SelectOp::create(
      b, l, valid,
      math::ExpOp::create(b, l, arith::SubFOp::create(b, l, z, shift)), zero);
  Value p, dz;
  if (!softpick) {
    p = arith::DivFOp::create(b, l, e, norm);
    dz = arith::MulFOp::create(b, l, p, arith::SubFOp::create(b, l, dp, rs));
  } else {
    Value floor =
        math::ExpOp::create(b, l, arith::NegFOp::create(b, l, shift));
    Value a = arith::SelectOp::create(
        b, l, valid, arith::SubFOp::create(b, l, e, floor), zero);
    p = arith::DivFOp::create(b, l, arith::MaximumFOp::create(b, l, a, zero),
                              norm);
    Value pos =
        arith::CmpFOp::create(b, l, arith::CmpFPredicate::OGT, a, zero);
    Value neg =
        arith::CmpFOp::create(b, l, arith::CmpFPredicate::OLT, a, zero);
    Value sign = arith::SelectOp::create(
        b, l, pos, cst(1.0),
        arith::SelectOp::create(b, l, neg, cst(-1.0), zero));
    Value gate = arith::SelectOp::create(b, l, pos, dp, zero);
    dz = arith::MulFOp::create(
        b, l, arith::DivFOp::create(b, l, e, norm),
        arith::SubFOp::create(b, l, gate,
                              arith::MulFOp::create(b, l, sign, rs)));
  }
  // Masked pairs give exactly 0 whatever the row's stats (a padding row's
  // normaliser is 0).
  Value ds = arith::MulFOp::create(b, l, dz, cst(scale));
  return {arith::SelectOp::create(b, l, valid, p, zero),
          arith::SelectOp::create(b, l, valid, ds, zero)};
}

namespace {

/// Keys scored together per step of the key loop.
constexpr int64_t kTile = 8;

static void expand(FusedAttentionOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  auto qType = cast<MemRefType>(op.getQuery().getType());
  auto kType = cast<MemRefType>(op.getKey().getType());
  int64_t rows = qType.getDimSize(0), keys = kType.getDimSize(0),
          heads = op.getHeads(), group = heads / op.getKvHeads(),
          headDim = op.getHeadDim();
  bool softpick = op.getNormalizer() == Normalizer::softpick;
  Type f32 = b.getF32Type();
  auto vecType = VectorType::get({headDim}, f32);
  auto idx = [&](OpBuilder &ob, int64_t v) -> Value {
    return arith::ConstantIndexOp::create(ob, loc, v);
  };
  auto cst = [&](OpBuilder &ob, double v) -> Value {
    return arith::ConstantOp::create(ob, loc, ob.getF32FloatAttr(v));
  };
  // Reassociation lets LLVM keep the dot product's partial sums in vector
  // lanes; the result differs from a sequential sum by rounding only.
  auto fast = arith::FastMathFlagsAttr::get(
      b.getContext(), arith::FastMathFlags::reassoc | arith::FastMathFlags::contract);

  Value c0 = idx(b, 0), c1 = idx(b, 1);
  auto loop = scf::ParallelOp::create(
      b, loc, ValueRange{c0, c0}, ValueRange{idx(b, heads), idx(b, rows)},
      ValueRange{c1, c1});
  int64_t seen = op.getWindow() > 0 ? op.getWindow() : keys;
  loop->setAttr(kWorkAttrName,
                b.getI64IntegerAttr(heads * rows * seen * headDim));
  OpBuilder lb = OpBuilder::atBlockBegin(loop.getBody());
  Value h = loop.getInductionVars()[0], i = loop.getInductionVars()[1];
  // Query row i sits at position offset + i and sees keys 0..position.
  Value position = i;
  if (Value offset = op.getOffset()) {
    Value raw = memref::LoadOp::create(lb, loc, offset, ValueRange{c0});
    Value start = arith::IndexCastOp::create(lb, loc, lb.getIndexType(), raw);
    position = arith::AddIOp::create(lb, loc, start, i);
  }
  Value visible = arith::MinUIOp::create(
      lb, loc, arith::AddIOp::create(lb, loc, position, c1), idx(lb, keys));
  Value firstKey = windowStart(lb, loc, i, op.getWindow());
  Value qCol = arith::MulIOp::create(lb, loc, h, idx(lb, headDim));
  Value kvCol = arith::MulIOp::create(
      lb, loc, arith::DivUIOp::create(lb, loc, h, idx(lb, group)),
      idx(lb, headDim));
  float scale = 1.0f / std::sqrt(static_cast<float>(headDim));
  Value q = vector::LoadOp::create(lb, loc, vecType, op.getQuery(),
                                   ValueRange{i, qCol});
  q = arith::MulFOp::create(lb, loc, q,
                            vector::BroadcastOp::create(lb, loc, vecType,
                                                        cst(lb, scale)));
  // Softpick's shift is clamped at 0 (e^-m stays <= 1), so its running
  // maximum starts there; softmax's starts at -inf.
  Value m0 = cst(lb, softpick ? 0.0
                              : -std::numeric_limits<double>::infinity());
  Value zero = cst(lb, 0.0);
  Value acc0 = vector::BroadcastOp::create(lb, loc, vecType, zero);
  // Keys go in tiles of kTile: the tile's dot products are independent of
  // one another (instruction-level parallelism instead of one long chain
  // through the running maximum), and exp, max and sum run on a vector of
  // scores. Rows past the visible range are clamped to a valid row for the
  // load and masked out of every sum.
  int64_t tile = std::min<int64_t>(kTile, keys);
  auto tileType = VectorType::get({tile}, f32);
  SmallVector<int64_t> laneIds(tile);
  for (int64_t t = 0; t < tile; ++t)
    laneIds[t] = t;
  auto laneType = VectorType::get({tile}, lb.getIndexType());
  Value lanes = arith::ConstantOp::create(
      lb, loc, laneType, DenseElementsAttr::get(laneType, ArrayRef(laneIds)));
  Value lastRow = idx(lb, keys - 1);
  Value negInf = cst(lb, -std::numeric_limits<double>::infinity());
  auto keysLoop = scf::ForOp::create(
      lb, loc, firstKey, visible, idx(lb, tile), ValueRange{m0, zero, acc0},
      [&](OpBuilder &fb, Location l, Value j0, ValueRange state) {
        Value m = state[0], denom = state[1], acc = state[2];
        SmallVector<Value> rowsOfTile, scores;
        for (int64_t t = 0; t < tile; ++t) {
          Value row = arith::MinUIOp::create(
              fb, l, arith::AddIOp::create(fb, l, j0, idx(fb, t)), lastRow);
          rowsOfTile.push_back(row);
          Value k = vector::LoadOp::create(fb, l, vecType, op.getKey(),
                                           ValueRange{row, kvCol});
          Value prod = arith::MulFOp::create(fb, l, q, k, fast);
          scores.push_back(vector::ReductionOp::create(
              fb, l, vector::CombiningKind::ADD, prod, Value(),
              fast.getValue()));
        }
        Value s = vector::FromElementsOp::create(fb, l, tileType, scores);
        Value limit = vector::BroadcastOp::create(
            fb, l, VectorType::get({tile}, fb.getIndexType()),
            arith::SubIOp::create(fb, l, visible, j0));
        Value valid = arith::CmpIOp::create(fb, l, arith::CmpIPredicate::ult,
                                            lanes, limit);
        s = arith::SelectOp::create(
            fb, l, valid, s, vector::BroadcastOp::create(fb, l, tileType, negInf));
        Value tileMax = vector::ReductionOp::create(
            fb, l, vector::CombiningKind::MAXIMUMF, s);
        Value mNew = arith::MaximumFOp::create(fb, l, m, tileMax);
        Value rescale = math::ExpOp::create(
            fb, l, arith::SubFOp::create(fb, l, m, mNew));
        Value e = math::ExpOp::create(
            fb, l,
            arith::SubFOp::create(
                fb, l, s, vector::BroadcastOp::create(fb, l, tileType, mNew)));
        Value weight = e, mass = e; // masked lanes: e^-inf = 0
        if (softpick) {
          // e^(s-m) - e^(-m) = e^-m (e^s - 1): numerator relu, denominator |.|
          Value floor = math::ExpOp::create(fb, l,
                                            arith::NegFOp::create(fb, l, mNew));
          Value d = arith::SubFOp::create(
              fb, l, e, vector::BroadcastOp::create(fb, l, tileType, floor));
          Value zeros = vector::BroadcastOp::create(fb, l, tileType, cst(fb, 0.0));
          weight = arith::MaximumFOp::create(fb, l, d, zeros);
          mass = arith::SelectOp::create(fb, l, valid,
                                         math::AbsFOp::create(fb, l, d), zeros);
        }
        Value denomNew = arith::AddFOp::create(
            fb, l, arith::MulFOp::create(fb, l, denom, rescale),
            vector::ReductionOp::create(fb, l, vector::CombiningKind::ADD, mass,
                                        Value(), fast.getValue()));
        Value accNew = arith::MulFOp::create(
            fb, l, acc, vector::BroadcastOp::create(fb, l, vecType, rescale));
        for (int64_t t = 0; t < tile; ++t) {
          Value v = vector::LoadOp::create(fb, l, vecType, op.getValue(),
                                           ValueRange{rowsOfTile[t], kvCol});
          Value w = vector::ExtractOp::create(fb, l, weight,
                                              ArrayRef<int64_t>{t});
          accNew = vector::FMAOp::create(
              fb, l, vector::BroadcastOp::create(fb, l, vecType, w), v, accNew);
        }
        scf::YieldOp::create(fb, l, ValueRange{mNew, denomNew, accNew});
      });
  Value out = normalizedRow(lb, loc, softpick, keysLoop.getResult(2),
                            keysLoop.getResult(1));
  vector::StoreOp::create(lb, loc, out, op.getInit(), ValueRange{i, qCol});
  op.erase();
}

struct ExpandFusedAttention
    : lathe::impl::ExpandFusedAttentionBase<ExpandFusedAttention> {
  void runOnOperation() override {
    FailureOr<SmallVector<FusedAttentionOp>> ops =
        bufferizedOps<FusedAttentionOp>(getOperation(), "lathe-expand-fused-attention");
    if (failed(ops))
      return signalPassFailure();
    for (FusedAttentionOp op : *ops)
      expand(op);
  }
};

} // namespace
