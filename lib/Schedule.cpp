//===- Schedule.cpp - read the host schedule off a planned module -*- C++ -*-===//
//
// After lathe-plan-buffers the entry function *is* the schedule: launches in
// order, every value with an arena offset or a parameter. This turns it into
// plain data for the artifact, independent of MLIR.
//
//===----------------------------------------------------------------------===//

#include "Targets.h"

#include "lathe/LatheOps.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using namespace mlir::lathe;

static FailureOr<DType> dtypeOf(Operation *where, Type type) {
  Type element = cast<RankedTensorType>(type).getElementType();
  if (element.isF32())
    return DType::f32;
  if (element.isInteger(32))
    return DType::i32;
  return where->emitOpError("has a tensor of unsupported element type ")
         << element;
}

static_assert(int(InitRule::identity) == int(InitKind::identity) &&
                  int(InitRule::dt_log_uniform) == int(InitKind::dt_log_uniform),
              "InitRule follows the dialect's InitKind");

/// Whether `launch` writes session state (a KV cache, a weight): one of its
/// results is updated in place in a tensor read from a state.
static bool writesState(LaunchOp launch) {
  for (unsigned i = 0; i < launch.getNumResults(); ++i) {
    // Follow the storage back through in-place updates and views.
    Value v = launch.getTiedOperand(i);
    while (v) {
      Operation *def = v.getDefiningOp();
      if (!def)
        break;
      if (isa<CacheReadOp>(def))
        return true;
      if (auto producer = dyn_cast<LaunchOp>(def))
        v = producer.getTiedOperand(cast<OpResult>(v).getResultNumber());
      else if (isa<tensor::ExpandShapeOp, tensor::CollapseShapeOp,
                   tensor::ExtractSliceOp>(def))
        v = def->getOperand(0);
      else
        break;
    }
  }
  return false;
}

std::vector<std::pair<LaunchOp, uint32_t>>
mlir::lathe::loopExits(func::FuncOp entry) {
  SmallVector<LaunchOp> launches(entry.getOps<LaunchOp>());
  // An exit continues after the last launch that hands on a loop's state,
  // and skips only launches that write nothing outliving the entry.
  std::optional<size_t> end;
  for (auto [i, launch] : llvm::enumerate(launches))
    if (launch->hasAttr(kLoopStateAttrName))
      end = i;
  std::vector<std::pair<LaunchOp, uint32_t>> exits;
  if (!end)
    return exits;
  for (size_t i = 0; i < *end; ++i) {
    if (!launches[i]->hasAttr(kExitStatusAttrName))
      continue;
    if (llvm::none_of(ArrayRef<LaunchOp>(launches).slice(i + 1, *end - i),
                      writesState))
      exits.push_back({launches[i], uint32_t(*end + 1)});
  }
  return exits;
}

FailureOr<ScheduleInfo> mlir::lathe::readSchedule(ModuleOp planned) {
  ScheduleInfo s;
  if (auto name = planned->getAttrOfType<StringAttr>("lathe.model"))
    s.model = name.str();
  if (auto v = planned->getAttrOfType<IntegerAttr>("lathe.vocab"))
    s.vocab = v.getInt();
  if (auto v = planned->getAttrOfType<IntegerAttr>("lathe.max_seq"))
    s.maxSeq = v.getInt();
  if (auto v = planned->getAttrOfType<DenseI64ArrayAttr>(
          "lathe.sampled_iterations");
      v && v.size() == 2) {
    s.sampledIterationsMean = v[0];
    s.sampledIterationsMax = v[1];
  }
  if (auto v = planned->getAttrOfType<IntegerAttr>("lathe.shortcut_iterations"))
    s.shortcutIterations = v.getInt();
  if (auto v = planned->getAttrOfType<IntegerAttr>("lathe.train_batch"))
    s.trainBatch = v.getInt();
  if (auto v = planned->getAttrOfType<DenseI64ArrayAttr>("lathe.supervision");
      v && v.size() == 2) {
    s.supervisionSteps = v[0];
    s.supervisedSteps = v[1];
  }

  DenseMap<StringAttr, uint32_t> paramIndex;
  for (auto param : planned.getOps<ParamOp>()) {
    ParamInfo p;
    p.name = param.getSymName().str();
    p.shape.assign(param.getTensorType().getShape().begin(),
                   param.getTensorType().getShape().end());
    p.init = static_cast<InitRule>(param.getInit());
    if (auto value = param.getValue())
      p.value = static_cast<float>(value->convertToDouble());
    if (auto std = param.getStd())
      p.std = static_cast<float>(std->convertToDouble());
    paramIndex[param.getSymNameAttr()] = s.params.size();
    s.params.push_back(std::move(p));
  }

  DenseMap<StringAttr, uint32_t> stateIndex;
  for (auto cache : planned.getOps<CacheOp>()) {
    StateInfo st;
    st.name = cache.getSymName().str();
    st.shape.assign(cache.getTensorType().getShape().begin(),
                    cache.getTensorType().getShape().end());
    stateIndex[cache.getSymNameAttr()] = s.states.size();
    s.states.push_back(std::move(st));
  }

  for (auto fn : planned.getOps<func::FuncOp>()) {
    if (fn.isExternal() || fn->hasAttr(kKernelAttrName))
      continue;
    auto arena = fn->getAttrOfType<IntegerAttr>(kArenaBytesAttrName);
    if (!arena)
      return fn.emitOpError("has no planned arena: run lathe-plan-buffers");
    EntryInfo entry;
    entry.name = fn.getSymName().str();
    entry.arenaBytes = arena.getInt();
    DenseMap<Value, uint32_t> bufferOf;
    auto addBuffer = [&](Value v, BufferInfo b) -> LogicalResult {
      auto type = cast<RankedTensorType>(v.getType());
      b.shape.assign(type.getShape().begin(), type.getShape().end());
      FailureOr<DType> dtype = dtypeOf(fn, type);
      if (failed(dtype))
        return failure();
      b.dtype = *dtype;
      bufferOf[v] = s.buffers.size();
      s.buffers.push_back(std::move(b));
      return success();
    };
    for (BlockArgument arg : fn.getArguments()) {
      auto offset = fn.getArgAttrOfType<IntegerAttr>(arg.getArgNumber(),
                                                     kOffsetAttrName);
      if (!offset)
        return fn.emitOpError("argument without a planned offset");
      BufferInfo b;
      b.offset = offset.getInt();
      if (failed(addBuffer(arg, b)))
        return failure();
      entry.inputs.push_back(bufferOf[arg]);
    }
    DenseMap<Operation *, uint32_t> exits;
    for (auto [launch, to] : loopExits(fn))
      exits[launch] = to;
    for (Operation &op : fn.getBody().front()) {
      if (auto weight = dyn_cast<WeightOp>(op)) {
        BufferInfo b;
        b.kind = BufferInfo::Kind::param;
        b.index = paramIndex.lookup(weight.getNameAttr().getAttr());
        if (failed(addBuffer(weight.getResult(), b)))
          return failure();
      } else if (auto read = dyn_cast<CacheReadOp>(op)) {
        BufferInfo b;
        b.kind = BufferInfo::Kind::state;
        b.index = stateIndex.lookup(read.getNameAttr().getAttr());
        if (failed(addBuffer(read.getResult(), b)))
          return failure();
      } else if (auto launch = dyn_cast<LaunchOp>(op)) {
        LaunchInfo info;
        info.kernel = launch.getCallee().str();
        if (auto kernel = planned.lookupSymbol<func::FuncOp>(launch.getCallee()))
          info.flops = kernelFlops(kernel);
        for (Value operand : launch.getOperands()) {
          if (!bufferOf.count(operand))
            return launch.emitOpError("operand is not a planned buffer");
          info.args.push_back(bufferOf[operand]);
        }
        ArrayRef<int64_t> offsets = *launch.getOffsets();
        for (auto [i, result, offset] :
             llvm::enumerate(launch.getResults(), offsets)) {
          if (Value tied = launch.getTiedOperand(i)) {
            // Written in place: the result is its operand's buffer.
            uint32_t id = bufferOf[tied];
            bufferOf[result] = id;
            info.args.push_back(id);
            continue;
          }
          BufferInfo b;
          b.offset = offset;
          if (failed(addBuffer(result, b)))
            return failure();
          info.args.push_back(bufferOf[result]);
        }
        if (auto it = exits.find(launch); it != exits.end()) {
          auto r = launch->getAttrOfType<IntegerAttr>(kExitStatusAttrName);
          info.exitStatus = info.args[launch.getNumOperands() + r.getInt()];
          info.exitTo = it->second;
        }
        entry.launches.push_back(std::move(info));
      } else if (isa<tensor::ExpandShapeOp, tensor::CollapseShapeOp,
                     tensor::ExtractSliceOp>(op)) {
        // A view (lathe-plan-buffers admits only reshapes and leading-row
        // slices): the same storage, a new shape.
        BufferInfo b = s.buffers[bufferOf[op.getOperand(0)]];
        if (failed(addBuffer(op.getResult(0), b)))
          return failure();
      } else if (auto ret = dyn_cast<func::ReturnOp>(op)) {
        for (Value v : ret.getOperands())
          entry.outputs.push_back(bufferOf[v]);
      }
    }
    s.entries.push_back(std::move(entry));
  }
  return s;
}
