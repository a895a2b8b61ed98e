//===- Compiler.cpp - from a model to an artifact ----------------*- C++ -*-===//
//
// spec → lathe → (lathe-to-kernels) kernels + planned schedule
//      → cpu:  lathe-cpu-kernels → LLVM IR → shared object
//      → cuda: lathe-cuda-kernels (per chip) → PTX + GPU launch list
//      → artifact
//
//===----------------------------------------------------------------------===//

#include "lathe/Compiler.h"

#include "Passes.h"
#include "Targets.h"
#include "lathe/LatheOps.h"
#include "lathe/Pipelines.h"
#include "lathe/SpecImporter.h"

#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Bufferization/Transforms/FuncBufferizableOpInterfaceImpl.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"

using namespace mlir;
using namespace mlir::lathe;

void mlir::lathe::registerCompilerDialects(DialectRegistry &registry) {
  registry.insert<LatheDialect>();
  registerBufferizableOpInterfaceExternalModels(registry);
  registerAllDialects(registry);
  registerAllExtensions(registry);
  registerAllToLLVMIRTranslations(registry);
  NVVM::registerNVVMTargetInterfaceExternalModels(registry);
}

namespace {
/// Prints each error as one line, `file:line:col: error: message`, the way
/// the spec importer does, and remembers that one was seen.
class OneLineDiagnostics {
public:
  OneLineDiagnostics(MLIRContext &ctx, llvm::raw_ostream &os)
      : handler(&ctx, [&os](Diagnostic &diag) {
          os << locationPrefix(diag.getLocation());
          os << (diag.getSeverity() == DiagnosticSeverity::Error ? "error: "
                 : diag.getSeverity() == DiagnosticSeverity::Warning
                     ? "warning: "
                     : "note: ");
          std::string text = diag.str();
          std::replace(text.begin(), text.end(), '\n', ' ');
          os << text << "\n";
          return success();
        }) {}

  static std::string locationPrefix(Location loc) {
    if (auto file = loc->findInstanceOf<FileLineColLoc>())
      return (file.getFilename().str() + ":" + std::to_string(file.getLine()) +
              ":" + std::to_string(file.getColumn()) + ": ");
    return "";
  }

private:
  ScopedDiagnosticHandler handler;
};
} // namespace

OwningOpRef<ModuleOp> mlir::lathe::loadModel(llvm::StringRef path,
                                             MLIRContext &ctx,
                                             llvm::raw_ostream &errs,
                                             const TrainOptions *train,
                                             const ExecutionOptions *execution) {
  auto file = llvm::MemoryBuffer::getFileOrSTDIN(path, /*IsText=*/true);
  if (!file) {
    errs << path << ": error: cannot read: " << file.getError().message()
         << "\n";
    return nullptr;
  }
  OneLineDiagnostics diagnostics(ctx, errs);
  OwningOpRef<ModuleOp> module;
  if (path.ends_with(".yaml") || path.ends_with(".yml")) {
    module = importSpec((*file)->getMemBufferRef(), ctx, errs, train,
                        execution);
  } else {
    llvm::SourceMgr sourceMgr;
    sourceMgr.AddNewSourceBuffer(std::move(*file), llvm::SMLoc());
    module = parseSourceFile<ModuleOp>(sourceMgr, &ctx);
  }
  if (!module)
    return nullptr;
  if (failed(verify(*module)))
    return nullptr;
  return module;
}

static LogicalResult run(ModuleOp module,
                         function_ref<void(OpPassManager &)> build) {
  PassManager pm(module.getContext());
  build(pm);
  return pm.run(module);
}

LogicalResult mlir::lathe::compile(ModuleOp module,
                                   const CompileOptions &options,
                                   llvm::raw_ostream &out,
                                   llvm::raw_ostream &errs) {
  MLIRContext &ctx = *module.getContext();
  OneLineDiagnostics diagnostics(ctx, errs);
  if ((options.emit == Emit::ptx || options.emit == Emit::kernels) &&
      options.target != Target::cuda) {
    errs << "error: --emit=" << (options.emit == Emit::ptx ? "ptx" : "kernels")
         << " needs --target=cuda\n";
    return failure();
  }
  // The backward graph is lathe ops too: --emit=lathe shows it.
  if (failed(run(module, [&](OpPassManager &pm) {
        DifferentiateOptions differentiate;
        differentiate.recomputeMlp = options.recomputeMlp;
        pm.addPass(createDifferentiate(differentiate));
      })))
    return failure();
  if (options.emit == Emit::lathe) {
    module.print(out);
    return success();
  }
  if (failed(run(module, [&](OpPassManager &pm) {
        buildLatheToKernelsPipeline(pm, options.target == Target::cuda);
      })))
    return failure();
  if (options.emit == Emit::linalg) {
    module.print(out);
    return success();
  }
  if (options.emit == Emit::report && options.target == Target::cpu)
    return printReport(module, out);
  FailureOr<ScheduleInfo> schedule = readSchedule(module);
  if (failed(schedule))
    return failure();

  auto extracted = [&]() -> OwningOpRef<ModuleOp> {
    OwningOpRef<ModuleOp> kernels = cast<ModuleOp>(module->clone());
    if (failed(run(*kernels, [](OpPassManager &pm) {
          pm.addPass(createExtractKernels());
        })))
      return nullptr;
    return kernels;
  };

  if (options.target == Target::cpu) {
    OwningOpRef<ModuleOp> kernels = extracted();
    if (!kernels || failed(run(*kernels, buildCpuKernelsPipeline)))
      return failure();
    FailureOr<std::string> library = buildCpuLibrary(
        *kernels, options.emit == Emit::llvm ? &out : nullptr);
    if (failed(library))
      return failure();
    if (options.emit == Emit::llvm)
      return success();
    out << writeArtifact(*schedule, Target::cpu, *library, {});
    return success();
  }

  // cuda: compile the same kernels once per chip.
  std::map<std::string, std::string> ptxByChip;
  std::map<std::string, std::vector<GpuLaunch>> gpuLaunches;
  std::vector<std::string> chips(std::begin(kCudaChips), std::end(kCudaChips));
  if (options.emit != Emit::artifact && options.emit != Emit::kernels &&
      options.emit != Emit::report)
    chips = {options.gpuChip};
  for (const std::string &chip : chips) {
    OwningOpRef<ModuleOp> kernels = extracted();
    CudaKernelsOptions cuda = options.cuda;
    cuda.chip = chip;
    if (!kernels || failed(run(*kernels, [&](OpPassManager &pm) {
          buildCudaKernelsPipeline(pm, cuda);
        })))
      return failure();
    if (options.emit == Emit::llvm) {
      kernels->print(out);
      return success();
    }
    gpuLaunches.clear();
    std::string ptx;
    if (failed(buildCudaModule(*kernels, gpuLaunches, ptx)))
      return failure();
    if (options.emit == Emit::ptx) {
      out << ptx;
      return success();
    }
    ptxByChip[chip] = std::move(ptx);
  }
  // Each lathe.launch expands into the GPU launches of its kernel function,
  // with kernel-function arguments mapped back to schedule buffers.
  for (EntryInfo &entry : schedule->entries) {
    // Where each kernel function's GPU launches start, to place exits.
    std::vector<uint32_t> firstGpu;
    for (const LaunchInfo &launch : entry.launches) {
      firstGpu.push_back(uint32_t(entry.gpuLaunches.size()));
      for (const GpuLaunch &g : gpuLaunches[launch.kernel]) {
        LaunchInfo l;
        l.kernel = g.kernel;
        for (unsigned index : g.argIndex)
          l.args.push_back(launch.args[index]);
        l.grid = g.grid;
        l.block = g.block;
        l.gemm = g.gemm;
        // The kernel function's work, on its first GPU launch.
        l.flops = &g == &gpuLaunches[launch.kernel].front() ? launch.flops : 0;
        entry.gpuLaunches.push_back(std::move(l));
      }
    }
    firstGpu.push_back(uint32_t(entry.gpuLaunches.size()));
    // An exit follows the last GPU launch of its kernel function.
    for (auto [i, launch] : llvm::enumerate(entry.launches))
      if (launch.exitStatus >= 0 && firstGpu[i + 1] > firstGpu[i]) {
        LaunchInfo &last = entry.gpuLaunches[firstGpu[i + 1] - 1];
        last.exitStatus = launch.exitStatus;
        last.exitTo = firstGpu[launch.exitTo];
      }
  }
  if (options.emit == Emit::kernels)
    return exportKernels(*schedule, ptxByChip, options.exportDir, errs);
  if (options.emit == Emit::report) {
    // The schedule's report, then what ptxas says of each GPU kernel.
    if (failed(printReport(module, out, &options.cuda)))
      return failure();
    return printPtxasReport(ptxByChip, out, errs);
  }
  // The same GPU kernels, run as CPU loops: the cuda-emulated device.
  OwningOpRef<ModuleOp> emulated = extracted();
  if (!emulated || failed(run(*emulated, [&](OpPassManager &pm) {
        buildCudaEmulationKernelsPipeline(pm, options.cuda);
      })))
    return failure();
  FailureOr<std::string> emulation = buildCpuLibrary(*emulated, nullptr);
  if (failed(emulation))
    return failure();
  // The cubin too where ptxas is installed, so a CUDA runtime need not JIT.
  std::map<std::string, std::string> cubinByChip;
  if (std::optional<std::string> ptxas = findPtxas())
    for (const auto &[chip, text] : ptxByChip) {
      FailureOr<std::string> bytes = assembleCubin(*ptxas, chip, text, errs);
      if (failed(bytes))
        return failure();
      cubinByChip[chip] = std::move(*bytes);
    }
  out << writeArtifact(*schedule, Target::cuda, *emulation, ptxByChip,
                       cubinByChip);
  return success();
}
