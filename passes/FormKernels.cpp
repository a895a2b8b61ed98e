//===- FormKernels.cpp - outline structured ops into kernels -----*- C++ -*-===//
//
// Kernel formation is target-independent: a kernel is a function with explicit
// inputs and outputs, so the CPU and CUDA back ends compile the same kernels
// and the host schedule is just the sequence of `lathe.launch` ops.
//
// Today a kernel is one structured op plus the fills that initialise its
// outputs; fusing producers and epilogues into that unit is the next step and
// does not change the interface.
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
  auto consumer = dyn_cast<linalg::LinalgOp>(use.getOwner());
  return consumer && consumer.isDpsInit(&use);
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
    Location loc = op.getLoc();
    auto rowsType = cast<RankedTensorType>(op.getRows().getType());
    Value start = positionOffset(b, loc, op.getOffset());
    SmallVector<OpFoldResult> offsets = {start, b.getIndexAttr(0)};
    SmallVector<OpFoldResult> sizes = {b.getIndexAttr(rowsType.getDimSize(0)),
                                       b.getIndexAttr(rowsType.getDimSize(1))};
    SmallVector<OpFoldResult> strides(2, b.getIndexAttr(1));
    Value slot = tensor::ExtractSliceOp::create(b, loc, rowsType, op.getCache(),
                                                offsets, sizes, strides);
    Value copied =
        linalg::CopyOp::create(b, loc, op.getRows(), slot).getResult(0);
    Value updated = tensor::InsertSliceOp::create(b, loc, copied, op.getCache(),
                                                  offsets, sizes, strides);
    op.getResult().replaceAllUsesWith(updated);
    op.erase();
  }

  LogicalResult formKernels(func::FuncOp entry, SymbolTable &symbols) {
    SmallVector<CacheWriteOp> writes;
    entry.walk([&](CacheWriteOp op) { writes.push_back(op); });
    for (CacheWriteOp op : writes)
      expandCacheWrite(op);
    SmallVector<linalg::LinalgOp> anchors;
    entry.walk([&](linalg::LinalgOp op) {
      if (!isInitFill(op))
        anchors.push_back(op);
    });
    unsigned counter = 0;
    Operation *insertAfter = entry;
    for (linalg::LinalgOp anchor : anchors) {
      FailureOr<func::FuncOp> kernel =
          outline(entry, anchor, counter++, insertAfter, symbols);
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

  /// An in-place update: the op writes into a slice of S and the slice goes
  /// straight back into S. The kernel then overwrites S's own storage.
  struct InPlace {
    tensor::ExtractSliceOp extract;
    tensor::InsertSliceOp insert;
  };
  static std::optional<InPlace> matchInPlace(linalg::LinalgOp anchor,
                                             OpOperand &init) {
    auto extract = init.get().getDefiningOp<tensor::ExtractSliceOp>();
    Value result = anchor->getResult(anchor.getIndexingMapIndex(&init) -
                                     anchor.getNumDpsInputs());
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

  /// Outlines `anchor` into kernel number `index`, placed after
  /// `insertAfter` so kernels appear in launch order.
  FailureOr<func::FuncOp> outline(func::FuncOp entry, linalg::LinalgOp anchor,
                                  unsigned index, Operation *insertAfter,
                                  SymbolTable &symbols) {
    Operation *op = anchor.getOperation();
    MLIRContext *ctx = op->getContext();
    Location loc = op->getLoc();

    // Tensors become inputs; constants are cloned in; scalars computed in
    // the entry (e.g. a position read from a tensor) are recomputed in the
    // kernel from their tensor sources, so every input is a buffer.
    SetVector<Value> inputs;
    SetVector<Operation *> recomputed;
    std::function<LogicalResult(Value)> need = [&](Value v) -> LogicalResult {
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
        return op->emitOpError("cannot form a kernel: it uses ")
               << v.getType() << " value that is not computed from tensors";
      for (Value operand : def->getOperands())
        if (failed(need(operand)))
          return failure();
      recomputed.insert(def);
      return success();
    };
    for (Value v : anchor.getDpsInputs())
      if (failed(need(v)))
        return failure();
    SetVector<Value> captured;
    getUsedValuesDefinedAbove(op->getRegions(), captured);
    for (Value v : captured)
      if (failed(need(v)))
        return failure();

    // Outputs: a fresh buffer (empty, or a fill of empty), an in-place
    // update of a slice of a tensor the entry already has, or an op that
    // accumulates into a live value (a residual connection). The last
    // overwrites that value's own buffer when nothing reads it afterwards and
    // the entry owns it (a launch result), and a copy of it otherwise.
    enum class Live { none, inPlace, copy };
    SmallVector<std::optional<InPlace>> inPlace;
    SmallVector<Live> live;
    for (OpOperand &init : anchor.getDpsInitsMutable()) {
      Operation *def = init.get().getDefiningOp();
      bool fresh = isa_and_nonnull<tensor::EmptyOp>(def) ||
                   (isa_and_nonnull<linalg::FillOp>(def) &&
                    isa_and_nonnull<tensor::EmptyOp>(
                        cast<linalg::FillOp>(def).getOutputs()[0].getDefiningOp()));
      std::optional<InPlace> update = matchInPlace(anchor, init);
      Live mode = Live::none;
      if (!fresh && !update) {
        Value v = init.get();
        bool readByOp = inputs.contains(v);
        bool readLater = llvm::any_of(v.getUsers(), [&](Operation *user) {
          return user != op && op->isBeforeInBlock(user);
        });
        auto producer = v.getDefiningOp<LaunchOp>();
        bool owned = producer && !producer.getTied();
        mode = !readByOp && !readLater && owned ? Live::inPlace : Live::copy;
        inputs.insert(v);
      }
      live.push_back(mode);
      if (update) {
        inputs.insert(update->extract.getSource());
        for (Value v : update->extract.getOperands().drop_front())
          if (failed(need(v)))
            return failure();
      }
      inPlace.push_back(update);
    }

    SmallVector<Type> argTypes(llvm::map_range(
        inputs, [](Value v) { return v.getType(); }));
    SmallVector<Type> resultTypes;
    for (auto [i, update] : llvm::enumerate(inPlace)) {
      Type t = update ? update->insert.getType() : op->getResultTypes()[i];
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

    unsigned outArg = inputs.size();
    SmallVector<Value> buffers;
    for (auto [init, update, mode] :
         llvm::zip(anchor.getDpsInitsMutable(), inPlace, live)) {
      Value buffer = body->getArgument(outArg++);
      buffers.push_back(buffer);
      if (mode == Live::copy) {
        map.map(init.get(),
                linalg::CopyOp::create(b, loc, map.lookup(init.get()), buffer)
                    .getResult(0));
      } else if (mode == Live::inPlace) {
        // The runtime passes the live value's buffer as this output: the
        // op reads and updates it where it is.
        map.map(init.get(), buffer);
      } else if (update) {
        // The slice is taken from the output buffer itself, so the update
        // lands in place.
        IRMapping sliceMap = map;
        sliceMap.map(update->extract.getSource(), buffer);
        map.map(init.get(), b.clone(*update->extract, sliceMap)->getResult(0));
      } else if (auto fill = init.get().getDefiningOp<linalg::FillOp>()) {
        Value scalar = fill.getInputs()[0];
        if (failed(need(scalar)))
          return failure();
        if (!map.contains(scalar))
          b.clone(*scalar.getDefiningOp(), map);
        Value filled = linalg::FillOp::create(b, fill.getLoc(),
                                              map.lookupOrDefault(scalar),
                                              buffer)
                           .getResult(0);
        map.map(init.get(), filled);
      } else {
        map.map(init.get(), buffer);
      }
    }
    Operation *clone = b.clone(*op, map);
    SmallVector<Value> results;
    for (auto [i, update] : llvm::enumerate(inPlace)) {
      if (!update) {
        results.push_back(clone->getResult(i));
        continue;
      }
      IRMapping insertMap = map;
      insertMap.map(update->insert.getDest(), buffers[i]);
      insertMap.map(update->insert.getSource(), clone->getResult(i));
      results.push_back(b.clone(*update->insert, insertMap)->getResult(0));
    }
    func::ReturnOp::create(b, loc, results);

    // The entry launches the kernel in the op's place.
    OpBuilder eb(op);
    SmallVector<int64_t> tied;
    auto indexOf = [&](Value v) {
      return static_cast<int64_t>(llvm::find(inputs, v) - inputs.begin());
    };
    for (auto [update, mode, init] :
         llvm::zip(inPlace, live, anchor.getDpsInits()))
      tied.push_back(update                   ? indexOf(update->extract.getSource())
                     : mode == Live::inPlace ? indexOf(init)
                                             : -1);
    bool anyTied = llvm::any_of(tied, [](int64_t t) { return t >= 0; });
    auto launch = LaunchOp::create(
        eb, loc, resultTypes, FlatSymbolRefAttr::get(kernel),
        inputs.getArrayRef(), nullptr,
        anyTied ? eb.getDenseI64ArrayAttr(tied) : nullptr, nullptr, nullptr);
    SmallVector<Operation *> dead;
    for (auto [i, update] : llvm::enumerate(inPlace)) {
      if (update) {
        update->insert.getResult().replaceAllUsesWith(launch->getResult(i));
        dead.push_back(update->insert);
      } else {
        op->getResult(i).replaceAllUsesWith(launch->getResult(i));
      }
    }
    SmallVector<Operation *> inits;
    for (Value v : anchor.getDpsInits())
      inits.push_back(v.getDefiningOp());
    for (Operation *d : dead)
      d->erase();
    op->erase();
    // Drop what only fed the kernel: initialisers, slices and recomputed
    // scalars, in reverse order of definition.
    SetVector<Operation *> unique;
    for (Operation *init : inits) {
      unique.insert(init);
      if (auto fill = dyn_cast_or_null<linalg::FillOp>(init))
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
