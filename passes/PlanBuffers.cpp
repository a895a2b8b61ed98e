//===- PlanBuffers.cpp - static arena planning for entries -------*- C++ -*-===//
//
// Every activation of an entry lives in one arena whose layout is fixed at
// compile time, so the runtime allocates once and launches kernels with plain
// pointers. Space is reused across layers: a buffer is freed after its last
// use and later buffers take the lowest gap that fits (first fit).
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include <map>

namespace mlir::lathe {
#define GEN_PASS_DEF_PLANBUFFERS
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {

static int64_t byteSize(Type type) {
  auto t = llvm::cast<RankedTensorType>(type);
  return t.getNumElements() * ((t.getElementTypeBitWidth() + 7) / 8);
}

/// Live intervals ordered by offset; first fit over the gaps between them.
class Arena {
public:
  explicit Arena(int64_t alignment) : alignment(alignment) {}

  int64_t allocate(int64_t size) {
    size = llvm::alignTo(size, alignment);
    int64_t offset = 0;
    for (auto [start, end] : live) {
      if (start - offset >= size)
        break;
      offset = std::max(offset, end);
    }
    live.emplace(offset, offset + size);
    peak = std::max(peak, offset + size);
    return offset;
  }
  void release(int64_t offset) { live.erase(offset); }
  int64_t bytes() const { return peak; }

private:
  int64_t alignment;
  std::multimap<int64_t, int64_t> live; // start -> end
  int64_t peak = 0;
};

struct PlanBuffers : lathe::impl::PlanBuffersBase<PlanBuffers> {
  using Base::Base;

  void runOnOperation() override {
    for (auto fn : getOperation().getOps<func::FuncOp>())
      if (!fn.isExternal() && !fn->hasAttr(kKernelAttrName))
        if (failed(plan(fn)))
          return signalPassFailure();
  }

  /// A slice of the leading rows of a row-major tensor starts at the same
  /// address: it is a view, not a copy.
  static bool isLeadingRows(Operation *op) {
    auto slice = dyn_cast<tensor::ExtractSliceOp>(op);
    if (!slice || !slice.hasUnitStride())
      return false;
    RankedTensorType src = slice.getSourceType();
    for (auto [i, offset] : llvm::enumerate(slice.getStaticOffsets()))
      if (offset != 0)
        return false;
    for (auto [i, size] : llvm::enumerate(slice.getStaticSizes()))
      if (i > 0 && size != src.getDimSize(i))
        return false;
    return slice.getType().getRank() == src.getRank();
  }

  static bool isView(Operation *op) {
    return isa<tensor::ExpandShapeOp, tensor::CollapseShapeOp>(op) ||
           isLeadingRows(op);
  }

  /// The value whose buffer `v` lives in: reshapes and leading-row slices
  /// are views of their source, and a result updated in place lives in its
  /// tied operand.
  static Value root(Value v) {
    while (Operation *def = v.getDefiningOp()) {
      if (isView(def)) {
        v = def->getOperand(0);
        continue;
      }
      auto launch = dyn_cast<LaunchOp>(def);
      Value tied =
          launch ? launch.getTiedOperand(cast<OpResult>(v).getResultNumber())
                 : Value();
      if (!tied)
        break;
      v = tied;
    }
    return v;
  }

  LogicalResult plan(func::FuncOp fn) {
    if (!fn.getBody().hasOneBlock())
      return fn.emitOpError("lathe-plan-buffers expects a single block");
    Block &block = fn.getBody().front();
    constexpr int64_t kForever = std::numeric_limits<int64_t>::max();

    // Last use of every planned buffer, by op position. Arguments and
    // returned values live for the whole entry.
    DenseMap<Value, int64_t> lastUse;
    for (BlockArgument arg : block.getArguments())
      lastUse[arg] = kForever;
    int64_t position = 0;
    for (Operation &op : block) {
      for (Value operand : op.getOperands()) {
        Value r = root(operand);
        if (isa<func::ReturnOp>(op))
          lastUse[r] = kForever;
        else if (lastUse[r] != kForever)
          lastUse[r] = std::max(lastUse[r], position);
      }
      ++position;
    }

    Arena arena(alignment);
    DenseMap<Value, int64_t> offsetOf;
    SmallVector<std::pair<int64_t, Value>> pending; // last use -> buffer
    for (BlockArgument arg : block.getArguments()) {
      if (!isa<RankedTensorType>(arg.getType()))
        return fn.emitOpError("entry arguments must be ranked tensors");
      int64_t offset = arena.allocate(byteSize(arg.getType()));
      offsetOf[arg] = offset;
      fn.setArgAttr(arg.getArgNumber(), kOffsetAttrName,
                    IntegerAttr::get(IntegerType::get(&getContext(), 64),
                                     offset));
    }

    position = 0;
    auto i64 = IntegerType::get(&getContext(), 64);
    for (Operation &op : block) {
      // Free what died before this op: its own operands stay live, so no
      // result ever overlaps an input of the same launch.
      for (auto it = pending.begin(); it != pending.end();) {
        if (it->first < position) {
          arena.release(offsetOf[it->second]);
          it = pending.erase(it);
        } else {
          ++it;
        }
      }
      if (auto launch = dyn_cast<LaunchOp>(op)) {
        SmallVector<int64_t> offsets;
        for (Value result : launch.getResults()) {
          Value r = root(result);
          if (r != result) {
            // Updated in place: the old value must be dead from here on, or
            // a later reader would see the new contents.
            for (Operation *user : r.getUsers())
              if (user != &op && op.isBeforeInBlock(user))
                return user->emitOpError(
                    "reads a value that an earlier launch updated in place");
            offsets.push_back(offsetOf.count(r) ? offsetOf[r] : -1);
            continue;
          }
          int64_t offset = arena.allocate(byteSize(result.getType()));
          offsetOf[result] = offset;
          offsets.push_back(offset);
          int64_t last = lastUse.lookup(result);
          if (last != kForever)
            pending.push_back({last, result});
        }
        launch.setOffsets(offsets);
      } else if (isView(&op)) {
        // A view of a parameter or a cache needs no arena space.
        Value src = root(op.getOperand(0));
        if (offsetOf.count(src))
          op.setAttr(kOffsetAttrName, IntegerAttr::get(i64, offsetOf[src]));
      } else if (!isa<WeightOp, CacheReadOp, func::ReturnOp>(op) &&
                 !op.hasTrait<OpTrait::ConstantLike>()) {
        return op.emitOpError("cannot be planned: run lathe-form-kernels "
                              "first, so that every computation is a launch");
      }
      ++position;
    }
    fn->setAttr(kArenaBytesAttrName, IntegerAttr::get(i64, arena.bytes()));
    return success();
  }
};

} // namespace
