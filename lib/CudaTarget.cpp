//===- CudaTarget.cpp - kernels to PTX and a GPU launch list -----*- C++ -*-===//
//
// After lathe-cuda-kernels each kernel function is a host function whose body
// is a few gpu.launch_func ops on its own memref arguments. Those launches
// become the artifact's schedule (grid, block, and which kernel argument feeds
// each PTX parameter); the merged gpu.module is serialized to PTX by MLIR's
// NVVM target (libdevice linked, no ptxas needed).
//
//===----------------------------------------------------------------------===//

#include "Targets.h"

#include "lathe/LatheDialect.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <cstdlib>

using namespace mlir;
using namespace mlir::lathe;

static FailureOr<std::vector<uint32_t>> constants(gpu::LaunchFuncOp launch,
                                                  ValueRange values) {
  std::vector<uint32_t> out;
  for (Value v : values) {
    std::optional<int64_t> c = getConstantIntValue(v);
    if (!c)
      return launch.emitOpError("has a launch size that is not a constant");
    out.push_back(static_cast<uint32_t>(*c));
  }
  return out;
}

LogicalResult mlir::lathe::buildCudaModule(
    ModuleOp kernels, std::map<std::string, std::vector<GpuLaunch>> &launches,
    std::string &ptx) {
  for (auto fn : kernels.getOps<func::FuncOp>()) {
    if (!fn->hasAttr(kKernelAttrName))
      continue;
    std::vector<GpuLaunch> &list = launches[fn.getSymName().str()];
    // Which kernel-function argument each buffer operand is.
    auto argIndex = [&](Operation *op, ValueRange operands,
                        std::vector<unsigned> &out) -> LogicalResult {
      for (Value operand : operands) {
        auto arg = dyn_cast<BlockArgument>(operand);
        if (!arg || arg.getOwner()->getParentOp() != fn)
          return op->emitOpError("passes a value that is not a kernel buffer");
        out.push_back(arg.getArgNumber());
      }
      return success();
    };
    WalkResult walk = fn.walk([&](Operation *op) {
      if (auto gemm = dyn_cast<GemmOp>(op)) {
        GpuLaunch g;
        g.kernel = "gemm";
        GemmInfo info;
        info.m = gemm.getM();
        info.n = gemm.getN();
        info.k = gemm.getK();
        info.transA = gemm.getTransA();
        info.transB = gemm.getTransB();
        info.lda = gemm.getLda();
        info.ldb = gemm.getLdb();
        info.ldd = gemm.getLdd();
        info.batch = gemm.getBatch();
        info.strideA = gemm.getStrideA();
        info.strideB = gemm.getStrideB();
        info.strideD = gemm.getStrideD();
        info.hasC = bool(gemm.getC());
        info.hasBias = bool(gemm.getBias());
        info.hasAux = bool(gemm.getAux());
        info.epilogue = gemm.getEpilogue();
        info.precision = gemm.getPrecision();
        g.gemm = info;
        // a, b, d, then c, bias and aux as present: the operand order.
        if (failed(argIndex(op, gemm->getOperands(), g.argIndex)))
          return WalkResult::interrupt();
        list.push_back(std::move(g));
        return WalkResult::advance();
      }
      auto launch = dyn_cast<gpu::LaunchFuncOp>(op);
      if (!launch) {
        // Anything else left on the host would be silently skipped by the
        // runtime: refuse it here instead.
        if (!isa<func::ReturnOp, arith::ConstantOp, func::FuncOp>(op)) {
          op->emitOpError("remains on the host side of a CUDA kernel");
          return WalkResult::interrupt();
        }
        return WalkResult::advance();
      }
      GpuLaunch g;
      g.kernel = launch.getKernelName().str();
      auto grid = constants(launch, {launch.getGridSizeX(),
                                     launch.getGridSizeY(),
                                     launch.getGridSizeZ()});
      auto block = constants(launch, {launch.getBlockSizeX(),
                                      launch.getBlockSizeY(),
                                      launch.getBlockSizeZ()});
      if (failed(grid) || failed(block))
        return WalkResult::interrupt();
      g.grid = *grid;
      g.block = *block;
      if (failed(argIndex(op, launch.getKernelOperands(), g.argIndex)))
        return WalkResult::interrupt();
      list.push_back(std::move(g));
      return WalkResult::advance();
    });
    if (walk.wasInterrupted())
      return failure();
  }

  // libdevice (for exp, sqrt, sin, ...) comes from the CUDA toolkit. Find it
  // here rather than rely on the environment of whoever runs lathec.
  std::string toolkit;
  for (const char *var : {"CUDA_HOME", "CUDA_PATH"})
    if (const char *v = std::getenv(var); v && *v && toolkit.empty())
      toolkit = v;
  if (toolkit.empty())
    toolkit = "/usr/local/cuda";
  llvm::SmallString<128> libdevice(toolkit);
  llvm::sys::path::append(libdevice, "nvvm", "libdevice", "libdevice.10.bc");
  if (!llvm::sys::fs::exists(libdevice))
    return kernels.emitError("CUDA libdevice not found at ")
           << libdevice << " (set CUDA_HOME to the CUDA toolkit)";

  PassManager pm(kernels.getContext());
  GpuModuleToBinaryPassOptions toBinary;
  toBinary.compilationTarget = "isa";
  toBinary.toolkitPath = toolkit;
  pm.addPass(createGpuModuleToBinaryPass(toBinary));
  if (failed(pm.run(kernels)))
    return failure();
  for (auto binary : kernels.getOps<gpu::BinaryOp>())
    for (Attribute object : binary.getObjects())
      ptx += cast<gpu::ObjectAttr>(object).getObject().getValue().str();
  return success();
}
