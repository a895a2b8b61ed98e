// RUN: lathe-opt %s --lathe-form-kernels --split-input-file | FileCheck %s

// Tests that a structured op is outlined with its fill into a private kernel
// in destination-passing form (inputs, then one buffer per result), and that
// the entry launches it; the now-dead empty/fill/constant leave the entry.

#x = affine_map<(t, o, i) -> (t, i)>
#w = affine_map<(t, o, i) -> (o, i)>
#y = affine_map<(t, o, i) -> (t, o)>
lathe.param @w : tensor<16x8xf32> init(normal, std = 0.02)
// CHECK-LABEL: func.func @forward
// CHECK-SAME: (%[[X:.*]]: tensor<4x8xf32>)
// CHECK-NEXT: %[[W:.*]] = lathe.weight @w
// CHECK-NEXT: %[[Y:.*]] = lathe.launch @forward_k0(%[[X]], %[[W]]) : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32>
// CHECK-NEXT: return %[[Y]]
// CHECK: func.func private @forward_k0(%[[A:.*]]: tensor<4x8xf32>, %[[B:.*]]: tensor<16x8xf32>, %[[OUT:.*]]: tensor<4x16xf32>) -> tensor<4x16xf32> attributes {lathe.kernel}
// CHECK: %[[F:.*]] = linalg.fill ins(%{{.*}} : f32) outs(%[[OUT]] : tensor<4x16xf32>)
// CHECK: %[[R:.*]] = linalg.generic {{.*}} ins(%[[A]], %[[B]] : {{.*}}) outs(%[[F]] : tensor<4x16xf32>)
// CHECK: return %[[R]]
func.func @forward(%x: tensor<4x8xf32>) -> tensor<4x16xf32> {
  %w = lathe.weight @w : tensor<16x8xf32>
  %e = tensor.empty() : tensor<4x16xf32>
  %c0 = arith.constant 0.0 : f32
  %z = linalg.fill ins(%c0 : f32) outs(%e : tensor<4x16xf32>) -> tensor<4x16xf32>
  %y = linalg.generic {indexing_maps = [#x, #w, #y], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : tensor<4x8xf32>, tensor<16x8xf32>) outs(%z : tensor<4x16xf32>) {
  ^bb0(%a: f32, %b: f32, %acc: f32):
    %m = arith.mulf %a, %b : f32
    %s = arith.addf %acc, %m : f32
    linalg.yield %s : f32
  } -> tensor<4x16xf32>
  return %y : tensor<4x16xf32>
}

// -----

// Tests that tensors a body reads from above (a gather's table) become kernel
// inputs, constants used in the body are cloned in, and two ops make two
// kernels launched in order.

#id = affine_map<(t, d) -> (t, d)>
#t = affine_map<(t, d) -> (t)>
// CHECK-LABEL: func.func @gather_then_scale
// CHECK: %[[G:.*]] = lathe.launch @gather_then_scale_k0(%{{.*}}, %[[TABLE:.*]]) : (tensor<4xi32>, tensor<16x8xf32>) -> tensor<4x8xf32>
// CHECK: lathe.launch @gather_then_scale_k1(%[[G]]) : (tensor<4x8xf32>) -> tensor<4x8xf32>
// CHECK: func.func private @gather_then_scale_k0(%{{.*}}: tensor<4xi32>, %[[T:.*]]: tensor<16x8xf32>, %{{.*}}: tensor<4x8xf32>)
// CHECK: tensor.extract %[[T]]
// CHECK: func.func private @gather_then_scale_k1
// CHECK: arith.constant 2.000000e+00 : f32
func.func @gather_then_scale(%tok: tensor<4xi32>, %table: tensor<16x8xf32>) -> tensor<4x8xf32> {
  %two = arith.constant 2.0 : f32
  %e = tensor.empty() : tensor<4x8xf32>
  %g = linalg.generic {indexing_maps = [#t, #id], iterator_types = ["parallel", "parallel"]}
      ins(%tok : tensor<4xi32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%i: i32, %o: f32):
    %r = arith.index_cast %i : i32 to index
    %c = linalg.index 1 : index
    %v = tensor.extract %table[%r, %c] : tensor<16x8xf32>
    linalg.yield %v : f32
  } -> tensor<4x8xf32>
  %e2 = tensor.empty() : tensor<4x8xf32>
  %s = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%g : tensor<4x8xf32>) outs(%e2 : tensor<4x8xf32>) {
  ^bb0(%a: f32, %o: f32):
    %m = arith.mulf %a, %two : f32
    linalg.yield %m : f32
  } -> tensor<4x8xf32>
  return %s : tensor<4x8xf32>
}

// -----

// Tests that an in-place cache update (copy into a slice that goes straight
// back) becomes one kernel whose output is tied to the cache operand: the
// kernel slices its own output buffer, and the position it writes at is
// recomputed inside the kernel from the position tensor.

// CHECK-LABEL: func.func @append
// CHECK: %[[C:.*]] = lathe.cache_read @k
// CHECK: %[[NEW:.*]] = lathe.launch @append_k0(%{{.*}}, %[[C]], %{{.*}}) {tied = array<i64: 1>} : (tensor<1x4xf32>, tensor<8x4xf32>, tensor<1xi32>) -> tensor<8x4xf32>
// CHECK: return %[[NEW]]
// CHECK: func.func private @append_k0(%[[ROWS:.*]]: tensor<1x4xf32>, %{{.*}}: tensor<8x4xf32>, %[[POS:.*]]: tensor<1xi32>, %[[OUT:.*]]: tensor<8x4xf32>) -> tensor<8x4xf32> attributes {lathe.kernel}
// CHECK: %[[P:.*]] = tensor.extract %[[POS]]
// CHECK: %[[I:.*]] = arith.index_cast %[[P]]
// CHECK: %[[SLOT:.*]] = tensor.extract_slice %[[OUT]][%[[I]], 0] [1, 4] [1, 1]
// CHECK: %[[COPY:.*]] = linalg.copy ins(%[[ROWS]] : tensor<1x4xf32>) outs(%[[SLOT]] : tensor<1x4xf32>)
// CHECK: %[[INS:.*]] = tensor.insert_slice %[[COPY]] into %[[OUT]][%[[I]], 0] [1, 4] [1, 1]
// CHECK: return %[[INS]]
lathe.cache @k : tensor<8x4xf32>
func.func @append(%rows: tensor<1x4xf32>, %pos: tensor<1xi32>) -> tensor<8x4xf32> {
  %c = lathe.cache_read @k : tensor<8x4xf32>
  %c0 = arith.constant 0 : index
  %p = tensor.extract %pos[%c0] : tensor<1xi32>
  %i = arith.index_cast %p : i32 to index
  %slot = tensor.extract_slice %c[%i, 0] [1, 4] [1, 1] : tensor<8x4xf32> to tensor<1x4xf32>
  %copy = linalg.copy ins(%rows : tensor<1x4xf32>) outs(%slot : tensor<1x4xf32>) -> tensor<1x4xf32>
  %new = tensor.insert_slice %copy into %c[%i, 0] [1, 4] [1, 1] : tensor<1x4xf32> into tensor<8x4xf32>
  return %new : tensor<8x4xf32>
}

// -----

// Tests that a lathe.cache_write becomes an in-place kernel even when nothing
// reads the updated cache (prefill attends to its own keys): the write is an
// effect, and the launch that replaces it is kept.

// CHECK-LABEL: func.func @prefill_write
// CHECK: %[[C:.*]] = lathe.cache_read @kp
// CHECK: lathe.launch @prefill_write_k0(%{{.*}}, %[[C]]) {tied = array<i64: 1>} : (tensor<8x4xf32>, tensor<8x4xf32>) -> tensor<8x4xf32>
// CHECK: func.func private @prefill_write_k0
// CHECK: linalg.copy
// CHECK: tensor.insert_slice
lathe.cache @kp : tensor<8x4xf32>
func.func @prefill_write(%rows: tensor<8x4xf32>) -> tensor<8x4xf32> {
  %c = lathe.cache_read @kp : tensor<8x4xf32>
  %n = lathe.cache_write %c, %rows : tensor<8x4xf32>, tensor<8x4xf32> -> tensor<8x4xf32>
  return %rows : tensor<8x4xf32>
}

// -----

// Tests that assigning an elementwise generic's result to a state (a
// gradient sum, an optimizer's update) writes the state in place: the
// generic's init becomes the state's slice and its read of the state
// becomes a read of its output argument, so the kernel has no fresh buffer
// and no copy (and bufferization sees no input aliasing the output).

// CHECK-LABEL: func.func @accumulate
// CHECK: %[[S:.*]] = lathe.cache_read @g
// CHECK: lathe.launch @accumulate_k0(%{{.*}}, %[[S]]) {tied = array<i64: 1>}
// CHECK: func.func private @accumulate_k0(%[[G:.*]]: tensor<8x4xf32>, %{{.*}}: tensor<8x4xf32>, %[[OUT:.*]]: tensor<8x4xf32>)
// CHECK: %[[SLOT:.*]] = tensor.extract_slice %[[OUT]][0, 0] [8, 4] [1, 1]
// CHECK: %[[SUM:.*]] = linalg.generic {{.*}} ins(%[[G]] : tensor<8x4xf32>) outs(%[[SLOT]] : tensor<8x4xf32>)
// CHECK-NEXT: ^bb0(%[[IN:.*]]: f32, %[[ACC:.*]]: f32):
// CHECK-NEXT: arith.addf %[[ACC]], %[[IN]]
// CHECK: tensor.insert_slice %[[SUM]] into %[[OUT]]
// CHECK-NOT: linalg.copy
lathe.cache @g : tensor<8x4xf32>
func.func @accumulate(%grad: tensor<8x4xf32>) {
  %s = lathe.cache_read @g : tensor<8x4xf32>
  %e = tensor.empty() : tensor<8x4xf32>
  %sum = linalg.generic {indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>], iterator_types = ["parallel", "parallel"]}
      ins(%s, %grad : tensor<8x4xf32>, tensor<8x4xf32>) outs(%e : tensor<8x4xf32>) {
  ^bb0(%a: f32, %b: f32, %o: f32):
    %r = arith.addf %a, %b : f32
    linalg.yield %r : f32
  } -> tensor<8x4xf32>
  %n = lathe.assign %s, %sum : tensor<8x4xf32>
  return
}

// Tests that a GEMM accumulating into a state (a weight's gradient added
// into grad.<name>, beta = 1) gets the state's slice as its output: no
// fresh buffer, no copy.

// CHECK-LABEL: func.func @gemm_into_state
// CHECK: %[[S:.*]] = lathe.cache_read @gw
// CHECK: lathe.launch @gemm_into_state_k0(%{{.*}}, %{{.*}}, %[[S]]) {tied = array<i64: 2>}
// CHECK: func.func private @gemm_into_state_k0(%[[DY:.*]]: tensor<8x16xf32>, %[[X:.*]]: tensor<8x4xf32>, %{{.*}}: tensor<16x4xf32>, %[[OUT:.*]]: tensor<16x4xf32>)
// CHECK: %[[SLOT:.*]] = tensor.extract_slice %[[OUT]][0, 0] [16, 4] [1, 1]
// CHECK: %[[DW:.*]] = linalg.generic {{.*}} ins(%[[DY]], %[[X]] : tensor<8x16xf32>, tensor<8x4xf32>) outs(%[[SLOT]] : tensor<16x4xf32>)
// CHECK: tensor.insert_slice %[[DW]] into %[[OUT]]
// CHECK-NOT: linalg.copy
lathe.cache @gw : tensor<16x4xf32>
func.func @gemm_into_state(%dy: tensor<8x16xf32>, %x: tensor<8x4xf32>) {
  %s = lathe.cache_read @gw : tensor<16x4xf32>
  %dw = linalg.generic {indexing_maps = [affine_map<(o, i, t) -> (t, o)>, affine_map<(o, i, t) -> (t, i)>, affine_map<(o, i, t) -> (o, i)>], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%dy, %x : tensor<8x16xf32>, tensor<8x4xf32>) outs(%s : tensor<16x4xf32>) {
  ^bb0(%a: f32, %b: f32, %o: f32):
    %m = arith.mulf %a, %b : f32
    %r = arith.addf %o, %m : f32
    linalg.yield %r : f32
  } -> tensor<16x4xf32>
  %n = lathe.assign %s, %dw : tensor<16x4xf32>
  return
}

// Tests that a generic reading the state away from the element it writes
// (here transposed) keeps the fresh buffer and the copy.

// CHECK-LABEL: func.func @transposed
// CHECK: func.func private @transposed_k0
// CHECK: linalg.copy
lathe.cache @sq : tensor<4x4xf32>
func.func @transposed() {
  %s = lathe.cache_read @sq : tensor<4x4xf32>
  %e = tensor.empty() : tensor<4x4xf32>
  %t = linalg.generic {indexing_maps = [affine_map<(i, j) -> (j, i)>, affine_map<(i, j) -> (i, j)>], iterator_types = ["parallel", "parallel"]}
      ins(%s : tensor<4x4xf32>) outs(%e : tensor<4x4xf32>) {
  ^bb0(%a: f32, %o: f32):
    linalg.yield %a : f32
  } -> tensor<4x4xf32>
  %n = lathe.assign %s, %t : tensor<4x4xf32>
  return
}

// -----

// Tests accumulation into a live value (a residual connection). The first op
// accumulates into %acc, an entry argument the kernel may not overwrite: the
// kernel copies it into its output first. The second accumulates into %a, a
// launch result that nothing reads afterwards: the kernel updates %a's own
// buffer, and the launch's result is tied to it.

#id2 = affine_map<(i) -> (i)>
// CHECK-LABEL: func.func @residual
// CHECK: %[[A:.*]] = lathe.launch @residual_k0(%{{.*}}, %{{.*}}) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
// CHECK: lathe.launch @residual_k1(%{{.*}}, %[[A]]) {tied = array<i64: 1>}
// CHECK: func.func private @residual_k0(%[[X:.*]]: tensor<4xf32>, %[[ACC:.*]]: tensor<4xf32>, %[[OUT:.*]]: tensor<4xf32>)
// CHECK: %[[C:.*]] = linalg.copy ins(%[[ACC]] : tensor<4xf32>) outs(%[[OUT]] : tensor<4xf32>)
// CHECK: linalg.generic {{.*}} outs(%[[C]] : tensor<4xf32>)
// CHECK: func.func private @residual_k1(%{{.*}}: tensor<4xf32>, %{{.*}}: tensor<4xf32>, %[[OUT1:.*]]: tensor<4xf32>)
// CHECK-NOT: linalg.copy
// CHECK: linalg.generic {{.*}} outs(%[[OUT1]] : tensor<4xf32>)
func.func @residual(%x: tensor<4xf32>, %acc: tensor<4xf32>) -> tensor<4xf32> {
  %a = linalg.generic {indexing_maps = [#id2, #id2], iterator_types = ["parallel"]}
      ins(%x : tensor<4xf32>) outs(%acc : tensor<4xf32>) {
  ^bb0(%v: f32, %o: f32):
    %s = arith.addf %v, %o : f32
    linalg.yield %s : f32
  } -> tensor<4xf32>
  %b = linalg.generic {indexing_maps = [#id2, #id2], iterator_types = ["parallel"]}
      ins(%x : tensor<4xf32>) outs(%a : tensor<4xf32>) {
  ^bb0(%v: f32, %o: f32):
    %s = arith.addf %v, %o : f32
    linalg.yield %s : f32
  } -> tensor<4xf32>
  return %b : tensor<4xf32>
}

// -----

// Tests that ops of one lathe.fusion_group become one kernel launched at the
// group's last op: the intermediate %h stays inside (it is the kernel's
// first result, which the entry never reads: arena scratch for this launch
// only), the two products read it there, and each escaping value is a
// result of its own.

#id = affine_map<(t, i) -> (t, i)>
#x = affine_map<(t, o, i) -> (t, i)>
#w = affine_map<(t, o, i) -> (o, i)>
#y = affine_map<(t, o, i) -> (t, o)>
// CHECK-LABEL: func.func @group
// CHECK-NEXT: %[[L:.*]]:3 = lathe.launch @group_k0(%arg0, %arg1, %arg2) : (tensor<4x8xf32>, tensor<16x8xf32>, tensor<8x8xf32>) -> (tensor<4x8xf32>, tensor<4x16xf32>, tensor<4x8xf32>)
// CHECK-NEXT: return %[[L]]#1, %[[L]]#2
// CHECK: func.func private @group_k0(%[[X:.*]]: tensor<4x8xf32>, %[[W1:.*]]: tensor<16x8xf32>, %[[W2:.*]]: tensor<8x8xf32>, %[[S:.*]]: tensor<4x8xf32>, %[[O1:.*]]: tensor<4x16xf32>, %[[O2:.*]]: tensor<4x8xf32>)
// CHECK: %[[H:.*]] = linalg.generic {{.*}} ins(%[[X]] : tensor<4x8xf32>) outs(%[[S]] : tensor<4x8xf32>)
// CHECK: %[[F1:.*]] = linalg.fill {{.*}} outs(%[[O1]]
// CHECK: %[[Y1:.*]] = linalg.generic {{.*}} ins(%[[H]], %[[W1]] : {{.*}}) outs(%[[F1]]
// CHECK: %[[F2:.*]] = linalg.fill {{.*}} outs(%[[O2]]
// CHECK: %[[Y2:.*]] = linalg.generic {{.*}} ins(%[[H]], %[[W2]] : {{.*}}) outs(%[[F2]]
// CHECK: return %[[H]], %[[Y1]], %[[Y2]]
// CHECK-NOT: lathe.fusion_group
func.func @group(%x: tensor<4x8xf32>, %w1: tensor<16x8xf32>, %w2: tensor<8x8xf32>) -> (tensor<4x16xf32>, tensor<4x8xf32>) {
  %c0 = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<4x8xf32>
  %h = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%x : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) attrs = {lathe.fusion_group = 0 : i64} {
  ^bb0(%a: f32, %o: f32):
    %s = arith.mulf %a, %a : f32
    linalg.yield %s : f32
  } -> tensor<4x8xf32>
  %e1 = tensor.empty() : tensor<4x16xf32>
  %z1 = linalg.fill ins(%c0 : f32) outs(%e1 : tensor<4x16xf32>) -> tensor<4x16xf32>
  %y1 = linalg.generic {indexing_maps = [#x, #w, #y], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%h, %w1 : tensor<4x8xf32>, tensor<16x8xf32>) outs(%z1 : tensor<4x16xf32>) attrs = {lathe.fusion_group = 0 : i64} {
  ^bb0(%a: f32, %b: f32, %acc: f32):
    %m = arith.mulf %a, %b : f32
    %s = arith.addf %acc, %m : f32
    linalg.yield %s : f32
  } -> tensor<4x16xf32>
  %e2 = tensor.empty() : tensor<4x8xf32>
  %z2 = linalg.fill ins(%c0 : f32) outs(%e2 : tensor<4x8xf32>) -> tensor<4x8xf32>
  %y2 = linalg.generic {indexing_maps = [#x, #w, #y], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%h, %w2 : tensor<4x8xf32>, tensor<8x8xf32>) outs(%z2 : tensor<4x8xf32>) attrs = {lathe.fusion_group = 0 : i64} {
  ^bb0(%a: f32, %b: f32, %acc: f32):
    %m = arith.mulf %a, %b : f32
    %s = arith.addf %acc, %m : f32
    linalg.yield %s : f32
  } -> tensor<4x8xf32>
  return %y1, %y2 : tensor<4x16xf32>, tensor<4x8xf32>
}

// -----

// Tests that a group whose value is read outside it before the group's last
// op cannot launch in one place, and runs as one kernel per op instead.

#id = affine_map<(t, i) -> (t, i)>
// CHECK-LABEL: func.func @split_group
// CHECK: lathe.launch @split_group_k0
// CHECK: lathe.launch @split_group_k1
// CHECK: lathe.launch @split_group_k2
func.func @split_group(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %e = tensor.empty() : tensor<4x8xf32>
  %a = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%x : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) attrs = {lathe.fusion_group = 0 : i64} {
  ^bb0(%i: f32, %o: f32):
    %s = arith.mulf %i, %i : f32
    linalg.yield %s : f32
  } -> tensor<4x8xf32>
  %b = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%a : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%i: f32, %o: f32):
    %s = arith.addf %i, %i : f32
    linalg.yield %s : f32
  } -> tensor<4x8xf32>
  %c = linalg.generic {indexing_maps = [#id, #id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%a, %b : tensor<4x8xf32>, tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) attrs = {lathe.fusion_group = 0 : i64} {
  ^bb0(%i: f32, %j: f32, %o: f32):
    %s = arith.subf %i, %j : f32
    linalg.yield %s : f32
  } -> tensor<4x8xf32>
  return %c : tensor<4x8xf32>
}
