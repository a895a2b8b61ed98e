//===- Report.cpp - what the compiled schedule costs -------------*- C++ -*-===//
//
// `lathec --report` reads the planned module (after lathe-to-kernels): per
// entry, how many kernels each decoder layer launches, and per kernel its
// arithmetic (FLOPs: loop iterations times floating-point ops in the body)
// and the bytes it must move at least (every operand read once, every result
// written once). For the cuda target it adds an H100 roofline per kernel and
// a predicted time for the forward pass and the training step.
//
//===----------------------------------------------------------------------===//

#include "Targets.h"

#include "GemmView.h"
#include "Passes.h"

#include "lathe/LatheOps.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "llvm/Support/Format.h"

#include <algorithm>
#include <map>

using namespace mlir;
using namespace mlir::lathe;

namespace {
struct KernelCost {
  // gemmFlops: the part in matrix products (contractions), which the cuda
  // target gives cuBLASLt; tensorFlops: the part in attention's products
  // where lathe's own kernel runs them on tensor cores (tf32); the rest
  // runs on CUDA cores.
  int64_t flops = 0, bytes = 0, gemmFlops = 0, tensorFlops = 0;
};
} // namespace

/// A contraction: one reduction loop and a multiply-accumulate body (what
/// lathe-contraction-to-gemm hands to the GEMM library).
static bool isContraction(linalg::LinalgOp op) {
  return op.getNumReductionLoops() == 1 && op.getNumDpsInputs() == 2 &&
         op.getNumDpsInits() == 1 && isMulAdd(op);
}

static int64_t bytesOf(Type type) {
  auto t = dyn_cast<RankedTensorType>(type);
  if (!t || !t.hasStaticShape())
    return 0;
  return t.getNumElements() * ((t.getElementTypeBitWidth() + 7) / 8);
}

/// `precision`: the cuda target's product format (f32 without one), which
/// decides whether attention's products run on tensor cores.
/// The (query, key) pairs causal attention over `rows` rows sees: per
/// window (0 for none) of W rows, W (W + 1) / 2.
static int64_t visiblePairs(int64_t rows, int64_t window) {
  int64_t w = window > 0 ? window : rows;
  return rows / w * w * (w + 1) / 2;
}

static KernelCost costOf(func::FuncOp kernel, StringRef precision = "f32") {
  KernelCost cost;
  for (Type t : kernel.getFunctionType().getInputs())
    cost.bytes += bytesOf(t);
  // Fused attention: each visible (query, key) pair costs a head_dim dot
  // product, a rescale and a multiply-add of the value row (5 * head_dim),
  // plus the max, exps and sums. Without an offset the mask leaves
  // T (T + 1) / 2 pairs per head and window; with one (decode), the cache
  // may be full.
  kernel.walk([&](FusedAttentionOp op) {
    int64_t rows = cast<ShapedType>(op.getQuery().getType()).getDimSize(0);
    int64_t keys = cast<ShapedType>(op.getKey().getType()).getDimSize(0);
    // A batch of windows masks each window on its own.
    int64_t pairs =
        op.getOffset() ? rows * keys : visiblePairs(rows, op.getWindow());
    cost.flops += op.getHeads() * pairs * (5 * op.getHeadDim() + 8);
    // Of which q . k and the weighted value sum, 4 * head_dim per pair.
    if (attentionUsesTensorCores(op, precision))
      cost.tensorFlops += op.getHeads() * pairs * 4 * op.getHeadDim();
  });
  // Attention's tiled gradient (lathe-attention-to-gpu): per visible pair
  // the row pass scores it twice (its online maximum, then dQ) and forms
  // dO . v and dQ's multiply-add (8 head_dim), the key pass scores it again
  // and forms dO . v, dK's and dV's multiply-adds (8 head_dim), plus about
  // 40 for the exps, the online rescale and the weight and score gradient.
  kernel.walk([&](FusedAttentionGradOp op) {
    int64_t rows = cast<ShapedType>(op.getQuery().getType()).getDimSize(0);
    cost.flops += op.getHeads() * visiblePairs(rows, op.getWindow()) *
                  (16 * op.getHeadDim() + 40);
  });
  // A table gradient's scatter: one addition per element of its rows.
  kernel.walk([&](ScatterAddRowsOp op) {
    cost.flops += cast<ShapedType>(op.getRows().getType()).getNumElements();
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
    if (isContraction(op))
      cost.gemmFlops += iterations * perIteration;
  });
  return cost;
}

/// The roofline the cuda report predicts with: one NVIDIA H100 SXM. Matrix
/// products run at cuBLASLt's tensor-core peak for the compiled GEMM
/// precision (dense bf16/f16 989 TFLOP/s, tf32 495); with f32 products, or
/// lathe's own GEMM kernels, and for all other arithmetic, the fp32 CUDA
/// cores' 67 TFLOP/s. HBM3 moves 3.35 TB/s; a kernel launch costs 2 us (a
/// stream launch without CUDA graphs).
constexpr double kH100Fp32Flops = 67e12, kH100Bytes = 3.35e12,
                 kLaunchSeconds = 2e-6;
/// Dense tf32 on tensor cores: what lathe's attention kernel runs its
/// products in below f32 (lathe-attention-to-gpu).
constexpr double kH100Tf32Flops = 495e12;

static double gemmPeak(const CudaKernelsOptions &cuda) {
  if (!cuda.gemmLibrary)
    return kH100Fp32Flops;
  if (cuda.gemmPrecision == "bf16" || cuda.gemmPrecision == "f16")
    return 989e12;
  if (cuda.gemmPrecision == "tf32")
    return 495e12;
  return kH100Fp32Flops;
}

/// "12.3 us" below a millisecond, else "4.567 ms".
static std::string duration(double seconds) {
  std::string out;
  llvm::raw_string_ostream os(out);
  if (seconds < 1e-3)
    os << llvm::format("%.1f", seconds * 1e6) << " us";
  else
    os << llvm::format("%.3f", seconds * 1e3) << " ms";
  return out;
}

/// The arithmetic's time: products at the GEMM peak, attention's
/// tensor-core products at the tf32 peak, the rest on CUDA cores.
static double computeSeconds(const KernelCost &c, double peak) {
  return double(c.gemmFlops) / peak + double(c.tensorFlops) / kH100Tf32Flops +
         double(c.flops - c.gemmFlops - c.tensorFlops) / kH100Fp32Flops;
}

/// What one entry costs on the roofline, summed over its launches.
struct EntryRoofline {
  double seconds = 0;
  int launches = 0;
  int64_t tokens = 0; // rows of the entry's token input
  double withLaunches() const { return seconds + launches * kLaunchSeconds; }
};

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

/// The predicted H100 times of a forward pass and, in a training artifact,
/// of a training step: one accumulate_grad per pass (of `packed` sequences)
/// and one optimizer_step.
static void printPrediction(const llvm::StringMap<EntryRoofline> &rooflines,
                            const CudaKernelsOptions &cuda, int64_t packed,
                            llvm::raw_ostream &os) {
  os << "h100 prediction (roofline: GEMM FLOPs at "
     << llvm::format("%.0f", gemmPeak(cuda) / 1e12) << " TFLOP/s ("
     << (cuda.gemmLibrary ? "cuBLASLt, " + cuda.gemmPrecision
                          : std::string("lathe's kernels, f32"))
     << "), "
     << (cuda.gemmPrecision != "f32"
             ? "attention's tensor-core FLOPs at 495 TFLOP/s (lathe's "
               "kernels, tf32), "
             : "")
     << "other FLOPs at 67 TFLOP/s fp32, 3.35 TB/s HBM3; every operand "
        "and result moved once at the compiled fp32 width; no overlap "
        "between kernels; 'with launches' adds 2 us per launch):\n";
  auto rate = [](int64_t tokens, double seconds) {
    return seconds > 0 ? double(tokens) / seconds : 0.0;
  };
  if (auto it = rooflines.find("forward"); it != rooflines.end()) {
    const EntryRoofline &f = it->second;
    os << "  forward, " << f.tokens << " tokens: " << duration(f.seconds)
       << ", " << llvm::format("%.0f", rate(f.tokens, f.seconds))
       << " tokens/s (" << duration(f.withLaunches()) << ", "
       << llvm::format("%.0f", rate(f.tokens, f.withLaunches()))
       << " tokens/s with launches)\n";
  }
  auto acc = rooflines.find("accumulate_grad");
  auto opt = rooflines.find("optimizer_step");
  if (acc == rooflines.end() || opt == rooflines.end())
    return;
  const EntryRoofline &a = acc->second, &o = opt->second;
  // A pass packs `packed` sequences (lathec --train-batch): a batch of B
  // runs B / packed passes, for batches that are whole passes.
  int64_t window = a.tokens / packed;
  SmallVector<int64_t> batches = {1, 8, 64};
  if (!llvm::is_contained(batches, packed))
    batches.push_back(packed);
  llvm::sort(batches);
  for (int64_t batch : batches) {
    if (batch % packed != 0)
      continue;
    int64_t passes = batch / packed;
    double step = passes * a.seconds + o.seconds;
    double withLaunches = passes * a.withLaunches() + o.withLaunches();
    int64_t tokens = batch * window;
    os << "  training step, batch " << batch << " x " << window
       << " tokens: " << duration(step) << ", "
       << llvm::format("%.0f", rate(tokens, step)) << " tokens/s ("
       << duration(withLaunches) << ", "
       << llvm::format("%.0f", rate(tokens, withLaunches))
       << " tokens/s with launches)";
    if (packed > 1)
      os << ", " << passes << " pass" << (passes == 1 ? "" : "es") << " of "
         << packed;
    os << "\n";
  }
}

LogicalResult mlir::lathe::printReport(ModuleOp planned, llvm::raw_ostream &os,
                                      const CudaKernelsOptions *cuda) {
  bool roofline = cuda != nullptr;
  double peak = roofline ? gemmPeak(*cuda) : 0.0;
  SymbolTable symbols(planned);
  if (auto widths = planned->getAttrOfType<DenseI64ArrayAttr>("lathe.mlp_widths")) {
    os << "mlp widths:";
    for (int64_t w : widths.asArrayRef())
      os << " " << w;
    os << "\n";
  }
  llvm::StringMap<EntryRoofline> rooflines;
  for (auto entry : planned.getOps<func::FuncOp>()) {
    if (entry.isExternal() || entry->hasAttr(kKernelAttrName))
      continue;
    std::map<std::pair<int, int>, int> perLayer;
    KernelCost total;
    std::string lines;
    llvm::raw_string_ostream detail(lines);
    int count = 0;
    EntryRoofline r;
    if (entry.getNumArguments() > 0)
      if (auto t = dyn_cast<RankedTensorType>(entry.getArgumentTypes()[0]);
          t && t.getRank() == 1 && t.getElementType().isInteger(32))
        r.tokens = t.getDimSize(0);
    DenseSet<Operation *> exits;
    for (auto [launch, to] : loopExits(entry))
      exits.insert(launch);
    entry.walk([&](LaunchOp launch) {
      auto kernel = symbols.lookup<func::FuncOp>(launch.getCallee());
      KernelCost c = costOf(kernel, roofline ? StringRef(cuda->gemmPrecision)
                                             : StringRef("f32"));
      std::pair<int, int> layer = layerOf(launch.getLoc());
      ++perLayer[layer];
      ++count;
      total.flops += c.flops;
      total.bytes += c.bytes;
      detail << "  " << launch.getCallee() << "  " << describe(layer)
             << "  flops " << c.flops;
      if (roofline) {
        detail << " (gemm " << c.gemmFlops;
        if (c.tensorFlops)
          detail << ", tensor cores " << c.tensorFlops;
        detail << ")";
      }
      detail << "  bytes " << c.bytes;
      if (roofline) {
        double t = std::max(computeSeconds(c, peak),
                            double(c.bytes) / kH100Bytes);
        r.seconds += t;
        ++r.launches;
        bool compute = computeSeconds(c, peak) > double(c.bytes) / kH100Bytes;
        detail << "  intensity "
               << llvm::format("%.1f", c.bytes ? double(c.flops) / c.bytes : 0.0)
               << "  h100 " << llvm::format("%.2f", t * 1e6) << " us "
               << (compute ? "(compute)" : "(memory)");
      }
      // Where the schedule may leave a loop early (LoopUS halting).
      if (exits.contains(launch))
        detail << "  exit point";
      detail << "\n";
    });
    auto arena = entry->getAttrOfType<IntegerAttr>(kArenaBytesAttrName);
    os << "entry " << entry.getSymName() << ": " << count << " kernels, "
       << llvm::format("%.3f", total.flops / 1e9) << " GFLOP, "
       << llvm::format("%.2f", total.bytes / 1e6) << " MB moved, arena "
       << (arena ? arena.getInt() : 0) << " bytes";
    if (roofline)
      os << ", h100 roofline " << duration(r.seconds) << " ("
         << duration(r.withLaunches()) << " with launches)";
    os << "\n";
    rooflines[entry.getSymName()] = r;
    // Layers first, then a loop's own kernels per iteration.
    for (auto [layer, n] : perLayer)
      if (layer.first >= 0)
        os << "  " << describe(layer) << ": " << n << " kernels\n";
    for (auto [layer, n] : perLayer)
      if (layer.first < 0 && layer.second >= 0)
        os << "  " << describe(layer) << ": " << n << " kernels\n";
    os << lines;
  }
  if (roofline)
    printPrediction(rooflines, *cuda,
                    planned->hasAttr("lathe.train_batch")
                        ? planned->getAttrOfType<IntegerAttr>("lathe.train_batch")
                              .getInt()
                        : 1,
                    os);
  return success();
}

int64_t mlir::lathe::kernelFlops(func::FuncOp kernel) {
  return costOf(kernel).flops;
}
