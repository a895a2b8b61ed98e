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

// lathec's own options in three categories; --help shows these and hides
// the hundreds that linking LLVM and MLIR registers (--help-hidden lists all).
static cl::OptionCategory lathecCategory("lathec");
static cl::OptionCategory cudaCategory("CUDA (--target=cuda)");
static cl::opt<std::string> inputPath(cl::Positional, cl::Required,
                                      cl::desc("<spec.yaml | model.mlir>"),
                                      cl::cat(lathecCategory));
static cl::opt<std::string> outputPath("o", cl::desc("Output file"),
                                       cl::value_desc("file"),
                                       cl::init("-"), cl::cat(lathecCategory));
static cl::opt<Target> target(
    "target", cl::desc("Code generation target"), cl::init(Target::cpu),
    cl::values(clEnumValN(Target::cpu, "cpu", "native code for this CPU"),
               clEnumValN(Target::cuda, "cuda", "PTX for NVIDIA GPUs")),
    cl::cat(lathecCategory));
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
                          "directory -o names (cuda)")),
    cl::cat(lathecCategory));
static cl::opt<bool> report(
    "report",
    cl::desc("Print kernels per layer and each kernel's FLOPs and bytes"),
    cl::init(false), cl::cat(lathecCategory));
static cl::OptionCategory trainCategory("Training (--train)");
static cl::opt<bool> train(
    "train",
    cl::desc("Also compile the training entries: grad, accumulate_grad and "
             "optimizer_step (AdamW with global-norm clipping)"),
    cl::init(false), cl::cat(trainCategory));
static cl::opt<int64_t> trainSeq(
    "train-seq", cl::desc("The training window in tokens (default: max_seq)"),
    cl::init(0), cl::cat(trainCategory));
static cl::opt<int64_t> trainBatch(
    "train-batch",
    cl::desc("Sequences per grad/accumulate_grad pass, packed as rows so "
             "that the matrix products see batch * seq rows (default 1); "
             "lathe-run's --batch must be a multiple"),
    cl::init(1), cl::cat(trainCategory));
static cl::opt<bool> trainRecomputeMlp(
    "train-recompute-mlp",
    cl::desc("Recompute each MLP's hidden values in the backward instead of "
             "keeping them from the forward: less memory ([rows, width] two "
             "or three times per layer), one more up projection per MLP"),
    cl::init(false), cl::cat(trainCategory));
static cl::opt<double> adamBeta1("adam-beta1", cl::desc("AdamW beta1"),
                                 cl::init(0.9), cl::cat(trainCategory));
static cl::opt<double> adamBeta2("adam-beta2", cl::desc("AdamW beta2"),
                                 cl::init(0.95), cl::cat(trainCategory));
static cl::opt<double> adamEps("adam-eps", cl::desc("AdamW epsilon"),
                               cl::init(1e-8), cl::cat(trainCategory));
static cl::opt<double> weightDecay(
    "weight-decay",
    cl::desc("Decoupled weight decay (not for norm gains, biases and "
             "Parcae's injection)"),
    cl::init(0.1), cl::cat(trainCategory));
static cl::opt<double> clipNorm("clip",
                                cl::desc("Max global gradient norm"),
                                cl::init(1.0), cl::cat(trainCategory));
static cl::opt<std::string> optimizer(
    "optimizer",
    cl::desc("adamw, or muon: Muon (Newton-Schulz orthogonalised Nesterov "
             "momentum) for the blocks' 2-D matrices, AdamW for the rest"),
    cl::init("adamw"), cl::cat(trainCategory));
static cl::opt<double> muonMomentum("muon-momentum",
                                    cl::desc("Muon's momentum"),
                                    cl::init(0.95), cl::cat(trainCategory));
static cl::opt<double> muonLrScale(
    "muon-lr-scale",
    cl::desc("Muon's learning rate as a multiple of the scheduled AdamW one"),
    cl::init(20.0), cl::cat(trainCategory));
static cl::opt<int64_t> layerParallel(
    "layer-parallel",
    cl::desc("SNLP: run the forward entry as this many identity-Newton "
             "iterations over all layers at once (exact at the layer count)"),
    cl::init(0), cl::cat(lathecCategory));
static cl::opt<std::string> gemm(
    "gemm",
    cl::desc("cuda: matrix products through cuBLASLt (cublaslt, with bias, "
             "GELU/ReLU and residual epilogues) or lathe's own kernels "
             "(kernels)"),
    cl::init("cublaslt"), cl::cat(cudaCategory));
static cl::opt<std::string> gemmPrecision(
    "gemm-precision",
    cl::desc("cuda: the format cuBLASLt forms products in, accumulating in "
             "f32: f32, tf32, bf16 or f16"),
    cl::init("f32"), cl::cat(cudaCategory));
static cl::opt<std::string> gpuChip(
    "gpu-chip", cl::desc("Chip for --emit=llvm|ptx with --target=cuda"),
    cl::init("sm_90"), cl::cat(cudaCategory));

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions({&lathecCategory, &trainCategory, &cudaCategory});
  cl::ParseCommandLineOptions(argc, argv, "lathe compiler\n");
  if (gpuChip != "sm_80" && gpuChip != "sm_90") {
    llvm::errs() << "lathec: error: --gpu-chip must be sm_80 or sm_90, got '"
                 << gpuChip << "'\n";
    return 1;
  }
  if (gemm != "cublaslt" && gemm != "kernels") {
    llvm::errs() << "lathec: error: --gemm must be cublaslt or kernels, got '"
                 << gemm << "'\n";
    return 1;
  }
  if (gemmPrecision != "f32" && gemmPrecision != "tf32" &&
      gemmPrecision != "bf16" && gemmPrecision != "f16") {
    llvm::errs() << "lathec: error: --gemm-precision must be f32, tf32, bf16 "
                    "or f16, got '"
                 << gemmPrecision << "'\n";
    return 1;
  }
  if ((gemm.getNumOccurrences() || gemmPrecision.getNumOccurrences()) &&
      target != Target::cuda) {
    llvm::errs() << "lathec: error: --gemm and --gemm-precision apply to "
                    "--target=cuda (the cpu's products run on the host BLAS "
                    "in f32)\n";
    return 1;
  }
  if (gemm == "kernels" && gemmPrecision != "f32") {
    llvm::errs() << "lathec: error: --gemm-precision=" << gemmPrecision
                 << " needs --gemm=cublaslt: lathe's own GEMM kernels "
                    "multiply in f32\n";
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
  TrainOptions trainOptions;
  trainOptions.seq = trainSeq;
  trainOptions.batch = trainBatch;
  trainOptions.beta1 = adamBeta1;
  trainOptions.beta2 = adamBeta2;
  trainOptions.eps = adamEps;
  trainOptions.weightDecay = weightDecay;
  trainOptions.clip = clipNorm;
  trainOptions.optimizer = optimizer;
  trainOptions.muonMomentum = muonMomentum;
  trainOptions.muonLrScale = muonLrScale;
  auto bad = [](const char *what) {
    llvm::errs() << "lathec: error: " << what << "\n";
    return 1;
  };
  if (!(adamBeta1 >= 0 && adamBeta1 < 1) || !(adamBeta2 >= 0 && adamBeta2 < 1))
    return bad("--adam-beta1 and --adam-beta2 must be in [0, 1)");
  if (!(adamEps > 0) || !(weightDecay >= 0) || !(clipNorm > 0))
    return bad("--adam-eps and --clip must be > 0 and --weight-decay >= 0");
  if (trainBatch < 1)
    return bad("--train-batch must be >= 1");
  if (optimizer != "adamw" && optimizer != "muon")
    return bad("--optimizer must be adamw or muon");
  if (!(muonMomentum >= 0 && muonMomentum < 1) || !(muonLrScale > 0))
    return bad("--muon-momentum must be in [0, 1) and --muon-lr-scale > 0");
  if (layerParallel < 0)
    return bad("--layer-parallel must be >= 1 (0: off)");
  ExecutionOptions execution;
  execution.layerParallel = layerParallel;
  OwningOpRef<ModuleOp> module = loadModel(inputPath, ctx, llvm::errs(),
                                           train ? &trainOptions : nullptr,
                                           &execution);
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
  options.cuda.gemmLibrary = gemm == "cublaslt";
  options.cuda.gemmPrecision = gemmPrecision;
  options.recomputeMlp = trainRecomputeMlp;
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
