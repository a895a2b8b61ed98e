// RUN: lathe-opt %s --lathe-lower-to-linalg --split-input-file | FileCheck %s
// RUN: lathe-opt %s --lathe-lower-to-linalg=gpu-attention-grad --split-input-file | FileCheck %s --check-prefix=GPU

// Tests that a linear layer becomes one reduction generic over (t, o, i) that
// reads the weight in nn.Linear [out, in] layout, into a zero-filled result.

// CHECK-DAG: #[[X:.*]] = affine_map<(d0, d1, d2) -> (d0, d2)>
// CHECK-DAG: #[[W:.*]] = affine_map<(d0, d1, d2) -> (d1, d2)>
// CHECK-DAG: #[[Y:.*]] = affine_map<(d0, d1, d2) -> (d0, d1)>
// CHECK-LABEL: func.func @linear
// CHECK: %[[ZERO:.*]] = arith.constant 0.000000e+00 : f32
// CHECK: %[[INIT:.*]] = linalg.fill ins(%[[ZERO]] : f32)
// CHECK: linalg.generic {indexing_maps = [#[[X]], #[[W]], #[[Y]]], iterator_types = ["parallel", "parallel", "reduction"]}
// CHECK-SAME: outs(%[[INIT]] : tensor<4x16xf32>)
// CHECK: arith.mulf
// CHECK: arith.addf
// CHECK-NOT: lathe.linear
func.func @linear(%x: tensor<4x8xf32>, %w: tensor<16x8xf32>) -> tensor<4x16xf32> {
  %y = lathe.linear %x, %w : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  return %y : tensor<4x16xf32>
}

// -----

// Tests that RMSNorm is a sum-of-squares reduction followed by one
// elementwise generic using 1/sqrt(mean + eps) and the gain.

// CHECK-LABEL: func.func @rms_norm
// CHECK: %[[SS:.*]] = linalg.generic {{.*}} iterator_types = ["parallel", "reduction"]
// CHECK: linalg.generic {{.*}} ins(%{{.*}}, %[[SS]], %{{.*}} : tensor<4x8xf32>, tensor<4xf32>, tensor<8xf32>)
// CHECK: arith.constant 1.250000e-01 : f32
// CHECK: math.sqrt
// CHECK: arith.divf
func.func @rms_norm(%x: tensor<4x8xf32>, %g: tensor<8xf32>) -> tensor<4x8xf32> {
  %y = lathe.rms_norm %x, %g {eps = 1.0e-5 : f64} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}

// -----

// Tests that attention becomes one lathe.fused_attention into a fresh
// [T, heads * head_dim] tensor, keeping heads, kv_heads and the normalizer:
// no score tensor exists at this level any more.

// CHECK-LABEL: func.func @attention
// CHECK: %[[E:.*]] = tensor.empty() : tensor<4x8xf32>
// CHECK: lathe.fused_attention %arg0, %arg1, %arg2 into %[[E]] {heads = 4 : i64, kv_heads = 2 : i64}
// CHECK-NOT: linalg.generic
func.func @attention(%q: tensor<4x8xf32>, %k: tensor<4x4xf32>, %v: tensor<4x4xf32>) -> tensor<4x8xf32> {
  %a = lathe.attention %q, %k, %v {heads = 4 : i64, kv_heads = 2 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32> -> tensor<4x8xf32>
  return %a : tensor<4x8xf32>
}

// -----

// Tests that the embedding gathers rows with tensor.extract at the token id.

// CHECK-LABEL: func.func @embedding
// CHECK: linalg.generic
// CHECK: arith.index_cast %{{.*}} : i32 to index
// CHECK: linalg.index 1
// CHECK: tensor.extract %{{.*}}[%{{.*}}, %{{.*}}] : tensor<16x8xf32>
func.func @embedding(%t: tensor<4xi32>, %e: tensor<16x8xf32>) -> tensor<4x8xf32> {
  %x = lathe.embedding %t, %e : tensor<4xi32>, tensor<16x8xf32> -> tensor<4x8xf32>
  return %x : tensor<4x8xf32>
}

// -----

// Tests that RoPE first builds [T, head_dim/2] cos and sin tables of
// position * frequency (shared by all heads), then rotates each channel i
// with its partner i +- head_dim/2 (rotate-half), reading the tables at
// column c mod head_dim/2.

// CHECK-DAG: #[[PAIR:.*]] = affine_map<(d0, d1) -> (d0, d1 mod 2)>
// CHECK-LABEL: func.func @rope
// CHECK: %[[T:.*]]:2 = linalg.generic {{.*}} outs(%{{.*}}, %{{.*}} : tensor<4x2xf32>, tensor<4x2xf32>)
// CHECK: math.exp
// CHECK: math.cos
// CHECK: math.sin
// CHECK: linalg.generic {indexing_maps = [#{{.*}}, #[[PAIR]], #[[PAIR]], #{{.*}}]{{.*}} ins(%arg0, %[[T]]#0, %[[T]]#1 :
// CHECK: arith.remui
// CHECK: tensor.extract
// CHECK: arith.select
func.func @rope(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %y = lathe.rope %x {heads = 2 : i64, base = 10000.0 : f64} : tensor<4x8xf32> -> tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}

// -----

// Tests that the SwiGLU MLP is gate and up GEMMs, one elementwise silu(g)*u,
// and the down GEMM.

// CHECK-LABEL: func.func @mlp
// CHECK-COUNT-2: iterator_types = ["parallel", "parallel", "reduction"]
// CHECK: math.exp
// CHECK: arith.mulf
// CHECK: iterator_types = ["parallel", "parallel", "reduction"]
// CHECK-NOT: lathe.mlp
func.func @mlp(%x: tensor<4x8xf32>, %wg: tensor<12x8xf32>, %wd: tensor<8x12xf32>) -> tensor<4x8xf32> {
  %y = lathe.mlp swiglu %x gate %wg up %wg down %wd : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}

// -----

// Tests that weights and parameters stay: they are bound by the runtime.

// CHECK-LABEL: func.func @weights_stay
// CHECK: lathe.weight @g
// CHECK: arith.addf
lathe.param @g : tensor<4x8xf32> init(zeros)
func.func @weights_stay(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %g = lathe.weight @g : tensor<4x8xf32>
  %y = lathe.add %x, %g : tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}

// -----

// Tests that a cache write is left for kernel formation (which expands it
// where it outlines it, so no canonicalization can drop the write).

// CHECK-LABEL: func.func @cache_write
// CHECK: %[[C:.*]] = lathe.cache_read @k
// CHECK: lathe.cache_write %[[C]], %{{.*}} at %{{.*}}
lathe.cache @k : tensor<8x4xf32>
func.func @cache_write(%r: tensor<1x4xf32>, %pos: tensor<1xi32>) -> tensor<8x4xf32> {
  %c = lathe.cache_read @k : tensor<8x4xf32>
  %n = lathe.cache_write %c, %r at %pos : tensor<8x4xf32>, tensor<1x4xf32>, tensor<1xi32> -> tensor<8x4xf32>
  return %n : tensor<8x4xf32>
}

// -----

// Tests that decode attention (1 query row at position pos, 8 key rows) keeps
// the position operand and the normalizer.

// CHECK-LABEL: func.func @decode_attention
// CHECK: lathe.fused_attention %arg0, %arg1, %arg1 at %arg2 into %{{.*}} normalizer(softpick) {heads = 2 : i64, kv_heads = 1 : i64}
// CHECK-SAME: : tensor<1x4xf32>, tensor<8x2xf32>, tensor<8x2xf32>, tensor<1x4xf32>, tensor<1xi32> -> tensor<1x4xf32>
func.func @decode_attention(%q: tensor<1x4xf32>, %k: tensor<8x2xf32>, %pos: tensor<1xi32>) -> tensor<1x4xf32> {
  %a = lathe.attention %q, %k, %k at %pos normalizer(softpick) {heads = 2 : i64, kv_heads = 1 : i64} : tensor<1x4xf32>, tensor<8x2xf32>, tensor<8x2xf32>, tensor<1xi32> -> tensor<1x4xf32>
  return %a : tensor<1x4xf32>
}

// -----

// Tests that residual adds are fused into the product before them: the O
// projection's GEMM and the MLP's down GEMM accumulate into the residual
// stream instead of writing a fresh tensor that an add then reads.

// CHECK-LABEL: func.func @residuals
// CHECK-NOT: linalg.fill
// CHECK: %[[O:.*]] = linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "reduction"]{{.*}} outs(%arg0 : tensor<4x8xf32>)
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "reduction"]{{.*}} outs(%[[O]] : tensor<4x8xf32>)
func.func @residuals(%x: tensor<4x8xf32>, %a: tensor<4x8xf32>, %wo: tensor<8x8xf32>,
                     %wu: tensor<12x8xf32>, %wd: tensor<8x12xf32>) -> tensor<4x8xf32> {
  %o = lathe.linear %a, %wo : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %x1 = lathe.add %x, %o : tensor<4x8xf32>
  %m = lathe.mlp relu2 %a up %wu down %wd : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<4x8xf32>
  %x2 = lathe.add %m, %x1 : tensor<4x8xf32>
  return %x2 : tensor<4x8xf32>
}

// -----

// Tests that an MLP that saves its hidden values for the backward returns
// the up GEMM's result and the activation as well, and that its residual
// add still folds into the down GEMM while they are read.

// CHECK-LABEL: func.func @saved_hidden
// CHECK: %[[U:.*]] = linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "reduction"]
// CHECK: %[[A:.*]] = linalg.generic {{.*}} ins(%[[U]] : tensor<4x12xf32>)
// CHECK: %[[Y:.*]] = linalg.generic {{.*}} ins(%[[A]], %{{.*}} : tensor<4x12xf32>, tensor<8x12xf32>) outs(%arg0 : tensor<4x8xf32>)
// CHECK: return %[[Y]], %[[U]], %[[A]]
func.func @saved_hidden(%x: tensor<4x8xf32>, %a: tensor<4x8xf32>, %wu: tensor<12x8xf32>,
                        %wd: tensor<8x12xf32>) -> (tensor<4x8xf32>, tensor<4x12xf32>, tensor<4x12xf32>) {
  %m, %u, %h = lathe.mlp relu2 %a up %wu down %wd : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> (tensor<4x8xf32>, tensor<4x12xf32>, tensor<4x12xf32>)
  %y = lathe.add %m, %x : tensor<4x8xf32>
  return %y, %u, %h : tensor<4x8xf32>, tensor<4x12xf32>, tensor<4x12xf32>
}

// -----

// Tests the Three-Phase Transformer's ops. The per-phase RMSNorm sums
// squares per (row, stripe) through a floordiv map; the rotation first makes
// [D] cos/sin tables of each column's angle (theta at (c mod stripe) / 2,
// plus 2 pi / 3 per stripe), then turns each element with its partner
// (c +- 1) read from the input; the horn subtracts the row mean and adds
// 1 / (offset + row + 1).

// CHECK-DAG: #[[STRIPE:.*]] = affine_map<(d0, d1) -> (d0, d1 floordiv 4)>
// CHECK-DAG: #[[PAIR:.*]] = affine_map<(d0) -> ((d0 mod 4) floordiv 2)>
// CHECK-DAG: #[[COL:.*]] = affine_map<(d0, d1) -> (d1)>
// CHECK-LABEL: func.func @three_phase
// CHECK: linalg.generic {indexing_maps = [#{{.*}}, #[[STRIPE]]], iterator_types = ["parallel", "reduction"]}{{.*}} outs(%{{.*}} : tensor<2x3xf32>)
// CHECK: linalg.generic {indexing_maps = [#{{.*}}, #[[STRIPE]], #{{.*}}, #{{.*}}]
// CHECK: math.sqrt
// CHECK: %[[T:.*]]:2 = linalg.generic {indexing_maps = [#[[PAIR]], #{{.*}}, #{{.*}}]{{.*}} outs(%{{.*}}, %{{.*}} : tensor<12xf32>, tensor<12xf32>)
// CHECK: arith.divui
// CHECK: arith.constant 2.09439516 : f32
// CHECK: math.cos
// CHECK: math.sin
// CHECK: linalg.generic {indexing_maps = [#{{.*}}, #[[COL]], #[[COL]], #{{.*}}]{{.*}} ins(%{{.*}}, %[[T]]#0, %[[T]]#1 :
// CHECK: tensor.extract
// CHECK: arith.select
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]{{.*}} outs(%{{.*}} : tensor<2xf32>)
// CHECK: linalg.generic
// CHECK: tensor.extract %arg3
// CHECK: arith.divf
func.func @three_phase(%x: tensor<2x12xf32>, %g: tensor<12xf32>, %t: tensor<2xf32>, %pos: tensor<1xi32>) -> tensor<2x12xf32> {
  %n = lathe.rms_norm %x, %g {eps = 1.0e-6 : f64, phases = 3 : i64} : tensor<2x12xf32>, tensor<12xf32> -> tensor<2x12xf32>
  %r = lathe.phase_rotate %n, %t {phases = 3 : i64} : tensor<2x12xf32>, tensor<2xf32> -> tensor<2x12xf32>
  %h = lathe.dc_inject %r at %pos : tensor<2x12xf32>, tensor<1xi32> -> tensor<2x12xf32>
  return %h : tensor<2x12xf32>
}

// -----

// Tests one Delta AttnRes routing site over two sources: per source a single
// reduction with two results (the dot product with w * g, and the sum of
// squares), a softmax over the sources per token (two results, one per
// source), and the weighted sum added to the base.

// CHECK-LABEL: func.func @depth_attention(
// CHECK: %[[S0:.*]]:2 = linalg.generic {{.*}} iterator_types = ["parallel", "reduction"]} ins(%arg0, %arg2, %arg3 : {{.*}}) outs(%{{.*}}, %{{.*}} : tensor<4xf32>, tensor<4xf32>)
// CHECK: %[[S1:.*]]:2 = linalg.generic {{.*}} ins(%arg1, %arg2, %arg3 : {{.*}}) outs(%{{.*}}, %{{.*}} : tensor<4xf32>, tensor<4xf32>)
// CHECK: %[[A:.*]]:2 = linalg.generic {{.*}} iterator_types = ["parallel"]} ins(%[[S0]]#1, %[[S1]]#1, %[[S0]]#0, %[[S1]]#0 : {{.*}})
// CHECK: math.sqrt
// CHECK: arith.maximumf
// CHECK: math.exp
// CHECK: linalg.generic {{.*}} ins(%arg0, %arg1, %[[A]]#0, %[[A]]#1, %arg4 : {{.*}})
func.func @depth_attention(%a: tensor<4x8xf32>, %b: tensor<4x8xf32>, %w: tensor<8xf32>, %g: tensor<8xf32>, %h: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %x = lathe.depth_attention (%a, %b) query %w gain %g base %h {eps = 1.0e-6 : f64} : (tensor<4x8xf32>, tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  return %x : tensor<4x8xf32>
}

// -----

// Tests Parcae's injection: one elementwise generic reading B e, A_log,
// dt_bias (per channel) and the state; softplus as max(x, 0) +
// log1p(exp(-|x|)), Abar = exp(-Delta exp(A_log)).

// CHECK-DAG: #[[CH:.*]] = affine_map<(d0, d1) -> (d1)>
// CHECK-LABEL: func.func @parcae
// CHECK: linalg.generic {indexing_maps = [#{{.*}}, #[[CH]], #[[CH]], #{{.*}}, #{{.*}}]
// CHECK: math.log1p
// CHECK: math.exp
// CHECK: arith.negf
// CHECK: arith.addf
func.func @parcae(%be: tensor<4x8xf32>, %a: tensor<8xf32>, %dt: tensor<8xf32>, %h: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %u = lathe.parcae_inject %be, %a, %dt state %h : tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  return %u : tensor<4x8xf32>
}

// -----

// Tests LoopFormer's ops: the sinusoid is a generic with no inputs (cos for
// the first half of the columns, sin for the second); the modulated norm
// and the gated add read their [1, D] row through a (0, d) map.

// CHECK-DAG: #[[ROW:.*]] = affine_map<(d0, d1) -> (0, d1)>
// CHECK-LABEL: func.func @loopformer
// CHECK: linalg.generic {{.*}} outs(%{{.*}} : tensor<1x8xf32>)
// CHECK: arith.cmpi ult
// CHECK: math.cos
// CHECK: math.sin
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]
// CHECK: linalg.generic {indexing_maps = [#{{.*}}, #{{.*}}, #[[ROW]], #{{.*}}]
// CHECK: math.sqrt
// CHECK: linalg.generic {indexing_maps = [#{{.*}}, #{{.*}}, #[[ROW]], #{{.*}}]
// CHECK: arith.mulf
// CHECK: arith.addf
func.func @loopformer(%x: tensor<4x8xf32>, %y: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %phi = lathe.sinusoid {value = 0.25 : f64} : tensor<1x8xf32>
  %n = lathe.modulated_rms_norm %x, %phi {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<1x8xf32> -> tensor<4x8xf32>
  %z = lathe.gated_add %n, %y, %phi : tensor<4x8xf32>, tensor<1x8xf32>
  return %z : tensor<4x8xf32>
}

// -----

// Tests that with `norms` (the sources' sums of squares, made once by
// lathe.row_sum_squares where each source is produced) a site's pass over a
// source computes only its dot product, and the softmax reads the given sums.

// CHECK-LABEL: func.func @depth_attention_norms
// CHECK: %[[N:.*]] = linalg.generic {{.*}} ins(%arg0 : tensor<4x8xf32>) outs(%{{.*}} : tensor<4xf32>)
// CHECK: %[[D0:.*]] = linalg.generic {{.*}} ins(%arg0, %arg2, %arg2 : {{.*}}) outs(%{{.*}} : tensor<4xf32>)
// CHECK: %[[D1:.*]] = linalg.generic {{.*}} ins(%arg1, %arg2, %arg2 : {{.*}}) outs(%{{.*}} : tensor<4xf32>)
// CHECK: linalg.generic {{.*}} ins(%[[N]], %arg3, %[[D0]], %[[D1]] : {{.*}})
func.func @depth_attention_norms(%a: tensor<4x8xf32>, %b: tensor<4x8xf32>, %w: tensor<8xf32>, %nb: tensor<4xf32>) -> tensor<4x8xf32> {
  %na = lathe.row_sum_squares %a : tensor<4x8xf32> -> tensor<4xf32>
  %x = lathe.depth_attention (%a, %b) norms (%na, %nb) query %w gain %w {eps = 1.0e-6 : f64} : (tensor<4x8xf32>, tensor<4x8xf32>), (tensor<4xf32>, tensor<4xf32>), tensor<8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  return %x : tensor<4x8xf32>
}

// -----

// Tests the VJP of a routing site with a null source, norms, a sigmoid
// scalar gate and an entropy cotangent: the weights recomputed (with the
// scores and 1/rms), dalpha as one reduction over channels for all three
// candidates, the per-token coefficients (with the entropy's log), the null
// source's gradient reduced over tokens, one pass per source, the query and
// gain through one reduction over tokens, and the scalar gate's through a
// unit parallel loop and two reductions.

// CHECK-LABEL: func.func @depth_attention_grad
// CHECK: %[[W:.*]]:9 = linalg.generic {{.*}}iterator_types = ["parallel"]} ins(%{{.*}}, %arg3, %arg3, {{.*}}) outs(
// CHECK: math.sqrt
// CHECK: %[[DA:.*]]:3 = linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]} ins(%arg2, %arg0, %arg1, %arg4, %arg5 : {{.*}}) outs({{.*}} : tensor<4xf32>, tensor<4xf32>, tensor<4xf32>)
// CHECK: %[[C:.*]]:6 = linalg.generic {{.*}}iterator_types = ["parallel"]} ins({{.*}}%[[DA]]#2, %arg6 : {{.*}})
// CHECK: math.log
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]} ins(%[[W]]#0, %[[C]]#0, {{.*}}) outs(%{{.*}} : tensor<8xf32>)
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel"]} ins(%[[W]]#1, %[[C]]#1, {{.*}}) outs(%{{.*}} : tensor<4x8xf32>)
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel"]} ins(%[[W]]#2, %[[C]]#2, {{.*}}) outs(%{{.*}} : tensor<4x8xf32>)
// CHECK: %[[P:.*]] = linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]} ins(%arg2, %arg0, %arg1, %[[C]]#0, %[[C]]#1, %[[C]]#2 : {{.*}}) outs(%{{.*}} : tensor<8xf32>)
// CHECK: linalg.generic {{.*}} ins(%arg2, %[[P]] : {{.*}})
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction", "reduction"]} {{.*}} outs(%{{.*}} : tensor<1xf32>)
// CHECK: return {{.*}}, %[[C]]#4, {{.*}}
func.func @depth_attention_grad(%a: tensor<4x8xf32>, %b: tensor<4x8xf32>, %w: tensor<8xf32>, %nb: tensor<4xf32>, %dy: tensor<4x8xf32>, %s: tensor<1xf32>, %e: tensor<1xf32>) -> (tensor<4x8xf32>, tensor<4xf32>, tensor<8xf32>, tensor<1xf32>) {
  %ds:2, %dn:2, %dw, %dg, %dnull, %dgate = lathe.depth_attention_grad (%a, %b) norms (%nb, %nb) query %w gain %w null %w gate %s cotangent %dy entropy %e {eps = 1.0e-6 : f64, gate_activation = 1 : i32}
      : (tensor<4x8xf32>, tensor<4x8xf32>), (tensor<4xf32>, tensor<4xf32>), tensor<8xf32>, tensor<8xf32> null tensor<8xf32> gate tensor<1xf32> cotangent tensor<4x8xf32> entropy tensor<1xf32>
      -> (tensor<4x8xf32>, tensor<4x8xf32>), (tensor<4xf32>, tensor<4xf32>), tensor<8xf32>, tensor<8xf32> null tensor<8xf32> gate tensor<1xf32>
  return %ds#1, %dn#0, %dnull, %dgate : tensor<4x8xf32>, tensor<4xf32>, tensor<8xf32>, tensor<1xf32>
}

// -----

// Tests the routing entropy: the weights, then one (unit, token) reduction
// of -sum alpha log alpha into one value; and lathe.scale and
// lathe.row_sum_squares_grad as one elementwise generic each.

// CHECK-LABEL: func.func @routing_entropy
// CHECK: math.exp
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]} {{.*}} outs(%{{.*}} : tensor<1xf32>)
// CHECK: math.log
// CHECK: linalg.generic {{.*}} ins(%arg0, %arg2 : tensor<4x8xf32>, tensor<4xf32>) outs(%{{.*}} : tensor<4x8xf32>)
// CHECK: arith.constant 2.0
// CHECK: linalg.generic {{.*}} ins(%{{.*}} : tensor<4x8xf32>) outs(%{{.*}} : tensor<4x8xf32>)
// CHECK: arith.constant -3.0
func.func @routing_entropy(%a: tensor<4x8xf32>, %w: tensor<8xf32>, %n: tensor<4xf32>) -> (tensor<1xf32>, tensor<4x8xf32>) {
  %h = lathe.routing_entropy (%a, %a) query %w gain %w {eps = 1.0e-6 : f64} : (tensor<4x8xf32>, tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32> -> tensor<1xf32>
  %d = lathe.row_sum_squares_grad %a, %n : tensor<4x8xf32>, tensor<4xf32> -> tensor<4x8xf32>
  %m = lathe.scale %d {factor = -3.0 : f64} : tensor<4x8xf32>
  return %h, %m : tensor<1xf32>, tensor<4x8xf32>
}

// -----

// Tests Parcae's sampled depth: the masked update and the VJP mask are one
// elementwise generic each, reading the count inside the body; the
// unfrozen mask compares t with max(n - backprop, 0); the counted
// stop-gradient is its input.

// CHECK-LABEL: func.func @sampled_depth
// CHECK: linalg.generic {{.*}} ins(%arg1, %arg2 : tensor<4x8xf32>, tensor<4x8xf32>)
// CHECK: tensor.extract %arg0
// CHECK: arith.cmpi slt
// CHECK: arith.select
// CHECK: linalg.generic {{.*}} ins(%{{.*}} : tensor<4x8xf32>)
// CHECK: arith.maxsi
// CHECK: arith.cmpi ne
// CHECK: arith.select
// CHECK: return
func.func @sampled_depth(%n: tensor<1xi32>, %a: tensor<4x8xf32>, %b: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %s = lathe.stop_gradient %b count %n {backprop = 2 : i64, iteration = 1 : i64} : tensor<4x8xf32>, tensor<1xi32>
  %x = lathe.loop_select %n, %a, %s {iteration = 1 : i64} : tensor<1xi32>, tensor<4x8xf32>
  %m = lathe.iteration_mask %x, %n unfrozen {backprop = 2 : i64, iteration = 1 : i64} : tensor<4x8xf32>, tensor<1xi32>
  return %m : tensor<4x8xf32>
}

// -----

// Tests LoopFormer's shortcut pieces: a sinusoid reads its scalar from the
// table inside the body; the consistency term is one (unit, row, column)
// reduction into one value, and its gradient one elementwise generic.

// CHECK-LABEL: func.func @shortcut
// CHECK: linalg.generic
// CHECK: tensor.extract %arg0[%{{.*}}]
// CHECK: math.cos
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction", "reduction"]} ins(%arg1, %arg2 : {{.*}}) outs(%{{.*}} : tensor<1xf32>)
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel"]} ins(%arg1, %arg2, %{{.*}} : {{.*}}) outs(%{{.*}} : tensor<4x8xf32>)
func.func @shortcut(%traj: tensor<6xf32>, %a: tensor<4x8xf32>, %b: tensor<4x8xf32>) -> (tensor<1x16xf32>, tensor<4x8xf32>) {
  %phi = lathe.sinusoid %traj : tensor<6xf32> -> {index = 3 : i64} : tensor<1x16xf32>
  %m = lathe.mean_squared_error %a, %b : tensor<4x8xf32> -> tensor<1xf32>
  %d = lathe.mean_squared_error_grad %a, %b, %m : tensor<4x8xf32>, tensor<1xf32>
  return %phi, %d : tensor<1x16xf32>, tensor<4x8xf32>
}

// -----

// Tests LoopUS's step: the gate is the difference, two thin products and a
// per-element mix; the confidence reads the last real row (length - 1)
// straight from the states; the halting status is one two-element generic
// marked as the loop's exit status, and the kept state a generic updating
// the previous kept state, marked as the state the loop hands on.

// CHECK-LABEL: func.func @loopus
// CHECK: linalg.generic {{.*}} ins(%{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<4x8xf32>)
// CHECK: arith.subf
// CHECK: outs(%{{.*}} : tensor<4x2xf32>)
// CHECK: outs(%{{.*}} : tensor<4x8xf32>)
// CHECK: math.log1p
// CHECK: tensor.extract %arg7
// CHECK: arith.subi
// CHECK: tensor.extract %arg0[
// CHECK: linalg.generic {{.*}} outs(%{{.*}} : tensor<2xf32>) attrs = {lathe.exit_status}
// CHECK: arith.cmpf ogt
// CHECK: linalg.generic {{.*}} ins(%{{.*}}, %{{.*}} : tensor<2xf32>, tensor<4x8xf32>) outs(%arg8 : tensor<4x8xf32>) attrs = {lathe.loop_state}
// CHECK: arith.select
// CHECK-NOT: lathe.halt_if
func.func @loopus(%u: tensor<4x8xf32>, %h: tensor<4x8xf32>, %down: tensor<2x8xf32>, %up: tensor<8x2xf32>, %v: tensor<8xf32>, %wq: tensor<1x8xf32>, %bq: tensor<1xf32>, %n: tensor<1xi32>, %kept: tensor<4x8xf32>, %status: tensor<2xf32>) -> tensor<4x8xf32> {
  %h1 = lathe.selective_gate %u, %h, %down, %up, %v, %v : tensor<4x8xf32>, tensor<2x8xf32>, tensor<8x2xf32>, tensor<8xf32>
  %q = lathe.halt_confidence %u, %h, %v, %v, %wq, %bq length %n {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<1x8xf32>, tensor<1xf32> length tensor<1xi32>
  %s, %k = lathe.halt_if %q, %h1, %h length %n status %status kept %kept mode(threshold) {threshold = 0.9 : f64, tolerance = 0.01 : f64} : tensor<1xf32>, tensor<4x8xf32> length tensor<1xi32> status tensor<2xf32> kept tensor<4x8xf32> -> tensor<2xf32>
  return %k : tensor<4x8xf32>
}

// -----

// Tests Muon: the momentum generic yields the new buffer and the Nesterov
// direction; the Frobenius norm reduces both dimensions under a unit
// parallel loop; a tall matrix is transposed into X (so X X^T is the small
// Gram matrix); five Newton-Schulz steps of three products each; the
// update reads X transposed back.

// CHECK-DAG: #[[SWAP:.*]] = affine_map<(d0, d1) -> (d1, d0)>
// CHECK-LABEL: func.func @muon
// CHECK: linalg.generic {{.*}} outs(%{{.*}}, %{{.*}} : tensor<8x4xf32>, tensor<8x4xf32>)
// CHECK: iterator_types = ["parallel", "reduction", "reduction"]
// CHECK: linalg.generic {indexing_maps = [#[[SWAP]], {{.*}} outs(%{{.*}} : tensor<4x8xf32>)
// CHECK-COUNT-5: outs(%{{.*}} : tensor<4x4xf32>) {
// CHECK: linalg.generic {indexing_maps = [#{{.*}}, #[[SWAP]], {{.*}} outs(%{{.*}} : tensor<8x4xf32>)
// CHECK-NOT: lathe.muon
func.func @muon(%w: tensor<8x4xf32>, %s: tensor<1xf32>) -> tensor<8x4xf32> {
  %p, %b = lathe.muon %w, %w, %w lr %s scale %s factor %s {lr_scale = 20.0 : f64, momentum = 0.95 : f64, weight_decay = 0.1 : f64} : tensor<8x4xf32>, tensor<1xf32>
  return %p : tensor<8x4xf32>
}

// -----

// Tests deep supervision's ops: the gate's VJP core is two elementwise
// generics and a reduction over rows with the channel parallel outside; the
// token accuracy a row maximum, then a gather of the target's logit compared
// with it; the confidence loss a unit generic reading the last row (row 3);
// its gradient nonzero only in the last row.
// CHECK-LABEL: func.func @deep_supervision
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel"]} ins(%arg0, %arg1, %arg3 : {{.*}}) outs(%{{.*}} : tensor<4x8xf32>)
// CHECK: math.exp
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel"]} ins(%arg0, %arg1, %arg2, %arg3 : {{.*}}) outs(%{{.*}} : tensor<4x8xf32>)
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]} ins(%arg0, %arg1, %arg2, %arg3 : {{.*}}) outs(%{{.*}} : tensor<8xf32>)
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]} ins(%arg4 : tensor<4x16xf32>) outs(%{{.*}} : tensor<4xf32>)
// CHECK: arith.maximumf
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]} ins(%{{.*}}, %arg5 : tensor<4xf32>, tensor<4xi32>) outs(%{{.*}} : tensor<1xf32>)
// CHECK: tensor.extract %arg4
// CHECK: arith.cmpf oge
// CHECK: %[[C3:.*]] = arith.constant 3 : index
// CHECK: tensor.extract %arg6[%[[C3]], %{{.*}}] : tensor<4x1xf32>
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel"]} ins(%arg6, %{{.*}}, %{{.*}} : tensor<4x1xf32>, tensor<1xf32>, tensor<1xf32>) outs(%{{.*}} : tensor<4x1xf32>)
// CHECK: arith.cmpi eq
// CHECK: arith.select
func.func @deep_supervision(%pre: tensor<4x8xf32>, %a: tensor<8xf32>, %d: tensor<4x8xf32>, %dy: tensor<4x8xf32>, %logits: tensor<4x16xf32>, %t: tensor<4xi32>, %z: tensor<4x1xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<4x8xf32>, tensor<4x1xf32>) {
  %dpre, %da, %direct = lathe.selective_gate_grad %pre, %a, %d, %dy : tensor<4x8xf32>, tensor<8xf32>
  %acc = lathe.token_accuracy %logits, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
  %l = lathe.binary_cross_entropy %z, %acc : tensor<4x1xf32>, tensor<1xf32> -> tensor<1xf32>
  %dz = lathe.binary_cross_entropy_grad %z, %acc, %l : tensor<4x1xf32>, tensor<1xf32>
  return %dpre, %da, %direct, %dz : tensor<4x8xf32>, tensor<8xf32>, tensor<4x8xf32>, tensor<4x1xf32>
}

// -----

// Tests that lathe.matmul is one (m, n, k) reduction generic reading lhs
// transposed under transpose_lhs, into zeros, or into its accumulator
// (beta = 1) when it has one.

// CHECK-DAG: #[[LHST:.*]] = affine_map<(d0, d1, d2) -> (d2, d0)>
// CHECK-DAG: #[[RHS:.*]] = affine_map<(d0, d1, d2) -> (d2, d1)>
// CHECK-DAG: #[[OUT:.*]] = affine_map<(d0, d1, d2) -> (d0, d1)>
// CHECK-LABEL: func.func @matmul
// CHECK: %[[Z:.*]] = linalg.fill
// CHECK: %[[DW:.*]] = linalg.generic {indexing_maps = [#[[LHST]], #[[RHS]], #[[OUT]]], iterator_types = ["parallel", "parallel", "reduction"]} ins(%arg0, %arg1 : tensor<4x16xf32>, tensor<4x8xf32>) outs(%[[Z]] : tensor<16x8xf32>)
// CHECK: linalg.generic {indexing_maps = [#[[LHST]], #[[RHS]], #[[OUT]]], iterator_types = ["parallel", "parallel", "reduction"]} ins(%arg0, %arg1 : tensor<4x16xf32>, tensor<4x8xf32>) outs(%[[DW]] : tensor<16x8xf32>)
func.func @matmul(%dy: tensor<4x16xf32>, %x: tensor<4x8xf32>) -> tensor<16x8xf32> {
  %dw = lathe.matmul %dy, %x {transpose_lhs} : tensor<4x16xf32>, tensor<4x8xf32> -> tensor<16x8xf32>
  %dw2 = lathe.matmul %dy, %x accumulate %dw {transpose_lhs} : tensor<4x16xf32>, tensor<4x8xf32> -> tensor<16x8xf32>
  return %dw2 : tensor<16x8xf32>
}

// -----

// Tests that attention's VJP sums rowsum(dP * P) as dO . o over the head's
// 8 columns when it has the forward's output (o = P V), and over the 4 keys
// of [B, G T, T] = [1, 8, 4] probabilities without it.

// CHECK-LABEL: func.func @attention_grad_output
// CHECK-NOT: ins(%{{.*}}, %{{.*}} : tensor<1x8x4xf32>, tensor<1x8x4xf32>) outs(%{{.*}} : tensor<1x8xf32>)
// CHECK: iterator_types = ["parallel", "parallel", "reduction"]} ins(%{{.*}}, %{{.*}} : tensor<1x8x8xf32>, tensor<1x8x8xf32>) outs(%{{.*}} : tensor<1x8xf32>)
// CHECK-NOT: ins(%{{.*}}, %{{.*}} : tensor<1x8x4xf32>, tensor<1x8x4xf32>) outs(%{{.*}} : tensor<1x8xf32>)
// CHECK-LABEL: func.func @attention_grad_no_output
// CHECK: iterator_types = ["parallel", "parallel", "reduction"]} ins(%{{.*}}, %{{.*}} : tensor<1x8x4xf32>, tensor<1x8x4xf32>) outs(%{{.*}} : tensor<1x8xf32>)
// With gpu-attention-grad (the cuda target), the gradient with the
// forward's output is one kernel-level op into fresh gradients and a
// [rows, 3 heads] stats workspace, and no [heads, T, T] tensor is made;
// without the output it keeps the structured lowering.
// GPU-LABEL: func.func @attention_grad_output
// GPU-NOT: tensor<1x8x8xf32>
// GPU-DAG: %[[DQ:.*]] = tensor.empty() : tensor<4x16xf32>
// GPU-DAG: %[[DK:.*]] = tensor.empty() : tensor<4x8xf32>
// GPU-DAG: %[[DV:.*]] = tensor.empty() : tensor<4x8xf32>
// GPU-DAG: %[[ST:.*]] = tensor.empty() : tensor<4x6xf32>
// GPU: %[[G:.*]]:4 = lathe.fused_attention_grad %arg0, %arg1, %arg1, %arg3, %arg2 into %[[DQ]], %[[DK]], %[[DV]], %[[ST]] {heads = 2 : i64, kv_heads = 1 : i64}
// GPU-NOT: tensor<1x8x8xf32>
// GPU: return %[[G]]#0, %[[G]]#1, %[[G]]#2
// GPU-LABEL: func.func @attention_grad_no_output
// GPU: tensor<1x8x8xf32>
func.func @attention_grad_output(%q: tensor<4x16xf32>, %k: tensor<4x8xf32>, %o: tensor<4x16xf32>, %do: tensor<4x16xf32>) -> (tensor<4x16xf32>, tensor<4x8xf32>, tensor<4x8xf32>) {
  %dq, %dk, %dv = lathe.attention_grad %q, %k, %k, %do output %o {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x16xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x16xf32> -> tensor<4x16xf32>, tensor<4x8xf32>, tensor<4x8xf32>
  return %dq, %dk, %dv : tensor<4x16xf32>, tensor<4x8xf32>, tensor<4x8xf32>
}
func.func @attention_grad_no_output(%q: tensor<4x16xf32>, %k: tensor<4x8xf32>, %do: tensor<4x16xf32>) -> (tensor<4x16xf32>, tensor<4x8xf32>, tensor<4x8xf32>) {
  %dq, %dk, %dv = lathe.attention_grad %q, %k, %k, %do {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x16xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x16xf32> -> tensor<4x16xf32>, tensor<4x8xf32>, tensor<4x8xf32>
  return %dq, %dk, %dv : tensor<4x16xf32>, tensor<4x8xf32>, tensor<4x8xf32>
}
