//===- Targets.h - back ends and the artifact writer -------------*- C++ -*-===//
//
// Internal to lib/: the schedule read off a planned module, the CPU and CUDA
// back ends that compile its kernels, and the writer that packs all of it.
//
//===----------------------------------------------------------------------===//
#ifndef LATHE_LIB_TARGETS_H
#define LATHE_LIB_TARGETS_H

#include "lathe/Compiler.h"
#include "lathe/LatheOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/raw_ostream.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mlir::lathe {

enum class DType { f32, i32 };
// In the order of the lathe dialect's InitKind and the artifact's
// fb::InitKind, so each converts to the others by value.
enum class InitRule {
  zeros,
  ones,
  normal,
  constant,
  identity,
  uniform,
  log_index,
  dt_log_uniform
};

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  InitRule init;
  float std = 0.0f;
  float value = 0.0f; // InitRule::constant, or uniform's bound
};

struct StateInfo {
  std::string name;
  std::vector<int64_t> shape;
};

struct BufferInfo {
  enum class Kind { arena, param, state } kind = Kind::arena;
  uint32_t index = 0;   // into params or states
  uint64_t offset = 0;  // arena byte offset
  std::vector<int64_t> shape;
  DType dtype = DType::f32;
};

/// A `lathe.gemm` descriptor (cuda): the launch's args are then a, b, d and,
/// as present, c, bias and aux.
struct GemmInfo {
  int64_t m = 0, n = 0, k = 0;
  bool transA = false, transB = false;
  int64_t lda = 0, ldb = 0, ldd = 0;
  int64_t batch = 1, strideA = 0, strideB = 0, strideD = 0;
  bool hasC = false, hasBias = false, hasAux = false;
  GemmEpilogue epilogue = GemmEpilogue::none;
  GemmPrecision precision = GemmPrecision::f32;
};

struct LaunchInfo {
  std::string kernel;
  std::vector<uint32_t> args; // buffer ids
  std::vector<uint32_t> grid, block;
  uint64_t flops = 0;
  // An early exit (LoopUS halting): after this launch, if buffer
  // `exitStatus` holds phase 1, continue at launch `exitTo`; -1: none.
  int64_t exitStatus = -1;
  uint32_t exitTo = 0;
  std::optional<GemmInfo> gemm; // cuda: a cuBLASLt call, not a kernel
};

struct EntryInfo {
  std::string name;
  std::vector<uint32_t> inputs, outputs;
  std::vector<LaunchInfo> launches; // one per lathe.launch, kernel = func name
  std::vector<LaunchInfo> gpuLaunches; // cuda: the GPU kernels they launch
  uint64_t arenaBytes = 0;
};

struct ScheduleInfo {
  std::string model;
  int64_t vocab = 0, maxSeq = 0;
  // Parcae's sampled training depth (0, 0: fixed).
  int64_t sampledIterationsMean = 0, sampledIterationsMax = 0;
  // LoopFormer's shortcut training: the long trajectory's steps (0: none).
  int64_t shortcutIterations = 0;
  // LoopUS's deep supervision: the steps and how many are supervised per
  // training step (0, 0: none).
  int64_t supervisionSteps = 0, supervisedSteps = 0;
  // Sequences packed per training pass (lathec --train-batch).
  int64_t trainBatch = 1;
  std::vector<ParamInfo> params;
  std::vector<StateInfo> states;
  std::vector<BufferInfo> buffers;
  std::vector<EntryInfo> entries;
};

/// Floating-point operations of one call of a kernel function.
int64_t kernelFlops(func::FuncOp kernel);

/// Prints kernels per layer and each kernel's FLOPs and bytes (--report);
/// with `roofline` (the cuda target's options: where GEMMs go and their
/// precision), each kernel's GEMM FLOPs, arithmetic intensity and H100
/// roofline time, and the predicted forward and training-step times.
LogicalResult printReport(ModuleOp planned, llvm::raw_ostream &os,
                          const CudaKernelsOptions *roofline = nullptr);

/// Reads the schedule off a module after lathe-to-kernels.
FailureOr<ScheduleInfo> readSchedule(ModuleOp planned);

/// The early exits a planned entry takes (LoopUS halting): each launch
/// marked as an exit point whose rest of the loop writes no session state,
/// with the position (among the entry's launches) it continues at. Entries
/// that fill a KV cache take none: every iteration runs there.
std::vector<std::pair<LaunchOp, uint32_t>> loopExits(func::FuncOp entry);

/// CPU: compiles the kernels (LLVM dialect, after lathe-cpu-kernels) into an
/// ELF shared object exporting `lathe_kernel_<name>(void **args)`. With
/// `llvmIR`, prints the optimised LLVM IR instead.
FailureOr<std::string> buildCpuLibrary(ModuleOp kernels,
                                       llvm::raw_ostream *llvmIR);

/// CUDA: one GPU launch of a kernel function.
struct GpuLaunch {
  std::string kernel;            // PTX entry name ("gemm" for a GEMM)
  std::vector<unsigned> argIndex; // kernel-function argument per parameter
  std::vector<uint32_t> grid, block;
  std::optional<GemmInfo> gemm;  // a lathe.gemm: cuBLASLt's, not a kernel
};
/// Reads the GPU launches of every kernel function (after
/// lathe-cuda-kernels) and serializes its gpu.module to PTX.
LogicalResult buildCudaModule(ModuleOp kernels,
                              std::map<std::string, std::vector<GpuLaunch>> &launches,
                              std::string &ptx);

/// ptxas from PATH or the CUDA toolkit, if installed.
std::optional<std::string> findPtxas();

/// Assembles one chip's PTX into a cubin with `ptxas` (an error naming the
/// chip where ptxas rejects it).
FailureOr<std::string> assembleCubin(llvm::StringRef ptxas,
                                     llvm::StringRef chip, llvm::StringRef ptx,
                                     llvm::raw_ostream &errs);

/// cuda --report: runs `ptxas -v` on each chip's PTX and prints registers,
/// spill bytes and shared memory per kernel.
LogicalResult printPtxasReport(const std::map<std::string, std::string> &ptx,
                               llvm::raw_ostream &os, llvm::raw_ostream &errs);

/// cuda: writes the PTX (and cubin where ptxas is installed), manifest.json
/// and lathe_kernels.h into `dir`, for runtimes other than lathe's.
LogicalResult exportKernels(const ScheduleInfo &schedule,
                            const std::map<std::string, std::string> &ptx,
                            llvm::StringRef dir, llvm::raw_ostream &errs);

/// Packs the artifact. `cpuLibrary` holds the cpu kernels, or for cuda the
/// emulated GPU kernels; `ptx` (chip → text) is set for cuda, whose entries
/// carry their gpuLaunches as launches and launches as emulated launches;
/// `cubin` (chip → bytes) where ptxas assembled them.
std::string writeArtifact(const ScheduleInfo &schedule, Target target,
                          const std::string &cpuLibrary,
                          const std::map<std::string, std::string> &ptx,
                          const std::map<std::string, std::string> &cubin = {});

} // namespace mlir::lathe

#endif // LATHE_LIB_TARGETS_H
