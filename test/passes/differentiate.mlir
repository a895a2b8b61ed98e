// RUN: lathe-opt %s --lathe-differentiate --split-input-file | FileCheck %s
// RUN: lathe-opt %s --lathe-differentiate=recompute-mlp --split-input-file | FileCheck %s --check-prefix=RECOMPUTE

// A norm, a head tied to the embedding, and a parameter the loss does not
// read: the function returns the loss, then one gradient per lathe.param in
// declaration order. The tied table's two uses (lookup and head) are summed:
// the lookup's rows scatter into the head's gradient (embedding_grad into),
// with no lathe.add of two [V, D] tables; the unused parameter's gradient is
// zeros.
lathe.param @"embed.weight" : tensor<16x8xf32> init(normal, std = 0.02)
lathe.param @"norm.weight" : tensor<8xf32> init(ones)
lathe.param @"unused" : tensor<3xf32> init(ones)
// CHECK-LABEL: func.func @grad
// CHECK-SAME: -> (tensor<1xf32>, tensor<16x8xf32>, tensor<8xf32>, tensor<3xf32>)
// CHECK-SAME: attributes {lathe.gradients = [@embed.weight, @norm.weight, @unused]}
// CHECK: %[[X:.*]] = lathe.embedding
// CHECK: %[[H:.*]] = lathe.rms_norm %[[X]]
// CHECK: %[[Y:.*]] = lathe.linear %[[H]], %[[W:[^ ]*]]
// CHECK: %[[L:.*]] = lathe.cross_entropy %[[Y]], %[[T:[^ ]*]]
// CHECK: %[[ONE:.*]] = linalg.fill ins(%{{.*}} : f32) outs(%{{.*}} : tensor<1xf32>)
// CHECK: %[[DY:.*]] = lathe.cross_entropy_grad %[[Y]], %[[T]], %[[ONE]]
// CHECK: %[[DH:.*]] = lathe.matmul %[[DY]], %[[W]] :
// CHECK: %[[DWHEAD:.*]] = lathe.matmul %[[DY]], %[[H]] {transpose_lhs}
// CHECK: %[[DX:.*]], %[[DG:.*]] = lathe.rms_norm_grad %[[X]], %{{.*}}, %[[DH]]
// CHECK-NOT: lathe.add
// CHECK: %[[DW:.*]] = lathe.embedding_grad %{{.*}}, %[[DX]] into %[[DWHEAD]]
// CHECK: %[[Z:.*]] = linalg.fill ins(%{{.*}} : f32) outs(%{{.*}} : tensor<3xf32>)
// CHECK: return %[[L]], %[[DW]], %[[DG]], %[[Z]]
func.func @grad(%tok: tensor<4xi32>, %t: tensor<4xi32>) -> tensor<1xf32> attributes {lathe.differentiate} {
  %e = lathe.weight @"embed.weight" : tensor<16x8xf32>
  %x = lathe.embedding %tok, %e : tensor<4xi32>, tensor<16x8xf32> -> tensor<4x8xf32>
  %g = lathe.weight @"norm.weight" : tensor<8xf32>
  %h = lathe.rms_norm %x, %g {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  %w = lathe.weight @"embed.weight" : tensor<16x8xf32>
  %y = lathe.linear %h, %w : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %l = lathe.cross_entropy %y, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
  return %l : tensor<1xf32>
}

// -----

// A decoder layer's pieces: RoPE's VJP is the inverse rotation; attention's
// is one lathe.attention_grad; a SwiGLU MLP's forward saves its gate and up
// pre-activations and its activation, which the backward reads (with
// recompute-mlp it recomputes the two projections and the activation), and
// its residual passes the cotangent straight through.
lathe.param @"wq" : tensor<8x8xf32> init(normal, std = 0.02)
lathe.param @"wk" : tensor<4x8xf32> init(normal, std = 0.02)
lathe.param @"wg" : tensor<16x8xf32> init(normal, std = 0.02)
lathe.param @"wu" : tensor<16x8xf32> init(normal, std = 0.02)
lathe.param @"wd" : tensor<8x16xf32> init(normal, std = 0.02)
lathe.param @"head" : tensor<16x8xf32> init(normal, std = 0.02)
// CHECK-LABEL: func.func @layer
// CHECK: %[[ATT:.*]] = lathe.attention %
// CHECK: %{{.*}}, %[[S:.*]]:3 = lathe.mlp swiglu {{.*}} -> (tensor<4x8xf32>, tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>)
// CHECK: lathe.cross_entropy_grad
// CHECK-NOT: lathe.swiglu %
// CHECK: %[[DH:.*]] = lathe.matmul %{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<8x16xf32> -> tensor<4x16xf32>
// CHECK: lathe.matmul %{{.*}}, %[[S]]#2 {transpose_lhs}
// CHECK: lathe.swiglu_grad %[[S]]#0, %[[S]]#1, %[[DH]]
// CHECK: lathe.attention_grad {{.*}} output %[[ATT]] {heads = 2 : i64, kv_heads = 1 : i64}
// CHECK: lathe.rope {{.*}}inverse
// CHECK: lathe.rope {{.*}}inverse
// RECOMPUTE-LABEL: func.func @layer
// RECOMPUTE: lathe.mlp swiglu {{.*}} -> tensor<4x8xf32>
// RECOMPUTE: lathe.cross_entropy_grad
// RECOMPUTE: %[[U:.*]] = lathe.linear %[[A:[^ ,]*]], %{{.*}} : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
// RECOMPUTE: %[[G:.*]] = lathe.linear %[[A]], %{{.*}} : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
// RECOMPUTE: lathe.swiglu %[[G]], %[[U]]
// RECOMPUTE: lathe.swiglu_grad %[[G]], %[[U]]
func.func @layer(%x: tensor<4x8xf32>, %t: tensor<4xi32>) -> tensor<1xf32> attributes {lathe.differentiate} {
  %wq = lathe.weight @"wq" : tensor<8x8xf32>
  %wk = lathe.weight @"wk" : tensor<4x8xf32>
  %q = lathe.linear %x, %wq : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %k = lathe.linear %x, %wk : tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x4xf32>
  %qr = lathe.rope %q {heads = 2 : i64, base = 1.0e+04 : f64} : tensor<4x8xf32> -> tensor<4x8xf32>
  %kr = lathe.rope %k {heads = 1 : i64, base = 1.0e+04 : f64} : tensor<4x4xf32> -> tensor<4x4xf32>
  %a = lathe.attention %qr, %kr, %k {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32> -> tensor<4x8xf32>
  %wg = lathe.weight @"wg" : tensor<16x8xf32>
  %wu = lathe.weight @"wu" : tensor<16x8xf32>
  %wd = lathe.weight @"wd" : tensor<8x16xf32>
  %m = lathe.mlp swiglu %a gate %wg up %wu down %wd accumulate %x : (tensor<4x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<8x16xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %wh = lathe.weight @"head" : tensor<16x8xf32>
  %y = lathe.linear %m, %wh : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %l = lathe.cross_entropy %y, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
  return %l : tensor<1xf32>
}

// -----

// Attention residuals: a routing site's VJP is one lathe.depth_attention_grad
// (its norms' cotangents go back through lathe.row_sum_squares_grad, its
// base passes dy through), the entropy bonus's is a second one with only the
// entropy cotangent, and a difference's subtrahend gets -dy.
lathe.param @"q" : tensor<8xf32> init(zeros)
lathe.param @"g" : tensor<8xf32> init(ones)
lathe.param @"w" : tensor<16x8xf32> init(normal, std = 0.02)
lathe.param @"p" : tensor<8x8xf32> init(normal, std = 0.02)
// CHECK-LABEL: func.func @routing
// CHECK: lathe.add %{{.*}}, %{{.*}} : tensor<1xf32>
// CHECK: %[[E:.*]] = lathe.scale %{{.*}} {factor = -1.000000e-01 : f64} : tensor<1xf32>
// CHECK-NEXT: lathe.cross_entropy_grad
// CHECK: lathe.depth_attention_grad({{.*}}) norms({{.*}}) query %{{.*}} gain %{{.*}} entropy %[[E]] {eps
// CHECK: %{{.*}}:2, %{{.*}}:2, %{{.*}}, %{{.*}} = lathe.depth_attention_grad({{.*}}) norms({{.*}}) query %{{.*}} gain %{{.*}} cotangent %{{.*}} {eps
// CHECK: lathe.row_sum_squares_grad %{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<4xf32> -> tensor<4x8xf32>
// CHECK: lathe.scale %{{.*}} {factor = -1.000000e+00 : f64} : tensor<4x8xf32>
func.func @routing(%x: tensor<4x8xf32>, %t: tensor<4xi32>) -> tensor<1xf32> attributes {lathe.differentiate} {
  %q = lathe.weight @"q" : tensor<8xf32>
  %g = lathe.weight @"g" : tensor<8xf32>
  %w = lathe.weight @"w" : tensor<16x8xf32>
  %p = lathe.weight @"p" : tensor<8x8xf32>
  %o = lathe.linear %x, %p : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %d = lathe.sub %o, %x : tensor<4x8xf32>
  %n0 = lathe.row_sum_squares %x : tensor<4x8xf32> -> tensor<4xf32>
  %n1 = lathe.row_sum_squares %d : tensor<4x8xf32> -> tensor<4xf32>
  %r = lathe.depth_attention (%x, %d) norms (%n0, %n1) query %q gain %g base %x {eps = 1.0e-6 : f64} : (tensor<4x8xf32>, tensor<4x8xf32>), (tensor<4xf32>, tensor<4xf32>), tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  %e = lathe.routing_entropy (%x, %d) norms (%n0, %n1) query %q gain %g {eps = 1.0e-6 : f64} : (tensor<4x8xf32>, tensor<4x8xf32>), (tensor<4xf32>, tensor<4xf32>), tensor<8xf32>, tensor<8xf32> -> tensor<1xf32>
  %y = lathe.linear %r, %w : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %l = lathe.cross_entropy %y, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
  %b = lathe.scale %e {factor = -0.1 : f64} : tensor<1xf32>
  %lb = lathe.add %l, %b : tensor<1xf32>
  return %lb : tensor<1xf32>
}

// -----

// Parcae's sampled depth: the masked update sends dy to the iteration's
// result where it runs and to the state it skips otherwise; the counted
// stop-gradient lets dy through except where truncated backprop freezes.
lathe.param @"w" : tensor<16x8xf32> init(normal, std = 0.02)
lathe.param @"p" : tensor<8x8xf32> init(normal, std = 0.02)
// CHECK-LABEL: func.func @sampled_depth
// CHECK-DAG: lathe.iteration_mask %{{.*}}, %arg2 active {iteration = 1 : i64}
// CHECK-DAG: lathe.iteration_mask %{{.*}}, %arg2 inactive {iteration = 1 : i64}
// CHECK: lathe.iteration_mask %{{.*}}, %arg2 unfrozen {backprop = 1 : i64, iteration = 1 : i64}
func.func @sampled_depth(%x: tensor<4x8xf32>, %t: tensor<4xi32>, %n: tensor<1xi32>) -> tensor<1xf32> attributes {lathe.differentiate} {
  %p = lathe.weight @"p" : tensor<8x8xf32>
  %h1 = lathe.linear %x, %p : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %s = lathe.stop_gradient %h1 count %n {backprop = 1 : i64, iteration = 1 : i64} : tensor<4x8xf32>, tensor<1xi32>
  %h2 = lathe.linear %s, %p : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %h = lathe.loop_select %n, %h2, %s {iteration = 1 : i64} : tensor<1xi32>, tensor<4x8xf32>
  %w = lathe.weight @"w" : tensor<16x8xf32>
  %y = lathe.linear %h, %w : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %l = lathe.cross_entropy %y, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
  return %l : tensor<1xf32>
}

// -----

// LoopFormer's consistency term: the short side's cotangent is
// 2 (short - long) dy / N, the long side (behind the stop-gradient) gets none.
lathe.param @"w" : tensor<8x8xf32> init(normal, std = 0.02)
// CHECK-LABEL: func.func @consistency
// CHECK: %[[D:.*]] = lathe.mean_squared_error_grad %{{.*}}, %{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<1xf32>
// CHECK: %[[N:.*]] = lathe.scale %[[D]] {factor = -1.000000e+00 : f64} : tensor<4x8xf32>
// CHECK-NOT: lathe.matmul %[[D]]
// CHECK: lathe.matmul %[[N]]
func.func @consistency(%x: tensor<4x8xf32>, %t: tensor<4xi32>) -> tensor<1xf32> attributes {lathe.differentiate} {
  %w = lathe.weight @"w" : tensor<8x8xf32>
  %a = lathe.linear %x, %w : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %b = lathe.linear %a, %w : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %s = lathe.stop_gradient %b : tensor<4x8xf32>
  %m = lathe.mean_squared_error %s, %a : tensor<4x8xf32> -> tensor<1xf32>
  return %m : tensor<1xf32>
}

// -----

// LoopUS's gate: its VJP recomputes delta, the rank-r product and the
// pre-activation, takes the elementwise core, then one linear VJP per
// projection; the state's cotangent is dy minus the proposal's. The
// confidence loss sends its gradient to the logits only (the accuracy is a
// constant target, never differentiated).
lathe.param @"gate.down" : tensor<2x8xf32> init(normal, std = 0.02)
lathe.param @"gate.up" : tensor<8x2xf32> init(normal, std = 0.02)
lathe.param @"gate.b" : tensor<8xf32> init(zeros)
lathe.param @"gate.a" : tensor<8xf32> init(log_index)
lathe.param @"head" : tensor<1x8xf32> init(normal, std = 0.02)
lathe.param @"out" : tensor<16x8xf32> init(normal, std = 0.02)
// CHECK-LABEL: func.func @gate
// CHECK: %[[DELTA:.*]] = lathe.sub %arg0, %arg1
// CHECK: %[[LOW:.*]] = lathe.linear %[[DELTA]], %{{.*}} : tensor<4x8xf32>, tensor<2x8xf32> -> tensor<4x2xf32>
// CHECK: %[[PRE:.*]] = lathe.linear %[[LOW]], %{{.*}} bias %{{.*}} : tensor<4x2xf32>, tensor<8x2xf32>, tensor<8xf32> -> tensor<4x8xf32>
// CHECK: %[[DPRE:.*]], %[[DA:.*]], %[[DIRECT:.*]] = lathe.selective_gate_grad %[[PRE]], %{{.*}}, %[[DELTA]], %{{.*}}
// CHECK: %[[DLOW:.*]] = lathe.matmul %[[DPRE]], %{{.*}} : tensor<4x8xf32>, tensor<8x2xf32> -> tensor<4x2xf32>
// CHECK: lathe.matmul %[[DPRE]], %[[LOW]] {transpose_lhs}
// CHECK: %[[DD:.*]] = lathe.matmul %[[DLOW]], %{{.*}} : tensor<4x2xf32>, tensor<2x8xf32> -> tensor<4x8xf32>
// CHECK: lathe.matmul %[[DLOW]], %[[DELTA]] {transpose_lhs}
// CHECK: %[[SUM:.*]] = lathe.add %[[DIRECT]], %[[DD]]
// CHECK: lathe.sub %{{.*}}, %[[SUM]]
// CHECK: lathe.sum_rows %[[DPRE]]
// CHECK-NOT: lathe.token_accuracy {{.*}}grad
func.func @gate(%u: tensor<4x8xf32>, %h: tensor<4x8xf32>, %t: tensor<4xi32>) -> tensor<1xf32> attributes {lathe.differentiate} {
  %wd = lathe.weight @"gate.down" : tensor<2x8xf32>
  %wu = lathe.weight @"gate.up" : tensor<8x2xf32>
  %b = lathe.weight @"gate.b" : tensor<8xf32>
  %a = lathe.weight @"gate.a" : tensor<8xf32>
  %wq = lathe.weight @"head" : tensor<1x8xf32>
  %wo = lathe.weight @"out" : tensor<16x8xf32>
  %next = lathe.selective_gate %u, %h, %wd, %wu, %b, %a : tensor<4x8xf32>, tensor<2x8xf32>, tensor<8x2xf32>, tensor<8xf32>
  %logits = lathe.linear %next, %wo : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %ce = lathe.cross_entropy %logits, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
  %z = lathe.linear %next, %wq : tensor<4x8xf32>, tensor<1x8xf32> -> tensor<4x1xf32>
  %acc = lathe.token_accuracy %logits, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
  %bce = lathe.binary_cross_entropy %z, %acc : tensor<4x1xf32>, tensor<1xf32> -> tensor<1xf32>
  %l = lathe.add %ce, %bce : tensor<1xf32>
  return %l : tensor<1xf32>
}

// -----

// Gradient accumulation (lathe.accumulate_gradients): the function returns
// the loss alone. A weight whose gradient is one product accumulates into
// its state in that product (lathe.matmul accumulate, beta = 1), where the
// product was; any other gradient is added to its state.
lathe.param @"w" : tensor<16x8xf32> init(normal, std = 0.02)
lathe.param @"g" : tensor<8xf32> init(ones)
lathe.cache @"grad.w" : tensor<16x8xf32>
lathe.cache @"grad.g" : tensor<8xf32>
// CHECK-LABEL: func.func @accumulate
// CHECK-SAME: -> tensor<1xf32>
// CHECK: %[[DY:.*]] = lathe.cross_entropy_grad
// CHECK: %[[SW:.*]] = lathe.cache_read @grad.w
// CHECK-NEXT: %[[AW:.*]] = lathe.matmul %[[DY]], %{{.*}} accumulate %[[SW]] {transpose_lhs}
// CHECK-NEXT: lathe.assign %[[SW]], %[[AW]]
// CHECK: lathe.rms_norm_grad
// CHECK: %[[SG:.*]] = lathe.cache_read @grad.g
// CHECK-NEXT: %[[AG:.*]] = lathe.add %[[SG]], %{{.*}} : tensor<8xf32>
// CHECK-NEXT: lathe.assign %[[SG]], %[[AG]]
// CHECK-NEXT: return %{{.*}} : tensor<1xf32>
// RECOMPUTE-LABEL: func.func @accumulate
func.func @accumulate(%x: tensor<4x8xf32>, %t: tensor<4xi32>) -> tensor<1xf32> attributes {lathe.differentiate, lathe.accumulate_gradients} {
  %g = lathe.weight @"g" : tensor<8xf32>
  %h = lathe.rms_norm %x, %g {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  %w = lathe.weight @"w" : tensor<16x8xf32>
  %y = lathe.linear %h, %w : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %l = lathe.cross_entropy %y, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
  return %l : tensor<1xf32>
}
