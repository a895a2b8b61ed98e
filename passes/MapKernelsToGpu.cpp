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
#include "mlir/Dialect/SCF/Utils/Utils.h"

namespace mlir::lathe {
#define GEN_PASS_DEF_MAPKERNELSTOGPU
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {
struct MapKernelsToGpu : lathe::impl::MapKernelsToGpuBase<MapKernelsToGpu> {
  using Base::Base;

  void runOnOperation() override {
    SmallVector<scf::ParallelOp> loops;
    getOperation().walk([&](scf::ParallelOp loop) {
      if (!loop->getParentOfType<scf::ParallelOp>())
        loops.push_back(loop);
    });
    for (scf::ParallelOp loop : loops) {
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
