//===- GemmView.cpp - a contraction seen as a GEMM ----------------*- C++ -*-===//
//
// A contraction generic is described by where each loop dimension appears in
// each operand. With row-major buffers the element offset of operand X is
// sum_d stride_X(d) * d (d floordiv g for a shared operand), so a GEMM view
// exists when every matrix has a unit stride on one of its two dimensions.
//
//===----------------------------------------------------------------------===//

#include "GemmView.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"

using namespace mlir;
using namespace mlir::lathe;

namespace {
/// Per loop dimension: its element stride in one operand, and the divisor
/// when the operand indexes it as `d floordiv g`.
struct Access {
  SmallVector<int64_t> stride; // 0: absent
  SmallVector<int64_t> group;  // 1: plain
};

std::optional<Access> accessOf(AffineMap map, MemRefType type) {
  if (!type.getLayout().isIdentity() || !type.hasStaticShape() ||
      !type.getElementType().isF32())
    return std::nullopt;
  Access a;
  a.stride.assign(map.getNumDims(), 0);
  a.group.assign(map.getNumDims(), 1);
  int64_t rowStride = 1;
  for (int r = map.getNumResults() - 1; r >= 0; --r) {
    AffineExpr e = map.getResult(r);
    int64_t group = 1;
    if (auto bin = dyn_cast<AffineBinaryOpExpr>(e);
        bin && bin.getKind() == AffineExprKind::FloorDiv) {
      auto c = dyn_cast<AffineConstantExpr>(bin.getRHS());
      if (!c || c.getValue() <= 0)
        return std::nullopt;
      group = c.getValue();
      e = bin.getLHS();
    }
    auto dim = dyn_cast<AffineDimExpr>(e);
    if (!dim || a.stride[dim.getPosition()] != 0)
      return std::nullopt;
    a.stride[dim.getPosition()] = rowStride;
    a.group[dim.getPosition()] = group;
    rowStride *= type.getDimSize(r);
  }
  return a;
}

} // namespace

bool mlir::lathe::isMulAdd(linalg::LinalgOp op) {
  Block &body = op->getRegion(0).front();
  if (body.getOperations().size() != 3)
    return false;
  auto yield = cast<linalg::YieldOp>(body.getTerminator());
  auto add = yield.getOperand(0).getDefiningOp<arith::AddFOp>();
  if (!add)
    return false;
  Value acc = body.getArgument(2);
  Value other = add.getLhs() == acc ? add.getRhs() : add.getLhs();
  if (add.getLhs() != acc && add.getRhs() != acc)
    return false;
  auto mul = other.getDefiningOp<arith::MulFOp>();
  if (!mul)
    return false;
  Value x = body.getArgument(0), y = body.getArgument(1);
  return (mul.getLhs() == x && mul.getRhs() == y) ||
         (mul.getLhs() == y && mul.getRhs() == x);
}

std::optional<GemmView> mlir::lathe::describeContraction(linalg::GenericOp op) {
  if (op.getNumDpsInputs() != 2 || op.getNumDpsInits() != 1 ||
      !op.hasPureBufferSemantics() || !isMulAdd(op))
    return std::nullopt;
  SmallVector<AffineMap> maps = op.getIndexingMapsArray();
  std::optional<Access> a, b, c;
  a = accessOf(maps[0], cast<MemRefType>(op.getDpsInputs()[0].getType()));
  b = accessOf(maps[1], cast<MemRefType>(op.getDpsInputs()[1].getType()));
  c = accessOf(maps[2], cast<MemRefType>(op.getDpsInits()[0].getType()));
  if (!a || !b || !c)
    return std::nullopt;
  SmallVector<int64_t> ranges = op.getStaticLoopRanges();
  int dm = -1, dn = -1, dk = -1, db = -1;
  for (auto [d, it] : llvm::enumerate(op.getIteratorTypesArray())) {
    bool inA = a->stride[d], inB = b->stride[d], inC = c->stride[d];
    int *slot = nullptr;
    if (it == utils::IteratorType::reduction && inA && inB && !inC)
      slot = &dk;
    else if (it == utils::IteratorType::parallel && inA && !inB && inC)
      slot = &dm;
    else if (it == utils::IteratorType::parallel && !inA && inB && inC)
      slot = &dn;
    else if (it == utils::IteratorType::parallel && inA && inB && inC)
      slot = &db;
    if (!slot || *slot != -1)
      return std::nullopt; // a shape BLAS cannot express
    *slot = d;
  }
  if (dm < 0 || dn < 0 || dk < 0)
    return std::nullopt;
  // Only the right operand may be shared between batches, and only along
  // the batch dimension.
  for (int d : {dm, dk})
    if (a->group[d] != 1)
      return std::nullopt;
  if (b->group[dn] != 1 || b->group[dk] != 1 || c->group[dm] != 1 ||
      c->group[dn] != 1 || (db >= 0 && (a->group[db] != 1 || c->group[db] != 1)))
    return std::nullopt;
  GemmView g;
  g.m = ranges[dm];
  g.n = ranges[dn];
  g.k = ranges[dk];
  // A is m x k, B is k x n, C is m x n with a unit stride on n.
  if (a->stride[dk] == 1)
    g.transA = 0, g.lda = a->stride[dm];
  else if (a->stride[dm] == 1)
    g.transA = 1, g.lda = a->stride[dk];
  else
    return std::nullopt;
  if (b->stride[dn] == 1)
    g.transB = 0, g.ldb = b->stride[dk];
  else if (b->stride[dk] == 1)
    g.transB = 1, g.ldb = b->stride[dn];
  else
    return std::nullopt;
  if (c->stride[dn] != 1)
    return std::nullopt;
  g.ldc = c->stride[dm];
  if (db >= 0) {
    g.batch = ranges[db];
    g.strideA = a->stride[db];
    g.strideB = b->stride[db];
    g.groupB = b->group[db];
    g.strideC = c->stride[db];
  }
  // A matrix of one stored row never steps by its leading dimension, and
  // its stride there is whatever the buffer's shape made it (1 for [k, 1]);
  // BLAS libraries still want ld >= the row's length.
  auto settle = [](int64_t rows, int64_t cols, int64_t &ld) {
    if (rows == 1 && ld < cols)
      ld = cols;
  };
  settle(g.transA ? g.k : g.m, g.transA ? g.m : g.k, g.lda);
  settle(g.transB ? g.n : g.k, g.transB ? g.k : g.n, g.ldb);
  settle(g.m, g.n, g.ldc);
  return g;
}

linalg::FillOp mlir::lathe::zeroFillBefore(linalg::GenericOp op) {
  auto fill = dyn_cast_or_null<linalg::FillOp>(op->getPrevNode());
  if (!fill || fill.getOutputs()[0] != op.getDpsInits()[0])
    return nullptr;
  auto zero = fill.getInputs()[0].getDefiningOp<arith::ConstantOp>();
  auto value = zero ? dyn_cast<FloatAttr>(zero.getValue()) : nullptr;
  return value && value.getValue().isZero() ? fill : nullptr;
}
