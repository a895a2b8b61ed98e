//===- MapKernelsToGpu.cpp - tile parallel loops for the GPU -----*- C++ -*-===//
//
// Each outermost scf.parallel from a kernel is split into a loop over blocks
// and a loop over threads. Tiles are powers of two that divide the static
// trip counts, so the thread loop needs no bounds checks; the innermost
// dimension gets threads first, for coalesced accesses on row-major buffers.
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include "mlir/Dialect/SCF/Transforms/Transforms.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/Utils/Utils.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Transforms/RegionUtils.h"

namespace mlir::lathe {
#define GEN_PASS_DEF_MAPKERNELSTOGPU
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {

/// A scalar the loop reads from above (e.g. a decode position loaded from its
/// buffer) must be recomputed inside the loop: on the GPU the host cannot
/// read device memory. Loads are sunk only from buffers nothing writes.
static bool sinkable(Value v, SetVector<Operation *> &chain) {
  if (isa<MemRefType>(v.getType()))
    return true; // buffers are passed to the kernel as they are
  Operation *def = v.getDefiningOp();
  if (!def || def->getNumRegions() != 0)
    return false;
  if (auto load = dyn_cast<memref::LoadOp>(def)) {
    for (Operation *user : load.getMemRef().getUsers())
      if (!isa<memref::LoadOp>(user))
        return false;
  } else if (!isMemoryEffectFree(def)) {
    return false;
  }
  for (Value operand : def->getOperands())
    if (!sinkable(operand, chain))
      return false;
  chain.insert(def);
  return true;
}

static LogicalResult sinkScalarReads(scf::ParallelOp loop) {
  SetVector<Value> above;
  getUsedValuesDefinedAbove(loop.getRegion(), above);
  SetVector<Operation *> chain;
  for (Value v : above) {
    if (isa<MemRefType>(v.getType()) || isa<BlockArgument>(v))
      continue;
    if (v.getDefiningOp()->hasTrait<OpTrait::ConstantLike>())
      continue;
    if (!sinkable(v, chain))
      return loop.emitOpError("reads a scalar computed on the host that "
                              "cannot be recomputed on the device");
  }
  SmallVector<Operation *> ordered(chain.begin(), chain.end());
  llvm::sort(ordered, [](Operation *a, Operation *b) {
    return a->getBlock() == b->getBlock() ? a->isBeforeInBlock(b) : false;
  });
  OpBuilder b(loop.getBody(), loop.getBody()->begin());
  IRMapping map;
  for (Operation *op : ordered) {
    Operation *clone = b.clone(*op, map);
    for (auto [from, to] : llvm::zip(op->getResults(), clone->getResults()))
      replaceAllUsesInRegionWith(from, to, loop.getRegion());
  }
  return success();
}

} // namespace

SmallVector<scf::ParallelOp>
mlir::lathe::outermostParallelLoops(Operation *root) {
  SmallVector<scf::ParallelOp> loops;
  root->walk([&](scf::ParallelOp loop) {
    if (!loop->getParentOfType<scf::ParallelOp>())
      loops.push_back(loop);
  });
  return loops;
}

namespace {
struct MapKernelsToGpu : lathe::impl::MapKernelsToGpuBase<MapKernelsToGpu> {
  using Base::Base;

  void runOnOperation() override {
    for (scf::ParallelOp loop : outermostParallelLoops(getOperation())) {
      if (failed(sinkScalarReads(loop)))
        return signalPassFailure();
      SmallVector<int64_t> tiles(loop.getNumLoops(), 1);
      int64_t budget = maxThreads;
      for (int i = loop.getNumLoops() - 1; i >= 0; --i) {
        std::optional<int64_t> lb = getConstantIntValue(loop.getLowerBound()[i]);
        std::optional<int64_t> ub = getConstantIntValue(loop.getUpperBound()[i]);
        std::optional<int64_t> step = getConstantIntValue(loop.getStep()[i]);
        if (!lb || !ub || !step || *lb != 0 || *step != 1) {
          loop.emitOpError("lathe-map-kernels-to-gpu needs static loops from 0 "
                           "with step 1");
          return signalPassFailure();
        }
        int64_t tile = 1;
        while (tile * 2 <= budget && *ub % (tile * 2) == 0)
          tile *= 2;
        tiles[i] = tile;
        budget /= tile;
      }
      scf::tileParallelLoop(loop, tiles, /*noMinMaxBounds=*/true);
    }
  }
};
} // namespace
