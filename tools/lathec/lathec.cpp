//===- lathec.cpp - the lathe compiler driver --------------------*- C++ -*-===//
//
//   lathec SPEC(.yaml|.mlir) --target=cpu|cuda -o OUT.lathe
//   lathec SPEC --emit=lathe|linalg|llvm|ptx [--gpu-chip=sm_80|sm_90]
//
//===----------------------------------------------------------------------===//

#include "lathe/Compiler.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/ToolOutputFile.h"

using namespace mlir;
using namespace mlir::lathe;
namespace cl = llvm::cl;

static cl::opt<std::string> inputPath(cl::Positional, cl::Required,
                                      cl::desc("<spec.yaml | model.mlir>"));
static cl::opt<std::string> outputPath("o", cl::desc("Output file"),
                                       cl::value_desc("file"),
                                       cl::init("-"));
static cl::opt<Target> target(
    "target", cl::desc("Code generation target"), cl::init(Target::cpu),
    cl::values(clEnumValN(Target::cpu, "cpu", "native code for this CPU"),
               clEnumValN(Target::cuda, "cuda", "PTX for NVIDIA GPUs")));
static cl::opt<Emit> emit(
    "emit", cl::desc("Print the IR at a stage instead of the artifact"),
    cl::init(Emit::artifact),
    cl::values(clEnumValN(Emit::lathe, "lathe", "the lathe dialect"),
               clEnumValN(Emit::linalg, "linalg",
                          "kernels in linalg with the planned schedule"),
               clEnumValN(Emit::llvm, "llvm",
                          "LLVM IR (cpu) or the NVVM kernels (cuda)"),
               clEnumValN(Emit::ptx, "ptx", "PTX (cuda)"),
               clEnumValN(Emit::kernels, "kernels",
                          "PTX/cubin, manifest.json and a C header in the "
                          "directory -o names (cuda)")));
static cl::opt<bool> report(
    "report",
    cl::desc("Print kernels per layer and each kernel's FLOPs and bytes"),
    cl::init(false));
static cl::opt<bool> train(
    "train",
    cl::desc("Also compile the spec's grad entry: loss and every parameter's "
             "gradient (training, in progress)"),
    cl::init(false));
static cl::opt<std::string> gpuChip(
    "gpu-chip", cl::desc("Chip for --emit=llvm|ptx with --target=cuda"),
    cl::init("sm_90"));

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::ParseCommandLineOptions(argc, argv, "lathe compiler\n");
  if (gpuChip != "sm_80" && gpuChip != "sm_90") {
    llvm::errs() << "lathec: error: --gpu-chip must be sm_80 or sm_90, got '"
                 << gpuChip << "'\n";
    return 1;
  }
  if (report) {
    if (emit != Emit::artifact) {
      llvm::errs() << "lathec: error: --report and --emit are exclusive\n";
      return 1;
    }
    emit = Emit::report;
  }
  if (emit == Emit::artifact && outputPath == "-") {
    llvm::errs() << "lathec: error: an artifact needs an output file: -o "
                    "OUT.lathe\n";
    return 1;
  }

  DialectRegistry registry;
  registerCompilerDialects(registry);
  MLIRContext ctx(registry);
  if (train && !(StringRef(inputPath).ends_with(".yaml") ||
                 StringRef(inputPath).ends_with(".yml"))) {
    llvm::errs() << "lathec: error: --train needs a YAML spec, got '"
                 << inputPath << "'\n";
    return 1;
  }
  OwningOpRef<ModuleOp> module =
      loadModel(inputPath, ctx, llvm::errs(), train);
  if (!module)
    return 1;

  // Write to a string first so that a failed compile leaves no partial file
  // behind and never truncates an existing one.
  std::string result;
  llvm::raw_string_ostream out(result);
  CompileOptions options;
  options.target = target;
  options.emit = emit;
  options.gpuChip = gpuChip;
  if (emit == Emit::kernels) {
    if (outputPath == "-") {
      llvm::errs() << "lathec: error: --emit=kernels needs a directory: -o DIR\n";
      return 1;
    }
    options.exportDir = outputPath;
    return failed(compile(*module, options, out, llvm::errs())) ? 1 : 0;
  }
  if (failed(compile(*module, options, out, llvm::errs())))
    return 1;

  std::string error;
  auto file = mlir::openOutputFile(outputPath, &error);
  if (!file) {
    llvm::errs() << "lathec: error: " << error << "\n";
    return 1;
  }
  file->os() << result;
  file->keep();
  return 0;
}
