//===- ContractionToBlas.cpp - matrix products through the host BLAS -*- C++ -*-===//
//
// A contraction generic is described by where each loop dimension appears in
// each operand. With row-major buffers the element offset of operand X is
// sum_d stride_X(d) * d (d floordiv g for a shared operand), so a GEMM view
// exists when every matrix has a unit stride on one of its two dimensions.
//
//===----------------------------------------------------------------------===//

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

/// Per loop dimension: its element stride in one operand, and the divisor
/// when the operand indexes it as `d floordiv g`.
struct Access {
  SmallVector<int64_t> stride; // 0: absent
  SmallVector<int64_t> group;  // 1: plain
};

static std::optional<Access> accessOf(AffineMap map, MemRefType type) {
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

/// out += in0 * in1 (either operand order).
static bool isMulAdd(linalg::GenericOp op) {
  Block &body = op.getRegion().front();
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

struct Gemm {
  int64_t m, n, k, transA, transB, lda, ldb, ldc;
  int64_t batch = 1, strideA = 0, strideB = 0, groupB = 1, strideC = 0;
};

static std::optional<Gemm> describe(linalg::GenericOp op) {
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
  Gemm g;
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
  return g;
}

struct ContractionToBlas
    : lathe::impl::ContractionToBlasBase<ContractionToBlas> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<linalg::GenericOp> candidates;
    module.walk([&](linalg::GenericOp op) { candidates.push_back(op); });
    func::FuncOp decl;
    for (linalg::GenericOp op : candidates) {
      std::optional<Gemm> g = describe(op);
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
      if (auto fill = dyn_cast_or_null<linalg::FillOp>(op->getPrevNode())) {
        auto zero = fill.getInputs()[0].getDefiningOp<arith::ConstantOp>();
        if (fill.getOutputs()[0] == out && zero &&
            cast<FloatAttr>(zero.getValue()).getValue().isZero()) {
          fill->erase();
          accumulate = 0;
        }
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
