//===- EmulateGpu.cpp - GPU launches as CPU loops ----------------*- C++ -*-===//
//
// Without barriers, threads of a launch are independent, so running them one
// after another in any order computes what the GPU computes. The loop order
// puts threadIdx.x innermost: consecutive x threads touch consecutive
// addresses, which keeps the emulation cache-friendly.
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include "mlir/Dialect/SCF/Utils/Utils.h"
#include "mlir/IR/IRMapping.h"

namespace mlir::lathe {
#define GEN_PASS_DEF_EMULATEGPU
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {
struct EmulateGpu : lathe::impl::EmulateGpuBase<EmulateGpu> {
  void runOnOperation() override {
    SmallVector<gpu::LaunchOp> launches;
    getOperation().walk([&](gpu::LaunchOp op) { launches.push_back(op); });
    for (gpu::LaunchOp launch : launches)
      if (failed(emulate(launch)))
        return signalPassFailure();
  }

  LogicalResult emulate(gpu::LaunchOp launch) {
    if (launch.getAsyncToken() || launch.hasClusterSize() ||
        launch.getDynamicSharedMemorySize())
      return launch.emitOpError("cannot be emulated: async, clusters or "
                                "dynamic shared memory");
    if (!launch.getBody().hasOneBlock())
      return launch.emitOpError("cannot be emulated: its body has several "
                                "blocks");
    WalkResult sync = launch.getBody().walk([](Operation *op) {
      if (isa<gpu::BarrierOp, gpu::ShuffleOp, gpu::AllReduceOp,
              gpu::SubgroupReduceOp>(op))
        return WalkResult::interrupt();
      return WalkResult::advance();
    });
    if (sync.wasInterrupted())
      return launch.emitOpError("cannot be emulated yet: its threads "
                                "synchronise (barrier, shuffle or reduction)");

    OpBuilder b(launch);
    Location loc = launch.getLoc();
    gpu::KernelDim3 grid = launch.getGridSizeOperandValues();
    gpu::KernelDim3 block = launch.getBlockSizeOperandValues();
    Value zero = arith::ConstantIndexOp::create(b, loc, 0);
    Value one = arith::ConstantIndexOp::create(b, loc, 1);
    SmallVector<Value> ubs = {grid.z, grid.y, grid.x, block.z, block.y, block.x};
    SmallVector<Value> lbs(6, zero), steps(6, one);
    Block &body = launch.getBody().front();
    scf::buildLoopNest(
        b, loc, lbs, ubs, steps,
        [&](OpBuilder &nb, Location, ValueRange ivs) {
          IRMapping map;
          gpu::KernelDim3 bid = launch.getBlockIds(), tid = launch.getThreadIds();
          gpu::KernelDim3 gsz = launch.getGridSize(), bsz = launch.getBlockSize();
          map.map(bid.z, ivs[0]);
          map.map(bid.y, ivs[1]);
          map.map(bid.x, ivs[2]);
          map.map(tid.z, ivs[3]);
          map.map(tid.y, ivs[4]);
          map.map(tid.x, ivs[5]);
          map.map(gsz.x, grid.x);
          map.map(gsz.y, grid.y);
          map.map(gsz.z, grid.z);
          map.map(bsz.x, block.x);
          map.map(bsz.y, block.y);
          map.map(bsz.z, block.z);
          for (Operation &op : body.without_terminator())
            nb.clone(op, map);
        });
    launch.erase();
    return success();
  }
};
} // namespace
