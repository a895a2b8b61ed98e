//===- Compiler.h - the compiler API the tools call --------------*- C++ -*-===//
#ifndef LATHE_COMPILER_H
#define LATHE_COMPILER_H

#include "lathe/Pipelines.h"
#include "lathe/SpecImporter.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/raw_ostream.h"

#include <string>

namespace mlir::lathe {

enum class Target { cpu, cuda };
/// What lathec produces: the artifact, or the IR at one stage.
enum class Emit { artifact, lathe, linalg, llvm, ptx, report, kernels };

struct CompileOptions {
  Target target = Target::cpu;
  Emit emit = Emit::artifact;
  /// The chip whose PTX/NVVM `--emit` prints; artifacts carry every chip in
  /// kCudaChips.
  std::string gpuChip = "sm_90";
  /// Emit::kernels: the directory to write the exported kernels into.
  std::string exportDir;
  /// cuda: GEMMs through cuBLASLt or lathe's kernels, and their precision
  /// (the chip is set per chip compiled).
  CudaKernelsOptions cuda;
  /// Training: MLPs recompute their hidden values in the backward instead of
  /// saving them (less memory, one more up projection per MLP).
  bool recomputeMlp = false;
};

/// The chips every cuda artifact carries PTX for.
inline constexpr const char *kCudaChips[] = {"sm_80", "sm_90"};

/// Every dialect, interface and translation the compiler uses.
void registerCompilerDialects(DialectRegistry &registry);

/// Reads a model: a YAML spec (.yaml/.yml) or `lathe` IR (.mlir), verified;
/// `train` adds a spec's training entries (see importSpec). Errors are printed to
/// `errs` as one line each; null on error.
OwningOpRef<ModuleOp> loadModel(llvm::StringRef path, MLIRContext &ctx,
                                llvm::raw_ostream &errs,
                                const TrainOptions *train = nullptr,
                                const ExecutionOptions *execution = nullptr);

/// Runs the pipelines on `module` (consumed) and writes the artifact (binary)
/// or the requested IR (text) to `out`.
LogicalResult compile(ModuleOp module, const CompileOptions &options,
                      llvm::raw_ostream &out, llvm::raw_ostream &errs);

} // namespace mlir::lathe

#endif // LATHE_COMPILER_H
