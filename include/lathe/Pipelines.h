//===- Pipelines.h - lathe's pass pipelines as functions ---------*- C++ -*-===//
//
// The driver (lathec) and lathe-opt run the very same pipelines; lathe-opt
// exposes them as `--lathe-to-kernels`, `--lathe-cpu-kernels` and
// `--lathe-cuda-kernels`.
//
//===----------------------------------------------------------------------===//
#ifndef LATHE_PIPELINES_H
#define LATHE_PIPELINES_H

#include "mlir/Pass/PassManager.h"

#include <string>

namespace mlir::lathe {

/// lathe ops → linalg → kernels → planned arena (the `linalg` stage).
/// `gpuAttentionGrad`: attention's gradient as one kernel-level op
/// (lathe.fused_attention_grad), which only the cuda target lowers.
void buildLatheToKernelsPipeline(OpPassManager &pm,
                                 bool gpuAttentionGrad = false);

/// Bufferizes the extracted kernels into `(memref...) -> ()` functions.
void buildBufferizeKernelsPipeline(OpPassManager &pm);

/// Kernels (after lathe-extract-kernels) → LLVM dialect for the host CPU.
void buildCpuKernelsPipeline(OpPassManager &pm);

struct CudaKernelsOptions {
  std::string chip = "sm_90";
  std::string features = "+ptx80";
  /// Matrix products go to cuBLASLt as `lathe.gemm` descriptors
  /// (lathe-contraction-to-gemm), or stay lathe's own GPU kernels.
  bool gemmLibrary = true;
  /// The format cuBLASLt forms products in: f32, tf32, bf16 or f16.
  std::string gemmPrecision = "f32";
};
/// Kernels (after lathe-extract-kernels) → host functions launching
/// gpu.module kernels in the NVVM dialect for `chip` (ready to serialize).
void buildCudaKernelsPipeline(OpPassManager &pm,
                              const CudaKernelsOptions &options);

/// Kernels (after lathe-extract-kernels) → the same outlined GPU kernels as
/// buildCudaKernelsPipeline, each as a CPU function over a range of blocks
/// (lathe-emulate-gpu), lowered to the LLVM dialect like the cpu target.
void buildCudaEmulationKernelsPipeline(OpPassManager &pm,
                                       const CudaKernelsOptions &options);

/// Registers the pipelines for lathe-opt.
void registerLathePipelines();

} // namespace mlir::lathe

#endif // LATHE_PIPELINES_H
