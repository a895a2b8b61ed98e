//===- Pipelines.cpp - lathe's pass pipelines --------------------*- C++ -*-===//
#include "lathe/Pipelines.h"

#include "Passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;
using namespace mlir::lathe;

void mlir::lathe::buildLatheToKernelsPipeline(OpPassManager &pm,
                                              bool gpuAttentionGrad) {
  pm.addPass(createPlanFusion());
  LowerToLinalgOptions lower;
  lower.gpuAttentionGrad = gpuAttentionGrad;
  pm.addPass(createLowerToLinalg(lower));
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createFormKernels());
  pm.addPass(createCSEPass());
  pm.addPass(createDedupKernels());
  pm.addPass(createPlanBuffers());
}

void mlir::lathe::buildBufferizeKernelsPipeline(OpPassManager &pm) {
  bufferization::OneShotBufferizePassOptions bufferize;
  bufferize.bufferizeFunctionBoundaries = true;
  bufferize.functionBoundaryTypeConversion =
      bufferization::LayoutMapOption::IdentityLayoutMap;
  pm.addPass(bufferization::createOneShotBufferizePass(bufferize));
  pm.addPass(bufferization::createDropEquivalentBufferResultsPass());
  // An in-place cache update leaves a copy of a slice onto itself; CSE makes
  // the two views one value and canonicalization drops the copy.
  pm.addPass(createCSEPass());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createExportKernels());
}

/// Loops on memrefs → LLVM dialect, bare pointers at kernel boundaries.
static void addCpuLowering(OpPassManager &pm) {
  pm.addPass(createApproximateMath());
  pm.addNestedPass<func::FuncOp>(createConvertLinalgToLoopsPass());
  pm.addPass(createSCFToControlFlowPass());
  pm.addPass(createConvertVectorToLLVMPass());
  pm.addPass(memref::createExpandStridedMetadataPass());
  pm.addPass(createLowerAffinePass());
  pm.addPass(createFinalizeMemRefToLLVMConversionPass());
  pm.addPass(createConvertMathToLLVMPass());
  pm.addPass(createArithToLLVMConversionPass());
  // Vectors built element by element (the emulated warp products') start
  // from ub.poison.
  pm.addPass(createUBToLLVMConversionPass());
  pm.addPass(createConvertControlFlowToLLVMPass());
  ConvertFuncToLLVMPassOptions func;
  // One pointer per buffer: kernels are called by the runtime, not by MLIR.
  func.useBarePtrCallConv = true;
  pm.addPass(createConvertFuncToLLVMPass(func));
  pm.addPass(createReconcileUnrealizedCastsPass());
}

/// Bufferized kernels → host functions with gpu.launch regions: the GPU
/// kernels after mapping to blocks and threads, shared by PTX and emulation.
static void addGpuMapping(OpPassManager &pm,
                          const CudaKernelsOptions &options) {
  buildBufferizeKernelsPipeline(pm);
  if (options.gemmLibrary) {
    ContractionToGemmOptions gemm;
    gemm.precision = options.gemmPrecision;
    pm.addPass(createContractionToGemm(gemm));
  }
  AttentionToGpuOptions attention;
  attention.precision = options.gemmPrecision;
  pm.addPass(createAttentionToGpu(attention));
  pm.addPass(createExpandFusedAttention());
  pm.addPass(createExpandScatterRows());
  pm.addNestedPass<func::FuncOp>(createConvertLinalgToParallelLoopsPass());
  // Views (a cache row at a dynamic position) become index arithmetic on
  // the base buffer, so every GPU kernel takes plain identity-layout buffers.
  pm.addPass(memref::createFoldMemRefAliasOpsPass());
  pm.addPass(createVectorizeGpuLoops());
  pm.addPass(createMapKernelsToGpu());
  pm.addNestedPass<func::FuncOp>(createGpuMapParallelLoopsPass());
  pm.addPass(createConvertParallelLoopToGpuPass());
  pm.addPass(createCanonicalizerPass());
  pm.addNestedPass<func::FuncOp>(createGpuLaunchSinkIndexComputationsPass());
}

void mlir::lathe::buildCpuKernelsPipeline(OpPassManager &pm) {
  buildBufferizeKernelsPipeline(pm);
  pm.addPass(createContractionToBlas());
  pm.addPass(createExpandFusedAttention());
  pm.addPass(createExpandScatterRows());
  pm.addPass(createOrderLoops());
  pm.addPass(createPartitionKernels());
  addCpuLowering(pm);
}

/// Mapped kernels → one gpu.module of outlined kernels. PTX and emulation
/// both start here, so the kernel names (the launch list's) agree.
static void addGpuOutlining(OpPassManager &pm,
                            const CudaKernelsOptions &options) {
  addGpuMapping(pm, options);
  pm.addPass(createGpuKernelOutliningPass());
  pm.addPass(createMergeGpuModules());
}

void mlir::lathe::buildCudaKernelsPipeline(OpPassManager &pm,
                                           const CudaKernelsOptions &options) {
  addGpuOutlining(pm, options);
  pm.addPass(createLowerAffinePass());
  pm.addPass(createSCFToControlFlowPass());
  GpuNVVMAttachTargetOptions target;
  target.chip = options.chip;
  target.features = options.features;
  target.optLevel = 3;
  pm.addPass(createGpuNVVMAttachTarget(target));
  // Attention's warp products (nvgpu.mma.sync) to NVVM's mma intrinsics.
  pm.addNestedPass<gpu::GPUModuleOp>(createConvertNVGPUToNVVMPass());
  ConvertGpuOpsToNVVMOpsOptions nvvm;
  nvvm.useBarePtrCallConv = true;
  pm.addNestedPass<gpu::GPUModuleOp>(createConvertGpuOpsToNVVMOps(nvvm));
  pm.addNestedPass<gpu::GPUModuleOp>(createReconcileUnrealizedCastsPass());
}

void mlir::lathe::buildCudaEmulationKernelsPipeline(
    OpPassManager &pm, const CudaKernelsOptions &options) {
  addGpuOutlining(pm, options);
  pm.addPass(createEmulateGpu());
  addCpuLowering(pm);
}

void mlir::lathe::registerLathePipelines() {
  PassPipelineRegistration<>(
      "lathe-to-kernels",
      "Lower lathe ops to linalg, form kernels and plan the arena",
      [](OpPassManager &pm) { buildLatheToKernelsPipeline(pm); });
  PassPipelineRegistration<>(
      "lathe-cpu-kernels",
      "Bufferize extracted kernels and lower them to the LLVM dialect",
      buildCpuKernelsPipeline);
  struct CudaPipelineOptions
      : public PassPipelineOptions<CudaPipelineOptions> {
    Option<std::string> chip{*this, "chip", llvm::cl::desc("GPU chip"),
                             llvm::cl::init("sm_90")};
    Option<std::string> gemm{
        *this, "gemm",
        llvm::cl::desc("Matrix products: cublaslt (lathe.gemm) or kernels"),
        llvm::cl::init("cublaslt")};
    Option<std::string> gemmPrecision{
        *this, "gemm-precision",
        llvm::cl::desc("cuBLASLt's product format: f32, tf32, bf16, f16"),
        llvm::cl::init("f32")};
    CudaKernelsOptions get() const {
      CudaKernelsOptions options;
      options.chip = chip;
      options.gemmLibrary = gemm != "kernels";
      options.gemmPrecision = gemmPrecision;
      return options;
    }
  };
  PassPipelineRegistration<CudaPipelineOptions>(
      "lathe-cuda-emulation-kernels",
      "The cuda kernels after mapping to blocks and threads, as CPU code",
      [](OpPassManager &pm, const CudaPipelineOptions &opts) {
        buildCudaEmulationKernelsPipeline(pm, opts.get());
      });
  PassPipelineRegistration<CudaPipelineOptions>(
      "lathe-cuda-kernels",
      "Bufferize extracted kernels, map them to the GPU and lower to NVVM",
      [](OpPassManager &pm, const CudaPipelineOptions &opts) {
        buildCudaKernelsPipeline(pm, opts.get());
      });
}
