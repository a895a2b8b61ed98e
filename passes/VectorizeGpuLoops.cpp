//===- VectorizeGpuLoops.cpp - four elements per GPU thread ------*- C++ -*-===//
//
// An elementwise kernel is bound by memory. Mapped as it comes from linalg,
// each GPU thread loads and stores one f32, which coalesces (consecutive
// threads, consecutive addresses) but issues four times the memory
// instructions of 16-byte accesses. This pass gives each iteration of the
// innermost parallel dimension four consecutive elements: loads and stores
// along that dimension become 16-byte-aligned vector<4xf32> accesses
// (ld.global.v4.f32 in PTX), the arithmetic on them vector<4> arithmetic,
// and values that do not vary along it (a row's norm, a bias indexed by
// another dimension) stay scalars, broadcast where they meet a vector.
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/IR/IRMapping.h"

namespace mlir::lathe {
#define GEN_PASS_DEF_VECTORIZEGPULOOPS
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {

constexpr int64_t kWidth = 4;

/// A buffer a vector<4> access along its last dimension may touch: row-major,
/// static, f32, rows a multiple of 4 elements (so every access at a multiple
/// of 4 is 16-byte aligned, given 16-byte-aligned buffers).
static bool vectorizable(Value memref) {
  auto type = dyn_cast<MemRefType>(memref.getType());
  return type && type.getLayout().isIdentity() && type.hasStaticShape() &&
         type.getRank() >= 1 && type.getElementType().isF32() &&
         type.getShape().back() % kWidth == 0;
}

/// Whether `loop` can take four elements per iteration of its innermost
/// dimension: every op is a load, a store, a constant or elementwise
/// arithmetic; the innermost induction variable appears only as the last
/// index of f32 loads and stores (never in index arithmetic); and what
/// varies with it is f32.
static bool canVectorize(scf::ParallelOp loop, DenseSet<Value> &varying) {
  unsigned n = loop.getNumLoops();
  std::optional<int64_t> lb = getConstantIntValue(loop.getLowerBound()[n - 1]);
  std::optional<int64_t> ub = getConstantIntValue(loop.getUpperBound()[n - 1]);
  std::optional<int64_t> step = getConstantIntValue(loop.getStep()[n - 1]);
  if (!lb || !ub || !step || *lb != 0 || *step != 1 || *ub % kWidth != 0 ||
      *ub < kWidth)
    return false;
  Value iv = loop.getInductionVars()[n - 1];
  varying.insert(iv);
  Block *body = loop.getBody();
  auto indexOk = [&](ValueRange indices, bool lastIsIv) {
    for (auto [i, index] : llvm::enumerate(indices)) {
      bool last = i + 1 == indices.size();
      if (last && lastIsIv)
        continue;
      if (varying.contains(index))
        return false;
    }
    return true;
  };
  bool any = false;
  for (Operation &op : body->without_terminator()) {
    if (op.getNumRegions() != 0)
      return false;
    if (auto load = dyn_cast<memref::LoadOp>(op)) {
      ValueRange idx = load.getIndices();
      bool alongIv = !idx.empty() && idx.back() == iv;
      if (alongIv) {
        if (!vectorizable(load.getMemRef()) || !indexOk(idx, true))
          return false;
        varying.insert(load.getResult());
        any = true;
      } else if (!indexOk(idx, false)) {
        return false;
      }
      continue;
    }
    if (auto store = dyn_cast<memref::StoreOp>(op)) {
      ValueRange idx = store.getIndices();
      if (idx.empty() || idx.back() != iv || !vectorizable(store.getMemRef()) ||
          !indexOk(idx, true))
        return false;
      any = true;
      continue;
    }
    // The induction variable itself (the element's column: a one-hot's
    // comparison, an angle) would be the vector loop's, not each lane's.
    if (llvm::is_contained(op.getOperands(), iv))
      return false;
    bool varies = llvm::any_of(op.getOperands(), [&](Value v) {
      return varying.contains(v);
    });
    if (!varies)
      continue; // a scalar the whole row shares
    if (!op.hasTrait<OpTrait::Elementwise>() || op.getNumResults() != 1 ||
        !(isa<arith::ArithDialect>(op.getDialect()) ||
          isa<math::MathDialect>(op.getDialect())))
      return false;
    Type t = op.getResult(0).getType();
    if (!t.isF32() && !t.isInteger(1))
      return false; // index or integer math on the induction variable
    varying.insert(op.getResult(0));
  }
  // Every store must be along the induction variable, and at least one
  // access is, or there is nothing to gain.
  return any && isa<scf::ReduceOp>(body->getTerminator()) &&
         cast<scf::ReduceOp>(body->getTerminator()).getNumOperands() == 0;
}

static void vectorize(scf::ParallelOp loop, const DenseSet<Value> &varying) {
  unsigned n = loop.getNumLoops();
  OpBuilder b(loop);
  Location loc = loop.getLoc();
  int64_t ub = *getConstantIntValue(loop.getUpperBound()[n - 1]);
  SmallVector<Value> upper(loop.getUpperBound());
  upper[n - 1] = arith::ConstantIndexOp::create(b, loc, ub / kWidth);
  loop.getUpperBoundMutable().assign(upper);

  Block *body = loop.getBody();
  Value iv = loop.getInductionVars()[n - 1];
  OpBuilder ib = OpBuilder::atBlockBegin(body);
  Value width = arith::ConstantIndexOp::create(ib, loc, kWidth);
  Value first = arith::MulIOp::create(ib, loc, iv, width);
  auto vectorOf = [](Type t) -> Type { return VectorType::get({kWidth}, t); };
  IRMapping map;
  auto asVector = [&](OpBuilder &ob, Value v) -> Value {
    Value m = map.lookupOrDefault(v);
    if (isa<VectorType>(m.getType()))
      return m;
    return vector::BroadcastOp::create(ob, loc, vectorOf(m.getType()), m);
  };
  SmallVector<Operation *> old;
  for (Operation &op : body->without_terminator())
    if (op.getBlock() == body && &op != first.getDefiningOp() &&
        &op != width.getDefiningOp())
      old.push_back(&op);
  auto alignment = llvm::MaybeAlign(kWidth * 4);
  for (Operation *op : old) {
    OpBuilder ob(op);
    if (auto load = dyn_cast<memref::LoadOp>(op);
        load && varying.contains(load.getResult())) {
      SmallVector<Value> idx(load.getIndices());
      idx.back() = first;
      Value v = vector::LoadOp::create(
          ob, loc, cast<VectorType>(vectorOf(ob.getF32Type())),
          load.getMemRef(), idx, /*nontemporal=*/false, alignment);
      map.map(load.getResult(), v);
      continue;
    }
    if (auto store = dyn_cast<memref::StoreOp>(op)) {
      SmallVector<Value> idx(store.getIndices());
      idx.back() = first;
      vector::StoreOp::create(ob, loc, asVector(ob, store.getValue()),
                              store.getMemRef(), idx, /*nontemporal=*/false,
                              alignment);
      continue;
    }
    if (op->getNumResults() == 1 && varying.contains(op->getResult(0))) {
      SmallVector<Value> operands;
      for (Value v : op->getOperands())
        operands.push_back(asVector(ob, v));
      OperationState state(loc, op->getName(), operands,
                           {vectorOf(op->getResult(0).getType())},
                           op->getAttrs());
      map.map(op->getResult(0), ob.create(state)->getResult(0));
    }
  }
  // The scalar forms of what now runs on vectors, last use first.
  for (Operation *op : llvm::reverse(old))
    if (isa<memref::StoreOp>(op) ||
        (op->getNumResults() == 1 && varying.contains(op->getResult(0))))
      op->erase();
}

struct VectorizeGpuLoops
    : lathe::impl::VectorizeGpuLoopsBase<VectorizeGpuLoops> {
  void runOnOperation() override {
    for (scf::ParallelOp loop : outermostParallelLoops(getOperation())) {
      DenseSet<Value> varying;
      if (canVectorize(loop, varying))
        vectorize(loop, varying);
    }
  }
};

} // namespace
