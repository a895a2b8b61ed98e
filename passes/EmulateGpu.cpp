//===- EmulateGpu.cpp - outlined GPU kernels as CPU functions ----*- C++ -*-===//
//
// The cuda-emulated device runs a cuda artifact's launch list, kernel by
// kernel with the grid and block each launch records, exactly as the cuda
// device does; only the kernels differ: these CPU functions instead of PTX.
// So emulation checks the schedule (which kernel, which buffers, which grid)
// as well as the kernel bodies. Each function takes a range of blocks, since
// blocks are independent: the runtime spreads them over its threads.
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include "lathe/LatheDialect.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
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
    ModuleOp module = getOperation();
    // The host functions only launched the kernels; the runtime launches
    // them now, from the artifact's launch list.
    for (auto fn : llvm::make_early_inc_range(module.getOps<func::FuncOp>())) {
      bool launches = false;
      fn.walk([&](gpu::LaunchFuncOp) { launches = true; });
      if (launches)
        fn.erase();
    }
    SmallVector<gpu::GPUModuleOp> gpuModules(module.getOps<gpu::GPUModuleOp>());
    for (gpu::GPUModuleOp gpuModule : gpuModules)
      for (auto kernel : gpuModule.getOps<gpu::GPUFuncOp>())
        if (kernel.isKernel() && failed(emulate(kernel, module)))
          return signalPassFailure();
    for (gpu::GPUModuleOp gpuModule : gpuModules)
      gpuModule.erase();
    module->removeAttr(gpu::GPUDialect::getContainerModuleAttrName());
    // Tells the library builder to mark the library as GPU kernels, so the
    // runtime never runs cpu kernels as the cuda-emulated device or back.
    module->setAttr(kGpuEmulationAttrName, UnitAttr::get(module.getContext()));
  }

  LogicalResult emulate(gpu::GPUFuncOp kernel, ModuleOp module) {
    if (!kernel.getBody().hasOneBlock())
      return kernel.emitOpError("cannot be emulated: its body has several "
                                "blocks");
    if (!kernel.getWorkgroupAttributions().empty() ||
        !kernel.getPrivateAttributions().empty())
      return kernel.emitOpError("cannot be emulated yet: it has workgroup or "
                                "private memory attributions");
    WalkResult unsupported = kernel.getBody().walk([](Operation *op) {
      if (isa<gpu::BarrierOp, gpu::ShuffleOp, gpu::AllReduceOp,
              gpu::SubgroupReduceOp>(op)) {
        op->emitOpError("cannot be emulated yet: the threads of its kernel "
                        "synchronise (barrier, shuffle or reduction)");
        return WalkResult::interrupt();
      }
      if (op->getDialect() == op->getContext()->getLoadedDialect("gpu") &&
          !isa<gpu::BlockIdOp, gpu::ThreadIdOp, gpu::GridDimOp,
               gpu::BlockDimOp, gpu::ReturnOp>(op)) {
        op->emitOpError("cannot be emulated: no CPU meaning is given to it");
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    if (unsupported.wasInterrupted())
      return failure();

    // Ids and sizes have no operands: gathered at the top of the body, where
    // the clone below binds them, wherever outlining or mapping put them.
    Block &body = kernel.getBody().front();
    SmallVector<Operation *> ids;
    kernel.getBody().walk([&](Operation *op) {
      if (isa<gpu::BlockIdOp, gpu::ThreadIdOp, gpu::GridDimOp,
              gpu::BlockDimOp>(op))
        ids.push_back(op);
    });
    for (Operation *op : ids)
      op->moveBefore(&body, body.begin());

    MLIRContext *ctx = kernel.getContext();
    Location loc = kernel.getLoc();
    OpBuilder b(ctx);
    b.setInsertionPoint(kernel->getParentOp());
    SmallVector<Type> inputs(kernel.getArgumentTypes());
    Type index = b.getIndexType();
    // grid x, y, z; block x, y, z; part; parts.
    inputs.append(8, index);
    if (SymbolTable::lookupSymbolIn(module, kernel.getName()))
      return kernel.emitOpError("cannot be emulated: its name is taken on the "
                                "host");
    auto fn = func::FuncOp::create(b, loc, kernel.getName(),
                                   b.getFunctionType(inputs, {}));
    fn->setAttr(kKernelAttrName, UnitAttr::get(ctx));
    Block *entry = fn.addEntryBlock();
    b.setInsertionPointToStart(entry);
    unsigned numBuffers = kernel.getNumArguments();
    auto arg = [&](unsigned i) { return entry->getArgument(numBuffers + i); };
    Value grid[3] = {arg(0), arg(1), arg(2)};
    Value block[3] = {arg(3), arg(4), arg(5)};
    Value part = arg(6), parts = arg(7);

    Value zero = arith::ConstantIndexOp::create(b, loc, 0);
    Value one = arith::ConstantIndexOp::create(b, loc, 1);
    Value blocks = arith::MulIOp::create(
        b, loc, arith::MulIOp::create(b, loc, grid[0], grid[1]), grid[2]);
    // [part * n / parts, (part + 1) * n / parts): contiguous, disjoint, and
    // covering every block for any parts >= 1.
    auto bound = [&](Value p) {
      return arith::DivUIOp::create(
          b, loc, arith::MulIOp::create(b, loc, p, blocks), parts);
    };
    Value first = bound(part);
    Value last = bound(arith::AddIOp::create(b, loc, part, one));
    auto blockLoop = scf::ForOp::create(b, loc, first, last, one);
    b.setInsertionPointToStart(blockLoop.getBody());
    Value linear = blockLoop.getInductionVar();
    Value bx = arith::RemUIOp::create(b, loc, linear, grid[0]);
    Value rest = arith::DivUIOp::create(b, loc, linear, grid[0]);
    Value by = arith::RemUIOp::create(b, loc, rest, grid[1]);
    Value bz = arith::DivUIOp::create(b, loc, rest, grid[1]);
    Value blockId[3] = {bx, by, bz};

    IRMapping map;
    for (unsigned i = 0; i < numBuffers; ++i)
      map.map(kernel.getArgument(i), entry->getArgument(i));
    SmallVector<Value, 3> threadId(3);
    OpBuilder nb = b;
    for (int d = 2; d >= 0; --d) {
      auto loop = scf::ForOp::create(nb, loc, zero, block[d], one);
      threadId[d] = loop.getInductionVar();
      nb.setInsertionPointToStart(loop.getBody());
    }
    auto dim = [](gpu::Dimension d) { return static_cast<unsigned>(d); };
    for (Operation &op : body.without_terminator()) {
      if (auto id = dyn_cast<gpu::BlockIdOp>(op))
        map.map(id.getResult(), blockId[dim(id.getDimension())]);
      else if (auto id = dyn_cast<gpu::ThreadIdOp>(op))
        map.map(id.getResult(), threadId[dim(id.getDimension())]);
      else if (auto size = dyn_cast<gpu::GridDimOp>(op))
        map.map(size.getResult(), grid[dim(size.getDimension())]);
      else if (auto size = dyn_cast<gpu::BlockDimOp>(op))
        map.map(size.getResult(), block[dim(size.getDimension())]);
      else
        nb.clone(op, map);
    }
    b.setInsertionPointToEnd(entry);
    func::ReturnOp::create(b, loc);
    return success();
  }
};
} // namespace
