//===- FormKernels.cpp - outline structured ops into kernels -----*- C++ -*-===//
//
// Kernel formation is target-independent: a kernel is a function with explicit
// inputs and outputs, so the CPU and CUDA back ends compile the same kernels
// and the host schedule is just the sequence of `lathe.launch` ops.
//
// A kernel is a group of destination-style ops (structured ops and
// lathe.fused_attention) that lathe-plan-fusion gave one `lathe.fusion_group`,
// or a single op when it has none, plus the fills that initialise outputs and
// the constants and scalars the bodies use. Values that stay inside a group
// still need storage between its ops: they become extra kernel results that
// the entry never reads, so the arena planner gives them space for the one
// launch only (kernel-private scratch, reused by the next kernel).
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include "mlir/IR/IRMapping.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Transforms/RegionUtils.h"

#include <functional>

namespace mlir::lathe {
#define GEN_PASS_DEF_FORMKERNELS
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {

/// A fill that only initialises the output of another structured op is part
/// of that op's kernel, not a kernel of its own.
static bool isInitFill(Operation *op) {
  auto fill = dyn_cast<linalg::FillOp>(op);
  if (!fill || !fill->hasOneUse())
    return false;
  OpOperand &use = *fill->getUses().begin();
  Operation *owner = use.getOwner();
  if (!isa<linalg::LinalgOp, ScatterAddRowsOp>(owner))
    return false;
  return cast<DestinationStyleOpInterface>(owner).isDpsInit(&use);
}

static bool isInlinedConstant(Value v) {
  Operation *def = v.getDefiningOp();
  return def && def->hasTrait<OpTrait::ConstantLike>();
}

struct FormKernels : lathe::impl::FormKernelsBase<FormKernels> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SymbolTable symbols(module);
    SmallVector<func::FuncOp> entries;
    for (auto fn : module.getOps<func::FuncOp>())
      if (!fn.isExternal() && !fn->hasAttr(kKernelAttrName))
        entries.push_back(fn);
    for (func::FuncOp entry : entries)
      if (failed(formKernels(entry, symbols)))
        return signalPassFailure();
  }

  /// A cache write becomes a copy into a slice of the cache that goes
  /// straight back: the in-place form that `outline` turns into a kernel
  /// writing the cache's own storage.
  static void expandCacheWrite(CacheWriteOp op) {
    OpBuilder b(op);
    expandInPlaceWrite(b, op, op.getCache(), op.getRows(),
                       positionOffset(b, op.getLoc(), op.getOffset()));
  }

  /// lathe.assign is the same in-place write, of the whole tensor; or,
  /// where an elementwise generic computes the value, that generic writes
  /// the target directly (no fresh buffer and no copy: an optimizer update
  /// or a gradient sum moves each array once instead of three times).
  static void expandAssign(AssignOp op) {
    if (writeThrough(op))
      return;
    OpBuilder b(op);
    expandInPlaceWrite(b, op, op.getTarget(), op.getValue(), nullptr);
  }

  /// The value assigned to S is result r of a generic that accumulates
  /// into S through its init r (and reads S nowhere else), which then gets
  /// S's slice as that init; or of an all-parallel generic whose
  /// init r is fresh and indexed by the identity, nothing else uses it, and
  /// the generic reads S (if at all) as one input through the identity, the
  /// element it writes. That input becomes the generic's init r instead, a
  /// slice of all of S that goes straight back into S (the in-place form
  /// `outline` matches), and the body reads the element from its output
  /// argument: bufferization then updates S's storage in place, where an
  /// input aliasing the output would make it copy S. No one may read S
  /// between the generic and the assign, as S's storage now changes at the
  /// generic.
  static bool writeThrough(AssignOp op) {
    Value target = op.getTarget(), value = op.getValue();
    auto generic = value.getDefiningOp<linalg::GenericOp>();
    if (!generic || !value.hasOneUse() ||
        generic->getBlock() != op->getBlock())
      return false;
    unsigned r = cast<OpResult>(value).getResultNumber();
    OpOperand *init = generic.getDpsInitOperand(r);
    // A generic that already accumulates into S through its output (a
    // gradient GEMM with beta = 1) only needs S's storage as that output.
    bool accumulates = init->get() == target &&
                       llvm::none_of(generic.getDpsInputOperands(),
                                     [&](OpOperand *in) {
                                       return in->get() == target;
                                     });
    if (!accumulates &&
        (!init->get().getDefiningOp<tensor::EmptyOp>() ||
         !generic.getMatchingIndexingMap(init).isIdentity() ||
         generic.getNumParallelLoops() != generic.getNumLoops()))
      return false;
    // S itself, read elementwise, at most once; no other read of S's state.
    // The storage a value reads: a state's or a parameter's name.
    auto storage = [](Value v) -> StringRef {
      if (auto read = v.getDefiningOp<CacheReadOp>())
        return read.getName();
      if (auto weight = v.getDefiningOp<WeightOp>())
        return weight.getName();
      return "";
    };
    StringRef targetStorage = storage(target);
    OpOperand *readS = nullptr;
    for (OpOperand *in : generic.getDpsInputOperands()) {
      Value v = in->get();
      bool same = v == target ||
                  (!targetStorage.empty() && storage(v) == targetStorage);
      if (!same)
        continue;
      if (v != target || readS ||
          !generic.getMatchingIndexingMap(in).isIdentity())
        return false;
      readS = in;
    }
    for (Operation *user : target.getUsers())
      if (user != generic && user != op && !user->isBeforeInBlock(generic))
        return false;

    OpBuilder b(generic);
    Location loc = op.getLoc();
    auto type = cast<RankedTensorType>(value.getType());
    Slice all = sliceOf(b, type, nullptr);
    Value slot = tensor::ExtractSliceOp::create(b, loc, type, target,
                                                all.offsets, all.sizes,
                                                all.strides);
    init->set(slot);
    if (readS) {
      // Drop the input; its block argument's uses read the output's.
      unsigned in = readS->getOperandNumber();
      SmallVector<Value> inputs;
      SmallVector<AffineMap> maps;
      for (OpOperand *operand : generic.getDpsInputOperands())
        if (operand != readS) {
          inputs.push_back(operand->get());
          maps.push_back(generic.getMatchingIndexingMap(operand));
        }
      for (OpOperand &operand : generic.getDpsInitsMutable())
        maps.push_back(generic.getMatchingIndexingMap(&operand));
      auto rebuilt = linalg::GenericOp::create(
          b, generic.getLoc(), generic->getResultTypes(), inputs,
          generic.getOutputs(), maps, generic.getIteratorTypesArray());
      rebuilt->setDiscardableAttrs(generic->getDiscardableAttrDictionary());
      rebuilt.getRegion().takeBody(generic.getRegion());
      Block &body = rebuilt.getRegion().front();
      body.getArgument(in).replaceAllUsesWith(
          body.getArgument(generic.getNumDpsInputs() + r));
      body.eraseArgument(in);
      generic->replaceAllUsesWith(rebuilt->getResults());
      generic->erase();
      generic = rebuilt;
      value = rebuilt->getResult(r);
    }
    b.setInsertionPointAfter(generic);
    Value updated = tensor::InsertSliceOp::create(
        b, loc, value, target, all.offsets, all.sizes, all.strides);
    op->getResult(0).replaceAllUsesWith(updated);
    op->erase();
    return true;
  }

  /// Writes `rows` into `dest` from row `start` (0 when null) as a copy into
  /// a slice that goes straight back, and replaces `op`'s result with it.
  static void expandInPlaceWrite(OpBuilder &b, Operation *op, Value dest,
                                 Value rows, Value start) {
    Location loc = op->getLoc();
    auto rowsType = cast<RankedTensorType>(rows.getType());
    Slice at = sliceOf(b, rowsType, start);
    Value slot = tensor::ExtractSliceOp::create(b, loc, rowsType, dest,
                                                at.offsets, at.sizes, at.strides);
    auto copy = linalg::CopyOp::create(b, loc, rows, slot);
    if (Attribute group = op->getAttr(kFusionGroupAttrName))
      copy->setAttr(kFusionGroupAttrName, group);
    Value copied = copy.getResult(0);
    Value updated = tensor::InsertSliceOp::create(
        b, loc, copied, dest, at.offsets, at.sizes, at.strides);
    op->getResult(0).replaceAllUsesWith(updated);
    op->erase();
  }

  /// A slice of `type`'s shape from row `start` (0 when null), unit strides.
  struct Slice {
    SmallVector<OpFoldResult> offsets, sizes, strides;
  };
  static Slice sliceOf(OpBuilder &b, RankedTensorType type, Value start) {
    Slice s;
    s.offsets.assign(type.getRank(), b.getIndexAttr(0));
    if (start)
      s.offsets[0] = start;
    for (int64_t d : type.getShape())
      s.sizes.push_back(b.getIndexAttr(d));
    s.strides.assign(type.getRank(), b.getIndexAttr(1));
    return s;
  }

  static bool isAnchor(Operation *op) {
    if (isa<FusedAttentionOp, FusedAttentionGradOp, ScatterAddRowsOp>(op))
      return true;
    return isa<linalg::LinalgOp>(op) && !isInitFill(op);
  }

  LogicalResult formKernels(func::FuncOp entry, SymbolTable &symbols) {
    SmallVector<CacheWriteOp> writes;
    entry.walk([&](CacheWriteOp op) { writes.push_back(op); });
    for (CacheWriteOp op : writes)
      expandCacheWrite(op);
    SmallVector<AssignOp> assigns;
    entry.walk([&](AssignOp op) { assigns.push_back(op); });
    for (AssignOp op : assigns)
      expandAssign(op);
    // Groups in program order of their first op.
    SmallVector<SmallVector<Operation *>> groups;
    DenseMap<int64_t, unsigned> groupIndex;
    entry.walk([&](Operation *op) {
      if (!isAnchor(op))
        return;
      auto tag = op->getAttrOfType<IntegerAttr>(kFusionGroupAttrName);
      if (!tag) {
        groups.push_back({op});
        return;
      }
      auto [it, inserted] = groupIndex.try_emplace(tag.getInt(), groups.size());
      if (inserted)
        groups.emplace_back();
      groups[it->second].push_back(op);
    });
    // A group that cannot be launched at its last op (something outside it
    // reads one of its values earlier) runs as one kernel per op instead.
    SmallVector<SmallVector<Operation *>> kernels;
    for (SmallVector<Operation *> &group : groups) {
      if (canOutlineTogether(group)) {
        kernels.push_back(group);
        continue;
      }
      for (Operation *op : group)
        kernels.push_back({op});
    }
    // Kernels are numbered and placed in launch order: by their last op.
    llvm::stable_sort(kernels, [](ArrayRef<Operation *> a,
                                  ArrayRef<Operation *> b) {
      return a.back()->isBeforeInBlock(b.back());
    });
    unsigned counter = 0;
    Operation *insertAfter = entry;
    for (ArrayRef<Operation *> group : kernels) {
      FailureOr<func::FuncOp> kernel =
          outline(entry, group, counter++, insertAfter, symbols);
      if (failed(kernel))
        return failure();
      insertAfter = *kernel;
    }
    // Constants now cloned into kernels are dead in the entry.
    SmallVector<Operation *> dead;
    entry.walk([&](Operation *op) {
      if (op->hasTrait<OpTrait::ConstantLike>() && op->use_empty())
        dead.push_back(op);
    });
    for (Operation *op : dead)
      op->erase();
    return success();
  }

  /// The launch replaces the group at its last op, so every outside reader
  /// of a group value must come after that op.
  static bool canOutlineTogether(ArrayRef<Operation *> group) {
    if (group.size() == 1)
      return true;
    Operation *last = group.back();
    SmallPtrSet<Operation *, 8> members(group.begin(), group.end());
    for (Operation *op : group)
      for (Value result : op->getResults())
        for (Operation *user : result.getUsers()) {
          // A read inside a member's body (RoPE's partner element) counts
          // as that member's.
          user = last->getBlock()->findAncestorOpInBlock(*user);
          if (!user)
            return false;
          if (members.contains(user))
            continue;
          // An insert that carries an in-place update is absorbed by the
          // kernel; what matters is who reads the updated tensor.
          SmallVector<Operation *> readers = {user};
          if (isa<tensor::InsertSliceOp>(user))
            readers.assign(user->getUsers().begin(), user->getUsers().end());
          for (Operation *reader : readers)
            if (reader->getBlock() != last->getBlock() ||
                reader->isBeforeInBlock(last))
              return false;
        }
    return true;
  }

  /// An in-place update: the op writes into a slice of S and the slice goes
  /// straight back into S. The kernel then overwrites S's own storage.
  struct InPlace {
    tensor::ExtractSliceOp extract;
    tensor::InsertSliceOp insert;
  };
  static std::optional<InPlace> matchInPlace(DestinationStyleOpInterface anchor,
                                             OpOperand &init) {
    auto extract = init.get().getDefiningOp<tensor::ExtractSliceOp>();
    Value result = anchor.getTiedOpResult(&init);
    if (!extract || !result.hasOneUse())
      return std::nullopt;
    auto insert = dyn_cast<tensor::InsertSliceOp>(*result.getUsers().begin());
    if (!insert || insert.getDest() != extract.getSource() ||
        !insert.isSameAs(extract, [](OpFoldResult a, OpFoldResult b) {
          return a == b;
        }))
      return std::nullopt;
    return InPlace{extract, insert};
  }

  /// How a kernel result's buffer comes about.
  enum class Live { none, inPlace, copy };
  /// Whether `v` lives in an arena buffer of the entry's own: a launch
  /// result, or one updated in place from such a result (a chain like
  /// LoopUS's kept state) where each earlier value's only use was that
  /// update.
  static bool ownsBuffer(Value v) {
    while (auto producer = v.getDefiningOp<LaunchOp>()) {
      v = producer.getTiedOperand(cast<OpResult>(v).getResultNumber());
      if (!v)
        return true;
      if (!v.hasOneUse())
        return false;
    }
    return false;
  }

  struct Output {
    OpOperand *init;
    OpResult result;
    std::optional<InPlace> update;
    Live mode = Live::none;
  };

  /// Outlines `group` (in program order) into kernel number `index`, placed
  /// after `insertAfter` so kernels appear in launch order. The launch takes
  /// the group's place at its last op.
  FailureOr<func::FuncOp> outline(func::FuncOp entry,
                                  ArrayRef<Operation *> group, unsigned index,
                                  Operation *insertAfter,
                                  SymbolTable &symbols) {
    Operation *last = group.back();
    MLIRContext *ctx = last->getContext();
    Location loc = group.size() == 1
                       ? last->getLoc()
                       : FusedLoc::get(ctx, llvm::map_to_vector(
                                                group, [](Operation *op) {
                                                  return op->getLoc();
                                                }));
    SmallPtrSet<Operation *, 8> members(group.begin(), group.end());
    auto inGroup = [&](Value v) {
      Operation *def = v.getDefiningOp();
      return def && members.contains(def);
    };

    // Tensors become inputs; constants are cloned in; scalars computed in
    // the entry (e.g. a position read from a tensor) are recomputed in the
    // kernel from their tensor sources, so every input is a buffer. Values
    // of the group itself are not inputs: the kernel computes them.
    SetVector<Value> inputs;
    SetVector<Operation *> recomputed;
    std::function<LogicalResult(Value)> need = [&](Value v) -> LogicalResult {
      if (inGroup(v))
        return success();
      if (isInlinedConstant(v)) {
        recomputed.insert(v.getDefiningOp());
        return success();
      }
      if (isa<RankedTensorType>(v.getType())) {
        inputs.insert(v);
        return success();
      }
      Operation *def = v.getDefiningOp();
      if (!def || def->getNumRegions() != 0 || !isMemoryEffectFree(def))
        return last->emitOpError("cannot form a kernel: it uses ")
               << v.getType() << " value that is not computed from tensors";
      for (Value operand : def->getOperands())
        if (failed(need(operand)))
          return failure();
      recomputed.insert(def);
      return success();
    };
    for (Operation *op : group) {
      auto dps = cast<DestinationStyleOpInterface>(op);
      for (OpOperand *in : dps.getDpsInputOperands())
        if (failed(need(in->get())))
          return failure();
      SetVector<Value> captured;
      getUsedValuesDefinedAbove(op->getRegions(), captured);
      for (Value v : captured)
        if (failed(need(v)))
          return failure();
    }

    // Outputs, one per init of every op: a fresh buffer (empty, or a fill
    // of empty), an in-place update of a slice of a tensor the entry already
    // has, or an op that accumulates into a live value (a residual
    // connection). The last overwrites that value's own buffer when nothing
    // reads it afterwards and the entry owns it (a launch result), and a
    // copy of it otherwise. An init computed by the group itself is updated
    // inside the kernel and needs no output.
    SmallVector<Output> outputs;
    for (Operation *op : group) {
      auto dps = cast<DestinationStyleOpInterface>(op);
      for (OpOperand &init : dps.getDpsInitsMutable()) {
        Output out{&init, dps.getTiedOpResult(&init), std::nullopt};
        if (inGroup(init.get()))
          continue;
        Operation *def = init.get().getDefiningOp();
        bool fresh =
            isa_and_nonnull<tensor::EmptyOp>(def) ||
            (isa_and_nonnull<linalg::FillOp>(def) &&
             isa_and_nonnull<tensor::EmptyOp>(
                 cast<linalg::FillOp>(def).getOutputs()[0].getDefiningOp()));
        out.update = matchInPlace(dps, init);
        if (!fresh && !out.update) {
          Value v = init.get();
          bool readByKernel = inputs.contains(v);
          bool readLater = llvm::any_of(v.getUsers(), [&](Operation *user) {
            return !members.contains(user) && last->isBeforeInBlock(user);
          });
          bool owned = ownsBuffer(v);
          out.mode = !readByKernel && !readLater && owned ? Live::inPlace
                                                         : Live::copy;
          inputs.insert(v);
        }
        if (out.update) {
          inputs.insert(out.update->extract.getSource());
          for (Value v : out.update->extract.getOperands().drop_front())
            if (failed(need(v)))
              return failure();
        }
        outputs.push_back(out);
      }
    }

    SmallVector<Type> argTypes(llvm::map_range(
        inputs, [](Value v) { return v.getType(); }));
    SmallVector<Type> resultTypes;
    for (Output &out : outputs) {
      Type t = out.update ? out.update->insert.getType() : out.result.getType();
      argTypes.push_back(t);
      resultTypes.push_back(t);
    }

    OpBuilder b(ctx);
    b.setInsertionPointAfter(insertAfter);
    auto kernel = func::FuncOp::create(
        b, loc, (entry.getSymName() + "_k" + Twine(index)).str(),
        FunctionType::get(ctx, argTypes, resultTypes));
    kernel.setPrivate();
    kernel->setAttr(kKernelAttrName, UnitAttr::get(ctx));
    symbols.insert(kernel, b.getInsertionPoint());

    Block *body = kernel.addEntryBlock();
    b.setInsertionPointToStart(body);
    IRMapping map;
    for (auto [v, arg] : llvm::zip(inputs, body->getArguments()))
      map.map(v, arg);
    // Recompute scalars in their original order.
    SmallVector<Operation *> ordered(recomputed.begin(), recomputed.end());
    llvm::sort(ordered, [](Operation *a, Operation *b) {
      return a->isBeforeInBlock(b);
    });
    for (Operation *scalar : ordered)
      b.clone(*scalar, map);

    // Each op, in order, after binding its outputs to the kernel's buffers.
    unsigned outArg = inputs.size();
    SmallVector<Value> buffers, results;
    unsigned next = 0;
    for (Operation *op : group) {
      SmallVector<unsigned> mine;
      for (; next < outputs.size() && outputs[next].init->getOwner() == op;
           ++next)
        mine.push_back(next);
      for (unsigned i : mine) {
        Output &out = outputs[i];
        Value init = out.init->get();
        Value buffer = body->getArgument(outArg++);
        buffers.push_back(buffer);
        if (out.mode == Live::copy) {
          map.map(init, linalg::CopyOp::create(b, loc, map.lookup(init), buffer)
                            .getResult(0));
        } else if (out.mode == Live::inPlace) {
          // The runtime passes the live value's buffer as this output: the
          // op reads and updates it where it is.
          map.map(init, buffer);
        } else if (out.update) {
          // The slice is taken from the output buffer itself, so the update
          // lands in place.
          IRMapping sliceMap = map;
          sliceMap.map(out.update->extract.getSource(), buffer);
          map.map(init, b.clone(*out.update->extract, sliceMap)->getResult(0));
        } else if (auto fill = init.getDefiningOp<linalg::FillOp>()) {
          Value scalar = fill.getInputs()[0];
          if (failed(need(scalar)))
            return failure();
          if (!map.contains(scalar))
            b.clone(*scalar.getDefiningOp(), map);
          Value filled = linalg::FillOp::create(b, fill.getLoc(),
                                                map.lookupOrDefault(scalar),
                                                buffer)
                             .getResult(0);
          map.map(init, filled);
        } else {
          map.map(init, buffer);
        }
      }
      Operation *clone = b.clone(*op, map);
      clone->removeAttr(kFusionGroupAttrName);
      for (unsigned i : mine) {
        Output &out = outputs[i];
        Value value = clone->getResult(out.result.getResultNumber());
        if (out.update) {
          IRMapping insertMap = map;
          insertMap.map(out.update->insert.getDest(), buffers[i]);
          insertMap.map(out.update->insert.getSource(), value);
          value = b.clone(*out.update->insert, insertMap)->getResult(0);
        }
        results.push_back(value);
      }
    }
    func::ReturnOp::create(b, loc, results);

    // The entry launches the kernel in the group's place.
    OpBuilder eb(last);
    SmallVector<int64_t> tied;
    auto indexOf = [&](Value v) {
      return static_cast<int64_t>(llvm::find(inputs, v) - inputs.begin());
    };
    for (Output &out : outputs)
      tied.push_back(out.update ? indexOf(out.update->extract.getSource())
                     : out.mode == Live::inPlace ? indexOf(out.init->get())
                                                 : -1);
    bool anyTied = llvm::any_of(tied, [](int64_t t) { return t >= 0; });
    auto launch = LaunchOp::create(
        eb, loc, resultTypes, FlatSymbolRefAttr::get(kernel),
        inputs.getArrayRef(), nullptr,
        anyTied ? eb.getDenseI64ArrayAttr(tied) : nullptr, nullptr, nullptr);
    // A loop's early exit is the schedule's business: say which result of
    // the launch holds the halting status, and that it hands on the loop's
    // state.
    for (auto [i, out] : llvm::enumerate(outputs)) {
      Operation *producer = out.result.getOwner();
      if (producer->hasAttr(kExitStatusAttrName))
        launch->setAttr(kExitStatusAttrName, eb.getI64IntegerAttr(i));
      if (producer->hasAttr(kLoopStateAttrName))
        launch->setAttr(kLoopStateAttrName, eb.getUnitAttr());
    }
    SmallVector<Operation *> dead;
    for (auto [i, out] : llvm::enumerate(outputs)) {
      if (out.update) {
        out.update->insert.getResult().replaceAllUsesWith(launch->getResult(i));
        dead.push_back(out.update->insert);
      } else {
        out.result.replaceAllUsesWith(launch->getResult(i));
      }
    }
    SmallVector<Operation *> inits;
    for (Output &out : outputs)
      inits.push_back(out.init->get().getDefiningOp());
    for (Operation *d : dead)
      d->erase();
    // Later members read earlier ones, so erase from the back.
    for (Operation *op : llvm::reverse(group)) {
      if (!op->use_empty())
        return op->emitOpError("is still used after kernel formation");
      op->erase();
    }
    // Drop what only fed the kernel: initialisers, slices and recomputed
    // scalars, in reverse order of definition.
    SetVector<Operation *> unique;
    for (Operation *init : inits) {
      if (!init)
        continue;
      unique.insert(init);
      if (auto fill = dyn_cast<linalg::FillOp>(init))
        unique.insert(fill.getOutputs()[0].getDefiningOp());
    }
    unique.insert(ordered.rbegin(), ordered.rend());
    SmallVector<Operation *> candidates(unique.begin(), unique.end());
    bool changed = true;
    while (changed) {
      changed = false;
      for (Operation *&c : candidates) {
        if (c && c->use_empty() && isMemoryEffectFree(c)) {
          c->erase();
          c = nullptr;
          changed = true;
        }
      }
    }
    return kernel;
  }
};

} // namespace
