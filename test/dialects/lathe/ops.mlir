// RUN: lathe-opt %s | lathe-opt | FileCheck %s
// RUN: lathe-opt %s --mlir-print-op-generic | lathe-opt | FileCheck %s

// Tests that every lathe op survives a print/parse round trip, in both the
// custom and the generic form.

// CHECK: lathe.param @embed.weight : tensor<16x8xf32> init(normal, std = 2.000000e-02)
lathe.param @embed.weight : tensor<16x8xf32> init(normal, std = 0.02)
// CHECK: lathe.param @norm.weight : tensor<8xf32> init(ones)
lathe.param @norm.weight : tensor<8xf32> init(ones)
// CHECK: lathe.param @bias : tensor<8xf32> init(zeros)
lathe.param @bias : tensor<8xf32> init(zeros)

// CHECK-LABEL: func.func @decoder_pieces
func.func @decoder_pieces(%tokens: tensor<4xi32>, %wq: tensor<8x8xf32>,
    %wk: tensor<4x8xf32>, %wg: tensor<12x8xf32>, %wd: tensor<8x12xf32>)
    -> tensor<4x8xf32> {
  // CHECK: lathe.weight @embed.weight : tensor<16x8xf32>
  %table = lathe.weight @embed.weight : tensor<16x8xf32>
  // CHECK: lathe.embedding %{{.*}}, %{{.*}} : tensor<4xi32>, tensor<16x8xf32> -> tensor<4x8xf32>
  %x = lathe.embedding %tokens, %table : tensor<4xi32>, tensor<16x8xf32> -> tensor<4x8xf32>
  %g = lathe.weight @norm.weight : tensor<8xf32>
  // CHECK: lathe.rms_norm %{{.*}}, %{{.*}} {eps = 1.000000e-05 : f64} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  %h = lathe.rms_norm %x, %g {eps = 1.0e-5 : f64} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  // CHECK: lathe.linear %{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %q = lathe.linear %h, %wq : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %k = lathe.linear %h, %wk : tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x4xf32>
  // CHECK: lathe.rope %{{.*}} {base = 1.000000e+04 : f64, heads = 2 : i64} : tensor<4x8xf32> -> tensor<4x8xf32>
  %qr = lathe.rope %q {heads = 2 : i64, base = 10000.0 : f64} : tensor<4x8xf32> -> tensor<4x8xf32>
  %kr = lathe.rope %k {heads = 1 : i64, base = 10000.0 : f64} : tensor<4x4xf32> -> tensor<4x4xf32>
  // CHECK: lathe.attention %{{.*}}, %{{.*}}, %{{.*}} {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32> -> tensor<4x8xf32>
  %a = lathe.attention %qr, %kr, %k {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32> -> tensor<4x8xf32>
  // CHECK: lathe.add %{{.*}}, %{{.*}} : tensor<4x8xf32>
  %r = lathe.add %x, %a : tensor<4x8xf32>
  // CHECK: lathe.mlp swiglu %{{.*}} gate %{{.*}} up %{{.*}} down %{{.*}} : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<4x8xf32>
  %m = lathe.mlp swiglu %r gate %wg up %wg down %wd : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<4x8xf32>
  return %m : tensor<4x8xf32>
}

// CHECK-LABEL: func.func @options
func.func @options(%x: tensor<4x8xf32>, %g: tensor<8xf32>, %w: tensor<12x8xf32>,
    %b: tensor<12xf32>, %wd: tensor<8x12xf32>) -> tensor<4x8xf32> {
  // CHECK: lathe.layer_norm %{{.*}}, %{{.*}}, %{{.*}} {eps = 1.000000e-05 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  %n = lathe.layer_norm %x, %g, %g {eps = 1.0e-5 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  // CHECK: lathe.linear %{{.*}}, %{{.*}} bias %{{.*}} : tensor<4x8xf32>, tensor<12x8xf32>, tensor<12xf32> -> tensor<4x12xf32>
  %l = lathe.linear %n, %w bias %b : tensor<4x8xf32>, tensor<12x8xf32>, tensor<12xf32> -> tensor<4x12xf32>
  // CHECK: lathe.mlp gelu %{{.*}} up %{{.*}} bias %{{.*}} down %{{.*}} bias %{{.*}} :
  %m = lathe.mlp gelu %n up %w bias %b down %wd bias %g : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<12xf32>, tensor<8x12xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  // CHECK: lathe.mlp relu2 %{{.*}} up %{{.*}} down %{{.*}} :
  %r0 = lathe.mlp relu2 %m up %w down %wd : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<4x8xf32>
  // An MLP that also returns its hidden values for the backward.
  // CHECK: %{{.*}}, %{{.*}}:2 = lathe.mlp relu2 %{{.*}} up %{{.*}} down %{{.*}} : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> (tensor<4x8xf32>, tensor<4x12xf32>, tensor<4x12xf32>)
  %r, %ru, %ra = lathe.mlp relu2 %r0 up %w down %wd : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> (tensor<4x8xf32>, tensor<4x12xf32>, tensor<4x12xf32>)
  // CHECK: lathe.attention %{{.*}}, %{{.*}}, %{{.*}} normalizer(softpick) {heads = 2 : i64, kv_heads = 2 : i64}
  %a = lathe.attention %r, %r, %r normalizer(softpick) {heads = 2 : i64, kv_heads = 2 : i64} : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  return %a : tensor<4x8xf32>
}

// CHECK-LABEL: func.func @entry
func.func @entry(%x: tensor<4x8xf32>, %w: tensor<16x8xf32>) -> tensor<4x16xf32> {
  // CHECK: lathe.launch @entry_k0(%{{.*}}, %{{.*}}) {offsets = array<i64: 128>} : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32>
  %y = lathe.launch @entry_k0(%x, %w) {offsets = array<i64: 128>} : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32>
  return %y : tensor<4x16xf32>
}
func.func private @entry_k0(%x: tensor<4x8xf32>, %w: tensor<16x8xf32>, %out: tensor<4x16xf32>) -> tensor<4x16xf32> attributes {lathe.kernel} {
  return %out : tensor<4x16xf32>
}

// CHECK: lathe.cache @kv.layers.0.k : tensor<8x4xf32>
lathe.cache @kv.layers.0.k : tensor<8x4xf32>

// CHECK-LABEL: func.func @decode_pieces
func.func @decode_pieces(%q: tensor<1x8xf32>, %k: tensor<1x4xf32>, %pos: tensor<1xi32>) -> tensor<1x8xf32> {
  // CHECK: lathe.cache_read @kv.layers.0.k : tensor<8x4xf32>
  %c = lathe.cache_read @kv.layers.0.k : tensor<8x4xf32>
  // CHECK: lathe.rope %{{.*}} at %{{.*}} {base = 1.000000e+04 : f64, heads = 1 : i64} : tensor<1x4xf32>, tensor<1xi32> -> tensor<1x4xf32>
  %kr = lathe.rope %k at %pos {heads = 1 : i64, base = 10000.0 : f64} : tensor<1x4xf32>, tensor<1xi32> -> tensor<1x4xf32>
  // CHECK: lathe.cache_write %{{.*}}, %{{.*}} at %{{.*}} : tensor<8x4xf32>, tensor<1x4xf32>, tensor<1xi32> -> tensor<8x4xf32>
  %c2 = lathe.cache_write %c, %kr at %pos : tensor<8x4xf32>, tensor<1x4xf32>, tensor<1xi32> -> tensor<8x4xf32>
  // CHECK: lathe.attention %{{.*}}, %{{.*}}, %{{.*}} at %{{.*}} {heads = 2 : i64, kv_heads = 1 : i64} : tensor<1x8xf32>, tensor<8x4xf32>, tensor<8x4xf32>, tensor<1xi32> -> tensor<1x8xf32>
  %a = lathe.attention %q, %c2, %c2 at %pos {heads = 2 : i64, kv_heads = 1 : i64} : tensor<1x8xf32>, tensor<8x4xf32>, tensor<8x4xf32>, tensor<1xi32> -> tensor<1x8xf32>
  return %a : tensor<1x8xf32>
}

// CHECK-LABEL: func.func @accumulate
func.func @accumulate(%x: tensor<4x8xf32>, %w: tensor<8x8xf32>, %wu: tensor<12x8xf32>, %wd: tensor<8x12xf32>) -> tensor<4x8xf32> {
  // CHECK: lathe.linear %{{.*}}, %{{.*}} accumulate %{{.*}} : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %y = lathe.linear %x, %w accumulate %x : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  // CHECK: lathe.mlp gelu %{{.*}} up %{{.*}} down %{{.*}} accumulate %{{.*}} :
  %z = lathe.mlp gelu %y up %wu down %wd accumulate %y : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  return %z : tensor<4x8xf32>
}

// The kernel-level attention, on tensors (with a result) and on buffers
// (without), with and without a decode position.
// CHECK-LABEL: func.func @fused_attention
func.func @fused_attention(%q: tensor<4x8xf32>, %k: tensor<4x4xf32>, %e: tensor<4x8xf32>,
                           %mq: memref<1x8xf32>, %mk: memref<8x4xf32>, %mp: memref<1xi32>, %mo: memref<1x8xf32>) -> tensor<4x8xf32> {
  // CHECK: lathe.fused_attention %{{.*}}, %{{.*}}, %{{.*}} into %{{.*}} {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  %a = lathe.fused_attention %q, %k, %k into %e {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  // CHECK: lathe.fused_attention %{{.*}}, %{{.*}}, %{{.*}} at %{{.*}} into %{{.*}} normalizer(softpick) {heads = 2 : i64, kv_heads = 1 : i64} : memref<1x8xf32>, memref<8x4xf32>, memref<8x4xf32>, memref<1x8xf32>, memref<1xi32>
  lathe.fused_attention %mq, %mk, %mk at %mp into %mo normalizer(softpick) {heads = 2 : i64, kv_heads = 1 : i64} : memref<1x8xf32>, memref<8x4xf32>, memref<8x4xf32>, memref<1x8xf32>, memref<1xi32>
  return %a : tensor<4x8xf32>
}

// The kernel-level attention gradient, on tensors (four results: the
// gradients and the stats workspace) and on buffers (none).
// CHECK-LABEL: func.func @fused_attention_grad
func.func @fused_attention_grad(%q: tensor<4x8xf32>, %k: tensor<4x4xf32>, %s: tensor<4x6xf32>,
                                %mq: memref<4x8xf32>, %mk: memref<4x4xf32>, %ms: memref<4x6xf32>) -> tensor<4x8xf32> {
  // CHECK: %{{.*}}:4 = lathe.fused_attention_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} into %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x6xf32> -> tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x6xf32>
  %g:4 = lathe.fused_attention_grad %q, %k, %k, %q, %q into %q, %k, %k, %s {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x6xf32> -> tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x6xf32>
  // CHECK: lathe.fused_attention_grad %{{.*}} normalizer(softpick) {heads = 2 : i64, kv_heads = 1 : i64, window = 2 : i64} : memref<4x8xf32>, memref<4x4xf32>, memref<4x4xf32>, memref<4x8xf32>, memref<4x8xf32>, memref<4x8xf32>, memref<4x4xf32>, memref<4x4xf32>, memref<4x6xf32>{{$}}
  lathe.fused_attention_grad %mq, %mk, %mk, %mq, %mq into %mq, %mk, %mk, %ms normalizer(softpick) {heads = 2 : i64, kv_heads = 1 : i64, window = 2 : i64} : memref<4x8xf32>, memref<4x4xf32>, memref<4x4xf32>, memref<4x8xf32>, memref<4x8xf32>, memref<4x8xf32>, memref<4x4xf32>, memref<4x4xf32>, memref<4x6xf32>
  return %g#0 : tensor<4x8xf32>
}

// The Three-Phase Transformer's ops, and constant-initialised parameters.
// CHECK: lathe.param @theta : tensor<16xf32> init(constant = 1.250000e-01)
lathe.param @theta : tensor<16xf32> init(constant = 0.125)
// CHECK-LABEL: func.func @three_phase
func.func @three_phase(%x: tensor<4x96xf32>, %g: tensor<96xf32>, %t: tensor<16xf32>, %pos: tensor<1xi32>,
                       %q: tensor<1x96xf32>, %k: tensor<8x48xf32>) -> tensor<1x96xf32> {
  // CHECK: lathe.dc_inject %{{.*}} : tensor<4x96xf32> -> tensor<4x96xf32>
  %e = lathe.dc_inject %x : tensor<4x96xf32> -> tensor<4x96xf32>
  // CHECK: lathe.dc_inject %{{.*}} at %{{.*}} : tensor<4x96xf32>, tensor<1xi32> -> tensor<4x96xf32>
  %e2 = lathe.dc_inject %e at %pos : tensor<4x96xf32>, tensor<1xi32> -> tensor<4x96xf32>
  // CHECK: lathe.rms_norm %{{.*}}, %{{.*}} {eps = 9.9999999999999995E-7 : f64, phases = 3 : i64}
  %n = lathe.rms_norm %e2, %g {eps = 1.0e-6 : f64, phases = 3 : i64} : tensor<4x96xf32>, tensor<96xf32> -> tensor<4x96xf32>
  // CHECK: lathe.phase_rotate %{{.*}}, %{{.*}} {phases = 3 : i64} : tensor<4x96xf32>, tensor<16xf32> -> tensor<4x96xf32>
  %r = lathe.phase_rotate %n, %t {phases = 3 : i64} : tensor<4x96xf32>, tensor<16xf32> -> tensor<4x96xf32>
  // CHECK: lathe.attention {{.*}} {heads = 6 : i64, kv_heads = 3 : i64, phases = 3 : i64}
  %a = lathe.attention %q, %k, %k at %pos {heads = 6 : i64, kv_heads = 3 : i64, phases = 3 : i64} : tensor<1x96xf32>, tensor<8x48xf32>, tensor<8x48xf32>, tensor<1xi32> -> tensor<1x96xf32>
  return %a : tensor<1x96xf32>
}

// Attention Residuals' routing, replacement and additive.
// CHECK-LABEL: func.func @depth_attention
func.func @depth_attention(%a: tensor<4x8xf32>, %b: tensor<4x8xf32>, %w: tensor<8xf32>, %g: tensor<8xf32>) -> tensor<4x8xf32> {
  // CHECK: lathe.depth_attention(%{{.*}}, %{{.*}}) query %{{.*}} gain %{{.*}} {eps = 9.9999999999999995E-7 : f64} : (tensor<4x8xf32>, tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  %x = lathe.depth_attention (%a, %b) query %w gain %g {eps = 1.0e-6 : f64} : (tensor<4x8xf32>, tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  // CHECK: lathe.depth_attention(%{{.*}}) query %{{.*}} gain %{{.*}} base %{{.*}} {eps
  %y = lathe.depth_attention (%x) query %w gain %g base %a {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  // CHECK: %[[N:.*]] = lathe.row_sum_squares %{{.*}} : tensor<4x8xf32> -> tensor<4xf32>
  %n = lathe.row_sum_squares %y : tensor<4x8xf32> -> tensor<4xf32>
  // CHECK: lathe.depth_attention(%{{.*}}) norms(%[[N]]) query
  %z = lathe.depth_attention (%y) norms (%n) query %w gain %g {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), (tensor<4xf32>), tensor<8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  // CHECK: lathe.sub %{{.*}}, %{{.*}} : tensor<4x8xf32>
  %d = lathe.sub %y, %a : tensor<4x8xf32>
  return %d : tensor<4x8xf32>
}

// The routing entropy (Delta AttnRes's entropy bonus) and the VJP ops of
// attention residuals.
// CHECK-LABEL: func.func @routing_grads
func.func @routing_grads(%a: tensor<4x8xf32>, %b: tensor<4x8xf32>, %w: tensor<8xf32>, %n: tensor<4xf32>, %dy: tensor<4x8xf32>, %s: tensor<1xf32>) -> tensor<4x8xf32> {
  // CHECK: lathe.routing_entropy(%{{.*}}, %{{.*}}) norms(%{{.*}}, %{{.*}}) query %{{.*}} gain %{{.*}} null %{{.*}} {eps = 9.9999999999999995E-7 : f64} : (tensor<4x8xf32>, tensor<4x8xf32>), (tensor<4xf32>, tensor<4xf32>), tensor<8xf32>, tensor<8xf32> null tensor<8xf32> -> tensor<1xf32>
  %h = lathe.routing_entropy (%a, %b) norms (%n, %n) query %w gain %w null %w {eps = 1.0e-6 : f64} : (tensor<4x8xf32>, tensor<4x8xf32>), (tensor<4xf32>, tensor<4xf32>), tensor<8xf32>, tensor<8xf32> null tensor<8xf32> -> tensor<1xf32>
  // CHECK: %{{.*}}:2, %{{.*}}:2, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = lathe.depth_attention_grad(%{{.*}}, %{{.*}}) norms(%{{.*}}, %{{.*}}) query %{{.*}} gain %{{.*}} null %{{.*}} gate %{{.*}} cotangent %{{.*}} entropy %{{.*}} {eps = 9.9999999999999995E-7 : f64, gate_activation = 1 : i32} : (tensor<4x8xf32>, tensor<4x8xf32>), (tensor<4xf32>, tensor<4xf32>), tensor<8xf32>, tensor<8xf32> null tensor<8xf32> gate tensor<1xf32> cotangent tensor<4x8xf32> entropy tensor<1xf32> -> (tensor<4x8xf32>, tensor<4x8xf32>), (tensor<4xf32>, tensor<4xf32>), tensor<8xf32>, tensor<8xf32> null tensor<8xf32> gate tensor<1xf32>
  %ds:2, %dn:2, %dw, %dg, %dnull, %dgate = lathe.depth_attention_grad (%a, %b) norms (%n, %n) query %w gain %w null %w gate %s cotangent %dy entropy %h {eps = 1.0e-6 : f64, gate_activation = 1 : i32}
      : (tensor<4x8xf32>, tensor<4x8xf32>), (tensor<4xf32>, tensor<4xf32>), tensor<8xf32>, tensor<8xf32> null tensor<8xf32> gate tensor<1xf32> cotangent tensor<4x8xf32> entropy tensor<1xf32>
      -> (tensor<4x8xf32>, tensor<4x8xf32>), (tensor<4xf32>, tensor<4xf32>), tensor<8xf32>, tensor<8xf32> null tensor<8xf32> gate tensor<1xf32>
  // CHECK: lathe.depth_attention_grad(%{{.*}}) query %{{.*}} gain %{{.*}} entropy %{{.*}} {eps = {{.*}}} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32> entropy tensor<1xf32> -> (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>{{$}}
  %ea, %ew, %eg = lathe.depth_attention_grad (%a) query %w gain %w entropy %h {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32> entropy tensor<1xf32> -> (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>
  // CHECK: lathe.row_sum_squares_grad %{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<4xf32> -> tensor<4x8xf32>
  %dx = lathe.row_sum_squares_grad %ds#0, %dn#0 : tensor<4x8xf32>, tensor<4xf32> -> tensor<4x8xf32>
  // CHECK: lathe.scale %{{.*}} {factor = -1.000000e+00 : f64} : tensor<4x8xf32>
  %m = lathe.scale %dx {factor = -1.0 : f64} : tensor<4x8xf32>
  return %m : tensor<4x8xf32>
}

// Parcae's depth sampled per sequence: the masked update, the counted
// stop-gradient and their VJPs' mask.
// CHECK-LABEL: func.func @sampled_depth
func.func @sampled_depth(%n: tensor<1xi32>, %h0: tensor<4x8xf32>, %h1: tensor<4x8xf32>) -> tensor<4x8xf32> {
  // CHECK: lathe.stop_gradient %{{.*}} count %{{.*}} {backprop = 2 : i64, iteration = 1 : i64} : tensor<4x8xf32>, tensor<1xi32>
  %s = lathe.stop_gradient %h0 count %n {backprop = 2 : i64, iteration = 1 : i64} : tensor<4x8xf32>, tensor<1xi32>
  // CHECK: lathe.loop_select %{{.*}}, %{{.*}}, %{{.*}} {iteration = 1 : i64} : tensor<1xi32>, tensor<4x8xf32>
  %x = lathe.loop_select %n, %h1, %s {iteration = 1 : i64} : tensor<1xi32>, tensor<4x8xf32>
  // CHECK: lathe.iteration_mask %{{.*}}, %{{.*}} inactive {iteration = 1 : i64} : tensor<4x8xf32>, tensor<1xi32>
  %m = lathe.iteration_mask %x, %n inactive {iteration = 1 : i64} : tensor<4x8xf32>, tensor<1xi32>
  // CHECK: lathe.iteration_mask %{{.*}}, %{{.*}} unfrozen {backprop = 2 : i64, iteration = 3 : i64}
  %f = lathe.iteration_mask %m, %n unfrozen {backprop = 2 : i64, iteration = 3 : i64} : tensor<4x8xf32>, tensor<1xi32>
  return %f : tensor<4x8xf32>
}

// LoopFormer's shortcut training: features of a drawn trajectory's element,
// and the consistency term with its gradient.
// CHECK-LABEL: func.func @shortcut
func.func @shortcut(%traj: tensor<6xf32>, %a: tensor<4x8xf32>, %b: tensor<4x8xf32>) -> (tensor<1x16xf32>, tensor<4x8xf32>) {
  // CHECK: lathe.sinusoid %{{.*}} : tensor<6xf32> -> {index = 3 : i64} : tensor<1x16xf32>
  %phi = lathe.sinusoid %traj : tensor<6xf32> -> {index = 3 : i64} : tensor<1x16xf32>
  // CHECK: lathe.mean_squared_error %{{.*}}, %{{.*}} : tensor<4x8xf32> -> tensor<1xf32>
  %m = lathe.mean_squared_error %a, %b : tensor<4x8xf32> -> tensor<1xf32>
  // CHECK: lathe.mean_squared_error_grad %{{.*}}, %{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<1xf32>
  %d = lathe.mean_squared_error_grad %a, %b, %m : tensor<4x8xf32>, tensor<1xf32>
  return %phi, %d : tensor<1x16xf32>, tensor<4x8xf32>
}

// Parcae's injection, from a zero state and from a state; identity init.
// CHECK: lathe.param @B : tensor<8x8xf32> init(identity)
lathe.param @B : tensor<8x8xf32> init(identity)
// Delta AttnRes's optional pieces: a null source and a gate.
// CHECK-LABEL: func.func @routing_options
func.func @routing_options(%h: tensor<4x8xf32>, %w: tensor<8xf32>, %a: tensor<1xf32>) -> tensor<4x8xf32> {
  // CHECK: lathe.depth_attention(%{{.*}}, %{{.*}}) query %{{.*}} gain %{{.*}} base %{{.*}} null %{{.*}} gate %{{.*}} {eps = 9.9999999999999995E-7 : f64, gate_activation = 1 : i32} : (tensor<4x8xf32>, tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32> null tensor<8xf32> gate tensor<1xf32> -> tensor<4x8xf32>
  %x = lathe.depth_attention (%h, %h) query %w gain %w base %h null %w gate %a {eps = 1.0e-6 : f64, gate_activation = 1 : i32} : (tensor<4x8xf32>, tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32> null tensor<8xf32> gate tensor<1xf32> -> tensor<4x8xf32>
  // CHECK: lathe.depth_attention(%{{.*}}) query %{{.*}} gain %{{.*}} base %{{.*}} gate %{{.*}} {eps = 9.9999999999999995E-7 : f64} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32> gate tensor<4x8xf32> -> tensor<4x8xf32>
  %y = lathe.depth_attention (%x) query %w gain %w base %h gate %h {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32> gate tensor<4x8xf32> -> tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}

// LoopUS's gate and early exit, and the init rules of its parameters.
// CHECK: lathe.param @up : tensor<8x2xf32> init(uniform = 5.000000e-01)
lathe.param @up : tensor<8x2xf32> init(uniform = 0.5)
// CHECK: lathe.param @A_log : tensor<8xf32> init(log_index)
lathe.param @A_log : tensor<8xf32> init(log_index)
// CHECK: lathe.param @dt : tensor<8xf32> init(dt_log_uniform)
lathe.param @dt : tensor<8xf32> init(dt_log_uniform)
// CHECK-LABEL: func.func @loopus
func.func @loopus(%u: tensor<4x8xf32>, %h: tensor<4x8xf32>, %down: tensor<2x8xf32>, %up: tensor<8x2xf32>, %v: tensor<8xf32>, %wq: tensor<1x8xf32>, %bq: tensor<1xf32>, %n: tensor<1xi32>) -> tensor<4x8xf32> {
  // CHECK: lathe.selective_gate %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<2x8xf32>, tensor<8x2xf32>, tensor<8xf32>
  %h1 = lathe.selective_gate %u, %h, %down, %up, %v, %v : tensor<4x8xf32>, tensor<2x8xf32>, tensor<8x2xf32>, tensor<8xf32>
  // CHECK: lathe.halt_confidence %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} length %{{.*}} {eps = 1.000000e-05 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<1x8xf32>, tensor<1xf32> length tensor<1xi32>
  %q = lathe.halt_confidence %u, %h, %v, %v, %wq, %bq length %n {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<1x8xf32>, tensor<1xf32> length tensor<1xi32>
  // CHECK: lathe.halt_confidence %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {eps = 1.000000e-05 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<1x8xf32>, tensor<1xf32>{{$}}
  %q1 = lathe.halt_confidence %u, %h, %v, %v, %wq, %bq {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<1x8xf32>, tensor<1xf32>
  // CHECK: lathe.halt_if %{{.*}}, %{{.*}}, %{{.*}} length %{{.*}} mode(threshold) {threshold = 9.000000e-01 : f64, tolerance = 1.000000e-02 : f64} : tensor<1xf32>, tensor<4x8xf32> length tensor<1xi32> -> tensor<2xf32>
  %s0, %k0 = lathe.halt_if %q, %h1, %h length %n mode(threshold) {threshold = 0.9 : f64, tolerance = 0.01 : f64} : tensor<1xf32>, tensor<4x8xf32> length tensor<1xi32> -> tensor<2xf32>
  // CHECK: lathe.halt_if %{{.*}}, %{{.*}}, %{{.*}} status %{{.*}} kept %{{.*}} mode(convergence) {{.*}} : tensor<1xf32>, tensor<4x8xf32> status tensor<2xf32> kept tensor<4x8xf32> -> tensor<2xf32>
  %s1, %k1 = lathe.halt_if %q1, %h1, %h status %s0 kept %k0 mode(convergence) {threshold = 0.9 : f64, tolerance = 0.01 : f64} : tensor<1xf32>, tensor<4x8xf32> status tensor<2xf32> kept tensor<4x8xf32> -> tensor<2xf32>
  return %k1 : tensor<4x8xf32>
}

// CHECK-LABEL: func.func @parcae
func.func @parcae(%be: tensor<4x8xf32>, %a: tensor<8xf32>, %dt: tensor<8xf32>) -> tensor<4x8xf32> {
  // CHECK: lathe.parcae_inject %{{.*}}, %{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  %u0 = lathe.parcae_inject %be, %a, %dt : tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  // CHECK: lathe.parcae_inject %{{.*}}, %{{.*}}, %{{.*}} state %{{.*}} : tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  %u1 = lathe.parcae_inject %be, %a, %dt state %u0 : tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  return %u1 : tensor<4x8xf32>
}

// LoopFormer's conditioning ops.
// CHECK-LABEL: func.func @loopformer
func.func @loopformer(%x: tensor<4x8xf32>, %y: tensor<4x8xf32>, %s: tensor<1x8xf32>) -> tensor<4x8xf32> {
  // CHECK: lathe.sinusoid {value = 2.500000e-01 : f64} : tensor<1x8xf32>
  %phi = lathe.sinusoid {value = 0.25 : f64} : tensor<1x8xf32>
  // CHECK: lathe.silu %{{.*}} : tensor<1x8xf32>
  %a = lathe.silu %phi : tensor<1x8xf32>
  // CHECK: lathe.modulated_rms_norm %{{.*}}, %{{.*}} {eps = 1.000000e-05 : f64} : tensor<4x8xf32>, tensor<1x8xf32> -> tensor<4x8xf32>
  %n = lathe.modulated_rms_norm %x, %a {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<1x8xf32> -> tensor<4x8xf32>
  // CHECK: lathe.gated_add %{{.*}}, %{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<1x8xf32>
  %z = lathe.gated_add %n, %y, %s : tensor<4x8xf32>, tensor<1x8xf32>
  return %z : tensor<4x8xf32>
}

// -----

// The training ops round-trip: the loss, and the VJPs' own ops.
// CHECK-LABEL: func.func @training
// CHECK: lathe.cross_entropy %{{.*}}, %{{.*}} : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
// CHECK: lathe.cross_entropy_grad
// CHECK: lathe.matmul %{{.*}}, %{{.*}} {transpose_lhs} : tensor<4x16xf32>, tensor<4x8xf32> -> tensor<16x8xf32>
// CHECK: lathe.matmul %{{.*}}, %{{.*}} accumulate %{{.*}} {transpose_lhs} : tensor<4x16xf32>, tensor<4x8xf32> -> tensor<16x8xf32>
// CHECK: lathe.rms_norm_grad
// CHECK: lathe.attention_grad %{{.*}} {heads = 2 : i64, kv_heads = 1 : i64}
// CHECK: lathe.attention_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} output %{{.*}} {heads = 2 : i64, kv_heads = 1 : i64}
// CHECK: lathe.swiglu %{{.*}}, %{{.*}} : tensor<4x8xf32>
// CHECK: lathe.swiglu_grad
// CHECK: lathe.embedding_grad %{{.*}}, %{{.*}} : tensor<4xi32>, tensor<4x8xf32> -> tensor<16x8xf32>
// CHECK: lathe.embedding_grad %{{.*}}, %{{.*}} into %{{.*}} : tensor<4xi32>, tensor<4x8xf32>, tensor<16x8xf32> -> tensor<16x8xf32>
// CHECK: lathe.scatter_add_rows %{{.*}}, %{{.*}} into %{{.*}} : tensor<4xi32>, tensor<4x8xf32>, tensor<16x8xf32> -> tensor<16x8xf32>
// CHECK: lathe.rope %{{.*}} {base = 1.000000e+04 : f64, heads = 2 : i64, inverse}
func.func @training(%y: tensor<4x16xf32>, %t: tensor<4xi32>, %x: tensor<4x8xf32>, %g: tensor<8xf32>, %k: tensor<4x4xf32>) {
  %l = lathe.cross_entropy %y, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
  %dy = lathe.cross_entropy_grad %y, %t, %l : tensor<4x16xf32>, tensor<4xi32>, tensor<1xf32> -> tensor<4x16xf32>
  %dw = lathe.matmul %dy, %x {transpose_lhs} : tensor<4x16xf32>, tensor<4x8xf32> -> tensor<16x8xf32>
  %dw2 = lathe.matmul %dy, %x accumulate %dw {transpose_lhs} : tensor<4x16xf32>, tensor<4x8xf32> -> tensor<16x8xf32>
  %dx, %dg = lathe.rms_norm_grad %x, %g, %x {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<8xf32>
  %dq, %dk, %dv = lathe.attention_grad %x, %k, %k, %x {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>
  %dq2, %dk2, %dv2 = lathe.attention_grad %x, %k, %k, %x output %x {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>
  %h = lathe.swiglu %x, %x : tensor<4x8xf32>
  %da, %db = lathe.swiglu_grad %x, %x, %h : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<4x8xf32>
  %de = lathe.embedding_grad %t, %x : tensor<4xi32>, tensor<4x8xf32> -> tensor<16x8xf32>
  %de2 = lathe.embedding_grad %t, %x into %de : tensor<4xi32>, tensor<4x8xf32>, tensor<16x8xf32> -> tensor<16x8xf32>
  %de3 = lathe.scatter_add_rows %t, %x into %de2 : tensor<4xi32>, tensor<4x8xf32>, tensor<16x8xf32> -> tensor<16x8xf32>
  %r = lathe.rope %x {heads = 2 : i64, base = 1.0e+04 : f64, inverse} : tensor<4x8xf32> -> tensor<4x8xf32>
  return
}

// -----

// The rest of training's ops: bias and position-table gradients, LayerNorm's
// VJP, ungated activations, the optimizer.
// CHECK-LABEL: func.func @training_rest
// CHECK: lathe.sum_rows %{{.*}} : tensor<4x8xf32> -> tensor<8xf32>
// CHECK: lathe.pad_rows %{{.*}} : tensor<4x8xf32> -> tensor<16x8xf32>
// CHECK: lathe.layer_norm_grad
// CHECK: lathe.activation gelu %{{.*}} : tensor<4x8xf32>
// CHECK: lathe.activation_grad relu2 %{{.*}}, %{{.*}} : tensor<4x8xf32>
// CHECK: lathe.attention_grad {{.*}} normalizer(softpick)
// CHECK: lathe.global_norm(%{{.*}}, %{{.*}}) scale %{{.*}} {max_norm = 1.000000e+00 : f64}
// CHECK: lathe.adamw %{{.*}} lr %{{.*}} step %{{.*}} scale %{{.*}} factor %{{.*}} {beta1 = 9.000000e-01 : f64
// CHECK: lathe.assign %{{.*}}, %{{.*}} : tensor<16x8xf32>
// CHECK: lathe.muon %{{.*}}, %{{.*}}, %{{.*}} lr %{{.*}} scale %{{.*}} factor %{{.*}} {lr_scale = 2.000000e+01 : f64, momentum = 0.94999999999999996 : f64, weight_decay = 1.000000e-01 : f64} : tensor<16x8xf32>, tensor<1xf32>
// CHECK: lathe.stop_gradient %{{.*}} : tensor<4x8xf32>
lathe.param @"w" : tensor<16x8xf32> init(normal, std = 0.02)
func.func @training_rest(%x: tensor<4x8xf32>, %g: tensor<8xf32>, %s: tensor<1xf32>, %q: tensor<4x8xf32>, %k: tensor<4x4xf32>) {
  %db = lathe.sum_rows %x : tensor<4x8xf32> -> tensor<8xf32>
  %dp = lathe.pad_rows %x : tensor<4x8xf32> -> tensor<16x8xf32>
  %dx, %dg, %dbb = lathe.layer_norm_grad %x, %g, %x {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>
  %h = lathe.activation gelu %x : tensor<4x8xf32>
  %dh = lathe.activation_grad relu2 %x, %h : tensor<4x8xf32>
  %aq, %ak, %av = lathe.attention_grad %q, %k, %k, %q normalizer(softpick) {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>
  %w = lathe.weight @"w" : tensor<16x8xf32>
  %n, %f = lathe.global_norm (%w, %g) scale %s {max_norm = 1.0 : f64} : (tensor<16x8xf32>, tensor<8xf32>), tensor<1xf32> -> tensor<1xf32>, tensor<1xf32>
  %p1, %m1, %v1 = lathe.adamw %w, %w, %w, %w lr %s step %s scale %s factor %f {beta1 = 0.9 : f64, beta2 = 0.95 : f64, eps = 1.0e-08 : f64, weight_decay = 0.1 : f64} : tensor<16x8xf32>, tensor<1xf32>
  %w1 = lathe.assign %w, %p1 : tensor<16x8xf32>
  %p2, %b2 = lathe.muon %w, %w, %w lr %s scale %s factor %f {lr_scale = 20.0 : f64, momentum = 0.95 : f64, weight_decay = 0.1 : f64} : tensor<16x8xf32>, tensor<1xf32>
  %sg = lathe.stop_gradient %x : tensor<4x8xf32>
  return
}

// -----

// The Three-Phase Transformer's VJP ops.
// CHECK-LABEL: func.func @three_phase_grads
// CHECK: lathe.phase_rotate %{{.*}}, %{{.*}} {inverse, phases = 3 : i64}
// CHECK: lathe.phase_rotate_theta_grad %{{.*}}, %{{.*}} {phases = 3 : i64} : tensor<4x96xf32>, tensor<4x96xf32> -> tensor<16xf32>
// CHECK: lathe.center_rows %{{.*}} : tensor<4x96xf32>
// CHECK: lathe.rms_norm_grad {{.*}}phases = 3
func.func @three_phase_grads(%y: tensor<4x96xf32>, %t: tensor<16xf32>, %g: tensor<96xf32>) {
  %x = lathe.phase_rotate %y, %t {phases = 3 : i64, inverse} : tensor<4x96xf32>, tensor<16xf32> -> tensor<4x96xf32>
  %dt = lathe.phase_rotate_theta_grad %y, %x {phases = 3 : i64} : tensor<4x96xf32>, tensor<4x96xf32> -> tensor<16xf32>
  %c = lathe.center_rows %x : tensor<4x96xf32>
  %dx, %dg = lathe.rms_norm_grad %y, %g, %c {eps = 1.0e-06 : f64, phases = 3 : i64} : tensor<4x96xf32>, tensor<96xf32>, tensor<4x96xf32> -> tensor<4x96xf32>, tensor<96xf32>
  return
}

// -----

// CHECK-LABEL: func.func @parcae_grad
// CHECK: lathe.parcae_inject_grad %{{.*}}, %{{.*}}, %{{.*}} state %{{.*}} grad %{{.*}} :
func.func @parcae_grad(%be: tensor<4x8xf32>, %a: tensor<8xf32>) {
  %dbe, %da, %ddt, %dh = lathe.parcae_inject_grad %be, %a, %a state %be grad %be : tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32> state tensor<4x8xf32> -> tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32>
  return
}

// -----

// LoopFormer's VJP ops.
// CHECK-LABEL: func.func @loopformer_grads
// CHECK: lathe.silu_grad %{{.*}}, %{{.*}} : tensor<1x8xf32>
// CHECK: lathe.gated_add_grad
// CHECK: lathe.modulated_rms_norm_grad
func.func @loopformer_grads(%x: tensor<4x8xf32>, %r: tensor<1x8xf32>) {
  %a = lathe.silu_grad %r, %r : tensor<1x8xf32>
  %dy, %dg = lathe.gated_add_grad %x, %r, %x : tensor<4x8xf32>, tensor<1x8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<1x8xf32>
  %dx, %ds = lathe.modulated_rms_norm_grad %x, %r, %x {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<1x8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<1x8xf32>
  return
}

// LoopUS's deep supervision: the gate's VJP core, the token accuracy and the
// confidence head's binary cross-entropy with its gradient.
// CHECK-LABEL: func.func @deep_supervision
func.func @deep_supervision(%pre: tensor<4x8xf32>, %a: tensor<8xf32>, %d: tensor<4x8xf32>, %logits: tensor<4x16xf32>, %t: tensor<4xi32>, %z: tensor<4x1xf32>) -> (tensor<4x8xf32>, tensor<8xf32>, tensor<4x8xf32>, tensor<4x1xf32>) {
  // CHECK: lathe.selective_gate_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<8xf32>
  %dpre, %da, %direct = lathe.selective_gate_grad %pre, %a, %d, %d : tensor<4x8xf32>, tensor<8xf32>
  // CHECK: lathe.token_accuracy %{{.*}}, %{{.*}} : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
  %acc = lathe.token_accuracy %logits, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
  // CHECK: lathe.binary_cross_entropy %{{.*}}, %{{.*}} : tensor<4x1xf32>, tensor<1xf32> -> tensor<1xf32>
  %l = lathe.binary_cross_entropy %z, %acc : tensor<4x1xf32>, tensor<1xf32> -> tensor<1xf32>
  // CHECK: lathe.binary_cross_entropy_grad %{{.*}}, %{{.*}}, %{{.*}} : tensor<4x1xf32>, tensor<1xf32>
  %dz = lathe.binary_cross_entropy_grad %z, %acc, %l : tensor<4x1xf32>, tensor<1xf32>
  return %dpre, %da, %direct, %dz : tensor<4x8xf32>, tensor<8xf32>, tensor<4x8xf32>, tensor<4x1xf32>
}

// CHECK-LABEL: func.func @gemm
func.func @gemm(%x: memref<8x16xf32>, %w: memref<32x16xf32>, %y: memref<8x32xf32>, %r: memref<8x32xf32>, %b: memref<32xf32>, %h: memref<8x32xf32>, %q: memref<4x8x8xf32>, %s: memref<4x8x8xf32>) {
  // CHECK: lathe.gemm %{{.*}}, %{{.*}} into %{{.*}} {k = 16 : i64, lda = 16 : i64, ldb = 16 : i64, ldd = 32 : i64, m = 8 : i64, n = 32 : i64, trans_a = false, trans_b = true} : memref<8x16xf32>, memref<32x16xf32>, memref<8x32xf32>
  lathe.gemm %x, %w into %y {m = 8 : i64, n = 32 : i64, k = 16 : i64, trans_a = false, trans_b = true, lda = 16 : i64, ldb = 16 : i64, ldd = 32 : i64} : memref<8x16xf32>, memref<32x16xf32>, memref<8x32xf32>
  // CHECK: lathe.gemm %{{.*}}, %{{.*}} into %{{.*}} accumulate %{{.*}} bias %{{.*}} aux %{{.*}} epilogue(gelu) precision(bf16)
  lathe.gemm %x, %w into %y accumulate %r bias %b aux %h epilogue(gelu) precision(bf16) {m = 8 : i64, n = 32 : i64, k = 16 : i64, trans_a = false, trans_b = true, lda = 16 : i64, ldb = 16 : i64, ldd = 32 : i64} : memref<8x16xf32>, memref<32x16xf32>, memref<8x32xf32>, memref<8x32xf32>, memref<32xf32>, memref<8x32xf32>
  // CHECK: lathe.gemm %{{.*}}, %{{.*}} into %{{.*}} epilogue(relu) precision(tf32) {batch = 4 : i64
  lathe.gemm %q, %q into %s epilogue(relu) precision(tf32) {m = 8 : i64, n = 8 : i64, k = 8 : i64, trans_a = false, trans_b = true, lda = 8 : i64, ldb = 8 : i64, ldd = 8 : i64, batch = 4 : i64, stride_a = 64 : i64, stride_b = 64 : i64, stride_d = 64 : i64} : memref<4x8x8xf32>, memref<4x8x8xf32>, memref<4x8x8xf32>
  return
}

// A training pass packs sequences as rows: `window` rows each.
// CHECK-LABEL: func.func @packed_windows
func.func @packed_windows(%q: tensor<8x8xf32>, %k: tensor<8x4xf32>,
    %pos: tensor<4x8xf32>) -> (tensor<8x8xf32>, tensor<4x8xf32>) {
  // CHECK: lathe.rope %{{.*}} {base = 1.000000e+04 : f64, heads = 2 : i64, window = 4 : i64}
  %qr = lathe.rope %q {heads = 2 : i64, base = 10000.0 : f64, window = 4 : i64} : tensor<8x8xf32> -> tensor<8x8xf32>
  // CHECK: lathe.dc_inject %{{.*}} {window = 4 : i64} : tensor<8x8xf32> -> tensor<8x8xf32>
  %qd = lathe.dc_inject %qr {window = 4 : i64} : tensor<8x8xf32> -> tensor<8x8xf32>
  // CHECK: lathe.attention %{{.*}}, %{{.*}}, %{{.*}} {heads = 2 : i64, kv_heads = 1 : i64, window = 4 : i64}
  %a = lathe.attention %qd, %k, %k {heads = 2 : i64, kv_heads = 1 : i64, window = 4 : i64} : tensor<8x8xf32>, tensor<8x4xf32>, tensor<8x4xf32> -> tensor<8x8xf32>
  // CHECK: lathe.attention_grad %{{.*}} {heads = 2 : i64, kv_heads = 1 : i64, window = 4 : i64}
  %dq, %dk, %dv = lathe.attention_grad %qd, %k, %k, %a {heads = 2 : i64, kv_heads = 1 : i64, window = 4 : i64} : tensor<8x8xf32>, tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x8xf32> -> tensor<8x8xf32>, tensor<8x4xf32>, tensor<8x4xf32>
  // CHECK: lathe.repeat_rows %{{.*}} : tensor<4x8xf32> -> tensor<8x8xf32>
  %p2 = lathe.repeat_rows %pos : tensor<4x8xf32> -> tensor<8x8xf32>
  // CHECK: lathe.fold_rows %{{.*}} : tensor<8x8xf32> -> tensor<4x8xf32>
  %dp = lathe.fold_rows %p2 : tensor<8x8xf32> -> tensor<4x8xf32>
  return %dq, %dp : tensor<8x8xf32>, tensor<4x8xf32>
}
