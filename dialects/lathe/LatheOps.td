//===- LatheOps.td - lathe ops --------------------------------*- tablegen -*-===//
//
// Parameters, the standard pre-norm decoder pieces, and the kernel launch that
// kernel formation leaves behind. Shapes are static: an artifact is compiled
// for one maximum sequence length.
//
//===----------------------------------------------------------------------===//

#ifndef LATHE_OPS_TD
#define LATHE_OPS_TD

include "LatheDialect.td"
include "LatheInterfaces.td"
include "mlir/IR/EnumAttr.td"
include "mlir/IR/OpBase.td"
include "mlir/IR/CommonTypeConstraints.td"
include "mlir/IR/BuiltinAttributes.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/CallInterfaces.td"
include "mlir/Interfaces/DestinationStyleOpInterface.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

//===----------------------------------------------------------------------===//
// Enums
//===----------------------------------------------------------------------===//

def Lathe_InitKind : I32EnumAttr<"InitKind", "how a parameter is initialised", [
    I32EnumAttrCase<"zeros", 0>,
    I32EnumAttrCase<"ones", 1>,
    I32EnumAttrCase<"normal", 2>,
    I32EnumAttrCase<"constant", 3>,
    I32EnumAttrCase<"identity", 4>,
    I32EnumAttrCase<"uniform", 5>,
    I32EnumAttrCase<"log_index", 6>,
    I32EnumAttrCase<"dt_log_uniform", 7>
  ]> {
  let cppNamespace = "::mlir::lathe";
}

def Lathe_MlpKind : I32EnumAttr<"MlpKind", "the MLP's activation", [
    I32EnumAttrCase<"swiglu", 0>,
    I32EnumAttrCase<"gelu", 1>,
    I32EnumAttrCase<"relu2", 2>
  ]> {
  let cppNamespace = "::mlir::lathe";
}

def Lathe_Normalizer : I32EnumAttr<"Normalizer",
    "how attention scores become weights", [
    I32EnumAttrCase<"softmax", 0>,
    I32EnumAttrCase<"softpick", 1>
  ]> {
  let cppNamespace = "::mlir::lathe";
}

def Lathe_GateActivation : I32EnumAttr<"GateActivation",
    "how a routing gate's parameter becomes the gate", [
    I32EnumAttrCase<"identity", 0>,
    I32EnumAttrCase<"sigmoid", 1>
  ]> {
  let cppNamespace = "::mlir::lathe";
}

def Lathe_IterationMask : I32EnumAttr<"IterationMask",
    "which iterations of a loop with a runtime count a value passes in", [
    // t < n: the iteration runs.
    I32EnumAttrCase<"active", 0>,
    // t >= n: the iteration is skipped (its state passes through).
    I32EnumAttrCase<"inactive", 1>,
    // t != n - min(n, backprop): everywhere but where truncated backprop
    // holds the state constant.
    I32EnumAttrCase<"unfrozen", 2>
  ]> {
  let cppNamespace = "::mlir::lathe";
}

def Lathe_GemmEpilogue : I32EnumAttr<"GemmEpilogue",
    "what a GEMM applies to each element of its result", [
    I32EnumAttrCase<"none", 0>,
    I32EnumAttrCase<"relu", 1>,
    // GELU's tanh approximation, as lathe.activation and cuBLASLt compute it.
    I32EnumAttrCase<"gelu", 2>
  ]> {
  let cppNamespace = "::mlir::lathe";
}

def Lathe_GemmPrecision : I32EnumAttr<"GemmPrecision",
    "the format a GEMM's f32 operands are multiplied in (f32 accumulation)", [
    I32EnumAttrCase<"f32", 0>,
    I32EnumAttrCase<"tf32", 1>,
    I32EnumAttrCase<"bf16", 2>,
    I32EnumAttrCase<"f16", 3>
  ]> {
  let cppNamespace = "::mlir::lathe";
}

def Lathe_F32Tensor : RankedTensorOf<[F32]>;
def Lathe_I32Tensor : RankedTensorOf<[I32]>;

//===----------------------------------------------------------------------===//
// Parameters
//===----------------------------------------------------------------------===//

def Lathe_ParamOp : Lathe_Op<"param", [Symbol, HasParent<"::mlir::ModuleOp">]> {
  let summary = "A named model parameter with its shape and init rule.";
  let description = [{
    Declares one trainable tensor of the model. The symbol name is the tensor's
    name in safetensors weight files; `init` says how `lathe-run init` fills
    it (`normal` takes a standard deviation, `constant` a value, e.g. the
    depth schedule of a Three-Phase rotation angle; `identity` is for square
    matrices, e.g. Parcae's injection B; `uniform` draws from U(-value,
    value), PyTorch's nn.Linear init; `log_index` sets element j of the
    flattened tensor to ln(j + 1), S4D-real's A_log; `dt_log_uniform` sets
    softplus^-1(Delta) with Delta log-uniform in [1e-3, 0.1], clamped to
    >= 1e-4, the dt bias of a selective state-space gate).

    ```mlir
    lathe.param @"embed.weight" : tensor<256x64xf32> init(normal, std = 2.0e-02)
    lathe.param @"norm.weight" : tensor<64xf32> init(ones)
    lathe.param @"layers.0.rotation.theta" : tensor<128xf32> init(constant = 0.1309)
    lathe.param @"gate.up.weight" : tensor<64x4xf32> init(uniform = 0.5)
    lathe.param @"gate.A_log" : tensor<64xf32> init(log_index)
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name,
                       TypeAttrOf<Lathe_F32Tensor>:$type,
                       Lathe_InitKind:$init,
                       OptionalAttr<F64Attr>:$std,
                       OptionalAttr<F64Attr>:$value);
  let assemblyFormat = [{
    $sym_name `:` $type `init` `(` $init (`=` $value^)?
    (`,` `std` `=` $std^)? `)` attr-dict
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    ::mlir::RankedTensorType getTensorType() {
      return ::llvm::cast<::mlir::RankedTensorType>(getType());
    }
  }];
}

def Lathe_WeightOp : Lathe_Op<"weight",
    [Pure, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "The value of a parameter.";
  let description = [{
    Reads the parameter named by `name`. The result type must equal the
    parameter's type.

    ```mlir
    %w = lathe.weight @"layers.0.attn.wq.weight" : tensor<64x64xf32>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$name);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
}

def Lathe_CacheOp : Lathe_Op<"cache", [Symbol, HasParent<"::mlir::ModuleOp">]> {
  let summary = "A named tensor the runtime keeps across entry calls (the KV cache).";
  let description = [{
    Declares persistent, zero-initialised state owned by a runtime session,
    such as one layer's keys, or an optimizer's moment of one parameter. It
    is not a parameter: weight files do not hold it. Entries read it with `lathe.cache_read` and update it with
    `lathe.cache_write`.

    ```mlir
    lathe.cache @"kv.layers.0.k" : tensor<64x32xf32>
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, TypeAttrOf<Lathe_F32Tensor>:$type);
  let assemblyFormat = "$sym_name `:` $type attr-dict";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    ::mlir::RankedTensorType getTensorType() {
      return ::llvm::cast<::mlir::RankedTensorType>(getType());
    }
  }];
}

def Lathe_CacheReadOp : Lathe_Op<"cache_read",
    [DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "The current contents of a cache.";
  let description = [{
    Reads the cache named by `name` as it is when the entry runs. The result
    type must equal the cache's type.

    ```mlir
    %k = lathe.cache_read @"kv.layers.0.k" : tensor<64x32xf32>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$name);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
}

def Lathe_CacheWriteOp : Lathe_Op<"cache_write", [MemoryEffects<[MemWrite]>]> {
  let summary = "Writes rows into a cache at a position, in place.";
  let description = [{
    Stores `rows` [R, W] into rows [offset, offset + R) of `cache` [N, W] and
    returns the updated contents. The update happens in the cache's own
    storage, so `cache` (a `lathe.cache_read` or an earlier write) must have
    no other use after this op. Without `at`, the offset is 0. The runtime
    guarantees offset + R <= N. The write is an effect: it stays even when
    the entry does not read the result (prefill attends to its own keys).

    ```mlir
    %k1 = lathe.cache_write %k0, %k at %pos
        : tensor<64x32xf32>, tensor<1x32xf32>, tensor<1xi32> -> tensor<64x32xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$cache, Lathe_F32Tensor:$rows,
                       Optional<Lathe_I32Tensor>:$offset);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $cache `,` $rows (`at` $offset^)? attr-dict `:` type($cache) `,` type($rows)
    (`,` type($offset)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Decoder building blocks
//===----------------------------------------------------------------------===//

def Lathe_EmbeddingOp : Lathe_Op<"embedding", [Pure, DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "Token embedding lookup.";
  let description = [{
    `result[t, :] = table[tokens[t], :]` for tokens of shape [T] and a table
    of shape [V, D]. Token ids outside [0, V) are the caller's error; the
    runtime rejects them before any kernel runs.

    ```mlir
    %x = lathe.embedding %tokens, %table
        : tensor<64xi32>, tensor<256x64xf32> -> tensor<64x64xf32>
    ```
  }];
  let arguments = (ins Lathe_I32Tensor:$tokens, Lathe_F32Tensor:$table);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $tokens `,` $table attr-dict `:` type($tokens) `,` type($table) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_RmsNormOp : Lathe_Op<"rms_norm", [Pure, DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "RMSNorm over the last axis with a learned gain, optionally per phase stripe.";
  let description = [{
    `result = x / sqrt(mean(x^2, last axis) + eps) * gain`, for x of shape
    [T, D] and gain of shape [D].

    With `phases = N` (the Three-Phase Transformer's PhaseAwareRMSNorm,
    ARCHITECTURES.md §3.2), D is split into N contiguous stripes of D/N
    channels and each stripe is normalised by its own RMS; N = 1 is plain
    RMSNorm. D % N must be 0.

    ```mlir
    %y = lathe.rms_norm %x, %g {eps = 1.0e-05 : f64}
        : tensor<64x64xf32>, tensor<64xf32> -> tensor<64x64xf32>
    %z = lathe.rms_norm %x, %g {eps = 1.0e-06 : f64, phases = 4 : i64}
        : tensor<64x64xf32>, tensor<64xf32> -> tensor<64x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input, Lathe_F32Tensor:$gain, F64Attr:$eps,
                       DefaultValuedAttr<I64Attr, "1">:$phases);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $input `,` $gain attr-dict `:` type($input) `,` type($gain) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_PhaseRotateOp : Lathe_Op<"phase_rotate", [Pure,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "The Three-Phase Transformer's Givens rotation of the residual stream.";
  let description = [{
    ARCHITECTURES.md §3.3. D is split into `phases` = N contiguous stripes of
    d_p = D/N channels. Within stripe i, each adjacent pair (2k, 2k+1) of the
    stripe's local indexing is rotated by phi = theta[k] + 2 pi i / N:
    `y_2k = x_2k cos phi - x_2k+1 sin phi`, `y_2k+1 = x_2k sin phi + x_2k+1
    cos phi`. theta ([d_p / 2], learned per block) is shared by the stripes,
    which differ by the fixed offset. The result replaces the stream (it is
    not added to it); the map is orthogonal. With `inverse` every pair turns
    by -phi: the transpose, which is the rotation's VJP in x.

    ```mlir
    %y = lathe.phase_rotate %x, %theta {phases = 3 : i64}
        : tensor<64x96xf32>, tensor<16xf32> -> tensor<64x96xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input, Lathe_F32Tensor:$theta,
                       I64Attr:$phases, UnitAttr:$inverse);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $input `,` $theta attr-dict `:` type($input) `,` type($theta) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_DcInjectOp : Lathe_Op<"dc_inject", [Pure,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "Replace each row's component along the all-ones direction by 1/(p+1) (Gabriel's horn).";
  let description = [{
    ARCHITECTURES.md §3.5: `result[t] = x[t] + (r(p) - mean(x[t])) * 1_D`
    with r(p) = 1 / (p + 1) and p = offset + t the row's absolute position
    (offset: a tensor<1xi32>, 0 when absent). During decoding the offset is
    the true position; the released code's r(0) for every new token is a
    known bug that lathe does not reproduce. With `window = W` (no offset)
    the rows are a batch of sequences of W rows each, and p = t mod W.

    ```mlir
    %e2 = lathe.dc_inject %e : tensor<64x96xf32> -> tensor<64x96xf32>
    %e3 = lathe.dc_inject %e {window = 16 : i64} : tensor<64x96xf32> -> tensor<64x96xf32>
    %d2 = lathe.dc_inject %d at %pos : tensor<1x96xf32>, tensor<1xi32> -> tensor<1x96xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input, Optional<Lathe_I32Tensor>:$offset,
                       DefaultValuedAttr<I64Attr, "0">:$window);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $input (`at` $offset^)? attr-dict `:` type($input) (`,` type($offset)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_DepthAttentionOp : Lathe_Op<"depth_attention",
    [Pure, AttrSizedOperandSegments, DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "Attention over depth: a learned softmax mixture of earlier sublayer outputs, per token.";
  let description = [{
    ARCHITECTURES.md §2.1, the routing primitive of Attention Residuals and
    Delta Attention Residuals. For N sources S_n (each [T, D]), a pseudo-query
    w ([D]) and an RMSNorm gain g ([D]):
    `z_n = <w, RMSNorm_g(S_n)>` (no scale), `alpha = softmax_n(z)` per token,
    `result = sum_n alpha_n S_n` over the un-normalised sources. With `base`
    (Delta AttnRes, additive routing) the result is `base + sum_n alpha_n
    S_n`. Tokens do not mix, so decoding needs no cache for it.

    Delta AttnRes's optional pieces (§2.3): `null` ([D]) is a learned
    source prepended to the others, the same for every token; `gate` scales
    the routed term, `base + act(gate) * sum_n alpha_n S_n`, with `gate`
    one scalar ([1]) or one value per token and channel ([T, D]) and act
    the `gate_activation` (identity, e.g. a learnable alpha, or sigmoid).

    `norms`, when given, are the sources' per-token sums of squares
    (`lathe.row_sum_squares`, one [T] per source): a source's RMS does not
    depend on the site, so it is computed once where the source is produced
    and every later site reuses it.

    The lowering is one kernel per routing site: one pass over each source
    for its dot product with w * g (and its sum of squares, without
    `norms`), so the normalised keys are never formed; a softmax over the N
    scores per token; and one weighted sum.

    ```mlir
    %x = lathe.depth_attention (%h0, %o0, %o1) query %w gain %g {eps = 1.0e-06 : f64}
        : (tensor<8x64xf32>, tensor<8x64xf32>, tensor<8x64xf32>), tensor<64xf32>, tensor<64xf32> -> tensor<8x64xf32>
    %y = lathe.depth_attention (%h0, %o0) norms (%n0, %n1) query %w gain %g base %h {eps = 1.0e-06 : f64}
        : (tensor<8x64xf32>, tensor<8x64xf32>), (tensor<8xf32>, tensor<8xf32>), tensor<64xf32>, tensor<64xf32>, tensor<8x64xf32> -> tensor<8x64xf32>
    %z = lathe.depth_attention (%h0, %o0) query %w gain %g base %h null %n gate %a
        {eps = 1.0e-06 : f64, gate_activation = 1 : i32}
        : (tensor<8x64xf32>, tensor<8x64xf32>), tensor<64xf32>, tensor<64xf32>, tensor<8x64xf32>
          null tensor<64xf32> gate tensor<1xf32> -> tensor<8x64xf32>
    ```
  }];
  let arguments = (ins Variadic<Lathe_F32Tensor>:$sources,
                       Variadic<Lathe_F32Tensor>:$norms,
                       Lathe_F32Tensor:$query, Lathe_F32Tensor:$gain,
                       Optional<Lathe_F32Tensor>:$base,
                       Optional<Lathe_F32Tensor>:$null,
                       Optional<Lathe_F32Tensor>:$gate, F64Attr:$eps,
                       DefaultValuedAttr<Lathe_GateActivation,
                           "::mlir::lathe::GateActivation::identity">:$gate_activation);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    `(` $sources `)` (`norms` `(` $norms^ `)`)? `query` $query `gain` $gain
    (`base` $base^)? (`null` $null^)? (`gate` $gate^)? attr-dict
    `:` `(` type($sources) `)` `,` (`(` type($norms)^ `)` `,`)? type($query) `,` type($gain)
    (`,` type($base)^)? (`null` type($null)^)? (`gate` type($gate)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_RoutingEntropyOp : Lathe_Op<"routing_entropy",
    [Pure, AttrSizedOperandSegments, DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "The mean entropy of a depth-attention site's routing weights.";
  let description = [{
    Delta AttnRes's optional entropy bonus (ARCHITECTURES.md §2.3,
    `loss -= lambda * mean entropy(alpha)`): for the routing weights alpha
    of a `lathe.depth_attention` site with the same sources, norms, query,
    gain, null source and eps, `result = mean over tokens t of
    -sum_n alpha_n[t] ln alpha_n[t]`, a tensor<1xf32>. Training adds it,
    scaled by `-lambda / sites`, to the loss; nothing else reads it.

    ```mlir
    %h = lathe.routing_entropy (%h0, %o0) norms (%n0, %n1) query %w gain %g null %n {eps = 1.0e-06 : f64}
        : (tensor<8x64xf32>, tensor<8x64xf32>), (tensor<8xf32>, tensor<8xf32>), tensor<64xf32>, tensor<64xf32>
          null tensor<64xf32> -> tensor<1xf32>
    ```
  }];
  let arguments = (ins Variadic<Lathe_F32Tensor>:$sources,
                       Variadic<Lathe_F32Tensor>:$norms,
                       Lathe_F32Tensor:$query, Lathe_F32Tensor:$gain,
                       Optional<Lathe_F32Tensor>:$null, F64Attr:$eps);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    `(` $sources `)` (`norms` `(` $norms^ `)`)? `query` $query `gain` $gain
    (`null` $null^)? attr-dict
    `:` `(` type($sources) `)` `,` (`(` type($norms)^ `)` `,`)? type($query) `,` type($gain)
    (`null` type($null)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_ParcaeInjectOp : Lathe_Op<"parcae_inject", [Pure,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "Parcae's stable injection of the prelude output into the looped state.";
  let description = [{
    ARCHITECTURES.md §4.1: `u = Abar * h + Bbar e` with the negative-diagonal
    parameterisation discretised by zero-order hold:
    `Delta = softplus(dt_bias)`, `Abar = exp(-Delta * exp(A_log))` (in (0, 1)
    per channel, so the loop is contractive by construction) and
    `Bbar e = Delta * (e B^T)`. The product `e B^T` (`be`) does not change
    between iterations, so it is an operand computed once before the loop.
    Without `state`, h = 0 (the first iteration from a zero state).

    ```mlir
    %u0 = lathe.parcae_inject %be, %a_log, %dt_bias
        : tensor<16x64xf32>, tensor<64xf32>, tensor<64xf32> -> tensor<16x64xf32>
    %u1 = lathe.parcae_inject %be, %a_log, %dt_bias state %h
        : tensor<16x64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<16x64xf32> -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$be, Lathe_F32Tensor:$a_log,
                       Lathe_F32Tensor:$dt_bias,
                       Optional<Lathe_F32Tensor>:$state);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $be `,` $a_log `,` $dt_bias (`state` $state^)? attr-dict `:` type($be) `,`
    type($a_log) `,` type($dt_bias) (`,` type($state)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_SinusoidOp : Lathe_Op<"sinusoid", [Pure, DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "Sinusoidal features of a scalar (a loop's time or step size).";
  let description = [{
    LoopFormer's embedder input (ARCHITECTURES.md §4.2):
    `[cos(s f_0) .. cos(s f_{K-1}), sin(s f_0) .. sin(s f_{K-1})]` with
    `f_j = exp(-ln(1e4) j / K)` and K = half the result's width; one row.
    The scalar s is `value`, known at compile time, or element `index` of
    the runtime `table` (the short trajectory of shortcut-consistency
    training, drawn per step).

    ```mlir
    %phi = lathe.sinusoid {value = 2.5e-01 : f64} : tensor<1x256xf32>
    %psi = lathe.sinusoid %traj : tensor<6xf32> -> {index = 3 : i64} : tensor<1x256xf32>
    ```
  }];
  let arguments = (ins Optional<Lathe_F32Tensor>:$table,
                       OptionalAttr<F64Attr>:$value,
                       OptionalAttr<I64Attr>:$index);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "($table^ `:` type($table) `->`)? attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Lathe_SiluOp : Lathe_Op<"silu", [Pure, SameOperandsAndResultType,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "SiLU, x * sigmoid(x), elementwise.";
  let description = [{
    ```mlir
    %y = lathe.silu %x : tensor<1x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($result)";
}

def Lathe_ModulatedRmsNormOp : Lathe_Op<"modulated_rms_norm", [Pure,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "RMSNorm without a gain, scaled by (1 + scale): adaLN's shift-free modulation.";
  let description = [{
    `result[t] = x[t] / sqrt(mean(x[t]^2) + eps) * (1 + scale)` for x [T, D]
    and one scale row [1, D] shared by all tokens (LoopFormer's block
    conditioning, ARCHITECTURES.md §4.2).

    ```mlir
    %y = lathe.modulated_rms_norm %x, %s {eps = 1.0e-05 : f64}
        : tensor<16x64xf32>, tensor<1x64xf32> -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input, Lathe_F32Tensor:$scale, F64Attr:$eps);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $input `,` $scale attr-dict `:` type($input) `,` type($scale) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_GatedAddOp : Lathe_Op<"gated_add", [Pure,
    AllTypesMatch<["lhs", "rhs", "result"]>, DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "A gated residual connection: x + gate * y, with one gate row for all tokens.";
  let description = [{
    adaLN-Zero's gate (ARCHITECTURES.md §4.2): x and y are [T, D], gate is
    [1, D]; a zero gate makes the sublayer the identity.

    ```mlir
    %x1 = lathe.gated_add %x, %y, %g : tensor<16x64xf32>, tensor<1x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$lhs, Lathe_F32Tensor:$rhs, Lathe_F32Tensor:$gate);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs `,` $gate attr-dict `:` type($lhs) `,` type($gate)
  }];
  let hasVerifier = 1;
}

def Lathe_SelectiveGateOp : Lathe_Op<"selective_gate", [Pure,
    AllTypesMatch<["proposal", "state", "result"]>, AllTypesMatch<["bias", "a_log"]>,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "LoopUS's selective gate: a per-channel convex mix of a looped block's proposal and its input.";
  let description = [{
    ARCHITECTURES.md §4.3, after each pass of the reasoning block R, with
    `u = R(h)`:
    `delta = u - h`, `Dt = softplus(W_up (W_down delta) + b)`,
    `Abar = exp(-Dt * exp(A_log))` in (0, 1) per element, and
    `result = Abar * u + (1 - Abar) * h`. Every coordinate of the result
    lies between u and h (invariant 7). `w_down` is [r, D] (no bias), `w_up`
    [D, r] and `b`, `a_log` are [D]. The mix is with the previous iterate,
    as the released code does (not the docstring's re-injection).

    ```mlir
    %h1 = lathe.selective_gate %u, %h, %w_down, %w_up, %b, %a_log
        : tensor<16x64xf32>, tensor<4x64xf32>, tensor<64x4xf32>, tensor<64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$proposal, Lathe_F32Tensor:$state,
                       Lathe_F32Tensor:$w_down, Lathe_F32Tensor:$w_up,
                       Lathe_F32Tensor:$bias, Lathe_F32Tensor:$a_log);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $proposal `,` $state `,` $w_down `,` $w_up `,` $bias `,` $a_log attr-dict
    `:` type($proposal) `,` type($w_down) `,` type($w_up) `,` type($bias)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    ::mlir::Type getStateType() { return getProposal().getType(); }
  }];
}

def Lathe_HaltConfidenceOp : Lathe_Op<"halt_confidence", [Pure,
    AllTypesMatch<["proposal", "state"]>, AllTypesMatch<["ln_weight", "ln_bias"]>,
    AllTypesMatch<["b_q", "result"]>]> {
  let summary = "LoopUS's confidence head: how sure the loop is that it may stop.";
  let description = [{
    ARCHITECTURES.md §4.3: `q = sigmoid(w_q . LayerNorm(u[n-1] - h[n-1]) + b_q)`,
    read at the last valid token n - 1 of the window (`length` = n, an
    i32 [1]; rows past it are padding; without it, the last row). The LayerNorm has its own affine
    `ln_weight`, `ln_bias` [D] and `eps`; `w_q` is [1, D], `b_q` [1]. The
    result is one f32 [1].

    ```mlir
    %q = lathe.halt_confidence %u, %h, %ln_w, %ln_b, %w_q, %b_q length %n {eps = 1.0e-05 : f64}
        : tensor<16x64xf32>, tensor<64xf32>, tensor<1x64xf32>, tensor<1xf32> length tensor<1xi32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$proposal, Lathe_F32Tensor:$state,
                       Lathe_F32Tensor:$ln_weight, Lathe_F32Tensor:$ln_bias,
                       Lathe_F32Tensor:$w_q, Lathe_F32Tensor:$b_q,
                       Optional<Lathe_I32Tensor>:$length, F64Attr:$eps);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $proposal `,` $state `,` $ln_weight `,` $ln_bias `,` $w_q `,` $b_q
    (`length` $length^)? attr-dict `:` type($proposal) `,` type($ln_weight)
    `,` type($w_q) `,` type($result) (`length` type($length)^)?
  }];
  let hasVerifier = 1;
}

def Lathe_HaltMode : I32EnumAttr<"HaltMode", "when a looped block may stop early", [
    I32EnumAttrCase<"none", 0>,
    I32EnumAttrCase<"threshold", 1>,
    I32EnumAttrCase<"cdf", 2>,
    I32EnumAttrCase<"convergence", 3>
  ]> {
  let cppNamespace = "::mlir::lathe";
}

def Lathe_HaltIfOp : Lathe_Op<"halt_if", [Pure, AttrSizedOperandSegments,
    AllTypesMatch<["next", "prev", "new_kept"]>]> {
  let summary = "One iteration's early-exit decision, and the state the loop keeps.";
  let description = [{
    ARCHITECTURES.md §4.3's halting, after iteration k produced `next` from
    `prev` with confidence `q`:
    `threshold` halts when q > threshold; `cdf` when 1 - prod_j<=k (1 - q_j)
    > threshold; `convergence` when ||next[n-1] - prev[n-1]||_2 < tolerance
    at the last valid token n - 1 (`length` = n, or the last row without
    it); `none` never.

    `status` (f32 [2], absent at the first iteration) carries
    [phase, prod_j (1 - q_j)], phase 0 while running, 1 at the iteration
    that halts, 2 after. `kept` is the state the loop hands on: `next`
    while running and at the halting iteration, the earlier `kept` after;
    so the last iteration's `kept` is the first-halt state (or the final
    one). That is exact with a KV cache, where every iteration still runs
    to fill the deeper caches. Without one, the schedule leaves the loop as
    soon as a phase is 1 (a launch's `exit` in the artifact): nothing
    after it in the loop is needed, and `kept` is updated in place so it is
    already where the rest of the model reads it.

    ```mlir
    %st0, %kept0 = lathe.halt_if %q0, %h1, %h0 length %n mode(threshold)
        {threshold = 9.0e-01 : f64, tolerance = 1.0e-02 : f64}
        : tensor<1xf32>, tensor<16x64xf32> length tensor<1xi32> -> tensor<2xf32>
    %st1, %kept1 = lathe.halt_if %q1, %h2, %h1 length %n status %st0 kept %kept0
        mode(threshold) {threshold = 9.0e-01 : f64, tolerance = 1.0e-02 : f64}
        : tensor<1xf32>, tensor<16x64xf32> length tensor<1xi32>
          status tensor<2xf32> kept tensor<16x64xf32> -> tensor<2xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$q, Lathe_F32Tensor:$next,
                       Lathe_F32Tensor:$prev, Optional<Lathe_I32Tensor>:$length,
                       Optional<Lathe_F32Tensor>:$status,
                       Optional<Lathe_F32Tensor>:$kept,
                       Lathe_HaltMode:$mode, F64Attr:$threshold,
                       F64Attr:$tolerance);
  let results = (outs Lathe_F32Tensor:$new_status, Lathe_F32Tensor:$new_kept);
  let assemblyFormat = [{
    $q `,` $next `,` $prev (`length` $length^)? (`status` $status^)?
    (`kept` $kept^)? `mode` `(` $mode `)` attr-dict `:` type($q) `,` type($next)
    (`length` type($length)^)? (`status` type($status)^)? (`kept` type($kept)^)?
    `->` type($new_status)
  }];
  let hasVerifier = 1;
}

def Lathe_StopGradientOp : Lathe_Op<"stop_gradient", [Pure,
    AllTypesMatch<["input", "result"]>, DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "The identity, through which no gradient flows.";
  let description = [{
    Parcae's truncated backprop (ARCHITECTURES.md §4.1): the loop state
    entering the last `backprop` iterations is held constant, so the
    earlier iterations run without gradient. Lowers to its input.

    With a runtime iteration count n (`count`, tensor<1xi32>: Parcae's
    depth sampled per sequence), the op stands at the state entering
    iteration `iteration` = t, and stops the gradient only when t is
    n - min(n, backprop), the state entering the last min(n, backprop)
    iterations that run; elsewhere the gradient passes.

    ```mlir
    %h = lathe.stop_gradient %state : tensor<16x64xf32>
    %g = lathe.stop_gradient %state count %n {backprop = 2 : i64, iteration = 3 : i64}
        : tensor<16x64xf32>, tensor<1xi32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input, Optional<Lathe_I32Tensor>:$count,
                       OptionalAttr<I64Attr>:$iteration,
                       OptionalAttr<I64Attr>:$backprop);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$input (`count` $count^)? attr-dict `:` type($input) (`,` type($count)^)?";
  let hasVerifier = 1;
}

def Lathe_LoopSelectOp : Lathe_Op<"loop_select", [Pure,
    AllTypesMatch<["next", "previous", "result"]>,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "A loop iteration's state, or the previous one where the iteration does not run.";
  let description = [{
    Parcae's depth sampled per sequence (ARCHITECTURES.md §4.1, "masked
    updates (where(active, new, old))"): a training graph unrolls the
    loop to its largest count, and iteration `iteration` = t keeps its
    result only when t < n, the sequence's count (`count`,
    tensor<1xi32>); otherwise the state passes through unchanged.

    ```mlir
    %h2 = lathe.loop_select %n, %next, %h1 {iteration = 2 : i64} : tensor<1xi32>, tensor<16x64xf32>
    ```
  }];
  let arguments = (ins Lathe_I32Tensor:$count, Lathe_F32Tensor:$next,
                       Lathe_F32Tensor:$previous, I64Attr:$iteration);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$count `,` $next `,` $previous attr-dict `:` type($count) `,` type($next)";
  let hasVerifier = 1;
}

def Lathe_IterationMaskOp : Lathe_Op<"iteration_mask", [Pure,
    AllTypesMatch<["input", "result"]>]> {
  let summary = "A value where an iteration condition holds on the runtime count, zero elsewhere.";
  let description = [{
    The VJPs of `lathe.loop_select` and of a counted `lathe.stop_gradient`:
    `result = input` where the condition `mask` holds for iteration t =
    `iteration` and the count n (`count`, tensor<1xi32>), and 0 elsewhere:
    `active` t < n, `inactive` t >= n, `unfrozen` t != n - min(n,
    `backprop`).

    ```mlir
    %d = lathe.iteration_mask %dy, %n active {iteration = 2 : i64} : tensor<16x64xf32>, tensor<1xi32>
    %f = lathe.iteration_mask %dy, %n unfrozen {backprop = 2 : i64, iteration = 1 : i64}
        : tensor<16x64xf32>, tensor<1xi32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input, Lathe_I32Tensor:$count,
                       Lathe_IterationMask:$mask, I64Attr:$iteration,
                       OptionalAttr<I64Attr>:$backprop);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$input `,` $count $mask attr-dict `:` type($input) `,` type($count)";
  let hasVerifier = 1;
}

def Lathe_RowSumSquaresOp : Lathe_Op<"row_sum_squares", [Pure,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "Per-token sum of squares, computed once per routing source.";
  let description = [{
    `result[t] = sum_d x[t, d]^2` for x [T, D]: the part of a source's RMS
    that every `lathe.depth_attention` site reading the source shares.

    ```mlir
    %n = lathe.row_sum_squares %o : tensor<8x64xf32> -> tensor<8xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

def Lathe_LayerNormOp : Lathe_Op<"layer_norm", [Pure,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "LayerNorm over the last axis with a learned gain and bias.";
  let description = [{
    `result = (x - mean) / sqrt(var + eps) * gain + bias`, with the mean and
    the biased variance over the last axis of x [T, D]; gain and bias are [D].

    ```mlir
    %y = lathe.layer_norm %x, %g, %b {eps = 1.0e-05 : f64}
        : tensor<64x64xf32>, tensor<64xf32>, tensor<64xf32> -> tensor<64x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input, Lathe_F32Tensor:$gain,
                       Lathe_F32Tensor:$bias, F64Attr:$eps);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $input `,` $gain `,` $bias attr-dict `:` type($input) `,` type($gain) `,`
    type($bias) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_LinearOp : Lathe_Op<"linear", [Pure, AttrSizedOperandSegments,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>,
    OptionalTypesMatchWith<"the residual has the result's type", "result",
                           "accumulate",
                   "$_self">]> {
  let summary = "A linear layer, y = x W^T (+ b) (+ r).";
  let description = [{
    The weight has PyTorch's `nn.Linear` layout [out, in], so weights can come
    from PyTorch unchanged. x is [T, in]; the optional bias is [out]; the
    result is [T, out]. With `accumulate`, the product is added to r (same
    type as the result): a residual connection fused into the GEMM, which
    runs as a GEMM with beta = 1 writing r's storage when r is dead after.

    ```mlir
    %q = lathe.linear %h, %wq
        : tensor<64x64xf32>, tensor<64x64xf32> -> tensor<64x64xf32>
    %k = lathe.linear %h, %wk bias %bk
        : tensor<64x64xf32>, tensor<32x64xf32>, tensor<32xf32> -> tensor<64x32xf32>
    %x1 = lathe.linear %a, %wo accumulate %x
        : tensor<64x64xf32>, tensor<64x64xf32> -> tensor<64x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input, Lathe_F32Tensor:$weight,
                       Optional<Lathe_F32Tensor>:$bias,
                       Optional<Lathe_F32Tensor>:$accumulate);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`bias` $bias^)? (`accumulate` $accumulate^)? attr-dict
    `:` type($input) `,` type($weight) (`,` type($bias)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_RopeOp : Lathe_Op<"rope", [Pure, DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "Rotary position embedding, rotate-half convention.";
  let description = [{
    x has shape [T, heads * head_dim]; each head's vector is rotated by the
    angle `p * base^(-2i / head_dim)` on the pairs (i, i + head_dim / 2),
    where the position p of row t is `offset + t` (offset: a tensor<1xi32>,
    0 when absent). With `inverse` the rotation is by minus that angle: the
    transpose of the rotation, which is RoPE's vector-Jacobian product.
    With `window = W` (no offset) the rows are a batch of sequences of W rows
    each, and row t sits at position `t mod W`.

    ```mlir
    %r = lathe.rope %q {heads = 4 : i64, base = 1.0e+04 : f64}
        : tensor<64x64xf32> -> tensor<64x64xf32>
    %b = lathe.rope %q {heads = 4 : i64, base = 1.0e+04 : f64, window = 16 : i64}
        : tensor<64x64xf32> -> tensor<64x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input, Optional<Lathe_I32Tensor>:$offset,
                       I64Attr:$heads, F64Attr:$base, UnitAttr:$inverse,
                       DefaultValuedAttr<I64Attr, "0">:$window);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $input (`at` $offset^)? attr-dict `:` type($input) (`,` type($offset)^)?
    `->` type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_AttentionOp : Lathe_Op<"attention", [Pure, DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "Causal grouped-query attention with softmax.";
  let description = [{
    q is [Tq, heads * head_dim]; k and v are [Tk, kv_heads * head_dim]. Query
    head h attends with key/value head `h / (heads / kv_heads)`. Query row i
    is at position `offset + i` (offset: a tensor<1xi32>, 0 when absent;
    without it Tq == Tk), key row j at position j. Scores are scaled by
    1/sqrt(head_dim) and masked so that a query sees keys at positions <= its
    own,
    then normalised by `normalizer`: softmax, or softpick
    (`relu(e^x - 1) / (sum |e^x - 1| + 1e-8)` over the unmasked entries, with
    no renormalisation). The result is [T, heads * head_dim], heads
    concatenated. `phases = N` states the Three-Phase Transformer's
    phase-aligned GQA (ARCHITECTURES.md §3.4): N divides heads and kv_heads,
    so every head lies inside one phase stripe; the math is unchanged.

    `window = W` (no offset; W divides T) makes the rows a batch of T / W
    sequences of W rows each, as a training step packs them: row i of
    sequence s attends to the keys of sequence s up to its own row, as if
    each sequence were attended alone. 0 (the default) is one sequence.

    ```mlir
    %a = lathe.attention %q, %k, %v {heads = 4 : i64, kv_heads = 2 : i64}
        : tensor<64x64xf32>, tensor<64x32xf32>, tensor<64x32xf32> -> tensor<64x64xf32>
    %b = lathe.attention %q, %k, %v normalizer(softpick) {heads = 4 : i64, kv_heads = 2 : i64}
        : tensor<64x64xf32>, tensor<64x32xf32>, tensor<64x32xf32> -> tensor<64x64xf32>
    %c = lathe.attention %q, %k, %v {heads = 4 : i64, kv_heads = 2 : i64, window = 16 : i64}
        : tensor<64x64xf32>, tensor<64x32xf32>, tensor<64x32xf32> -> tensor<64x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$query, Lathe_F32Tensor:$key, Lathe_F32Tensor:$value,
                       Optional<Lathe_I32Tensor>:$offset,
                       I64Attr:$heads, I64Attr:$kv_heads,
                       DefaultValuedAttr<Lathe_Normalizer,
                                         "::mlir::lathe::Normalizer::softmax">:$normalizer,
                       DefaultValuedAttr<I64Attr, "1">:$phases,
                       DefaultValuedAttr<I64Attr, "0">:$window);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $query `,` $key `,` $value (`at` $offset^)?
    (`normalizer` `(` $normalizer^ `)`)? attr-dict
    `:` type($query) `,` type($key) `,` type($value) (`,` type($offset)^)?
    `->` type($result)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getHeadDim() {
      return getQuery().getType().getDimSize(1) / getHeads();
    }
  }];
}

def Lathe_FusedAttentionOp : Lathe_Op<"fused_attention",
    [DestinationStyleOpInterface,
     DeclareOpInterfaceMethods<MemoryEffectsOpInterface>]> {
  let summary = "Attention as one kernel: scores, mask, online softmax and PV in a single pass.";
  let description = [{
    The kernel-level form of `lathe.attention`, with the same operands,
    attributes and math, in destination-passing style: the result is written
    into `init` ([Tq, heads * head_dim]). It is what `lathe-lower-to-linalg`
    produces for `lathe.attention`, so that kernel formation sees attention
    as one unit instead of five structured ops around a [heads, Tq, Tk]
    score tensor.

    Each query row keeps a running maximum, a running denominator and a
    running weighted sum of values, rescaled whenever the maximum grows (the
    online softmax), and visits only the keys at positions up to its own: no
    score matrix exists in memory at any point, and decoding at position p
    reads p + 1 cache rows, not the whole cache. For softpick the running
    maximum starts at 0 (ARCHITECTURES.md §5's stable form, with the shift
    clamped at 0 so that e^-m never overflows).

    `window` batches sequences of that many rows, as on `lathe.attention`.

    The op works on tensors (before bufferization) and on memrefs (after);
    `lathe-expand-fused-attention` turns the memref form into loops.

    ```mlir
    %o = lathe.fused_attention %q, %k, %v into %init {heads = 4 : i64, kv_heads = 2 : i64}
        : tensor<16x64xf32>, tensor<16x32xf32>, tensor<16x32xf32>, tensor<16x64xf32> -> tensor<16x64xf32>
    lathe.fused_attention %q, %k, %v at %pos into %out normalizer(softpick) {heads = 4 : i64, kv_heads = 2 : i64}
        : memref<1x64xf32>, memref<32x32xf32>, memref<32x32xf32>, memref<1x64xf32>, memref<1xi32>
    ```
  }];
  let arguments = (ins AnyShaped:$query, AnyShaped:$key, AnyShaped:$value,
                       Optional<AnyShaped>:$offset,
                       AnyShaped:$init,
                       I64Attr:$heads, I64Attr:$kv_heads,
                       DefaultValuedAttr<Lathe_Normalizer,
                                         "::mlir::lathe::Normalizer::softmax">:$normalizer,
                       DefaultValuedAttr<I64Attr, "0">:$window);
  let results = (outs Variadic<AnyRankedTensor>:$result);
  let assemblyFormat = [{
    $query `,` $key `,` $value (`at` $offset^)? `into` $init
    (`normalizer` `(` $normalizer^ `)`)? attr-dict
    `:` type($query) `,` type($key) `,` type($value) `,` type($init)
    (`,` type($offset)^)? (`->` type($result)^)?
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    ::mlir::MutableOperandRange getDpsInitsMutable() {
      return getInitMutable();
    }
    int64_t getHeadDim() {
      return ::llvm::cast<::mlir::ShapedType>(getQuery().getType())
                 .getDimSize(1) / getHeads();
    }
  }];
}

def Lathe_FusedAttentionGradOp : Lathe_Op<"fused_attention_grad",
    [DestinationStyleOpInterface,
     DeclareOpInterfaceMethods<MemoryEffectsOpInterface>]> {
  let summary = "Attention's gradient as one kernel: no [T, T] tensor in memory.";
  let description = [{
    The kernel-level form of `lathe.attention_grad` with `output` (the
    forward's result o), in destination-passing style: the same math, with
    the query, key and value gradients written into the first three inits.
    `lathe-lower-to-linalg` produces it for the cuda target
    (`gpu-attention-grad`), where the structured lowering's [heads, T, T]
    scores, weights and score gradient would be most of a training pass's
    memory traffic; `lathe-attention-to-gpu` lowers it.

    The fourth init, `stats` ([rows, 3 * heads]), is the kernel's workspace,
    planned like any other buffer: per query row and head, the softmax's
    shift (the row's maximum scaled score; softpick's clamped at 0), its
    normaliser and rowsum(dO * o). A row pass computes them and dQ; a key
    pass reads them to form dK and dV. Nothing else reads it.

    Only many-row attention without a position has a gradient: the same
    shape rules as `lathe.attention_grad`. The op works on tensors (four
    results, the updated inits) and on memrefs (none).

    ```mlir
    %dq, %dk, %dv, %st = lathe.fused_attention_grad %q, %k, %v, %do, %o
        into %dq0, %dk0, %dv0, %st0 {heads = 4 : i64, kv_heads = 2 : i64}
        : tensor<8x64xf32>, tensor<8x32xf32>, tensor<8x32xf32>, tensor<8x64xf32>,
          tensor<8x64xf32>, tensor<8x64xf32>, tensor<8x32xf32>, tensor<8x32xf32>,
          tensor<8x12xf32>
        -> tensor<8x64xf32>, tensor<8x32xf32>, tensor<8x32xf32>, tensor<8x12xf32>
    ```
  }];
  let arguments = (ins AnyShaped:$query, AnyShaped:$key, AnyShaped:$value,
                       AnyShaped:$result_grad, AnyShaped:$output,
                       AnyShaped:$query_grad_init, AnyShaped:$key_grad_init,
                       AnyShaped:$value_grad_init, AnyShaped:$stats_init,
                       I64Attr:$heads, I64Attr:$kv_heads,
                       DefaultValuedAttr<Lathe_Normalizer,
                                         "::mlir::lathe::Normalizer::softmax">:$normalizer,
                       DefaultValuedAttr<I64Attr, "0">:$window);
  let results = (outs Variadic<AnyRankedTensor>:$results);
  let assemblyFormat = [{
    $query `,` $key `,` $value `,` $result_grad `,` $output `into`
    $query_grad_init `,` $key_grad_init `,` $value_grad_init `,` $stats_init
    (`normalizer` `(` $normalizer^ `)`)? attr-dict
    `:` type($query) `,` type($key) `,` type($value) `,` type($result_grad)
    `,` type($output) `,` type($query_grad_init) `,` type($key_grad_init)
    `,` type($value_grad_init) `,` type($stats_init) (`->` type($results)^)?
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    ::mlir::MutableOperandRange getDpsInitsMutable() {
      return ::mlir::MutableOperandRange(getOperation(), 5, 4);
    }
    int64_t getHeadDim() {
      return ::llvm::cast<::mlir::ShapedType>(getQuery().getType())
                 .getDimSize(1) / getHeads();
    }
  }];
}

def Lathe_MlpOp : Lathe_Op<"mlp", [Pure, AttrSizedOperandSegments,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "The MLP of a decoder layer: gated (SwiGLU) or plain (GELU, ReLU²).";
  let description = [{
    `swiglu`: `result = (silu(x Wg^T + bg) * (x Wu^T + bu)) Wd^T + bd`.
    `gelu`, `relu2`: `result = act(x Wu^T + bu) Wd^T + bd`, with GELU's tanh
    approximation, or `relu(z)^2`; these have no gate.
    Wg and Wu are [width, D] and Wd is [D, width]; biases are optional. The
    width may differ from layer to layer. With `accumulate r`, the result is
    r + MLP(x): the residual connection, fused into the down projection.

    Optional further results, `saved`, are the hidden values the VJP needs:
    the pre-activation `x Wu^T + bu` and the activation for `gelu`/`relu2`;
    the gate's pre-activation, then the up one, then the activation for
    `swiglu`, each [rows, width]. lathe-differentiate asks for them so that
    the backward reads them instead of recomputing the up projection (a
    product of the MLP's forward cost). Without them the VJP recomputes.

    ```mlir
    %y = lathe.mlp swiglu %h gate %wg up %wu down %wd
        : (tensor<64x64xf32>, tensor<128x64xf32>, tensor<128x64xf32>,
           tensor<64x128xf32>) -> tensor<64x64xf32>
    %y2, %u, %a = lathe.mlp gelu %h up %wu down %wd
        : (tensor<64x64xf32>, tensor<256x64xf32>, tensor<64x256xf32>)
        -> (tensor<64x64xf32>, tensor<64x256xf32>, tensor<64x256xf32>)
    %z = lathe.mlp gelu %h up %wu bias %bu down %wd bias %bd
        : (tensor<64x64xf32>, tensor<256x64xf32>, tensor<256xf32>,
           tensor<64x256xf32>, tensor<64xf32>) -> tensor<64x64xf32>
    ```
  }];
  let arguments = (ins Lathe_MlpKind:$kind, Lathe_F32Tensor:$input,
                       Optional<Lathe_F32Tensor>:$gate_weight,
                       Optional<Lathe_F32Tensor>:$gate_bias,
                       Lathe_F32Tensor:$up_weight,
                       Optional<Lathe_F32Tensor>:$up_bias,
                       Lathe_F32Tensor:$down_weight,
                       Optional<Lathe_F32Tensor>:$down_bias,
                       Optional<Lathe_F32Tensor>:$accumulate);
  let results = (outs Lathe_F32Tensor:$result, Variadic<Lathe_F32Tensor>:$saved);
  let assemblyFormat = [{
    $kind $input (`gate` $gate_weight^ (`bias` $gate_bias^)?)?
    `up` $up_weight (`bias` $up_bias^)? `down` $down_weight (`bias` $down_bias^)?
    (`accumulate` $accumulate^)? attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// [rows, width]: the type of each saved hidden value.
    ::mlir::RankedTensorType getHiddenType();
    /// How many hidden values an MLP that saves them returns (3 gated, 2
    /// not).
    unsigned getNumHidden() {
      return getKind() == ::mlir::lathe::MlpKind::swiglu ? 3 : 2;
    }
    /// This MLP again at `b`'s point, with `saved` as the saved values'
    /// types and `accumulate` as its residual, keeping its other operands
    /// and its discardable attributes (the fusion group).
    MlpOp cloneWith(::mlir::OpBuilder &b, ::mlir::TypeRange saved,
                    ::mlir::Value accumulate);
  }];
}

def Lathe_AddOp : Lathe_Op<"add", [Pure, SameOperandsAndResultType, Commutative,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "Elementwise addition: the residual connection.";
  let description = [{
    ```mlir
    %x1 = lathe.add %x, %a : tensor<64x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$lhs, Lathe_F32Tensor:$rhs);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($result)";
}

def Lathe_SubOp : Lathe_Op<"sub", [Pure, SameOperandsAndResultType,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "Elementwise difference: how much the stream moved.";
  let description = [{
    Delta Block routing's sources are the stream's change over each completed
    block, `h(end) - h(start)` (ARCHITECTURES.md §2.4), which with a
    Three-Phase rotation in between is not a sum of sublayer outputs.

    ```mlir
    %d = lathe.sub %h_end, %h_start : tensor<64x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$lhs, Lathe_F32Tensor:$rhs);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($result)";
}

//===----------------------------------------------------------------------===//
// Training: the loss and the vector-Jacobian products' own ops
//===----------------------------------------------------------------------===//

def Lathe_CrossEntropyOp : Lathe_Op<"cross_entropy", [Pure,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "Mean cross-entropy of logits against target token ids.";
  let description = [{
    `loss = mean over t of (logsumexp(logits[t, :]) - logits[t, targets[t]])`
    for logits [T, V] and targets [T]; the result is a tensor<1xf32>. Target
    ids outside [0, V) are the caller's error; the runtime rejects them.

    ```mlir
    %loss = lathe.cross_entropy %logits, %targets
        : tensor<8x256xf32>, tensor<8xi32> -> tensor<1xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$logits, Lathe_I32Tensor:$targets);
  let results = (outs Lathe_F32Tensor:$loss);
  let assemblyFormat = [{
    $logits `,` $targets attr-dict `:` type($logits) `,` type($targets) `->` type($loss)
  }];
  let hasVerifier = 1;
}

def Lathe_CrossEntropyGradOp : Lathe_Op<"cross_entropy_grad", [Pure]> {
  let summary = "The gradient of lathe.cross_entropy with respect to the logits.";
  let description = [{
    `result[t, v] = dloss * (softmax(logits[t, :])[v] - (v == targets[t])) / T`,
    with dloss the loss's cotangent (a tensor<1xf32>).

    ```mlir
    %dlogits = lathe.cross_entropy_grad %logits, %targets, %dloss
        : tensor<8x256xf32>, tensor<8xi32>, tensor<1xf32> -> tensor<8x256xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$logits, Lathe_I32Tensor:$targets,
                       Lathe_F32Tensor:$loss_grad);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $logits `,` $targets `,` $loss_grad attr-dict `:` type($logits) `,`
    type($targets) `,` type($loss_grad) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_MatmulOp : Lathe_Op<"matmul", [Pure,
    OptionalTypesMatchWith<"accumulate has the result's type", "result",
                           "accumulate", "$_self">]> {
  let summary = "A matrix product, the left side optionally transposed.";
  let description = [{
    `result = op(lhs) rhs`, with op the transpose under `transpose_lhs`:
    the two products of a linear layer's VJP, dx = dy W and dW = dy^T x.
    With `accumulate s`, the result is s + op(lhs) rhs: gradient
    accumulation adds a weight's gradient into its state this way, in the
    GEMM (beta = 1) rather than through a [out, in] temporary and a sum.

    ```mlir
    %dx = lathe.matmul %dy, %w : tensor<8x32xf32>, tensor<32x64xf32> -> tensor<8x64xf32>
    %dw = lathe.matmul %dy, %x {transpose_lhs}
        : tensor<8x32xf32>, tensor<8x64xf32> -> tensor<32x64xf32>
    %sum = lathe.matmul %dy, %x accumulate %s {transpose_lhs}
        : tensor<8x32xf32>, tensor<8x64xf32> -> tensor<32x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$lhs, Lathe_F32Tensor:$rhs,
                       Optional<Lathe_F32Tensor>:$accumulate,
                       UnitAttr:$transpose_lhs);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs (`accumulate` $accumulate^)? attr-dict `:` type($lhs) `,`
    type($rhs) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_RmsNormGradOp : Lathe_Op<"rms_norm_grad", [Pure]> {
  let summary = "The VJP of plain RMSNorm: the input's and the gain's gradients.";
  let description = [{
    With r = 1 / sqrt(mean(x^2) + eps) per row and n = x r:
    `input_grad = r * (dy*g - n * mean(dy*g * n))` (per row) and
    `gain_grad = sum over rows of dy * n`. With `phases = N` each of the N
    stripes of D/N channels has its own r and mean, as in `lathe.rms_norm`.

    ```mlir
    %dx, %dg = lathe.rms_norm_grad %x, %g, %dy {eps = 1.0e-05 : f64}
        : tensor<8x64xf32>, tensor<64xf32>, tensor<8x64xf32>
        -> tensor<8x64xf32>, tensor<64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input, Lathe_F32Tensor:$gain,
                       Lathe_F32Tensor:$result_grad, F64Attr:$eps,
                       DefaultValuedAttr<I64Attr, "1">:$phases);
  let results = (outs Lathe_F32Tensor:$input_grad, Lathe_F32Tensor:$gain_grad);
  let assemblyFormat = [{
    $input `,` $gain `,` $result_grad attr-dict `:` type($input) `,`
    type($gain) `,` type($result_grad) `->` type($input_grad) `,` type($gain_grad)
  }];
  let hasVerifier = 1;
}

def Lathe_AttentionGradOp : Lathe_Op<"attention_grad", [Pure,
    OptionalTypesMatchWith<"output has the query's type", "query", "output",
                           "$_self">]> {
  let summary = "The VJP of causal GQA attention over the whole window.";
  let description = [{
    Recomputes the probabilities P of `lathe.attention` (same q, k, v,
    heads, kv_heads and normalizer; no offset) and, with dO the result's
    cotangent and s = 1/sqrt(head_dim): `dV = P^T dO`, `dP = dO V^T`, and
    for softmax `dS = P * (dP - rowsum(dP * P))`; for softpick, with
    a = e^z - 1 and d = sum |a| + 1e-8 over the visible scores z,
    `dS = e^z / d * ([a > 0] dP - sign(a) rowsum(dP * P))`. Then
    `dQ = s dS K`, `dK = s dS^T Q`; the key and value gradients of a shared
    K/V head sum over the query heads of its group. `window` batches
    sequences of that many rows, as on `lathe.attention`.

    With `output o`, the forward's result, `rowsum(dP * P)` is taken as
    `rowsum(dO * o)` per head, the same number (o = P V), over head_dim
    columns instead of over every key: the lowering then makes no pass over
    P and dP for it.

    ```mlir
    %dq, %dk, %dv = lathe.attention_grad %q, %k, %v, %do {heads = 4 : i64, kv_heads = 2 : i64}
        : tensor<8x64xf32>, tensor<8x32xf32>, tensor<8x32xf32>, tensor<8x64xf32>
        -> tensor<8x64xf32>, tensor<8x32xf32>, tensor<8x32xf32>
    %dq2, %dk2, %dv2 = lathe.attention_grad %q, %k, %v, %do output %o {heads = 4 : i64, kv_heads = 2 : i64}
        : tensor<8x64xf32>, tensor<8x32xf32>, tensor<8x32xf32>, tensor<8x64xf32>
        -> tensor<8x64xf32>, tensor<8x32xf32>, tensor<8x32xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$query, Lathe_F32Tensor:$key,
                       Lathe_F32Tensor:$value, Lathe_F32Tensor:$result_grad,
                       Optional<Lathe_F32Tensor>:$output,
                       I64Attr:$heads, I64Attr:$kv_heads,
                       DefaultValuedAttr<Lathe_Normalizer,
                                         "::mlir::lathe::Normalizer::softmax">:$normalizer,
                       DefaultValuedAttr<I64Attr, "0">:$window);
  let results = (outs Lathe_F32Tensor:$query_grad, Lathe_F32Tensor:$key_grad,
                      Lathe_F32Tensor:$value_grad);
  let assemblyFormat = [{
    $query `,` $key `,` $value `,` $result_grad (`output` $output^)?
    (`normalizer` `(` $normalizer^ `)`)? attr-dict `:` type($query) `,`
    type($key) `,` type($value) `,` type($result_grad) `->` type($query_grad)
    `,` type($key_grad) `,` type($value_grad)
  }];
  let hasVerifier = 1;
}

def Lathe_ScaleOp : Lathe_Op<"scale", [Pure, SameOperandsAndResultType,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "Multiplication by a constant: a loss term's weight, or a negation.";
  let description = [{
    `result = factor * input`, elementwise. The VJP of `lathe.sub`'s
    subtrahend is its cotangent scaled by -1, and the routing entropy enters
    the training loss scaled by `-lambda / sites`.

    ```mlir
    %n = lathe.scale %dy {factor = -1.0 : f64} : tensor<8x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input, F64Attr:$factor);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($result)";
}

def Lathe_RowSumSquaresGradOp : Lathe_Op<"row_sum_squares_grad", [Pure]> {
  let summary = "The VJP of lathe.row_sum_squares: twice the input, scaled per row.";
  let description = [{
    `result[t, d] = 2 * input[t, d] * result_grad[t]` for an input [T, D]
    and the [T] cotangent of its per-token sums of squares.

    ```mlir
    %dx = lathe.row_sum_squares_grad %x, %dn : tensor<8x64xf32>, tensor<8xf32> -> tensor<8x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input, Lathe_F32Tensor:$result_grad);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $input `,` $result_grad attr-dict `:` type($input) `,` type($result_grad) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_DepthAttentionGradOp : Lathe_Op<"depth_attention_grad",
    [Pure, AttrSizedOperandSegments, AttrSizedResultSegments]> {
  let summary = "The VJP of lathe.depth_attention and of lathe.routing_entropy.";
  let description = [{
    Recomputes a routing site's scores `z_n = <w * g, S_n> / rms_n` and
    weights `alpha = softmax_n(z)` (the same sources, norms, query w, gain
    g, null source, gate and eps as the `lathe.depth_attention` or
    `lathe.routing_entropy` it differentiates) and, from the cotangent dy of
    the routed result and/or the cotangent e of the mean routing entropy:

    - `dr = act(gate) * dy`, `dalpha_n = <dr, S_n>`,
      `dz_n = alpha_n (dalpha_n - sum_m alpha_m dalpha_m)
             - (e / T) alpha_n (ln alpha_n + H)` with `H = -sum alpha ln alpha`;
    - `dS_n = alpha_n dr + dz_n / rms_n (w * g) - dz_n z_n / (D rms_n^2) S_n`,
      the last term (the RMS's path) going instead to `norm_grads[n] =
      -dz_n z_n / (2 D rms_n^2)` when the sums of squares are operands;
    - `dw = g * sum_t sum_n dz_n S_n / rms_n`, `dg = w * (the same sum)`;
    - the null source's gradient is its dS summed over tokens; the gate's
      is `dy * r * act'(gate)` with `r = sum_n alpha_n S_n` (summed to one
      value for a scalar gate).

    The base's cotangent is dy itself, so there is no result for it.

    ```mlir
    %ds:2, %dn:2, %dw, %dg, %dnull = lathe.depth_attention_grad (%h0, %o0) norms (%n0, %n1)
        query %w gain %g null %n cotangent %dy {eps = 1.0e-06 : f64}
        : (tensor<8x64xf32>, tensor<8x64xf32>), (tensor<8xf32>, tensor<8xf32>), tensor<64xf32>,
          tensor<64xf32> null tensor<64xf32> cotangent tensor<8x64xf32>
        -> (tensor<8x64xf32>, tensor<8x64xf32>), (tensor<8xf32>, tensor<8xf32>), tensor<64xf32>,
           tensor<64xf32> null tensor<64xf32>
    ```
  }];
  let arguments = (ins Variadic<Lathe_F32Tensor>:$sources,
                       Variadic<Lathe_F32Tensor>:$norms,
                       Lathe_F32Tensor:$query, Lathe_F32Tensor:$gain,
                       Optional<Lathe_F32Tensor>:$null,
                       Optional<Lathe_F32Tensor>:$gate,
                       Optional<Lathe_F32Tensor>:$result_grad,
                       Optional<Lathe_F32Tensor>:$entropy_grad, F64Attr:$eps,
                       DefaultValuedAttr<Lathe_GateActivation,
                           "::mlir::lathe::GateActivation::identity">:$gate_activation);
  let results = (outs Variadic<Lathe_F32Tensor>:$source_grads,
                      Variadic<Lathe_F32Tensor>:$norm_grads,
                      Lathe_F32Tensor:$query_grad, Lathe_F32Tensor:$gain_grad,
                      Optional<Lathe_F32Tensor>:$null_grad,
                      Optional<Lathe_F32Tensor>:$gate_grad);
  let assemblyFormat = [{
    `(` $sources `)` (`norms` `(` $norms^ `)`)? `query` $query `gain` $gain
    (`null` $null^)? (`gate` $gate^)? (`cotangent` $result_grad^)?
    (`entropy` $entropy_grad^)? attr-dict
    `:` `(` type($sources) `)` `,` (`(` type($norms)^ `)` `,`)? type($query) `,` type($gain)
    (`null` type($null)^)? (`gate` type($gate)^)? (`cotangent` type($result_grad)^)?
    (`entropy` type($entropy_grad)^)?
    `->` `(` type($source_grads) `)` `,` (`(` type($norm_grads)^ `)` `,`)? type($query_grad)
    `,` type($gain_grad) (`null` type($null_grad)^)? (`gate` type($gate_grad)^)?
  }];
  let hasVerifier = 1;
}

def Lathe_MeanSquaredErrorOp : Lathe_Op<"mean_squared_error", [Pure,
    AllTypesMatch<["lhs", "rhs"]>, DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "The mean over all elements of the squared difference of two tensors.";
  let description = [{
    `result = mean((lhs - rhs)^2)`, a tensor<1xf32>: LoopFormer's
    shortcut-consistency term between the long and the short trajectory's
    final hidden states (ARCHITECTURES.md §4.2).

    ```mlir
    %m = lathe.mean_squared_error %a, %b : tensor<8x64xf32> -> tensor<1xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$lhs, Lathe_F32Tensor:$rhs);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($lhs) `->` type($result)";
  let hasVerifier = 1;
}

def Lathe_MeanSquaredErrorGradOp : Lathe_Op<"mean_squared_error_grad", [Pure,
    AllTypesMatch<["lhs", "rhs", "result"]>]> {
  let summary = "The gradient of lathe.mean_squared_error with respect to its first operand.";
  let description = [{
    `result = 2 (lhs - rhs) dy / N` with N the number of elements and dy
    the loss's cotangent (tensor<1xf32>); the second operand's gradient is
    its negation.

    ```mlir
    %da = lathe.mean_squared_error_grad %a, %b, %dy : tensor<8x64xf32>, tensor<1xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$lhs, Lathe_F32Tensor:$rhs,
                       Lathe_F32Tensor:$result_grad);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$lhs `,` $rhs `,` $result_grad attr-dict `:` type($lhs) `,` type($result_grad)";
}

def Lathe_SelectiveGateGradOp : Lathe_Op<"selective_gate_grad", [Pure,
    AllTypesMatch<["pre", "delta", "result_grad", "pre_grad", "direct_grad"]>,
    AllTypesMatch<["a_log", "a_log_grad"]>]> {
  let summary = "The elementwise core of lathe.selective_gate's VJP.";
  let description = [{
    With the gate's pre-activation `pre = W_up (W_down delta) + b` [T, D]
    recomputed by the caller, `Dt = softplus(pre)`, `e = exp(a_log)`,
    `Abar = exp(-Dt e)`, the result `h + Abar delta` and its cotangent `dy`:
    `direct_grad = dy Abar` (delta's gradient through the mix itself),
    `pre_grad = -dy delta Abar e sigmoid(pre)` and
    `a_log_grad = sum over rows of -dy delta Abar Dt e`. The products with
    W_up and W_down that finish delta's and the weights' gradients are
    lathe.matmul ops around it (see SelectiveGateOp's VJP).

    ```mlir
    %dpre, %da, %direct = lathe.selective_gate_grad %pre, %a_log, %delta, %dy
        : tensor<16x64xf32>, tensor<64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$pre, Lathe_F32Tensor:$a_log,
                       Lathe_F32Tensor:$delta, Lathe_F32Tensor:$result_grad);
  let results = (outs Lathe_F32Tensor:$pre_grad, Lathe_F32Tensor:$a_log_grad,
                      Lathe_F32Tensor:$direct_grad);
  let assemblyFormat = [{
    $pre `,` $a_log `,` $delta `,` $result_grad attr-dict `:` type($pre) `,`
    type($a_log)
  }];
  let hasVerifier = 1;
}

def Lathe_TokenAccuracyOp : Lathe_Op<"token_accuracy", [Pure]> {
  let summary = "The fraction of rows whose argmax is the target.";
  let description = [{
    `result = mean over t of [argmax_v logits[t, v] == targets[t]]`, a
    tensor<1xf32> in [0, 1] (the first maximum wins a tie). LoopUS's deep
    supervision (ARCHITECTURES.md §4.3) trains the confidence head towards
    it. It is piecewise constant, so it has no VJP: a loss may read it only
    as a constant target.

    ```mlir
    %acc = lathe.token_accuracy %logits, %targets : tensor<16x256xf32>, tensor<16xi32> -> tensor<1xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$logits, Lathe_I32Tensor:$targets);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $logits `,` $targets attr-dict `:` type($logits) `,` type($targets) `->`
    type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_BinaryCrossEntropyOp : Lathe_Op<"binary_cross_entropy", [Pure,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "The binary cross-entropy of the last row's logit against a target probability.";
  let description = [{
    For logits [T, 1] and a target `a` in [0, 1] (tensor<1xf32>), with
    `z = logits[T - 1, 0]`: `result = max(z, 0) - z a + log(1 + exp(-|z|))`,
    BCE-with-logits in its stable form. LoopUS's confidence head reads the
    last (real) token of a training window (ARCHITECTURES.md §4.3). The
    target gets no gradient.

    ```mlir
    %l = lathe.binary_cross_entropy %z, %acc : tensor<16x1xf32>, tensor<1xf32> -> tensor<1xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$logits, Lathe_F32Tensor:$target);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $logits `,` $target attr-dict `:` type($logits) `,` type($target) `->`
    type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_BinaryCrossEntropyGradOp : Lathe_Op<"binary_cross_entropy_grad", [Pure,
    AllTypesMatch<["logits", "result"]>, AllTypesMatch<["target", "result_grad"]>]> {
  let summary = "The gradient of lathe.binary_cross_entropy with respect to its logits.";
  let description = [{
    `result[T - 1, 0] = (sigmoid(z) - a) dy` and 0 in every other row, with
    dy the loss's cotangent (tensor<1xf32>).

    ```mlir
    %dz = lathe.binary_cross_entropy_grad %z, %acc, %dy : tensor<16x1xf32>, tensor<1xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$logits, Lathe_F32Tensor:$target,
                       Lathe_F32Tensor:$result_grad);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $logits `,` $target `,` $result_grad attr-dict `:` type($logits) `,`
    type($target)
  }];
}

def Lathe_SwigluOp : Lathe_Op<"swiglu", [Pure, SameOperandsAndResultType]> {
  let summary = "SwiGLU's gating, silu(gate) * up, elementwise.";
  let description = [{
    The hidden activation of a SwiGLU MLP, which its VJP needs again for the
    down projection's weight gradient.

    ```mlir
    %h = lathe.swiglu %g, %u : tensor<8x128xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$gate, Lathe_F32Tensor:$up);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$gate `,` $up attr-dict `:` type($result)";
}

def Lathe_SwigluGradOp : Lathe_Op<"swiglu_grad", [Pure]> {
  let summary = "The VJP of lathe.swiglu.";
  let description = [{
    With s = sigmoid(gate): `gate_grad = dh * up * s * (1 + gate * (1 - s))`
    and `up_grad = dh * gate * s`.

    ```mlir
    %dg, %du = lathe.swiglu_grad %g, %u, %dh
        : tensor<8x128xf32>, tensor<8x128xf32>, tensor<8x128xf32>
        -> tensor<8x128xf32>, tensor<8x128xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$gate, Lathe_F32Tensor:$up,
                       Lathe_F32Tensor:$result_grad);
  let results = (outs Lathe_F32Tensor:$gate_grad, Lathe_F32Tensor:$up_grad);
  let assemblyFormat = [{
    $gate `,` $up `,` $result_grad attr-dict `:` type($gate) `,` type($up) `,`
    type($result_grad) `->` type($gate_grad) `,` type($up_grad)
  }];
  let hasVerifier = 1;
}

def Lathe_EmbeddingGradOp : Lathe_Op<"embedding_grad", [Pure]> {
  let summary = "The VJP of lathe.embedding: rows scattered back and summed.";
  let description = [{
    `result[v, :] = accumulate[v, :] + sum over t with tokens[t] == v of
    result_grad[t, :]`, for a result of the table's shape [V, D];
    `accumulate` is 0 when absent. A tied table (the LM head's weight) has a
    gradient already, and the rows go straight into it.

    ```mlir
    %dtable = lathe.embedding_grad %tokens, %dx
        : tensor<8xi32>, tensor<8x64xf32> -> tensor<256x64xf32>
    %dtied = lathe.embedding_grad %tokens, %dx into %dhead
        : tensor<8xi32>, tensor<8x64xf32>, tensor<256x64xf32> -> tensor<256x64xf32>
    ```
  }];
  let arguments = (ins Lathe_I32Tensor:$tokens, Lathe_F32Tensor:$result_grad,
                       Optional<Lathe_F32Tensor>:$accumulate);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $tokens `,` $result_grad (`into` $accumulate^)? attr-dict `:` type($tokens)
    `,` type($result_grad) (`,` type($accumulate)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_ScatterAddRowsOp : Lathe_Op<"scatter_add_rows",
    [DestinationStyleOpInterface,
     DeclareOpInterfaceMethods<MemoryEffectsOpInterface>]> {
  let summary = "Rows added into the rows of a table that indices name: a sparse table gradient.";
  let description = [{
    The kernel-level form of `lathe.embedding_grad`, in destination-passing
    style: `init[indices[t], :] += rows[t, :]` for every t, in order, so
    repeated indices sum. It is what `lathe-lower-to-linalg` produces for
    the table's gradient: T D additions where a one-hot product would cost
    V T D multiply-adds (GPT-2's 50304-row table at 256 rows: 0.2 MFLOP
    against 20 GFLOP). No structured op scatters, so kernel formation
    takes it as a unit, like `lathe.fused_attention`, and bufferization
    writes it as loops: parallel over groups of columns (no two iterations
    touch the same element, whatever the indices), sequential over t.

    ```mlir
    %g = lathe.scatter_add_rows %tokens, %dx into %zeros
        : tensor<8xi32>, tensor<8x64xf32>, tensor<256x64xf32> -> tensor<256x64xf32>
    ```
  }];
  let arguments = (ins AnyShaped:$indices, AnyShaped:$rows, AnyShaped:$init);
  let results = (outs Variadic<AnyRankedTensor>:$result);
  let assemblyFormat = [{
    $indices `,` $rows `into` $init attr-dict `:` type($indices) `,`
    type($rows) `,` type($init) (`->` type($result)^)?
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    ::mlir::MutableOperandRange getDpsInitsMutable() {
      return getInitMutable();
    }
  }];
}

def Lathe_SumRowsOp : Lathe_Op<"sum_rows", [Pure]> {
  let summary = "The sum over rows of a [T, N] tensor: a bias's gradient.";
  let description = [{
    `result[n] = sum over t of input[t, n]`.

    ```mlir
    %db = lathe.sum_rows %dy : tensor<8x32xf32> -> tensor<32xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

def Lathe_PadRowsOp : Lathe_Op<"pad_rows", [Pure]> {
  let summary = "Rows followed by zero rows: the VJP of taking leading rows.";
  let description = [{
    `result[i, :] = input[i, :]` for i < T and 0 after, for an input [T, D]
    and a result [N, D], N >= T: the gradient of a learned position table
    [N, D] whose first T rows a window reads.

    ```mlir
    %dpos = lathe.pad_rows %dx : tensor<8x32xf32> -> tensor<64x32xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

def Lathe_RepeatRowsOp : Lathe_Op<"repeat_rows", [Pure,
    DeclareOpInterfaceMethods<Lathe_VjpOpInterface>]> {
  let summary = "The rows of a tensor, repeated: one copy per sequence of a batch.";
  let description = [{
    `result[s T + t, :] = input[t, :]` for an input [T, D] and a result
    [N T, D]: a learned position table's first T rows added to each of the
    N windows a training step packs into its rows. Its vector-Jacobian
    product is `lathe.fold_rows`.

    ```mlir
    %pos4 = lathe.repeat_rows %pos : tensor<16x32xf32> -> tensor<64x32xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

def Lathe_FoldRowsOp : Lathe_Op<"fold_rows", [Pure]> {
  let summary = "The sum of a tensor's blocks of rows: the VJP of lathe.repeat_rows.";
  let description = [{
    `result[t, :] = sum over s of input[s T + t, :]` for an input [N T, D]
    and a result [T, D].

    ```mlir
    %dpos = lathe.fold_rows %dx : tensor<64x32xf32> -> tensor<16x32xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

def Lathe_LayerNormGradOp : Lathe_Op<"layer_norm_grad", [Pure]> {
  let summary = "The VJP of LayerNorm: the input's, the gain's and the bias's gradients.";
  let description = [{
    With n = (x - mean) r, r = 1 / sqrt(var + eps) per row, and e = dy * g:
    `input_grad = r (e - mean(e) - n mean(e n))`,
    `gain_grad = sum over rows of dy n`, `bias_grad = sum over rows of dy`.

    ```mlir
    %dx, %dg, %db = lathe.layer_norm_grad %x, %g, %dy {eps = 1.0e-05 : f64}
        : tensor<8x64xf32>, tensor<64xf32>, tensor<8x64xf32>
        -> tensor<8x64xf32>, tensor<64xf32>, tensor<64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input, Lathe_F32Tensor:$gain,
                       Lathe_F32Tensor:$result_grad, F64Attr:$eps);
  let results = (outs Lathe_F32Tensor:$input_grad, Lathe_F32Tensor:$gain_grad,
                      Lathe_F32Tensor:$bias_grad);
  let assemblyFormat = [{
    $input `,` $gain `,` $result_grad attr-dict `:` type($input) `,`
    type($gain) `,` type($result_grad) `->` type($input_grad) `,`
    type($gain_grad) `,` type($bias_grad)
  }];
  let hasVerifier = 1;
}

def Lathe_ActivationOp : Lathe_Op<"activation", [Pure, SameOperandsAndResultType]> {
  let summary = "An ungated MLP's activation, GELU (tanh) or ReLU², elementwise.";
  let description = [{
    The hidden activation of a `gelu` or `relu2` `lathe.mlp`, which its VJP
    needs again for the down projection's weight gradient.

    ```mlir
    %h = lathe.activation gelu %u : tensor<8x256xf32>
    ```
  }];
  let arguments = (ins Lathe_MlpKind:$kind, Lathe_F32Tensor:$input);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$kind $input attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Lathe_ActivationGradOp : Lathe_Op<"activation_grad", [Pure,
    SameOperandsAndResultType]> {
  let summary = "The VJP of lathe.activation.";
  let description = [{
    `result = result_grad * act'(input)`: for GELU (tanh) with
    u = sqrt(2/pi) (z + 0.044715 z^3), `0.5 (1 + tanh u) + 0.5 z (1 - tanh^2 u)
    sqrt(2/pi) (1 + 3 0.044715 z^2)`; for ReLU², `2 relu(z)`.

    ```mlir
    %du = lathe.activation_grad gelu %u, %dh : tensor<8x256xf32>
    ```
  }];
  let arguments = (ins Lathe_MlpKind:$kind, Lathe_F32Tensor:$input,
                       Lathe_F32Tensor:$result_grad);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$kind $input `,` $result_grad attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Lathe_PhaseRotateThetaGradOp : Lathe_Op<"phase_rotate_theta_grad", [Pure]> {
  let summary = "The gradient of lathe.phase_rotate's angles.";
  let description = [{
    From the rotation's output y and its cotangent dy (both [T, D]):
    `result[k] = sum over rows t and stripes i of
    dy[t, i d_p + 2k + 1] y[t, i d_p + 2k] - dy[t, i d_p + 2k] y[t, i d_p + 2k + 1]`,
    since d y_2k / d phi = -y_2k+1 and d y_2k+1 / d phi = y_2k.

    ```mlir
    %dtheta = lathe.phase_rotate_theta_grad %y, %dy {phases = 3 : i64}
        : tensor<64x96xf32>, tensor<64x96xf32> -> tensor<16xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$output, Lathe_F32Tensor:$result_grad,
                       I64Attr:$phases);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = [{
    $output `,` $result_grad attr-dict `:` type($output) `,` type($result_grad)
    `->` type($result)
  }];
  let hasVerifier = 1;
}

def Lathe_CenterRowsOp : Lathe_Op<"center_rows", [Pure, SameOperandsAndResultType]> {
  let summary = "Each row minus its mean: the VJP of lathe.dc_inject.";
  let description = [{
    `result[t, :] = input[t, :] - mean(input[t, :])`. The horn injection
    replaces a row's mean by a constant, so its Jacobian in x is I - 11^T/D.

    ```mlir
    %dx = lathe.center_rows %dy : tensor<64x96xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($result)";
}

def Lathe_ParcaeInjectGradOp : Lathe_Op<"parcae_inject_grad", [Pure]> {
  let summary = "The VJP of lathe.parcae_inject.";
  let description = [{
    For u = Delta be + Abar h (Delta = softplus(dt_bias), Abar =
    exp(-Delta exp(A_log))) and the cotangent du:
    `be_grad = Delta du`, `state_grad = Abar du`,
    `a_log_grad[c] = -sum_t du h Delta exp(A_log) Abar`,
    `dt_bias_grad[c] = sum_t du (be - h exp(A_log) Abar) sigmoid(dt_bias)`.
    Without `state` (h = 0) the A_log gradient is 0 and state_grad is unused.

    ```mlir
    %dbe, %da, %ddt, %dh = lathe.parcae_inject_grad %be, %a_log, %dt_bias state %h grad %du
        : tensor<16x64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<16x64xf32>
          state tensor<16x64xf32>
        -> tensor<16x64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<16x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$be, Lathe_F32Tensor:$a_log,
                       Lathe_F32Tensor:$dt_bias,
                       Optional<Lathe_F32Tensor>:$state,
                       Lathe_F32Tensor:$result_grad);
  let results = (outs Lathe_F32Tensor:$be_grad, Lathe_F32Tensor:$a_log_grad,
                      Lathe_F32Tensor:$dt_bias_grad, Lathe_F32Tensor:$state_grad);
  let assemblyFormat = [{
    $be `,` $a_log `,` $dt_bias (`state` $state^)? `grad` $result_grad attr-dict
    `:` type($be) `,` type($a_log) `,` type($dt_bias) `,` type($result_grad)
    (`state` type($state)^)? `->` type($be_grad) `,` type($a_log_grad) `,`
    type($dt_bias_grad) `,` type($state_grad)
  }];
  let hasVerifier = 1;
}

def Lathe_SiluGradOp : Lathe_Op<"silu_grad", [Pure, SameOperandsAndResultType]> {
  let summary = "The VJP of lathe.silu.";
  let description = [{
    With s = sigmoid(x): `result = result_grad * s * (1 + x (1 - s))`.

    ```mlir
    %dx = lathe.silu_grad %x, %dy : tensor<1x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input, Lathe_F32Tensor:$result_grad);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$input `,` $result_grad attr-dict `:` type($result)";
}

def Lathe_GatedAddGradOp : Lathe_Op<"gated_add_grad", [Pure]> {
  let summary = "The VJP of lathe.gated_add in the gated input and the gate.";
  let description = [{
    For z = x + gate * y: `rhs_grad = gate * dz` (the gate row broadcast
    over the rows) and `gate_grad[0, d] = sum over rows of dz * y`. (x's
    cotangent is dz itself.)

    ```mlir
    %dy, %dg = lathe.gated_add_grad %y, %g, %dz
        : tensor<16x64xf32>, tensor<1x64xf32>, tensor<16x64xf32>
        -> tensor<16x64xf32>, tensor<1x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$rhs, Lathe_F32Tensor:$gate,
                       Lathe_F32Tensor:$result_grad);
  let results = (outs Lathe_F32Tensor:$rhs_grad, Lathe_F32Tensor:$gate_grad);
  let assemblyFormat = [{
    $rhs `,` $gate `,` $result_grad attr-dict `:` type($rhs) `,` type($gate)
    `,` type($result_grad) `->` type($rhs_grad) `,` type($gate_grad)
  }];
  let hasVerifier = 1;
}

def Lathe_ModulatedRmsNormGradOp : Lathe_Op<"modulated_rms_norm_grad", [Pure]> {
  let summary = "The VJP of lathe.modulated_rms_norm.";
  let description = [{
    RMSNorm's VJP with the gain 1 + scale: `input_grad` as for
    `lathe.rms_norm_grad`, and `scale_grad[0, d] = sum over rows of dy n`.

    ```mlir
    %dx, %ds = lathe.modulated_rms_norm_grad %x, %s, %dy {eps = 1.0e-05 : f64}
        : tensor<16x64xf32>, tensor<1x64xf32>, tensor<16x64xf32>
        -> tensor<16x64xf32>, tensor<1x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$input, Lathe_F32Tensor:$scale,
                       Lathe_F32Tensor:$result_grad, F64Attr:$eps);
  let results = (outs Lathe_F32Tensor:$input_grad, Lathe_F32Tensor:$scale_grad);
  let assemblyFormat = [{
    $input `,` $scale `,` $result_grad attr-dict `:` type($input) `,`
    type($scale) `,` type($result_grad) `->` type($input_grad) `,`
    type($scale_grad)
  }];
  let hasVerifier = 1;
}

def Lathe_AssignOp : Lathe_Op<"assign", [MemoryEffects<[MemWrite]>,
    AllTypesMatch<["target", "value", "result"]>]> {
  let summary = "Overwrites a parameter or a cache with a new value, in place.";
  let description = [{
    The optimizer's write-back: `target` must be a `lathe.weight` (the
    parameter's storage) or a `lathe.cache_read` (a session state, such as
    an Adam moment or an accumulated gradient), and it must have no use
    after this op. The result is the updated contents. Like
    `lathe.cache_write`, the write is an effect and stays when nothing reads
    the result.

    ```mlir
    %w = lathe.weight @"lm_head.weight" : tensor<256x64xf32>
    %w1 = lathe.assign %w, %new : tensor<256x64xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$target, Lathe_F32Tensor:$value);
  let results = (outs Lathe_F32Tensor:$result);
  let assemblyFormat = "$target `,` $value attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Lathe_GlobalNormOp : Lathe_Op<"global_norm", [Pure]> {
  let summary = "The global L2 norm of scaled gradients, and the clipping factor.";
  let description = [{
    `norm = scale * sqrt(sum over all gradients of sum(g^2))` and
    `factor = min(1, max_norm / norm)` (1 when norm is 0): gradient clipping
    by global norm, with `scale` (a tensor<1xf32>) applied first, e.g. 1/B
    for gradients summed over B sequences.

    ```mlir
    %norm, %factor = lathe.global_norm (%g0, %g1) scale %s {max_norm = 1.0 : f64}
        : (tensor<64x64xf32>, tensor<64xf32>), tensor<1xf32> -> tensor<1xf32>, tensor<1xf32>
    ```
  }];
  let arguments = (ins Variadic<Lathe_F32Tensor>:$grads, Lathe_F32Tensor:$scale,
                       F64Attr:$max_norm);
  let results = (outs Lathe_F32Tensor:$norm, Lathe_F32Tensor:$factor);
  let assemblyFormat = [{
    `(` $grads `)` `scale` $scale attr-dict `:` `(` type($grads) `)` `,`
    type($scale) `->` type($norm) `,` type($factor)
  }];
  let hasVerifier = 1;
}

def Lathe_MuonOp : Lathe_Op<"muon", [Pure,
    AllTypesMatch<["param", "grad", "buffer", "new_param", "new_buffer"]>,
    AllTypesMatch<["lr", "scale", "factor"]>]> {
  let summary = "One Muon update of a 2-D hidden matrix: orthogonalised Nesterov momentum.";
  let description = [{
    Keller Jordan's Muon. With `g = grad * scale * factor` (as for AdamW),
    `B' = momentum B + g`, `U = g + momentum B'` (Nesterov), `X = U /
    (||U||_F + 1e-7)`, taken as X^T when the matrix has more rows than
    columns, then five Newton-Schulz steps of the quintic `X <- a X + (b A
    + c A^2) X` with `A = X X^T` and (a, b, c) = (3.4445, -4.7750, 2.0315),
    which drive every singular value of X towards 1 (the orthogonal polar
    factor of U, approximately); then `p' = p (1 - lr_m weight_decay) -
    lr_m sqrt(max(1, rows / cols)) X` with `lr_m = lr * lr_scale`: the
    scheduled AdamW learning rate scaled for Muon.

    ```mlir
    %p1, %b1 = lathe.muon %p, %g, %b lr %lr scale %s factor %f
        {lr_scale = 2.0e+01 : f64, momentum = 0.95 : f64, weight_decay = 0.1 : f64}
        : tensor<64x128xf32>, tensor<1xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$param, Lathe_F32Tensor:$grad,
                       Lathe_F32Tensor:$buffer, Lathe_F32Tensor:$lr,
                       Lathe_F32Tensor:$scale, Lathe_F32Tensor:$factor,
                       F64Attr:$momentum, F64Attr:$lr_scale,
                       F64Attr:$weight_decay);
  let results = (outs Lathe_F32Tensor:$new_param, Lathe_F32Tensor:$new_buffer);
  let assemblyFormat = [{
    $param `,` $grad `,` $buffer `lr` $lr `scale` $scale `factor` $factor
    attr-dict `:` type($param) `,` type($lr)
  }];
  let hasVerifier = 1;
}

def Lathe_AdamwOp : Lathe_Op<"adamw", [Pure,
    AllTypesMatch<["param", "grad", "m", "v", "new_param", "new_m", "new_v"]>,
    AllTypesMatch<["lr", "step", "scale", "factor"]>]> {
  let summary = "One AdamW update of a parameter and its two moments.";
  let description = [{
    With `g = grad * scale * factor` (the gradient, its batch scale and its
    clipping factor), t = `step` (from 1) and lr = `lr` (tensor<1xf32> each):
    `m' = beta1 m + (1 - beta1) g`, `v' = beta2 v + (1 - beta2) g^2`,
    `p' = p (1 - lr weight_decay) - lr (m' / (1 - beta1^t)) /
    (sqrt(v' / (1 - beta2^t)) + eps)`: decoupled weight decay, as
    torch.optim.AdamW. `weight_decay` is 0 for the parameters that take none
    (norm gains, biases, Parcae's A_log, dt_bias and B).

    ```mlir
    %p1, %m1, %v1 = lathe.adamw %p, %g, %m, %v lr %lr step %t scale %s factor %f
        {beta1 = 0.9 : f64, beta2 = 0.95 : f64, eps = 1.0e-08 : f64, weight_decay = 0.1 : f64}
        : tensor<64x64xf32>, tensor<1xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Tensor:$param, Lathe_F32Tensor:$grad,
                       Lathe_F32Tensor:$m, Lathe_F32Tensor:$v,
                       Lathe_F32Tensor:$lr, Lathe_F32Tensor:$step,
                       Lathe_F32Tensor:$scale, Lathe_F32Tensor:$factor,
                       F64Attr:$beta1, F64Attr:$beta2, F64Attr:$eps,
                       F64Attr:$weight_decay);
  let results = (outs Lathe_F32Tensor:$new_param, Lathe_F32Tensor:$new_m,
                      Lathe_F32Tensor:$new_v);
  let assemblyFormat = [{
    $param `,` $grad `,` $m `,` $v `lr` $lr `step` $step `scale` $scale
    `factor` $factor attr-dict `:` type($param) `,` type($lr)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Library calls
//===----------------------------------------------------------------------===//

def Lathe_F32Buffer : MemRefRankOf<[F32], [1, 2, 3, 4]>;

def Lathe_GemmOp : Lathe_Op<"gemm", [AttrSizedOperandSegments]> {
  let summary = "A (batched) matrix product with an epilogue, for a GEMM library.";
  let description = [{
    The cuda target's GEMM descriptor: `lathe-contraction-to-gemm` turns a
    kernel's matrix product into this op on the host side of the kernel,
    and the runtime calls cuBLASLt with it (the cuda-emulated device runs a
    reference GEMM with the same semantics). On row-major f32 buffers, for
    each batch i < `batch`:

    ```
    D_i = epilogue(op(A_i) op(B_i) [+ C_i] [+ bias])     (m x n)
    ```

    op(A) is m x k (`trans_a`: A is stored k x m), op(B) is k x n
    (`trans_b`: stored n x k); `lda`, `ldb` and `ldd` are the row strides in
    elements, `stride_a`, `stride_b` and `stride_d` the batch strides. C,
    when given, has D's layout and may be D itself (accumulation in place:
    the residual add); `bias` has n elements and is added to every row.
    `aux`, when given, receives the value before the epilogue (what a GELU's
    backward needs), with D's layout. `precision` is the format the
    products are formed in: f32 exactly, or tf32/bf16/f16 (the operands
    rounded to it, as cuBLASLt's fast compute modes do), always accumulated
    in f32.

    ```mlir
    lathe.gemm %x, %w into %y accumulate %r bias %b epilogue(gelu)
        {m = 64 : i64, n = 256 : i64, k = 64 : i64, trans_a = false,
         trans_b = true, lda = 64 : i64, ldb = 64 : i64, ldd = 256 : i64}
        : memref<64x64xf32>, memref<256x64xf32>, memref<64x256xf32>,
          memref<64x256xf32>, memref<256xf32>
    ```
  }];
  let arguments = (ins Lathe_F32Buffer:$a, Lathe_F32Buffer:$b,
                       Lathe_F32Buffer:$d,
                       Optional<Lathe_F32Buffer>:$c,
                       Optional<Lathe_F32Buffer>:$bias,
                       Optional<Lathe_F32Buffer>:$aux,
                       I64Attr:$m, I64Attr:$n, I64Attr:$k,
                       BoolAttr:$trans_a, BoolAttr:$trans_b,
                       I64Attr:$lda, I64Attr:$ldb, I64Attr:$ldd,
                       DefaultValuedAttr<I64Attr, "1">:$batch,
                       DefaultValuedAttr<I64Attr, "0">:$stride_a,
                       DefaultValuedAttr<I64Attr, "0">:$stride_b,
                       DefaultValuedAttr<I64Attr, "0">:$stride_d,
                       DefaultValuedAttr<Lathe_GemmEpilogue,
                           "::mlir::lathe::GemmEpilogue::none">:$epilogue,
                       DefaultValuedAttr<Lathe_GemmPrecision,
                           "::mlir::lathe::GemmPrecision::f32">:$precision);
  let assemblyFormat = [{
    $a `,` $b `into` $d (`accumulate` $c^)? (`bias` $bias^)? (`aux` $aux^)?
    (`epilogue` `(` $epilogue^ `)`)? (`precision` `(` $precision^ `)`)?
    attr-dict `:` type(operands)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Kernels
//===----------------------------------------------------------------------===//

def Lathe_LaunchOp : Lathe_Op<"launch",
    [CallOpInterface, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "Runs one kernel formed by `lathe-form-kernels`.";
  let description = [{
    Calls a kernel function (a `func.func` carrying the `lathe.kernel` unit
    attribute) in destination-passing form: the kernel takes the operands,
    then one tensor per result that it overwrites, and returns those. The
    launch itself names only the operands; the result buffers are planned by
    `lathe-plan-buffers`, which records their arena offsets in `offsets`.
    `tied` (one entry per result) names the operand whose storage a result
    overwrites in place, or -1: such a result gets no buffer of its own.

    ```mlir
    %y = lathe.launch @forward_k3(%x, %w)
        : (tensor<64x64xf32>, tensor<256x64xf32>) -> tensor<64x256xf32>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$callee,
                       Variadic<AnyRankedTensor>:$operands,
                       OptionalAttr<DenseI64ArrayAttr>:$offsets,
                       OptionalAttr<DenseI64ArrayAttr>:$tied,
                       OptionalAttr<DictArrayAttr>:$arg_attrs,
                       OptionalAttr<DictArrayAttr>:$res_attrs);
  let results = (outs Variadic<AnyRankedTensor>:$results);
  let assemblyFormat = [{
    $callee `(` $operands `)` attr-dict `:` functional-type($operands, $results)
  }];
  let extraClassDeclaration = [{
    ::mlir::CallInterfaceCallable getCallableForCallee() {
      return (*this)->getAttrOfType<::mlir::SymbolRefAttr>("callee");
    }
    void setCalleeFromCallable(::mlir::CallInterfaceCallable callee) {
      (*this)->setAttr("callee", ::llvm::cast<::mlir::SymbolRefAttr>(callee));
    }
    ::mlir::Operation::operand_range getArgOperands() { return getOperands(); }
    /// The operand whose storage result `i` updates in place, or null.
    ::mlir::Value getTiedOperand(unsigned i) {
      if (!getTied() || (*getTied())[i] < 0)
        return {};
      return getOperand((*getTied())[i]);
    }
    ::mlir::MutableOperandRange getArgOperandsMutable() {
      return getOperandsMutable();
    }
  }];
}

#endif // LATHE_OPS_TD
