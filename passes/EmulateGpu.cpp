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
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

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
    // The host functions only launched the kernels and called the GEMM
    // library; the runtime does both now, from the artifact's launch list.
    for (auto fn : llvm::make_early_inc_range(module.getOps<func::FuncOp>())) {
      bool launches = false;
      fn.walk([&](Operation *op) {
        launches |= isa<gpu::LaunchFuncOp, GemmOp>(op);
      });
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
    if (!kernel.getPrivateAttributions().empty())
      return kernel.emitOpError("cannot be emulated yet: it has private "
                                "memory attributions");
    Block &body = kernel.getBody().front();
    WalkResult unsupported = kernel.getBody().walk([&](Operation *op) {
      if (isa<gpu::ShuffleOp, gpu::AllReduceOp, gpu::SubgroupReduceOp>(op)) {
        op->emitOpError("cannot be emulated yet: the threads of its kernel "
                        "exchange values (shuffle or reduction)");
        return WalkResult::interrupt();
      }
      if (isa<gpu::BarrierOp>(op) && op->getBlock() != &body) {
        op->emitOpError("cannot be emulated yet: a barrier inside control "
                        "flow (only barriers at the top of the kernel split "
                        "it into phases)");
        return WalkResult::interrupt();
      }
      if (op->getDialect() == op->getContext()->getLoadedDialect("gpu") &&
          !isa<gpu::BlockIdOp, gpu::ThreadIdOp, gpu::GridDimOp,
               gpu::BlockDimOp, gpu::BarrierOp, gpu::ReturnOp>(op)) {
        op->emitOpError("cannot be emulated: no CPU meaning is given to it");
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    if (unsupported.wasInterrupted())
      return failure();

    // Ids and sizes have no operands: gathered at the top of the body, where
    // each phase binds them, wherever outlining or mapping put them.
    SmallVector<Operation *> ids;
    kernel.getBody().walk([&](Operation *op) {
      if (isa<gpu::BlockIdOp, gpu::ThreadIdOp, gpu::GridDimOp,
              gpu::BlockDimOp>(op))
        ids.push_back(op);
    });
    for (Operation *op : ids)
      op->moveBefore(&body, body.begin());

    // Barriers split the body into phases. Every thread of a block runs a
    // phase before any runs the next, which is what a barrier guarantees.
    SmallVector<SmallVector<Operation *>> phases(1);
    DenseMap<Operation *, unsigned> phaseOf;
    for (Operation &op : body.without_terminator()) {
      if (isa<gpu::BarrierOp>(op)) {
        phases.emplace_back();
        continue;
      }
      // Ids and sizes are bound per phase, not cloned.
      if (isa<gpu::BlockIdOp, gpu::ThreadIdOp, gpu::GridDimOp,
              gpu::BlockDimOp>(op))
        continue;
      phaseOf[&op] = phases.size() - 1;
      phases.back().push_back(&op);
    }
    // A value made in one phase and used in a later one: recomputed there if
    // it is a pure function of ids, sizes, constants and arguments (an
    // index computation), else kept per thread in a buffer of the block.
    DenseMap<Value, bool> remat;
    std::function<bool(Value)> rematerializable = [&](Value v) -> bool {
      auto it = remat.find(v);
      if (it != remat.end())
        return it->second;
      Operation *def = v.getDefiningOp();
      bool ok = !def || (def->getNumRegions() == 0 && isMemoryEffectFree(def) &&
                         llvm::all_of(def->getOperands(), rematerializable));
      return remat[v] = ok;
    };
    SetVector<Value> spilled;
    for (Operation &op : body.without_terminator()) {
      if (!phaseOf.count(&op))
        continue;
      for (Value result : op.getResults())
        for (OpOperand &use : result.getUses()) {
          Operation *user = body.findAncestorOpInBlock(*use.getOwner());
          auto later = user ? phaseOf.find(user) : phaseOf.end();
          if (later == phaseOf.end() || later->second == phaseOf[&op] ||
              rematerializable(result))
            continue;
          if (!result.getType().isIntOrIndexOrFloat())
            return op.emitOpError("cannot be emulated yet: its ")
                   << result.getType()
                   << " result is used after a barrier";
          spilled.insert(result);
        }
    }

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

    // What every phase shares: the buffers, the block's workgroup memory
    // (a fresh buffer per block) and the per-thread spill buffers.
    IRMapping shared;
    for (unsigned i = 0; i < numBuffers; ++i)
      shared.map(kernel.getArgument(i), entry->getArgument(i));
    for (BlockArgument attribution : kernel.getWorkgroupAttributions()) {
      auto type = cast<MemRefType>(attribution.getType());
      auto local = MemRefType::get(type.getShape(), type.getElementType(),
                                   type.getLayout());
      shared.map(attribution, memref::AllocaOp::create(b, loc, local));
    }
    Value threads = arith::MulIOp::create(
        b, loc, arith::MulIOp::create(b, loc, block[0], block[1]), block[2]);
    DenseMap<Value, Value> spillOf;
    for (Value v : spilled)
      spillOf[v] = memref::AllocaOp::create(
          b, loc, MemRefType::get({ShapedType::kDynamic}, v.getType()),
          ValueRange{threads});

    auto dim = [](gpu::Dimension d) { return static_cast<unsigned>(d); };
    for (auto [p, ops] : llvm::enumerate(phases)) {
      SmallVector<Value, 3> threadId(3);
      OpBuilder nb = b;
      for (int d = 2; d >= 0; --d) {
        auto loop = scf::ForOp::create(nb, loc, zero, block[d], one);
        threadId[d] = loop.getInductionVar();
        nb.setInsertionPointToStart(loop.getBody());
      }
      // (tz * by + ty) * bx + tx: this thread's slot in a spill buffer.
      Value slot = arith::AddIOp::create(
          nb, loc,
          arith::MulIOp::create(
              nb, loc,
              arith::AddIOp::create(
                  nb, loc, arith::MulIOp::create(nb, loc, threadId[2], block[1]),
                  threadId[1]),
              block[0]),
          threadId[0]);
      IRMapping map = shared;
      for (Operation *op : ids) {
        if (auto id = dyn_cast<gpu::BlockIdOp>(op))
          map.map(id.getResult(), blockId[dim(id.getDimension())]);
        else if (auto id = dyn_cast<gpu::ThreadIdOp>(op))
          map.map(id.getResult(), threadId[dim(id.getDimension())]);
        else if (auto size = dyn_cast<gpu::GridDimOp>(op))
          map.map(size.getResult(), grid[dim(size.getDimension())]);
        else if (auto size = dyn_cast<gpu::BlockDimOp>(op))
          map.map(size.getResult(), block[dim(size.getDimension())]);
      }
      // Values of earlier phases this one uses: recomputed, or reloaded.
      std::function<void(Value)> bring = [&](Value v) {
        if (map.contains(v))
          return;
        Operation *def = v.getDefiningOp();
        if (!def || !phaseOf.count(def) || phaseOf[def] == p)
          return;
        if (auto spill = spillOf.find(v); spill != spillOf.end()) {
          map.map(v, memref::LoadOp::create(nb, loc, spill->second,
                                            ValueRange{slot}));
          return;
        }
        for (Value operand : def->getOperands())
          bring(operand);
        nb.clone(*def, map);
      };
      for (Operation *op : ops)
        op->walk([&](Operation *inner) {
          for (Value operand : inner->getOperands())
            bring(operand);
        });
      for (Operation *op : ops) {
        nb.clone(*op, map);
        for (Value result : op->getResults())
          if (auto spill = spillOf.find(result); spill != spillOf.end())
            memref::StoreOp::create(nb, loc, map.lookup(result), spill->second,
                                    ValueRange{slot});
      }
    }
    b.setInsertionPointToEnd(entry);
    func::ReturnOp::create(b, loc);
    return success();
  }
};
} // namespace
