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
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

namespace mlir::lathe {
#define GEN_PASS_DEF_EMULATEGPU
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {

/// What splits a kernel into phases: a barrier, and a warp's matrix product,
/// whose lanes read each other's fragments (it starts a phase, so that every
/// lane has made its fragments before any lane reads them).
static bool splitsPhases(Operation *op) {
  return isa<gpu::BarrierOp, nvgpu::MmaSyncOp>(op);
}

/// The one warp product the emulation runs: m16n8k8 with tf32 inputs and
/// f32 accumulators, in the fragment shapes nvgpu.mma.sync gives it.
static bool isEmulatedMma(nvgpu::MmaSyncOp mma) {
  Type f32 = Float32Type::get(mma.getContext());
  auto is = [&](Value v, int64_t rows, int64_t cols) {
    return v.getType() == VectorType::get({rows, cols}, f32);
  };
  return mma.getTf32Enabled() &&
         llvm::equal(mma.getMmaShapeAsArray(), ArrayRef<int64_t>{16, 8, 8}) &&
         is(mma.getMatrixA(), 4, 1) && is(mma.getMatrixB(), 2, 1) &&
         is(mma.getMatrixC(), 2, 2) && is(mma.getRes(), 2, 2);
}

/// The CPU meaning of one lane's share of `mma.sync.m16n8k8.row.col.f32.
/// tf32.tf32.f32`, as a function of the module: its warp's 32 A and 32 B
/// fragments (static buffers, which the bare-pointer calling convention
/// passes), this lane and its C fragment; it returns the lane's D fragment. The fragment layout is the PTX ISA's for m16n8k8
/// .tf32 (and nvgpu's vector<4x1>, vector<2x1>, vector<2x2> rows are its
/// registers in order), with g = lane / 4 and q = lane mod 4:
///   A (16 x 8):  a0 (g, q), a1 (g + 8, q), a2 (g, q + 4), a3 (g + 8, q + 4)
///   B (8 x 8):   b0 (k = q, n = g), b1 (k = q + 4, n = g)
///   C, D (16 x 8): c0 (g, 2q), c1 (g, 2q + 1), c2 (g + 8, 2q), c3 (g + 8,
///                2q + 1)
/// So A[r][k] is register (r / 8) + 2 (k / 4) of lane 4 (r mod 8) + k mod 4,
/// and B[k][n] register k / 4 of lane 4 n + k mod 4. The tensor core reads
/// only a tf32's 19 upper bits: the rest are cleared here too.
static func::FuncOp mmaFunction(ModuleOp module) {
  constexpr llvm::StringLiteral name = "__lathe_emulated_mma_m16n8k8_tf32";
  if (auto fn = module.lookupSymbol<func::FuncOp>(name))
    return fn;
  Location loc = module.getLoc();
  OpBuilder b = OpBuilder::atBlockEnd(module.getBody());
  Type f32 = b.getF32Type(), i32 = b.getI32Type(), index = b.getIndexType();
  auto aType = VectorType::get({4, 1}, f32), bType = VectorType::get({2, 1}, f32),
       cType = VectorType::get({2, 2}, f32);
  auto fn = func::FuncOp::create(
      b, loc, name,
      b.getFunctionType({MemRefType::get({32}, aType),
                         MemRefType::get({32}, bType), index, cType},
                        {cType}));
  fn.setPrivate();
  Block *entry = fn.addEntryBlock();
  b.setInsertionPointToStart(entry);
  Value aFrags = entry->getArgument(0), bFrags = entry->getArgument(1),
        lane = entry->getArgument(2), c = entry->getArgument(3);
  auto idx = [&](int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); };
  Value g = arith::DivUIOp::create(b, loc, lane, idx(4));
  Value q = arith::RemUIOp::create(b, loc, lane, idx(4));
  Value mask = arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(~0x1fff));
  auto tf32 = [&](Value x) {
    Value bits = arith::BitcastOp::create(b, loc, i32, x);
    return arith::BitcastOp::create(
        b, loc, f32, arith::AndIOp::create(b, loc, bits, mask));
  };
  auto element = [&](Value frags, Value fromLane, int64_t reg) {
    Value frag = memref::LoadOp::create(b, loc, frags, ValueRange{fromLane});
    return tf32(vector::ExtractOp::create(b, loc, frag,
                                          ArrayRef<int64_t>{reg, 0}));
  };
  Value d = c;
  for (int64_t i = 0; i < 4; ++i) {
    // Element i of this lane's D: row g + 8 (i / 2), column 2q + i mod 2.
    Value col = arith::AddIOp::create(
        b, loc, arith::MulIOp::create(b, loc, q, idx(2)), idx(i % 2));
    Value sum = vector::ExtractOp::create(b, loc, c,
                                          ArrayRef<int64_t>{i / 2, i % 2});
    for (int64_t k = 0; k < 8; ++k) {
      Value aLane = arith::AddIOp::create(
          b, loc, arith::MulIOp::create(b, loc, g, idx(4)), idx(k % 4));
      Value bLane = arith::AddIOp::create(
          b, loc, arith::MulIOp::create(b, loc, col, idx(4)), idx(k % 4));
      Value a = element(aFrags, aLane, i / 2 + 2 * (k / 4));
      Value bk = element(bFrags, bLane, k / 4);
      sum = arith::AddFOp::create(b, loc, sum,
                                  arith::MulFOp::create(b, loc, a, bk));
    }
    d = vector::InsertOp::create(b, loc, sum, d,
                                 ArrayRef<int64_t>{i / 2, i % 2});
  }
  func::ReturnOp::create(b, loc, d);
  return fn;
}

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
      if (auto mma = dyn_cast<nvgpu::MmaSyncOp>(op); mma && !isEmulatedMma(mma)) {
        op->emitOpError("cannot be emulated yet: only m16n8k8 products of "
                        "tf32 fragments into f32 are");
        return WalkResult::interrupt();
      }
      if (splitsPhases(op) && op->getBlock() != &body &&
          !(isa<scf::ForOp>(op->getParentOp()) &&
            op->getParentOp()->getBlock() == &body)) {
        op->emitOpError("cannot be emulated yet: ")
            << (isa<gpu::BarrierOp>(op) ? "a barrier" : "a warp's matrix product")
            << " inside control flow other than a loop at the top of the "
               "kernel (only those split it into phases)";
        return WalkResult::interrupt();
      }
      if (op->getDialect() == op->getContext()->getLoadedDialect("nvgpu") &&
          !isa<nvgpu::MmaSyncOp>(op)) {
        op->emitOpError("cannot be emulated: no CPU meaning is given to it");
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
    // phase before any runs the next, which is what a barrier guarantees. A
    // loop at the top of the kernel with barriers in its body (a loop over
    // tiles) is split too: the loop itself runs once per block, around the
    // thread loops of its body's phases, and its loop-carried values are
    // kept per thread in buffers of the block (`carried`).
    struct Phase {
      SmallVector<Operation *> ops;
      scf::ForOp loop;    // the split loop this phase runs inside, or null
      scf::ForOp initOf;  // stores `initOf`'s initial values per thread
      scf::ForOp yieldOf; // ends with `yieldOf`'s yield (its last phase)
    };
    SmallVector<Phase> phases(1);
    DenseMap<Operation *, unsigned> phaseOf;
    DenseMap<Operation *, unsigned> initPhase, lastPhase;
    llvm::SmallPtrSet<Operation *, 2> split;
    for (Operation &op : body.without_terminator())
      if (auto loop = dyn_cast<scf::ForOp>(op))
        if (llvm::any_of(loop.getBody()->getOperations(),
                         [](Operation &o) { return splitsPhases(&o); }))
          split.insert(loop);
    auto isId = [](Operation *op) {
      return isa<gpu::BlockIdOp, gpu::ThreadIdOp, gpu::GridDimOp,
                 gpu::BlockDimOp>(op);
    };
    for (Operation &op : body.without_terminator()) {
      if (isa<gpu::BarrierOp>(op)) {
        phases.emplace_back();
        continue;
      }
      // A warp's product starts a phase and runs in it.
      if (isa<nvgpu::MmaSyncOp>(op))
        phases.emplace_back();
      // Ids and sizes are bound per phase, not cloned.
      if (isId(&op))
        continue;
      if (!split.contains(&op)) {
        phaseOf[&op] = phases.size() - 1;
        phases.back().ops.push_back(&op);
        continue;
      }
      auto loop = cast<scf::ForOp>(op);
      phases.emplace_back();
      phases.back().initOf = loop;
      initPhase[loop] = phases.size() - 1;
      phases.emplace_back();
      phases.back().loop = loop;
      for (Operation &inner : loop.getBody()->without_terminator()) {
        if (splitsPhases(&inner)) {
          phases.emplace_back();
          phases.back().loop = loop;
          if (isa<gpu::BarrierOp>(inner))
            continue;
        }
        if (isId(&inner))
          continue;
        phaseOf[&inner] = phases.size() - 1;
        phases.back().ops.push_back(&inner);
      }
      // A barrier just before the yield orders nothing the next iteration's
      // first thread loop does not already wait for: drop its empty phase.
      if (phases.back().ops.empty() && phases.size() > initPhase[loop] + 2)
        phases.pop_back();
      phases.back().yieldOf = loop;
      lastPhase[loop] = phases.size() - 1;
      phases.emplace_back();
    }
    // The phase a use runs in: its user's, or for a split loop's initial
    // values its init phase, for its yield its last phase; -1 for a split
    // loop's bounds, which every thread of the block shares; -2 for none
    // (the kernel's return).
    auto phaseOfUse = [&](OpOperand &use) -> int {
      Operation *user = use.getOwner();
      while (user->getBlock() != &body &&
             !split.contains(user->getParentOp()))
        user = user->getParentOp();
      if (isa<scf::YieldOp>(user) && split.contains(user->getParentOp()))
        return lastPhase[user->getParentOp()];
      if (split.contains(user)) {
        auto loop = cast<scf::ForOp>(user);
        return use.getOperandNumber() < loop.getNumControlOperands()
                   ? -1
                   : int(initPhase[user]);
      }
      auto it = phaseOf.find(user);
      return it == phaseOf.end() ? -2 : int(it->second);
    };
    // A value made in one phase and used in a later one: recomputed there if
    // it is a pure function of ids, sizes, constants, arguments and a split
    // loop's counter (an index computation), else kept per thread in a
    // buffer of the block.
    DenseMap<Value, bool> remat;
    std::function<bool(Value)> rematerializable = [&](Value v) -> bool {
      auto it = remat.find(v);
      if (it != remat.end())
        return it->second;
      Operation *def = v.getDefiningOp();
      bool ok;
      if (auto arg = dyn_cast<BlockArgument>(v))
        ok = !split.contains(arg.getOwner()->getParentOp()) ||
             arg.getArgNumber() == 0; // the counter, not a carried value
      else
        ok = !split.contains(def) && def->getNumRegions() == 0 &&
             isMemoryEffectFree(def) &&
             llvm::all_of(def->getOperands(), rematerializable);
      return remat[v] = ok;
    };
    SetVector<Value> spilled;
    for (auto [p, phase] : llvm::enumerate(phases))
      for (Operation *op : phase.ops)
        for (Value result : op->getResults())
          for (OpOperand &use : result.getUses()) {
            int later = phaseOfUse(use);
            if (later == int(p) || later == -2 || rematerializable(result))
              continue;
            if (later < 0)
              return op->emitOpError("cannot be emulated: a loop with "
                                     "barriers has bounds that are not the "
                                     "same for every thread of a block");
            spilled.insert(result);
          }
    // A warp's product reads every lane's A and B fragments, so they are
    // kept per thread even where a lane could recompute its own. The
    // defining phase is the only one that writes them, and it runs before
    // the product's, so no lane reads a fragment another has replaced.
    SmallVector<nvgpu::MmaSyncOp> products;
    body.walk([&](nvgpu::MmaSyncOp mma) { products.push_back(mma); });
    for (nvgpu::MmaSyncOp mma : products)
      for (Value fragment : {mma.getMatrixA(), mma.getMatrixB()}) {
        Operation *def = fragment.getDefiningOp();
        if (!def || !phaseOf.count(def))
          return mma.emitOpError("cannot be emulated yet: a fragment that is "
                                 "not made by an op of the kernel's body or "
                                 "of a split loop's (a loop's carried value, "
                                 "an argument)");
        spilled.insert(fragment);
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
    // The blocks' buffers (workgroup memory, per-thread values) are made
    // once, before the loop over blocks, and each block reuses them: a
    // block writes them before it reads them, as on a GPU, and an alloca
    // inside the loop would grow the stack with every block of the part.
    OpBuilder ab(blockLoop);
    b.setInsertionPointToStart(blockLoop.getBody());
    Value linear = blockLoop.getInductionVar();
    Value bx = arith::RemUIOp::create(b, loc, linear, grid[0]);
    Value rest = arith::DivUIOp::create(b, loc, linear, grid[0]);
    Value by = arith::RemUIOp::create(b, loc, rest, grid[1]);
    Value bz = arith::DivUIOp::create(b, loc, rest, grid[1]);
    Value blockId[3] = {bx, by, bz};

    // What every phase shares: the buffers, the block's workgroup memory
    // (a fresh buffer per block), the per-thread spill buffers and the
    // split loops' carried values.
    IRMapping shared;
    for (unsigned i = 0; i < numBuffers; ++i)
      shared.map(kernel.getArgument(i), entry->getArgument(i));
    for (BlockArgument attribution : kernel.getWorkgroupAttributions()) {
      auto type = cast<MemRefType>(attribution.getType());
      auto local = MemRefType::get(type.getShape(), type.getElementType(),
                                   type.getLayout());
      shared.map(attribution, memref::AllocaOp::create(ab, loc, local));
    }
    auto dim = [](gpu::Dimension d) { return static_cast<unsigned>(d); };
    // Ids and sizes other than the thread's, for a split loop's bounds.
    for (Operation *op : ids) {
      if (auto id = dyn_cast<gpu::BlockIdOp>(op))
        shared.map(id.getResult(), blockId[dim(id.getDimension())]);
      else if (auto size = dyn_cast<gpu::GridDimOp>(op))
        shared.map(size.getResult(), grid[dim(size.getDimension())]);
      else if (auto size = dyn_cast<gpu::BlockDimOp>(op))
        shared.map(size.getResult(), block[dim(size.getDimension())]);
    }
    Value threads = arith::MulIOp::create(
        ab, loc, arith::MulIOp::create(ab, loc, block[0], block[1]), block[2]);
    auto perThread = [&](Type type) {
      return memref::AllocaOp::create(
          ab, loc, MemRefType::get({ShapedType::kDynamic}, type),
          ValueRange{threads});
    };
    DenseMap<Value, Value> spillOf;
    for (Value v : spilled)
      spillOf[v] = perThread(v.getType());
    // A warp's fragments, gathered from the per-thread buffers for each
    // product (once per function: an alloca in a loop would grow the stack).
    Value warpFrags[2];
    if (!products.empty()) {
      Type f32 = ab.getF32Type();
      warpFrags[0] = memref::AllocaOp::create(
          ab, loc, MemRefType::get({32}, VectorType::get({4, 1}, f32)));
      warpFrags[1] = memref::AllocaOp::create(
          ab, loc, MemRefType::get({32}, VectorType::get({2, 1}, f32)));
    }
    // A split loop's i-th carried value: its iter_arg inside, its result
    // after; both read the same per-thread buffer.
    DenseMap<Value, Value> carried;
    for (Operation *op : split) {
      auto loop = cast<scf::ForOp>(op);
      for (auto [arg, result] :
           llvm::zip(loop.getRegionIterArgs(), loop.getResults())) {
        Value buffer = perThread(arg.getType());
        carried[arg] = buffer;
        carried[result] = buffer;
      }
    }

    // The uniform values a split loop's bounds need, cloned at block level.
    std::function<LogicalResult(Value, OpBuilder &, IRMapping &)> uniform =
        [&](Value v, OpBuilder &ub, IRMapping &map) -> LogicalResult {
      if (map.contains(v))
        return success();
      Operation *def = v.getDefiningOp();
      if (!def || isa<gpu::ThreadIdOp>(def) || !rematerializable(v))
        return kernel.emitOpError("cannot be emulated: a loop with barriers "
                                  "has bounds that are not the same for every "
                                  "thread of a block");
      for (Value operand : def->getOperands())
        if (failed(uniform(operand, ub, map)))
          return failure();
      ub.clone(*def, map);
      return success();
    };

    OpBuilder level = b; // where the next phase's thread loops go
    scf::ForOp open;     // the split loop being emitted, if any
    IRMapping loopMap = shared;
    for (unsigned p = 0; p < phases.size(); ++p) {
      Phase &phase = phases[p];
      if (phase.loop != open) {
        if (open) // back out of the emitted loop
          level.setInsertionPointAfter(level.getBlock()->getParentOp());
        open = phase.loop;
        loopMap = shared;
        if (open) {
          for (Value bound : open.getOperands().take_front(3))
            if (failed(uniform(bound, level, loopMap)))
              return failure();
          auto emitted = scf::ForOp::create(
              level, loc, loopMap.lookup(open.getLowerBound()),
              loopMap.lookup(open.getUpperBound()),
              loopMap.lookup(open.getStep()));
          loopMap.map(open.getInductionVar(), emitted.getInductionVar());
          level.setInsertionPointToStart(emitted.getBody());
        }
      }
      SmallVector<Value, 3> threadId(3);
      OpBuilder nb = level;
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
      IRMapping map = loopMap;
      for (Operation *op : ids)
        if (auto id = dyn_cast<gpu::ThreadIdOp>(op))
          map.map(id.getResult(), threadId[dim(id.getDimension())]);
      // Values of earlier phases this one uses: recomputed, or reloaded.
      std::function<void(Value)> bring = [&](Value v) {
        if (map.contains(v))
          return;
        if (auto buffer = carried.find(v); buffer != carried.end()) {
          map.map(v, memref::LoadOp::create(nb, loc, buffer->second,
                                            ValueRange{slot}));
          return;
        }
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
      auto store = [&](Value v, Value buffer) {
        bring(v);
        memref::StoreOp::create(nb, loc, map.lookupOrDefault(v), buffer,
                                ValueRange{slot});
      };
      if (phase.initOf) {
        for (auto [init, arg] : llvm::zip(phase.initOf.getInitArgs(),
                                          phase.initOf.getRegionIterArgs()))
          store(init, carried[arg]);
        continue;
      }
      for (Operation *op : phase.ops)
        op->walk([&](Operation *inner) {
          for (Value operand : inner->getOperands())
            bring(operand);
        });
      for (Operation *op : phase.ops) {
        if (auto mma = dyn_cast<nvgpu::MmaSyncOp>(op)) {
          // The lane's share of its warp's product, from the warp's
          // fragments as every lane left them in the phases before.
          Value c32 = arith::ConstantIndexOp::create(nb, loc, 32);
          Value lane = arith::RemUIOp::create(nb, loc, slot, c32);
          Value warp = arith::SubIOp::create(nb, loc, slot, lane);
          scf::ForOp::create(
              nb, loc, zero, c32, one, ValueRange{},
              [&](OpBuilder &lb, Location ll, Value l, ValueRange) {
                Value from = arith::AddIOp::create(lb, ll, warp, l);
                Value frags[2] = {mma.getMatrixA(), mma.getMatrixB()};
                for (int i = 0; i < 2; ++i)
                  memref::StoreOp::create(
                      lb, ll,
                      memref::LoadOp::create(lb, ll, spillOf.lookup(frags[i]),
                                             ValueRange{from}),
                      warpFrags[i], ValueRange{l});
                scf::YieldOp::create(lb, ll);
              });
          auto call = func::CallOp::create(
              nb, loc, mmaFunction(module),
              ValueRange{warpFrags[0], warpFrags[1], lane,
                         map.lookup(mma.getMatrixC())});
          map.map(mma.getRes(), call.getResult(0));
        } else {
          nb.clone(*op, map);
        }
        for (Value result : op->getResults())
          if (auto spill = spillOf.find(result); spill != spillOf.end())
            memref::StoreOp::create(nb, loc, map.lookup(result), spill->second,
                                    ValueRange{slot});
      }
      if (phase.yieldOf) {
        auto yield = cast<scf::YieldOp>(phase.yieldOf.getBody()->getTerminator());
        for (auto [value, arg] :
             llvm::zip(yield.getOperands(), phase.yieldOf.getRegionIterArgs()))
          store(value, carried[arg]);
      }
    }
    b.setInsertionPointToEnd(entry);
    func::ReturnOp::create(b, loc);
    return success();
  }
};
} // namespace
