// RUN: lathe-opt %s --lathe-plan-fusion --split-input-file | FileCheck %s

// Tests the decoder layer's grouping: the norm joins the Q/K/V projections
// that read it, RoPE joins the projections it rotates, and the cache writes
// join the ops that produce the rows they store (group 0); attention stays
// alone (1); the O projection with its residual is alone (2); the second
// norm joins the MLP (3).

// CHECK-LABEL: func.func @layer
// CHECK: lathe.rms_norm {{.*}}lathe.fusion_group = 0
// CHECK: lathe.linear {{.*}}lathe.fusion_group = 0
// CHECK: lathe.linear {{.*}}lathe.fusion_group = 0
// CHECK: lathe.linear {{.*}}lathe.fusion_group = 0
// CHECK: lathe.rope {{.*}}lathe.fusion_group = 0
// CHECK: lathe.rope {{.*}}lathe.fusion_group = 0
// CHECK: lathe.cache_write {{.*}}lathe.fusion_group = 0
// CHECK: lathe.cache_write {{.*}}lathe.fusion_group = 0
// CHECK: lathe.attention {{.*}}lathe.fusion_group = 1
// CHECK: lathe.linear {{.*}} accumulate {{.*}}lathe.fusion_group = 2
// CHECK: lathe.rms_norm {{.*}}lathe.fusion_group = 3
// CHECK: lathe.mlp {{.*}}lathe.fusion_group = 3
lathe.cache @kv.k : tensor<16x4xf32>
lathe.cache @kv.v : tensor<16x4xf32>
func.func @layer(%x: tensor<4x8xf32>, %g: tensor<8xf32>, %wq: tensor<8x8xf32>, %wk: tensor<4x8xf32>,
                 %wo: tensor<8x8xf32>, %wu: tensor<12x8xf32>, %wd: tensor<8x12xf32>) -> tensor<4x8xf32> {
  %h = lathe.rms_norm %x, %g {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  %q = lathe.linear %h, %wq : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %k = lathe.linear %h, %wk : tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x4xf32>
  %v = lathe.linear %h, %wk : tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x4xf32>
  %qr = lathe.rope %q {heads = 2 : i64, base = 10000.0 : f64} : tensor<4x8xf32> -> tensor<4x8xf32>
  %kr = lathe.rope %k {heads = 1 : i64, base = 10000.0 : f64} : tensor<4x4xf32> -> tensor<4x4xf32>
  %ck = lathe.cache_read @kv.k : tensor<16x4xf32>
  %ck2 = lathe.cache_write %ck, %kr : tensor<16x4xf32>, tensor<4x4xf32> -> tensor<16x4xf32>
  %cv = lathe.cache_read @kv.v : tensor<16x4xf32>
  %cv2 = lathe.cache_write %cv, %v : tensor<16x4xf32>, tensor<4x4xf32> -> tensor<16x4xf32>
  %a = lathe.attention %qr, %kr, %v {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32> -> tensor<4x8xf32>
  %o = lathe.linear %a, %wo accumulate %x : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %h2 = lathe.rms_norm %o, %g {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  %y = lathe.mlp gelu %h2 up %wu down %wd accumulate %o : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}

// -----

// Tests that a norm read by anything other than a projection's input (here
// it is also returned) stays in a group of its own, and that the linear
// reading it is then alone too.

// CHECK-LABEL: func.func @norm_escapes
// CHECK: lathe.rms_norm {{.*}}lathe.fusion_group = 0
// CHECK: lathe.linear {{.*}}lathe.fusion_group = 1
func.func @norm_escapes(%x: tensor<4x8xf32>, %g: tensor<8xf32>, %w: tensor<8x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
  %h = lathe.rms_norm %x, %g {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  %y = lathe.linear %h, %w : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  return %h, %y : tensor<4x8xf32>, tensor<4x8xf32>
}

// -----

// Tests that the Three-Phase rotation runs in the O projection's kernel: the
// residual add joins the linear it will be folded into, and the rotation
// joins the add; the horn joins the embedding.

// CHECK-LABEL: func.func @rotation
// CHECK: lathe.embedding {{.*}}lathe.fusion_group = 0
// CHECK: lathe.dc_inject {{.*}}lathe.fusion_group = 0
// CHECK: lathe.linear {{.*}}lathe.fusion_group = 1
// CHECK: lathe.add {{.*}}lathe.fusion_group = 1
// CHECK: lathe.phase_rotate {{.*}}lathe.fusion_group = 1
func.func @rotation(%tok: tensor<4xi32>, %table: tensor<16x12xf32>, %a: tensor<4x12xf32>, %w: tensor<12x12xf32>, %t: tensor<2xf32>) -> tensor<4x12xf32> {
  %e = lathe.embedding %tok, %table : tensor<4xi32>, tensor<16x12xf32> -> tensor<4x12xf32>
  %x = lathe.dc_inject %e : tensor<4x12xf32> -> tensor<4x12xf32>
  %o = lathe.linear %a, %w : tensor<4x12xf32>, tensor<12x12xf32> -> tensor<4x12xf32>
  %s = lathe.add %x, %o : tensor<4x12xf32>
  %r = lathe.phase_rotate %s, %t {phases = 3 : i64} : tensor<4x12xf32>, tensor<2xf32> -> tensor<4x12xf32>
  return %r : tensor<4x12xf32>
}

// -----

// Tests Delta AttnRes' grouping: the routing site joins the norm it feeds
// (and so the projections), and the residual add joins the O projection
// although the projection's output is also read later (as a source).

// CHECK-LABEL: func.func @routing
// CHECK: lathe.depth_attention{{.*}}lathe.fusion_group = 0
// CHECK: lathe.rms_norm {{.*}}lathe.fusion_group = 0
// CHECK: lathe.linear {{.*}}lathe.fusion_group = 0
// CHECK: lathe.linear {{.*}}lathe.fusion_group = 1
// CHECK: lathe.add {{.*}}lathe.fusion_group = 1
// CHECK: lathe.depth_attention{{.*}}lathe.fusion_group = 2
func.func @routing(%h: tensor<4x8xf32>, %w: tensor<8xf32>, %wq: tensor<8x8xf32>) -> tensor<4x8xf32> {
  %x = lathe.depth_attention (%h) query %w gain %w base %h {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  %n = lathe.rms_norm %x, %w {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  %q = lathe.linear %n, %wq : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %o = lathe.linear %q, %wq : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %h1 = lathe.add %h, %o : tensor<4x8xf32>
  %y = lathe.depth_attention (%h, %o) query %w gain %w base %h1 {eps = 1.0e-6 : f64} : (tensor<4x8xf32>, tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}

// -----

// Tests LoopUS's step after a pass of the core: the gate, the confidence
// head and the halting decision form one group (one kernel per iteration,
// whose launch is the loop's exit point), apart from the core's MLP.

// CHECK-LABEL: func.func @loopus
// CHECK: lathe.mlp {{.*}}lathe.fusion_group = 0
// CHECK: lathe.add {{.*}}lathe.fusion_group = 0
// CHECK: lathe.selective_gate {{.*}}lathe.fusion_group = 1
// CHECK: lathe.halt_confidence {{.*}}lathe.fusion_group = 1
// CHECK: lathe.halt_if {{.*}}lathe.fusion_group = 1
func.func @loopus(%h: tensor<4x8xf32>, %w: tensor<16x8xf32>, %wd: tensor<8x16xf32>, %down: tensor<2x8xf32>, %up: tensor<8x2xf32>, %v: tensor<8xf32>, %wq: tensor<1x8xf32>, %bq: tensor<1xf32>) -> tensor<4x8xf32> {
  %y = lathe.mlp relu2 %h up %w down %wd : (tensor<4x8xf32>, tensor<16x8xf32>, tensor<8x16xf32>) -> tensor<4x8xf32>
  %u = lathe.add %h, %y : tensor<4x8xf32>
  %h1 = lathe.selective_gate %u, %h, %down, %up, %v, %v : tensor<4x8xf32>, tensor<2x8xf32>, tensor<8x2xf32>, tensor<8xf32>
  %q = lathe.halt_confidence %u, %h, %v, %v, %wq, %bq {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<1x8xf32>, tensor<1xf32>
  %s, %k = lathe.halt_if %q, %h1, %h mode(threshold) {threshold = 0.9 : f64, tolerance = 0.01 : f64} : tensor<1xf32>, tensor<4x8xf32> -> tensor<2xf32>
  return %k : tensor<4x8xf32>
}
