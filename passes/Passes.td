//===- Passes.td - lathe passes ------------------------------*- tablegen -*-===//
//
// The passes in the order the pipelines run them (training artifacts start
// with lathe-differentiate):
//   lathe-differentiate → lathe-plan-fusion → lathe-lower-to-linalg → lathe-form-kernels → lathe-plan-buffers
//   → lathe-extract-kernels → (bufferize) → lathe-export-kernels
//   → cpu: loops → LLVM        cuda: lathe-map-kernels-to-gpu → NVVM → PTX
//
//===----------------------------------------------------------------------===//

#ifndef LATHE_PASSES_TD
#define LATHE_PASSES_TD

include "mlir/Pass/PassBase.td"

def Differentiate : Pass<"lathe-differentiate", "::mlir::ModuleOp"> {
  let summary = "Append the backward graph, in lathe ops, to loss functions.";
  let description = [{
    Each `func.func` marked `lathe.differentiate` must return one
    tensor<1xf32>, the loss. The pass seeds the loss's cotangent with 1,
    visits the function's ops in reverse, and asks each op for the
    cotangents of its operands through `VjpOpInterface`; cotangents that
    reach one value from several uses are summed with `lathe.add`, and those
    that reach a `lathe.weight` are the parameter's gradient. The function
    then returns the loss followed by one gradient per `lathe.param` of the
    module, in declaration order (zeros for a parameter the loss does not
    depend on), and carries `lathe.gradients`, the parameters' names. With
    `lathe.accumulate_gradients` as well, it returns the loss alone and adds
    each gradient into the session state `grad.<parameter>` instead
    (`lathe.cache_read`, `lathe.add`, `lathe.assign`): gradient
    accumulation over the sequences of a batch.

    An op on the path from the parameters to the loss that has no VJP, or
    whose VJP is not available for its attributes, is an error at that op.

    Each `lathe.mlp` of the function is first rebuilt to also return its
    hidden values (`saved`), which its VJP then reads: the forward kernel
    writes [rows, width] two or three times more, and the backward skips a
    product as large as the up projection. `recompute-mlp` keeps the MLPs
    as they are, for memory.

    ```mlir
    // Before:
    func.func @grad(%x: tensor<8x64xf32>, %t: tensor<8xi32>) -> tensor<1xf32>
        attributes {lathe.differentiate} {
      %w = lathe.weight @"head.weight" : tensor<256x64xf32>
      %y = lathe.linear %x, %w : tensor<8x64xf32>, tensor<256x64xf32> -> tensor<8x256xf32>
      %l = lathe.cross_entropy %y, %t : tensor<8x256xf32>, tensor<8xi32> -> tensor<1xf32>
      return %l : tensor<1xf32>
    }
    // After: returns (%l, d loss / d head.weight):
    //   %dy = lathe.cross_entropy_grad %y, %t, %one ...
    //   %dw = lathe.matmul %dy, %x {transpose_lhs} ...
    ```
  }];
  let options = [
    Option<"recomputeMlp", "recompute-mlp", "bool", /*default=*/"false",
           "Recompute MLPs' hidden values in the backward instead of saving them">
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::linalg::LinalgDialect",
                           "::mlir::tensor::TensorDialect"];
}

def PlanFusion : Pass<"lathe-plan-fusion", "::mlir::ModuleOp"> {
  let summary = "Decide which architecture-level ops run as one kernel.";
  let description = [{
    Fusion is decided on the `lathe` ops, where the structure of a decoder is
    still visible; `lathe-lower-to-linalg` carries the decision onto every
    op it creates and `lathe-form-kernels` outlines each group as one
    kernel. Ops of one group get the same `lathe.fusion_group` integer.

    The rules, in the order they apply:
    - a norm whose every user is a `lathe.linear` or `lathe.mlp` joins its
      users: the normalised rows never leave the kernel that consumes them;
    - `lathe.linear` ops on the same input join one another (Q, K and V);
    - `lathe.rope` joins the linear that produced its input (RoPE in the
      projection's epilogue);
    - `lathe.cache_write` joins the op that produced the rows it stores;
    - a residual `lathe.add` joins the projection it will be folded into,
      and `lathe.phase_rotate` / `lathe.dc_inject` (the Three-Phase
      Transformer's rewrites of the stream) join the op that produced the
      stream: the O projection's kernel, the embedding's kernel;
    - `lathe.parcae_inject` joins the op that produced the looped state
      (the core's last MLP), or `B e` on the first iteration;
    - a `lathe.depth_attention` (Attention Residuals' routing) whose only
      user is a norm joins it: routing, norm and projections are one kernel;
    - `lathe.attention` stays alone: it becomes one fused kernel of its own.

    A decoder layer becomes four kernels: norm+QKV+RoPE(+cache writes),
    attention, the output projection with the residual, and norm+MLP with
    the residual.

    ```mlir
    %h = lathe.rms_norm %x, %g {eps = 1.0e-05 : f64, lathe.fusion_group = 0 : i64} ...
    %q = lathe.linear %h, %wq {lathe.fusion_group = 0 : i64} ...
    %k = lathe.linear %h, %wk {lathe.fusion_group = 0 : i64} ...
    %r = lathe.rope %q {..., lathe.fusion_group = 0 : i64} ...
    %a = lathe.attention %r, %k, %v {..., lathe.fusion_group = 1 : i64} ...
    ```
  }];
}

def LowerToLinalg : Pass<"lathe-lower-to-linalg", "::mlir::ModuleOp"> {
  let summary = "Lower the lathe decoder ops to linalg on tensors.";
  let description = [{
    Rewrites every architecture-level op (the decoder pieces and the
    family ops: `lathe.phase_rotate`, `lathe.dc_inject`,
    `lathe.depth_attention`, `lathe.parcae_inject`, LoopFormer's
    conditioning ops) into `linalg.generic` ops on tensors, leaving
    `lathe.weight` and `lathe.param` in place. Attention becomes one
    `lathe.fused_attention` (its online softmax is no structured op); with
    `gpu-attention-grad` (the cuda target), its gradient with the forward's
    output becomes one `lathe.fused_attention_grad`.
    Residual adds fold into the GEMM before them when nothing else reads the
    product. Every op created carries the source op's `lathe.fusion_group`.

    ```mlir
    // before
    %y = lathe.linear %x, %w : tensor<8x16xf32>, tensor<32x16xf32> -> tensor<8x32xf32>
    // after
    %e = tensor.empty() : tensor<8x32xf32>
    %z = linalg.fill ins(%c0 : f32) outs(%e : tensor<8x32xf32>) -> tensor<8x32xf32>
    %y = linalg.generic {... iterator_types = ["parallel", "parallel", "reduction"]}
        ins(%x, %w : ...) outs(%z : tensor<8x32xf32>) {...}
    ```
  }];
  let options = [
    Option<"gpuAttentionGrad", "gpu-attention-grad", "bool", /*default=*/"false",
           "Attention's gradient (with the forward's output) becomes one "
           "lathe.fused_attention_grad, which the cuda target lowers to "
           "kernels with no [T, T] tensor; else structured ops">
  ];
  let dependentDialects = ["::mlir::linalg::LinalgDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect"];
}

def FormKernels : Pass<"lathe-form-kernels", "::mlir::ModuleOp"> {
  let summary = "Group linalg ops into kernels with explicit inputs and outputs.";
  let description = [{
    Target-independent kernel formation. The destination-style ops of an
    entry (structured ops and `lathe.fused_attention`) that share a
    `lathe.fusion_group`, or a single op without one, together with the
    `tensor.empty`/`linalg.fill` that initialise their outputs and the
    constants their bodies use, are outlined into a private `func.func`
    marked `lathe.kernel`, in destination-passing form (operands, then one
    buffer per result). The entry keeps a `lathe.launch` at the group's last
    op. Values used only inside a group are still results of the kernel,
    which the entry never reads: the arena gives them space for that launch
    only. A group that some outside op reads before its last op is outlined
    one op per kernel instead. Tensor reshapes stay in the entry: they are
    views of a planned buffer, not kernels.

    ```mlir
    %y = lathe.launch @forward_k0(%x, %w)
        : (tensor<8x16xf32>, tensor<32x16xf32>) -> tensor<8x32xf32>
    func.func private @forward_k0(%x: tensor<8x16xf32>, %w: tensor<32x16xf32>,
        %out: tensor<8x32xf32>) -> tensor<8x32xf32> attributes {lathe.kernel}
    ```

    A `lathe.cache_write` is expanded here into a copy into a slice of the
    cache that goes straight back, and outlined as a kernel whose result is
    `tied` to the cache operand: it writes the cache's own storage.
  }];
  let dependentDialects = ["::mlir::lathe::LatheDialect",
                           "::mlir::linalg::LinalgDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::arith::ArithDialect"];
}

def ExpandScatterRows : Pass<"lathe-expand-scatter-rows", "::mlir::ModuleOp"> {
  let summary = "Turn bufferized lathe.scatter_add_rows into a loop nest.";
  let description = [{
    Runs on kernels after bufferization, for every target. The result is an
    `scf.parallel` over groups of w columns (w = 8, 4, 2 or 1, the largest
    that divides the width) whose body walks the rows in order and adds
    each into the row its index names, w columns at a time as vectors.
    Iterations own disjoint columns, so repeated indices need no atomics:
    the parallel loop is what the CPU partitioner splits across threads
    and what `lathe-map-kernels-to-gpu` maps to GPU threads.

    ```mlir
    lathe.scatter_add_rows %tok, %dx into %g
        : memref<8xi32>, memref<8x64xf32>, memref<256x64xf32>
    // becomes
    scf.parallel (%c) = (%c0) to (%c8) step (%c1) {
      scf.for %t = %c0 to %c8 step %c1 {
        %v = memref.load %tok[%t] : memref<8xi32>
        ...
        %a = vector.load %g[%row, %col] : memref<256x64xf32>, vector<8xf32>
        %b = vector.load %dx[%t, %col] : memref<8x64xf32>, vector<8xf32>
        vector.store %sum, %g[%row, %col] : memref<256x64xf32>, vector<8xf32>
      }
    }
    ```
  }];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::vector::VectorDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect"];
}

def ExpandFusedAttention : Pass<"lathe-expand-fused-attention", "::mlir::ModuleOp"> {
  let summary = "Turn bufferized lathe.fused_attention into one online-softmax loop nest.";
  let description = [{
    Runs on kernels after bufferization, for every target. The result is an
    `scf.parallel` over (head, query row) whose body walks the visible keys
    once: a `vector<head_dim>` dot product gives the score, and a running
    maximum, denominator and value sum (an `scf.for` carrying them) are
    rescaled as the maximum grows. The loop over keys stops at the query's
    own position, so causal masking costs nothing and decoding at position p
    reads p + 1 cache rows. No score is ever stored.

    The parallel loop is what the CPU partitioner splits across threads and
    what `lathe-map-kernels-to-gpu` maps to blocks and threads.

    ```mlir
    lathe.fused_attention %q, %k, %v into %o {heads = 4 : i64, kv_heads = 2 : i64}
        : memref<16x64xf32>, memref<16x32xf32>, memref<16x32xf32>, memref<16x64xf32>
    // becomes
    scf.parallel (%h, %i) = (%c0, %c0) to (%c4, %c16) step (%c1, %c1) {
      %qv = vector.load %q[%i, %hoff] : memref<16x64xf32>, vector<16xf32>
      %r:3 = scf.for %j = %c0 to %n step %c1 iter_args(%m = ..., %l = ..., %acc = ...)
          -> (f32, f32, vector<16xf32>) { ... }
      vector.store %out, %o[%i, %hoff] : memref<16x64xf32>, vector<16xf32>
    }
    ```
  }];
  let dependentDialects = ["::mlir::scf::SCFDialect",
                           "::mlir::vector::VectorDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect"];
}

def ApproximateMath : Pass<"lathe-approximate-math", "::mlir::ModuleOp"> {
  let summary = "Polynomial exp and tanh, so that loops using them vectorize.";
  let description = [{
    CPU only. `math.exp` and `math.tanh` become MLIR's polynomial
    approximations (a few ULP) instead of calls to libm, which LLVM cannot
    vectorize; softmax, SiLU and GELU then run on full vectors. sin and cos
    stay exact: RoPE's angles reach thousands of radians, where the
    approximations' range reduction loses precision.

    ```mlir
    %e = math.exp %x : f32   // becomes arith/math.fma/bitcast arithmetic
    ```
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::vector::VectorDialect"];
}

def EmulateGpu : Pass<"lathe-emulate-gpu", "::mlir::ModuleOp"> {
  let summary = "Turn outlined GPU kernels into CPU functions over a range of "
                "blocks.";
  let description = [{
    The GPU kernels are checked on machines without a GPU by running them on
    the CPU, through the same launch list the cuda device runs: after
    outlining (`gpu.func` in the merged `gpu.module`) and before any NVVM
    conversion, each kernel becomes a `func.func` of the same name that takes
    the kernel's buffers, then the launch's grid and block sizes (x, y, z),
    then `part` and `parts`. It runs blocks `[part * n / parts,
    (part + 1) * n / parts)` of the `n` in the grid, one after another, and
    in each block every thread (threadIdx.x innermost, so consecutive
    iterations touch consecutive addresses), with block and thread ids and
    dimensions bound to the loop counters and arguments. Blocks are
    independent on a GPU, so a runtime may run the parts on several threads.

    Barriers at the top of a kernel split it into phases: every thread of
    the block runs one phase (its own thread loop) before any runs the
    next, which is what `gpu.barrier` guarantees. A `scf.for` at the top of
    the kernel with barriers in its body (a loop over tiles) is split too:
    it runs once per block, with the thread loops of its body's phases
    inside it; its bounds must be the same for every thread (they are
    cloned at block level, and a bound that depends on the thread id is
    refused), and its loop-carried values are kept per thread in buffers
    of the block. Workgroup memory attributions become one buffer shared
    by a block's phases. Every buffer is made once, before the loop over
    blocks, and reused by each block of the part (a block writes before it
    reads, as on a GPU), so the stack does not grow with the blocks. A value made in one phase and used in a
    later one is recomputed there when it is a pure function of ids, sizes,
    constants, arguments and a split loop's counter, and otherwise kept per
    thread in a buffer of the block (scalars and vectors).

    A warp's matrix product (`nvgpu.mma.sync`, m16n8k8 with tf32 fragments
    into f32, which lathe-attention-to-gpu makes) splits like a barrier: it
    starts a phase, its A and B fragments are kept per thread, and each
    lane computes its own D fragment from its warp's 32 A and B fragments,
    placed as the PTX ISA's fragment layout places them, with each input
    cut to tf32's 19 bits as the tensor core reads it. So a fragment that
    the kernel builds wrongly gives wrong emulated results, as on a GPU.
    Barriers and products inside other control flow, other products,
    shuffles, reductions and private attributions are refused rather than
    run wrongly. The host functions that launched the kernels
    and the `gpu.module` are erased: the runtime launches the kernels
    itself.

    ```mlir
    gpu.module @lathe_kernels {
      gpu.func @k(%m: memref<64xf32>) kernel { %bx = gpu.block_id x ... }
    }
    // becomes
    func.func @k(%m: memref<64xf32>, %gx: index, %gy: index, %gz: index,
                 %sx: index, %sy: index, %sz: index, %part: index,
                 %parts: index) attributes {lathe.kernel} {
      scf.for %b = %first to %last step %c1 {   // %bx, %by, %bz from %b
        scf.for %tz ... { scf.for %ty ... { scf.for %tx ... { body } } } }
    }
    ```
  }];
  let dependentDialects = ["::mlir::scf::SCFDialect", "::mlir::gpu::GPUDialect",
                           "::mlir::func::FuncDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::vector::VectorDialect"];
}

def OrderLoops : Pass<"lathe-order-loops", "::mlir::ModuleOp"> {
  let summary = "Put each CPU kernel's unit-stride loop innermost.";
  let description = [{
    CPU only, on bufferized kernels, before partitioning. A structured op's
    loops lower in the order of its iterators, and LLVM vectorizes only the
    innermost loop, so a sum over rows (a bias or a norm's gain gradient,
    `(col, row)` with the rows reduced) walks its input a column at a time,
    stride the row length, and is not vectorized: 0.8 GB/s on GPT-2's bias
    gradients. This pass scores each loop by the elements of the operands
    whose last, unit-stride dimension it indexes, and moves the best one
    innermost (the others keep their order). A column's sum then runs as
    vector adds of whole rows; results move by float rounding only, as the
    CPU kernels already let LLVM reassociate sums.

    ```mlir
    linalg.generic {indexing_maps = [affine_map<(c, r) -> (r, c)>,
                                     affine_map<(c, r) -> (c)>],
                    iterator_types = ["parallel", "reduction"]}
        ins(%x : memref<256x768xf32>) outs(%y : memref<768xf32>)
    // becomes (r, c) with iterator_types = ["reduction", "parallel"]
    ```
  }];
}

def PartitionKernels : Pass<"lathe-partition-kernels", "::mlir::ModuleOp"> {
  let summary = "Split kernels' outermost loops across CPU threads.";
  let description = [{
    CPU only, on bufferized kernels. A kernel whose structured ops each have
    a parallel loop over the rows of their output (the first loop, or an
    inner one that lathe-order-loops moved), with the same number of rows N,
    is lowered to loops here and takes two more arguments,
    `part` and `parts`: it computes rows [part * ceil(N / parts), ...) of
    every op. Each op writes only its own rows, so the parts are independent
    and the runtime runs them on its threads. Kernels that call the host BLAS
    (which has its own threads) or update a slice in place are left whole.

    ```mlir
    func.func @k(%x: memref<64x64xf32>, %y: memref<64x64xf32>)
    // becomes
    func.func @k(%x: memref<64x64xf32>, %y: memref<64x64xf32>, %part: index, %parts: index)
    //   scf.for %i = %lo to %hi { ... }
    ```
  }];
  let options = [
    Option<"minWork", "min-work", "int64_t", /*default=*/"65536",
           "Fewest loop iterations (all ops together) worth a fork-join">
  ];
  let dependentDialects = ["::mlir::scf::SCFDialect", "::mlir::arith::ArithDialect",
                           "::mlir::affine::AffineDialect"];
}

def DedupKernels : Pass<"lathe-dedup-kernels", "::mlir::ModuleOp"> {
  let summary = "Keep one copy of kernels that are the same code.";
  let description = [{
    Layers of the same shape give kernels that differ only in the buffers
    they are launched with, and prefill buckets repeat the per-token
    kernels. Kernels whose bodies and types are identical are merged into the
    first of them and every launch is redirected, so each distinct kernel is
    compiled once.

    ```mlir
    %a = lathe.launch @forward_k3(%x, %w0) ...
    %b = lathe.launch @forward_k24(%y, %w1) ...   // same body as k3
    // becomes
    %b = lathe.launch @forward_k3(%y, %w1) ...
    ```
  }];
}

def PlanBuffers : Pass<"lathe-plan-buffers", "::mlir::ModuleOp"> {
  let summary = "Plan every activation of an entry into one static arena.";
  let description = [{
    Assigns each entry argument, each `lathe.launch` result and each reshape
    an offset in one arena per entry, reusing space once a value is dead
    (first fit over live ranges, 64-byte aligned). Returned values stay live
    to the end. Reshapes alias their source. Records `lathe.offset` on
    arguments, `offsets` on launches, `lathe.offset` on reshapes and
    `lathe.arena_bytes` on the entry.

    ```mlir
    func.func @forward(%t: tensor<8xi32> {lathe.offset = 0 : i64}) -> ...
        attributes {lathe.arena_bytes = 4160 : i64} {
      %x = lathe.launch @forward_k0(%t, %w) {offsets = array<i64: 64>} ...
    ```
  }];
  let options = [
    Option<"alignment", "alignment", "int64_t", /*default=*/"64",
           "Byte alignment of every planned buffer">
  ];
}

def ExtractKernels : Pass<"lathe-extract-kernels", "::mlir::ModuleOp"> {
  let summary = "Keep only the kernel functions, for a target back end.";
  let description = [{
    Erases entry functions and `lathe.param` declarations so that a target
    compiles exactly the kernels. The schedule that called them has already
    been recorded (the artifact writer reads it before this pass runs).

    ```mlir
    // after: only
    func.func private @forward_k0(...) attributes {lathe.kernel} {...}
    ```
  }];
}

def ExportKernels : Pass<"lathe-export-kernels", "::mlir::ModuleOp"> {
  let summary = "Give bufferized kernels their external ABI.";
  let description = [{
    After bufferization and `drop-equivalent-buffer-results`, every kernel is
    `(memref...) -> ()`. This pass checks that and makes the kernels public,
    so that the CPU back end exports them and the GPU mapping keeps them.

    ```mlir
    func.func @forward_k0(%x: memref<8x16xf32>, %w: memref<32x16xf32>,
                          %out: memref<8x32xf32>) attributes {lathe.kernel}
    ```
  }];
}

def MapKernelsToGpu : Pass<"lathe-map-kernels-to-gpu", "::mlir::ModuleOp"> {
  let summary = "Tile the parallel loops of kernels for blocks and threads.";
  let description = [{
    Runs on `scf.parallel` loops produced from linalg. The innermost parallel
    dimensions are tiled so a block holds up to `max-threads` threads
    (tiles divide the static sizes, so no bounds checks are needed); the
    outer loop is then mapped to blocks and the inner one to threads, ready
    for `convert-parallel-loops-to-gpu`.

    ```mlir
    scf.parallel (%i, %j) = (%c0, %c0) to (%c64, %c256) step (%c1, %c1) {...}
    // becomes an outer loop over blocks and an inner one over 64x4 threads
    ```
  }];
  let options = [
    Option<"maxThreads", "max-threads", "int64_t", /*default=*/"256",
           "Most threads per block">
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect", "::mlir::scf::SCFDialect"];
}

def MergeGpuModules : Pass<"lathe-merge-gpu-modules", "::mlir::ModuleOp"> {
  let summary = "Gather every outlined GPU kernel into one gpu.module.";
  let description = [{
    `gpu-kernel-outlining` makes one `gpu.module` per launch. The artifact
    carries one PTX module per chip, so this pass moves every `gpu.func` into
    a single `gpu.module @lathe_kernels`, renaming each after its old module
    (which outlining made unique), and retargets the `gpu.launch_func` ops.

    ```mlir
    gpu.launch_func @forward_k0_kernel::@forward_k0_kernel ...
    // becomes
    gpu.launch_func @lathe_kernels::@forward_k0_kernel ...
    ```
  }];
  let dependentDialects = ["::mlir::gpu::GPUDialect"];
}

def ContractionToBlas : Pass<"lathe-contraction-to-blas", "::mlir::ModuleOp"> {
  let summary = "Run (batched) matrix products through the host's BLAS.";
  let description = [{
    CPU only, on bufferized kernels. A `linalg.generic` that accumulates
    `a * b` over one reduction dimension, whose operands are row-major
    buffers that a GEMM can address (one unit stride per matrix), becomes a
    call to `lathe_host_gemm`: M, N, K, transposes, leading dimensions, an
    optional batch dimension with its strides (the right operand may be
    shared by `group` consecutive batches, as GQA's K/V heads are), and
    whether to accumulate. A zero `linalg.fill` of the output just before it
    is folded into the call. The runtime provides `lathe_host_gemm` (OpenBLAS
    today), so linear layers run at BLAS speed.

    ```mlir
    // y[t, o] += x[t, i] * w[o, i]  becomes
    func.call @lathe_host_gemm(%x, %w, %y, %c64, %c256, %c64, %c0, %c1, ...)
    ```
  }];
  let dependentDialects = ["::mlir::func::FuncDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::arith::ArithDialect"];
}

def ContractionToGemm : Pass<"lathe-contraction-to-gemm", "::mlir::ModuleOp"> {
  let summary = "Give a kernel's matrix products to the GEMM library, with their epilogues.";
  let description = [{
    cuda only, on bufferized kernels. A contraction that a GEMM can address
    (the view `lathe-contraction-to-blas` uses; the right operand must not be
    shared between batches) on buffers that are the kernel's own arguments
    becomes a `lathe.gemm` on the host side of the kernel, between the GPU
    launches of the rest, and the runtime calls cuBLASLt with it. Around the
    product, it folds:

    - a zero `linalg.fill` of the output just before it (beta = 0);
    - a `linalg.copy` into the output just before it (C = the copy's
      source, beta = 1): the residual add through the C matrix;
    - otherwise accumulation in place (C = D);
    - a bias added along rows right after it, and then an elementwise
      generic that computes GELU (tanh form) or ReLU, found by evaluating
      its body at sample points, when the value they replace is read by
      nothing else (the kernel's `lathe.unread_args`); the value before the
      activation becomes the GEMM's `aux` output when it is read.

    ```mlir
    linalg.fill ins(%zero : f32) outs(%h : memref<64x256xf32>)
    linalg.generic ... ins(%x, %w) outs(%h)       // h += x w^T
    linalg.generic ... ins(%h, %b) outs(%hb)      // hb = h + b
    linalg.generic ... ins(%hb) outs(%g)          // g = gelu(hb)
    // becomes
    lathe.gemm %x, %w into %g bias %b aux %hb epilogue(gelu) {m = 64 ...}
    ```
  }];
  let options = [
    Option<"precision", "precision", "std::string", /*default=*/"\"f32\"",
           "The format products are formed in: f32, tf32, bf16 or f16 "
           "(always accumulated in f32)">
  ];
  let dependentDialects = ["::mlir::lathe::LatheDialect"];
}

def AttentionToGpu : Pass<"lathe-attention-to-gpu", "::mlir::ModuleOp"> {
  let summary = "Attention kernels (and its gradient's) whose block's threads share keys through shared memory.";
  let description = [{
    cuda only, on bufferized kernels, before `lathe-expand-fused-attention`;
    the same online softmax, with the threads of a block working together.

    Decode (one query row and a position): a `gpu.launch` of one block per
    head and T threads (128, or fewer so that T x head_dim partial sums fit
    in 32 KiB of shared memory). Thread t runs the online softmax over the
    visible keys t, t + T, ... and leaves its running maximum, denominator
    and value sum in workgroup memory; after a `gpu.barrier` each thread
    computes the common maximum and denominator and combines the T partial
    sums for its head_dim columns. Softmax and softpick combine the same
    way, because both partial sums scale with e^-m.

    Many rows, no position (forward, prefill, training): a block per (head,
    tile of up to 64 query rows), a thread per row. A loop over key tiles
    (up to 64 keys, K and V tiles within 32 KiB) runs to the block's last
    visible key: the threads load the K and V tile into workgroup memory
    together (consecutive threads, consecutive columns), meet at a barrier,
    each scores its row against the tile with masking past its position,
    and meet again before the next tile. Each K/V element is read from
    global memory once per block rather than once per row. Rows of a last,
    partial tile compute on a clamped row and store nothing.

    Attention's gradient (`lathe.fused_attention_grad`): two launches
    tiled like the forward, so no [T, T] tensor exists. Rows: a block per
    (head, tile of up to 64 query rows), a thread per row; a loop over K
    tiles takes each row's maximum and normaliser online, a loop over K
    and V tiles forms each pair's weight and score gradient and sums dQ;
    each row leaves its shift, normaliser and rowsum(dO * o) in the op's
    stats workspace. Keys: a block per (K/V head, tile of up to 64 keys), a
    thread per key; a loop over (query head of the group, tile of the rows
    that may see the block's keys) stages Q, dO and those rows' stats in
    shared memory, and each key sums its dK and dV (the group's heads add
    up in the thread, without atomics).

    With `precision` below f32 (lathec's `--gemm-precision` tf32, bf16 or
    f16) and head_dim a multiple of 8, many-row attention runs its two
    products on tensor cores: a warp per 16 query rows, `nvgpu.mma.sync`
    m16n8k8 with tf32 fragments (bf16 and f16 also take tf32 here, which
    loses less), f32 accumulators. Per key tile of up to 32 keys, each warp
    forms its rows' scores Q K^T from Q's fragments (scaled and rounded to
    tf32 once, kept in registers) and the K tile in shared memory, and
    leaves them in shared memory; after a barrier a thread per row takes
    the tile's softmax step (new maximum, rescale, weights rounded to tf32
    in place of the scores, denominator), and after another each warp
    rescales its output fragments and adds P V from the V tile. The masks,
    windows, GQA and softpick are the CUDA-core kernel's.

    ```mlir
    // --lathe-attention-to-gpu=precision=tf32, 64 rows, head_dim 16
    gpu.launch ... threads(%t, ...) in (%c128, %c1, %c1) workgroup(...) {
      %q0 = vector.from_elements ... : vector<4x1xf32>
      %o:2 = scf.for %k0 = ... iter_args(...) -> (vector<2x2xf32>, vector<2x2xf32>) {
        ...
        %s = nvgpu.mma.sync(%q0, %kf, %acc) {mmaShape = [16, 8, 8], tf32Enabled}
            : (vector<4x1xf32>, vector<2x1xf32>, vector<2x2xf32>) -> vector<2x2xf32>
        ...
      }
    }
    ```

    ```mlir
    lathe.fused_attention %q, %k, %v at %pos into %o {heads = 4 : i64, kv_heads = 2 : i64}
        : memref<1x64xf32>, memref<32x32xf32>, memref<32x32xf32>, memref<1x64xf32>, memref<1xi32>
    // becomes
    gpu.launch blocks(%h, ...) in (%c4, %c1, %c1) threads(%t, ...) in (%c32, %c1, %c1)
        workgroup(%m : memref<32xf32, #gpu.address_space<workgroup>>, ...) {
      %r:3 = scf.for %j = %t to %visible step %c32 iter_args(...) { ... }
      memref.store %r#0, %m[%t] ...
      gpu.barrier
      ...
    }
    ```
  }];
  let options = [
    Option<"precision", "precision", "std::string", /*default=*/"\"f32\"",
           "The format products are formed in (f32, tf32, bf16 or f16): "
           "below f32, many-row attention uses tensor cores in tf32">
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect",
                           "::mlir::nvgpu::NVGPUDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::vector::VectorDialect",
                           "::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::memref::MemRefDialect"];
}

def VectorizeGpuLoops : Pass<"lathe-vectorize-gpu-loops", "::mlir::ModuleOp"> {
  let summary = "Give each GPU thread of an elementwise loop four consecutive elements.";
  let description = [{
    cuda only, on the parallel loops of bufferized kernels, before
    `lathe-map-kernels-to-gpu`. A top-level `scf.parallel` whose innermost
    dimension runs from 0 by 1 to a multiple of 4, whose body is loads,
    stores, constants and elementwise arithmetic, and whose innermost
    induction variable appears only as the last index of f32 buffers with
    rows a multiple of 4 elements, takes 4 elements per iteration of that
    dimension: its loads and stores along it become `vector.load` and
    `vector.store` of `vector<4xf32>` with 16-byte alignment (PTX's
    `ld.global.v4.f32`), the arithmetic on them vector arithmetic, and
    values that do not vary along it stay scalars, broadcast where needed.
    Consecutive threads then move consecutive 16-byte chunks: coalesced and
    vectorized. Loops with reductions, index arithmetic on the induction
    variable (RoPE's angles) or anything else stay as they are.

    ```mlir
    scf.parallel (%i, %j) = (%c0, %c0) to (%c64, %c128) step (%c1, %c1) {
      %a = memref.load %x[%i, %j] : memref<64x128xf32>
      %b = memref.load %g[%j] : memref<128xf32>
      %c = arith.mulf %a, %b : f32
      memref.store %c, %y[%i, %j] : memref<64x128xf32>
    }
    // becomes
    scf.parallel (%i, %j) = (%c0, %c0) to (%c64, %c32) step (%c1, %c1) {
      %j4 = arith.muli %j, %c4 : index
      %a = vector.load %x[%i, %j4] {alignment = 16 : i64} : memref<64x128xf32>, vector<4xf32>
      ...
    }
    ```
  }];
  let dependentDialects = ["::mlir::vector::VectorDialect",
                           "::mlir::arith::ArithDialect"];
}

#endif // LATHE_PASSES_TD
