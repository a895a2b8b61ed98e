// RUN: lathe-opt %s --lathe-contraction-to-blas --cse --split-input-file | FileCheck %s

// Tests that a linear layer (y[t,o] = sum_i x[t,i] w[o,i]) after a zero fill
// becomes one GEMM call: M=4 N=16 K=8, A not transposed (lda 8), B
// transposed (ldb 8), ldc 16, one batch, beta 0 (the fill is folded).

// CHECK-LABEL: func.func @linear
// CHECK-NOT: linalg.fill
// CHECK-DAG: %[[C4:.*]] = arith.constant 4 : i64
// CHECK-DAG: %[[C16:.*]] = arith.constant 16 : i64
// CHECK-DAG: %[[C8:.*]] = arith.constant 8 : i64
// CHECK-DAG: %[[C0:.*]] = arith.constant 0 : i64
// CHECK-DAG: %[[C1:.*]] = arith.constant 1 : i64
// CHECK: call @lathe_host_gemm(%{{.*}}, %{{.*}}, %{{.*}}, %[[C4]], %[[C16]], %[[C8]], %[[C0]], %[[C1]], %[[C8]], %[[C8]], %[[C16]], %[[C1]], %[[C0]], %[[C0]], %[[C1]], %[[C0]], %[[C0]])
// CHECK-NOT: linalg.generic
// CHECK: func.func private @lathe_host_gemm(i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64)
func.func @linear(%x: memref<4x8xf32>, %w: memref<16x8xf32>, %y: memref<4x16xf32>) {
  %z = arith.constant 0.0 : f32
  linalg.fill ins(%z : f32) outs(%y : memref<4x16xf32>)
  linalg.generic {indexing_maps = [affine_map<(t, o, i) -> (t, i)>, affine_map<(t, o, i) -> (o, i)>, affine_map<(t, o, i) -> (t, o)>],
                  iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<4x8xf32>, memref<16x8xf32>) outs(%y : memref<4x16xf32>) {
  ^bb0(%a: f32, %b: f32, %acc: f32):
    %m = arith.mulf %a, %b : f32
    %s = arith.addf %acc, %m : f32
    linalg.yield %s : f32
  }
  return
}

// -----

// Tests GQA attention scores S[h,i,j] = sum_d q[i,h,d] k[j,h/2,d] as a batched
// GEMM: batch 4 over h with strides 16 (A, the head's columns), 16 (B, per
// K/V head, shared by 2 heads) and 64 (C); M=N=8, K=16, lda 64, ldb 32.

// CHECK-LABEL: func.func @scores
// CHECK-DAG: %[[C2:.*]] = arith.constant 2 : i64
// CHECK-DAG: %[[C4:.*]] = arith.constant 4 : i64
// CHECK-DAG: %[[C8:.*]] = arith.constant 8 : i64
// CHECK-DAG: %[[C16:.*]] = arith.constant 16 : i64
// CHECK-DAG: %[[C32:.*]] = arith.constant 32 : i64
// CHECK-DAG: %[[C64:.*]] = arith.constant 64 : i64
// CHECK-DAG: %[[C0:.*]] = arith.constant 0 : i64
// CHECK-DAG: %[[C1:.*]] = arith.constant 1 : i64
// CHECK: call @lathe_host_gemm(%{{.*}}, %{{.*}}, %{{.*}}, %[[C8]], %[[C8]], %[[C16]], %[[C0]], %[[C1]], %[[C64]], %[[C32]], %[[C8]], %[[C4]], %[[C16]], %[[C16]], %[[C2]], %[[C64]], %[[C1]])
func.func @scores(%q: memref<8x4x16xf32>, %k: memref<8x2x16xf32>, %s: memref<4x8x8xf32>) {
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

// -----

// Tests that a body that is not a plain multiply-accumulate stays a loop nest.

// CHECK-LABEL: func.func @not_a_product
// CHECK: linalg.generic
// CHECK-NOT: call @lathe_host_gemm
func.func @not_a_product(%x: memref<4x8xf32>, %w: memref<16x8xf32>, %y: memref<4x16xf32>) {
  linalg.generic {indexing_maps = [affine_map<(t, o, i) -> (t, i)>, affine_map<(t, o, i) -> (o, i)>, affine_map<(t, o, i) -> (t, o)>],
                  iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<4x8xf32>, memref<16x8xf32>) outs(%y : memref<4x16xf32>) {
  ^bb0(%a: f32, %b: f32, %acc: f32):
    %m = arith.subf %a, %b : f32
    %s = arith.addf %acc, %m : f32
    linalg.yield %s : f32
  }
  return
}
