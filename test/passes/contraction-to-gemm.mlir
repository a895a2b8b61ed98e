// RUN: lathe-opt %s --lathe-contraction-to-gemm --split-input-file | FileCheck %s
// RUN: lathe-opt %s --lathe-contraction-to-gemm=precision=bf16 --split-input-file | FileCheck %s --check-prefix=BF16
// RUN: not lathe-opt %s --lathe-contraction-to-gemm=precision=f8 --split-input-file 2>&1 | FileCheck %s --check-prefix=BAD

// BAD: unknown precision 'f8' (f32, tf32, bf16 or f16)

#xw = [affine_map<(t, o, i) -> (t, i)>, affine_map<(t, o, i) -> (o, i)>, affine_map<(t, o, i) -> (t, o)>]
#rows = [affine_map<(t, o) -> (t, o)>, affine_map<(t, o) -> (o)>, affine_map<(t, o) -> (t, o)>]
#ew = [affine_map<(t, o) -> (t, o)>, affine_map<(t, o) -> (t, o)>]

// Tests a GPT-2 MLP up projection: zero fill (beta 0), the product, its bias
// and the tanh GELU fold into one GEMM. The product and the biased value are
// read by nothing else (lathe.unread_args), so neither is written.

// CHECK-LABEL: func.func @up_gelu
// CHECK-SAME: (%[[X:.*]]: memref<4x8xf32>, %[[W:.*]]: memref<16x8xf32>, %[[B:.*]]: memref<16xf32>, %{{.*}}: memref<4x16xf32>, %{{.*}}: memref<4x16xf32>, %[[G:.*]]: memref<4x16xf32>)
// CHECK-NOT: linalg
// CHECK: lathe.gemm %[[X]], %[[W]] into %[[G]] bias %[[B]] epilogue(gelu)
// CHECK-SAME: k = 8 : i64, lda = 8 : i64, ldb = 8 : i64, ldd = 16 : i64, m = 4 : i64, n = 16 : i64, trans_a = false, trans_b = true
// CHECK-NEXT: return
// BF16-LABEL: func.func @up_gelu
// BF16: lathe.gemm {{.*}} epilogue(gelu) precision(bf16)
func.func @up_gelu(%x: memref<4x8xf32>, %w: memref<16x8xf32>, %b: memref<16xf32>,
                   %h: memref<4x16xf32>, %hb: memref<4x16xf32>, %g: memref<4x16xf32>)
    attributes {lathe.kernel, lathe.unread_args = array<i64: 3, 4>} {
  %z = arith.constant 0.0 : f32
  %c0 = arith.constant 0.044715 : f32
  %c1 = arith.constant 0.797884583 : f32
  %half = arith.constant 0.5 : f32
  %one = arith.constant 1.0 : f32
  linalg.fill ins(%z : f32) outs(%h : memref<4x16xf32>)
  linalg.generic {indexing_maps = #xw, iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<4x8xf32>, memref<16x8xf32>) outs(%h : memref<4x16xf32>) {
  ^bb0(%a: f32, %bb: f32, %acc: f32):
    %m = arith.mulf %a, %bb : f32
    %s = arith.addf %acc, %m : f32
    linalg.yield %s : f32
  }
  linalg.generic {indexing_maps = #rows, iterator_types = ["parallel", "parallel"]}
      ins(%h, %b : memref<4x16xf32>, memref<16xf32>) outs(%hb : memref<4x16xf32>) {
  ^bb0(%v: f32, %bias: f32, %o: f32):
    %s = arith.addf %v, %bias : f32
    linalg.yield %s : f32
  }
  linalg.generic {indexing_maps = #ew, iterator_types = ["parallel", "parallel"]}
      ins(%hb : memref<4x16xf32>) outs(%g : memref<4x16xf32>) {
  ^bb0(%v: f32, %o: f32):
    %v2 = arith.mulf %v, %v : f32
    %v3 = arith.mulf %v2, %v : f32
    %t0 = arith.mulf %v3, %c0 : f32
    %t1 = arith.addf %v, %t0 : f32
    %t2 = arith.mulf %t1, %c1 : f32
    %th = math.tanh %t2 : f32
    %hv = arith.mulf %v, %half : f32
    %p = arith.addf %th, %one : f32
    %r = arith.mulf %hv, %p : f32
    linalg.yield %r : f32
  }
  return
}

// -----

#xw = [affine_map<(t, o, i) -> (t, i)>, affine_map<(t, o, i) -> (o, i)>, affine_map<(t, o, i) -> (t, o)>]
#rows = [affine_map<(t, o) -> (t, o)>, affine_map<(t, o) -> (o)>, affine_map<(t, o) -> (t, o)>]
#ew = [affine_map<(t, o) -> (t, o)>, affine_map<(t, o) -> (t, o)>]

// Tests training's up projection: the biased value is a result someone reads
// (not in lathe.unread_args), so it becomes the GEMM's aux output.

// CHECK-LABEL: func.func @up_gelu_aux
// CHECK-SAME: %[[HB:[a-z0-9]+]]: memref<8x16xf32>, %[[G:[a-z0-9]+]]: memref<8x16xf32>)
// CHECK-NOT: linalg
// CHECK: lathe.gemm %{{.*}}, %{{.*}} into %[[G]] bias %{{.*}} aux %[[HB]] epilogue(gelu)
// CHECK-NEXT: return
func.func @up_gelu_aux(%x: memref<8x8xf32>, %w: memref<16x8xf32>, %b: memref<16xf32>,
                       %h: memref<8x16xf32>, %hb: memref<8x16xf32>, %g: memref<8x16xf32>)
    attributes {lathe.kernel, lathe.unread_args = array<i64: 3>} {
  %z = arith.constant 0.0 : f32
  %c0 = arith.constant 0.044715 : f32
  %c1 = arith.constant 0.797884583 : f32
  %half = arith.constant 0.5 : f32
  %one = arith.constant 1.0 : f32
  linalg.fill ins(%z : f32) outs(%h : memref<8x16xf32>)
  linalg.generic {indexing_maps = #xw, iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<8x8xf32>, memref<16x8xf32>) outs(%h : memref<8x16xf32>) {
  ^bb0(%a: f32, %bb: f32, %acc: f32):
    %m = arith.mulf %a, %bb : f32
    %s = arith.addf %acc, %m : f32
    linalg.yield %s : f32
  }
  linalg.generic {indexing_maps = #rows, iterator_types = ["parallel", "parallel"]}
      ins(%h, %b : memref<8x16xf32>, memref<16xf32>) outs(%hb : memref<8x16xf32>) {
  ^bb0(%v: f32, %bias: f32, %o: f32):
    %s = arith.addf %v, %bias : f32
    linalg.yield %s : f32
  }
  linalg.generic {indexing_maps = #ew, iterator_types = ["parallel", "parallel"]}
      ins(%hb : memref<8x16xf32>) outs(%g : memref<8x16xf32>) {
  ^bb0(%v: f32, %o: f32):
    %v2 = arith.mulf %v, %v : f32
    %v3 = arith.mulf %v2, %v : f32
    %t0 = arith.mulf %v3, %c0 : f32
    %t1 = arith.addf %v, %t0 : f32
    %t2 = arith.mulf %t1, %c1 : f32
    %th = math.tanh %t2 : f32
    %hv = arith.mulf %v, %half : f32
    %p = arith.addf %th, %one : f32
    %r = arith.mulf %hv, %p : f32
    linalg.yield %r : f32
  }
  return
}

// -----

#xw = [affine_map<(t, o, i) -> (t, i)>, affine_map<(t, o, i) -> (o, i)>, affine_map<(t, o, i) -> (t, o)>]
#ew = [affine_map<(t, o) -> (t, o)>, affine_map<(t, o) -> (t, o)>]

// Tests the residual through C: a copy of the residual into the output, then
// accumulation, is C = the residual with beta 1. The SiLU after it is no
// epilogue cuBLASLt has, so it stays a kernel, and the product is written.

// CHECK-LABEL: func.func @residual
// CHECK-SAME: (%[[X:.*]]: memref<4x8xf32>, %[[W:.*]]: memref<16x8xf32>, %[[R:.*]]: memref<4x16xf32>, %[[Y:.*]]: memref<4x16xf32>, %[[S:.*]]: memref<4x16xf32>)
// CHECK-NOT: linalg.copy
// CHECK: lathe.gemm %[[X]], %[[W]] into %[[Y]] accumulate %[[R]] {
// CHECK-NEXT: linalg.generic
// CHECK-SAME: ins(%[[Y]] : memref<4x16xf32>) outs(%[[S]] : memref<4x16xf32>)
func.func @residual(%x: memref<4x8xf32>, %w: memref<16x8xf32>, %r: memref<4x16xf32>,
                    %y: memref<4x16xf32>, %silu: memref<4x16xf32>)
    attributes {lathe.kernel, lathe.unread_args = array<i64: 3>} {
  linalg.copy ins(%r : memref<4x16xf32>) outs(%y : memref<4x16xf32>)
  linalg.generic {indexing_maps = #xw, iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<4x8xf32>, memref<16x8xf32>) outs(%y : memref<4x16xf32>) {
  ^bb0(%a: f32, %bb: f32, %acc: f32):
    %m = arith.mulf %a, %bb : f32
    %s = arith.addf %acc, %m : f32
    linalg.yield %s : f32
  }
  linalg.generic {indexing_maps = #ew, iterator_types = ["parallel", "parallel"]}
      ins(%y : memref<4x16xf32>) outs(%silu : memref<4x16xf32>) {
  ^bb0(%v: f32, %o: f32):
    %one = arith.constant 1.0 : f32
    %n = arith.negf %v : f32
    %e = math.exp %n : f32
    %d = arith.addf %one, %e : f32
    %q = arith.divf %v, %d : f32
    linalg.yield %q : f32
  }
  return
}

// -----

#xw = [affine_map<(t, o, i) -> (t, i)>, affine_map<(t, o, i) -> (o, i)>, affine_map<(t, o, i) -> (t, o)>]
#rows = [affine_map<(t, o) -> (t, o)>, affine_map<(t, o) -> (o)>, affine_map<(t, o) -> (t, o)>]

// Tests that in-place accumulation (no fill, no copy: C = D) is kept, and
// that a bias is not folded when the unbiased product is read after the
// kernel: the output is not in lathe.unread_args.

// CHECK-LABEL: func.func @in_place
// CHECK-SAME: (%[[X:.*]]: memref<4x8xf32>, %[[W:.*]]: memref<16x8xf32>, %[[B:.*]]: memref<16xf32>, %[[Y:.*]]: memref<4x16xf32>, %[[Z:.*]]: memref<4x16xf32>)
// CHECK: lathe.gemm %[[X]], %[[W]] into %[[Y]] accumulate %[[Y]] {
// CHECK-NEXT: linalg.generic
// CHECK-SAME: ins(%[[Y]], %[[B]]
func.func @in_place(%x: memref<4x8xf32>, %w: memref<16x8xf32>, %b: memref<16xf32>,
                    %y: memref<4x16xf32>, %z: memref<4x16xf32>) attributes {lathe.kernel} {
  linalg.generic {indexing_maps = #xw, iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<4x8xf32>, memref<16x8xf32>) outs(%y : memref<4x16xf32>) {
  ^bb0(%a: f32, %bb: f32, %acc: f32):
    %m = arith.mulf %a, %bb : f32
    %s = arith.addf %acc, %m : f32
    linalg.yield %s : f32
  }
  linalg.generic {indexing_maps = #rows, iterator_types = ["parallel", "parallel"]}
      ins(%y, %b : memref<4x16xf32>, memref<16xf32>) outs(%z : memref<4x16xf32>) {
  ^bb0(%v: f32, %bias: f32, %o: f32):
    %s = arith.addf %v, %bias : f32
    linalg.yield %s : f32
  }
  return
}

// -----

// Tests attention scores per head (batch 4 over h, strides 16, 16 and 64)
// as a batched GEMM, and that GQA's shared K/V head (B indexed by h floordiv
// 2) stays a kernel: cuBLASLt cannot share B between batches.

// CHECK-LABEL: func.func @batched
// CHECK: lathe.gemm %{{.*}}, %{{.*}} into %{{.*}} {batch = 4 : i64, k = 16 : i64, lda = 64 : i64, ldb = 64 : i64, ldd = 8 : i64, m = 8 : i64, n = 8 : i64, stride_a = 16 : i64, stride_b = 16 : i64, stride_d = 64 : i64, trans_a = false, trans_b = true}
// CHECK-LABEL: func.func @shared_kv
// CHECK-NOT: lathe.gemm
// CHECK: linalg.generic
func.func @batched(%q: memref<8x4x16xf32>, %k: memref<8x4x16xf32>, %s: memref<4x8x8xf32>) attributes {lathe.kernel} {
  %z = arith.constant 0.0 : f32
  linalg.fill ins(%z : f32) outs(%s : memref<4x8x8xf32>)
  linalg.generic {indexing_maps = [affine_map<(h, i, j, d) -> (i, h, d)>, affine_map<(h, i, j, d) -> (j, h, d)>, affine_map<(h, i, j, d) -> (h, i, j)>],
                  iterator_types = ["parallel", "parallel", "parallel", "reduction"]}
      ins(%q, %k : memref<8x4x16xf32>, memref<8x4x16xf32>) outs(%s : memref<4x8x8xf32>) {
  ^bb0(%a: f32, %b: f32, %acc: f32):
    %m = arith.mulf %a, %b : f32
    %r = arith.addf %acc, %m : f32
    linalg.yield %r : f32
  }
  return
}
func.func @shared_kv(%q: memref<8x4x16xf32>, %k: memref<8x2x16xf32>, %s: memref<4x8x8xf32>) attributes {lathe.kernel} {
  linalg.generic {indexing_maps = [affine_map<(h, i, j, d) -> (i, h, d)>, affine_map<(h, i, j, d) -> (j, h floordiv 2, d)>, affine_map<(h, i, j, d) -> (h, i, j)>],
                  iterator_types = ["parallel", "parallel", "parallel", "reduction"]}
      ins(%q, %k : memref<8x4x16xf32>, memref<8x2x16xf32>) outs(%s : memref<4x8x8xf32>) {
  ^bb0(%a: f32, %b: f32, %acc: f32):
    %m = arith.mulf %a, %b : f32
    %r = arith.addf %acc, %m : f32
    linalg.yield %r : f32
  }
  return
}
