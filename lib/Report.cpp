//===- Report.cpp - what the compiled schedule costs -------------*- C++ -*-===//
//
// `lathec --report` reads the planned module (after lathe-to-kernels): per
// entry, how many kernels each decoder layer launches, and per kernel its
// arithmetic (FLOPs: loop iterations times floating-point ops in the body)
// and the bytes it must move at least (every operand read once, every result
// written once).
//
//===----------------------------------------------------------------------===//

#include "Targets.h"

#include "lathe/LatheOps.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "llvm/Support/Format.h"

#include <map>

using namespace mlir;
using namespace mlir::lathe;

namespace {
struct KernelCost {
  int64_t flops = 0, bytes = 0;
};
} // namespace

static int64_t bytesOf(Type type) {
  auto t = dyn_cast<RankedTensorType>(type);
  if (!t || !t.hasStaticShape())
    return 0;
  return t.getNumElements() * ((t.getElementTypeBitWidth() + 7) / 8);
}

static KernelCost costOf(func::FuncOp kernel) {
  KernelCost cost;
  for (Type t : kernel.getFunctionType().getInputs())
    cost.bytes += bytesOf(t);
  // Fused attention: each visible (query, key) pair costs a head_dim dot
  // product, a rescale and a multiply-add of the value row (5 * head_dim),
  // plus the max, exps and sums. Without an offset the mask leaves
  // T (T + 1) / 2 pairs per head; with one (decode), the cache may be full.
  kernel.walk([&](FusedAttentionOp op) {
    int64_t rows = cast<ShapedType>(op.getQuery().getType()).getDimSize(0);
    int64_t keys = cast<ShapedType>(op.getKey().getType()).getDimSize(0);
    int64_t pairs = op.getOffset() ? rows * keys : rows * (rows + 1) / 2;
    cost.flops += op.getHeads() * pairs * (5 * op.getHeadDim() + 8);
  });
  kernel.walk([&](linalg::LinalgOp op) {
    int64_t iterations = 1;
    for (int64_t range : op.getStaticLoopRanges())
      iterations *= range;
    int64_t perIteration = 0;
    for (Operation &inner : op->getRegion(0).front())
      if (inner.getDialect() &&
          (inner.getDialect()->getNamespace() == "arith" ||
           inner.getDialect()->getNamespace() == "math") &&
          llvm::any_of(inner.getResultTypes(),
                       [](Type t) { return isa<FloatType>(t); }) &&
          !inner.hasTrait<OpTrait::ConstantLike>())
        ++perIteration;
    cost.flops += iterations * perIteration;
  });
  return cost;
}

/// The decoder layer ("layers.3") and loop iteration ("iteration.1") of a
/// location built by the spec importer; -1 where there is none.
static std::pair<int, int> layerOf(Location loc) {
  int layer = -1, iteration = -1;
  loc->walk([&](Location l) {
    if (auto name = dyn_cast<NameLoc>(l)) {
      StringRef s = name.getName().strref();
      int value;
      // A fused kernel's location lists its ops in order: the first op's
      // layer and iteration name the kernel.
      if (s.consume_front("layers.") && !s.getAsInteger(10, value)) {
        if (layer < 0)
          layer = value;
      } else if (s.consume_front("iteration.") && !s.getAsInteger(10, value)) {
        if (iteration < 0)
          iteration = value;
      }
    }
    return WalkResult::advance();
  });
  return {layer, iteration};
}

/// "layer 3", "layer 1 iteration 2", "loop iteration 2" (a loop's own
/// kernels, between passes of its core), or "layer -".
static std::string describe(std::pair<int, int> at) {
  if (at.first < 0)
    return at.second < 0 ? "layer -" : "loop iteration " + std::to_string(at.second);
  std::string s = "layer " + std::to_string(at.first);
  if (at.second >= 0)
    s += " iteration " + std::to_string(at.second);
  return s;
}

LogicalResult mlir::lathe::printReport(ModuleOp planned, llvm::raw_ostream &os) {
  SymbolTable symbols(planned);
  if (auto widths = planned->getAttrOfType<DenseI64ArrayAttr>("lathe.mlp_widths")) {
    os << "mlp widths:";
    for (int64_t w : widths.asArrayRef())
      os << " " << w;
    os << "\n";
  }
  for (auto entry : planned.getOps<func::FuncOp>()) {
    if (entry.isExternal() || entry->hasAttr(kKernelAttrName))
      continue;
    std::map<std::pair<int, int>, int> perLayer;
    KernelCost total;
    std::string lines;
    llvm::raw_string_ostream detail(lines);
    int count = 0;
    DenseSet<Operation *> exits;
    for (auto [launch, to] : loopExits(entry))
      exits.insert(launch);
    entry.walk([&](LaunchOp launch) {
      auto kernel = symbols.lookup<func::FuncOp>(launch.getCallee());
      KernelCost c = costOf(kernel);
      std::pair<int, int> layer = layerOf(launch.getLoc());
      ++perLayer[layer];
      ++count;
      total.flops += c.flops;
      total.bytes += c.bytes;
      detail << "  " << launch.getCallee() << "  " << describe(layer)
             << "  flops " << c.flops << "  bytes " << c.bytes;
      // Where the schedule may leave a loop early (LoopUS halting).
      if (exits.contains(launch))
        detail << "  exit point";
      detail << "\n";
    });
    auto arena = entry->getAttrOfType<IntegerAttr>(kArenaBytesAttrName);
    os << "entry " << entry.getSymName() << ": " << count << " kernels, "
       << llvm::format("%.3f", total.flops / 1e9) << " GFLOP, "
       << llvm::format("%.2f", total.bytes / 1e6) << " MB moved, arena "
       << (arena ? arena.getInt() : 0) << " bytes\n";
    // Layers first, then a loop's own kernels per iteration.
    for (auto [layer, n] : perLayer)
      if (layer.first >= 0)
        os << "  " << describe(layer) << ": " << n << " kernels\n";
    for (auto [layer, n] : perLayer)
      if (layer.first < 0 && layer.second >= 0)
        os << "  " << describe(layer) << ": " << n << " kernels\n";
    os << lines;
  }
  return success();
}

int64_t mlir::lathe::kernelFlops(func::FuncOp kernel) {
  return costOf(kernel).flops;
}
