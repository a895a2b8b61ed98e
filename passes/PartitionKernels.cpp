//===- PartitionKernels.cpp - kernels in parts for CPU threads ---*- C++ -*-===//
//
// Splitting along the output's rows keeps the parts independent without any
// synchronisation inside a kernel: the fill of part p and the op of part p
// touch the same rows, and no part reads rows another part writes (inputs are
// other buffers). The row range is computed from `part` and `parts` at run
// time, so one artifact serves any number of threads.
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/IR/PatternMatch.h"

namespace mlir::lathe {
#define GEN_PASS_DEF_PARTITIONKERNELS
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {

/// The rows of the op's output and the (parallel) loop that runs over them,
/// else nullopt. lathe-order-loops may have moved that loop inward.
struct RowLoop {
  int64_t rows;
  unsigned loop;
};
/// With several outputs, all of them must have their rows on one loop.
static std::optional<RowLoop> rowsOf(linalg::LinalgOp op) {
  if (op.getNumDpsInits() == 0 || op.getNumLoops() == 0)
    return std::nullopt;
  std::optional<RowLoop> found;
  for (OpOperand &init : op.getDpsInitsMutable()) {
    AffineMap map = op.getMatchingIndexingMap(&init);
    if (map.getNumResults() == 0)
      return std::nullopt;
    auto dim = dyn_cast<AffineDimExpr>(map.getResult(0));
    if (!dim || op.getIteratorTypesArray()[dim.getPosition()] !=
                    utils::IteratorType::parallel)
      return std::nullopt;
    auto type = dyn_cast<MemRefType>(init.get().getType());
    if (!type || !type.hasStaticShape())
      return std::nullopt;
    RowLoop here{type.getDimSize(0), dim.getPosition()};
    if (found && (found->rows != here.rows || found->loop != here.loop))
      return std::nullopt;
    found = here;
  }
  return found;
}

struct PartitionKernels
    : lathe::impl::PartitionKernelsBase<PartitionKernels> {
  using Base::Base;

  void runOnOperation() override {
    for (auto fn : getOperation().getOps<func::FuncOp>())
      if (fn->hasAttr(kKernelAttrName) && !fn.isExternal())
        partition(fn);
  }

  /// The loop nest of an expanded attention (or any kernel that is one
  /// static scf.parallel) is split along its first dimension: iterations
  /// write disjoint outputs by construction.
  void partitionParallel(func::FuncOp fn, scf::ParallelOp loop) {
    std::optional<int64_t> lb = getConstantIntValue(loop.getLowerBound()[0]);
    std::optional<int64_t> ub = getConstantIntValue(loop.getUpperBound()[0]);
    std::optional<int64_t> step = getConstantIntValue(loop.getStep()[0]);
    if (!lb || !ub || !step || *lb != 0 || *step != 1 || *ub < 2)
      return;
    int64_t work = 1;
    for (auto [l, u] : llvm::zip(loop.getLowerBound(), loop.getUpperBound())) {
      std::optional<int64_t> a = getConstantIntValue(l), z = getConstantIntValue(u);
      if (a && z)
        work *= *z - *a;
    }
    if (auto hint = loop->getAttrOfType<IntegerAttr>(kWorkAttrName))
      work = hint.getInt();
    if (work < minWork)
      return;
    IRRewriter rewriter(fn.getContext());
    std::pair<Value, Value> range = addPartArguments(rewriter, fn, *ub);
    rewriter.modifyOpInPlace(loop, [&] {
      loop.getLowerBoundMutable().slice(0, 1).assign(range.first);
      loop.getUpperBoundMutable().slice(0, 1).assign(range.second);
    });
  }

  /// Appends (part, parts) to the kernel and returns this part's share
  /// [lo, hi) of `n` rows: chunk = ceil(n / parts), lo = min(part * chunk,
  /// n), hi = min(lo + chunk, n).
  static std::pair<Value, Value> addPartArguments(IRRewriter &rewriter,
                                                  func::FuncOp fn, int64_t rows) {
    Block &body = fn.getBody().front();
    Location loc = fn.getLoc();
    IndexType index = IndexType::get(fn.getContext());
    (void)fn.insertArgument(fn.getNumArguments(), index, {}, loc);
    (void)fn.insertArgument(fn.getNumArguments(), index, {}, loc);
    Value part = body.getArgument(body.getNumArguments() - 2);
    Value parts = body.getArgument(body.getNumArguments() - 1);
    rewriter.setInsertionPointToStart(&body);
    Value n = arith::ConstantIndexOp::create(rewriter, loc, rows);
    Value chunk = arith::CeilDivUIOp::create(rewriter, loc, n, parts);
    Value lo = arith::MinUIOp::create(
        rewriter, loc, arith::MulIOp::create(rewriter, loc, part, chunk), n);
    Value hi = arith::MinUIOp::create(
        rewriter, loc, arith::AddIOp::create(rewriter, loc, lo, chunk), n);
    return {lo, hi};
  }

  void partition(func::FuncOp fn) {
    SmallVector<scf::ParallelOp> loops;
    bool onlyLoop = true;
    for (Operation &op : fn.getBody().front()) {
      if (auto loop = dyn_cast<scf::ParallelOp>(op))
        loops.push_back(loop);
      else if (!isa<func::ReturnOp>(op) && !op.hasTrait<OpTrait::ConstantLike>())
        onlyLoop = false;
    }
    if (onlyLoop && loops.size() == 1)
      return partitionParallel(fn, loops.front());

    // Otherwise only plain kernels: structured ops, constants and the return.
    SmallVector<std::pair<linalg::LinalgOp, unsigned>> ops;
    std::optional<int64_t> rows;
    int64_t work = 0;
    for (Operation &op : fn.getBody().front()) {
      if (isa<func::ReturnOp>(op) || op.hasTrait<OpTrait::ConstantLike>())
        continue;
      auto linalgOp = dyn_cast<linalg::LinalgOp>(op);
      if (!linalgOp)
        return;
      std::optional<RowLoop> n = rowsOf(linalgOp);
      if (!n || (rows && *rows != n->rows))
        return;
      rows = n->rows;
      ops.push_back({linalgOp, n->loop});
      int64_t iterations = 1;
      for (int64_t range : linalgOp.getStaticLoopRanges())
        iterations *= range;
      work += iterations;
    }
    // Small kernels (most of decode) cost less than waking another thread.
    if (ops.empty() || *rows < 2 || work < minWork)
      return;

    IRRewriter rewriter(fn.getContext());
    auto [lo, hi] = addPartArguments(rewriter, fn, *rows);
    for (auto [op, rowLoop] : ops) {
      rewriter.setInsertionPoint(op);
      FailureOr<linalg::LinalgLoops> loops = linalg::linalgOpToLoops(rewriter, op);
      if (failed(loops) || loops->size() != op.getNumLoops()) {
        op.emitOpError("cannot be lowered to loops for partitioning");
        return signalPassFailure();
      }
      // The row loop's bounds are constants, so its range can be narrowed
      // wherever it sits in the nest.
      auto rowFor = cast<scf::ForOp>((*loops)[rowLoop]);
      rowFor.getLowerBoundMutable().assign(lo);
      rowFor.getUpperBoundMutable().assign(hi);
      rewriter.eraseOp(op);
    }
  }
};

} // namespace
