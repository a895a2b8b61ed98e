// RUN: lathe-opt %s --lathe-expand-fused-attention --split-input-file | FileCheck %s
// RUN: lathe-opt %s --lathe-expand-fused-attention --split-input-file --lathe-approximate-math --convert-scf-to-cf --convert-vector-to-llvm --finalize-memref-to-llvm --convert-math-to-llvm --convert-arith-to-llvm --convert-cf-to-llvm --convert-func-to-llvm --reconcile-unrealized-casts | FileCheck %s --check-prefix=LLVM

// Tests the loop nest for GQA (4 query heads on 2 K/V heads, head_dim 2,
// 4 keys): a parallel loop over (head, row) with a work estimate of heads *
// rows * keys * head_dim; the query slice scaled by 1/sqrt(2) once; a loop
// over keys 0..row in tiles (here the 4 keys, the whole K) that carries the
// running max (from -inf), denominator and value sum. Each tile reads K rows
// clamped to the last row, at column (h / 2) * 2, makes a vector of scores,
// masks lanes past the visible range to -inf, and folds the weighted V rows
// into the sum; one store writes the normalised sum.

// CHECK-LABEL: func.func @gqa
// CHECK: scf.parallel (%[[H:.*]], %[[I:.*]]) = ({{.*}}) to ({{.*}}) step ({{.*}}) {
// CHECK: %[[N:.*]] = arith.minui
// CHECK: %[[QCOL:.*]] = arith.muli %[[H]], %{{.*}}
// CHECK: %[[KVH:.*]] = arith.divui %[[H]], %{{.*}}
// CHECK: %[[KVCOL:.*]] = arith.muli %[[KVH]], %{{.*}}
// CHECK: vector.load %arg0[%[[I]], %[[QCOL]]] : memref<4x8xf32>, vector<2xf32>
// CHECK: arith.constant 0.707106769 : f32
// CHECK: %[[NEGINF:.*]] = arith.constant 0xFF800000 : f32
// CHECK: %[[LANES:.*]] = arith.constant dense<[0, 1, 2, 3]> : vector<4xindex>
// CHECK: %[[LAST:.*]] = arith.constant 3 : index
// CHECK: %[[TILE:.*]] = arith.constant 4 : index
// CHECK: scf.for %[[J:.*]] = %{{.*}} to %[[N]] step %[[TILE]] iter_args(%{{.*}} = %[[NEGINF]]
// CHECK: %[[ROW0:.*]] = arith.minui %{{.*}}, %[[LAST]]
// CHECK: vector.load %arg1[%[[ROW0]], %[[KVCOL]]]
// CHECK: vector.reduction <add>
// CHECK-COUNT-3: vector.reduction <add>
// CHECK: vector.from_elements {{.*}} : vector<4xf32>
// CHECK: arith.cmpi ult, %[[LANES]]
// CHECK: arith.select
// CHECK: vector.reduction <maximumf>
// CHECK: math.exp {{.*}} : f32
// CHECK: math.exp {{.*}} : vector<4xf32>
// CHECK: vector.load %arg2[%[[ROW0]], %[[KVCOL]]]
// CHECK: vector.fma
// CHECK-COUNT-3: vector.fma
// CHECK: scf.yield
// CHECK: arith.divf
// CHECK: vector.store %{{.*}}, %arg3[%[[I]], %[[QCOL]]]
// CHECK: } {lathe.work = 128 : i64}
// CHECK-NOT: lathe.fused_attention
// LLVM-LABEL: llvm.func @gqa
// LLVM: llvm.intr.vector.reduce.fadd
func.func @gqa(%q: memref<4x8xf32>, %k: memref<4x4xf32>, %v: memref<4x4xf32>, %o: memref<4x8xf32>) {
  lathe.fused_attention %q, %k, %v into %o {heads = 4 : i64, kv_heads = 2 : i64} : memref<4x8xf32>, memref<4x4xf32>, memref<4x4xf32>, memref<4x8xf32>
  return
}

// -----

// Tests decode with softpick: the position is read inside the loop (so the
// GPU mapping need not move it), keys run to min(pos + 1, 8) in one tile of
// 8, the running max starts at 0, the weight is relu(e^(s-m) - e^-m) and the
// mass its absolute value (zero on masked lanes), and the denominator gets
// eps = 1e-8 before the division.

// CHECK-LABEL: func.func @decode_softpick
// CHECK: scf.parallel
// CHECK: %[[POS:.*]] = memref.load %arg3[%{{.*}}] : memref<1xi32>
// CHECK: %[[P:.*]] = arith.index_cast %[[POS]]
// CHECK: %[[ROW:.*]] = arith.addi %[[P]]
// CHECK: %[[NEXT:.*]] = arith.addi %[[ROW]]
// CHECK: arith.minui %[[NEXT]]
// CHECK: %[[ZERO:.*]] = arith.constant 0.000000e+00 : f32
// CHECK: scf.for {{.*}} iter_args(%{{.*}} = %[[ZERO]]
// CHECK: arith.negf
// CHECK: arith.subf {{.*}} : vector<8xf32>
// CHECK: arith.maximumf {{.*}} : vector<8xf32>
// CHECK: math.absf
// CHECK: arith.select
// CHECK: scf.yield
// CHECK: arith.constant 9.99999993E-9 : f32
// CHECK: arith.divf
func.func @decode_softpick(%q: memref<1x4xf32>, %k: memref<8x2xf32>, %v: memref<8x2xf32>, %pos: memref<1xi32>, %o: memref<1x4xf32>) {
  lathe.fused_attention %q, %k, %v at %pos into %o normalizer(softpick) {heads = 2 : i64, kv_heads = 1 : i64} : memref<1x4xf32>, memref<8x2xf32>, memref<8x2xf32>, memref<1x4xf32>, memref<1xi32>
  return
}


// -----

// A batch of windows (window = 4 over 8 rows): row i's key loop starts at
// its sequence's first row, i - i mod 4, and the work estimate counts the
// window's keys, not all 8 (2 heads * 8 rows * 4 keys * 4).
// CHECK-LABEL: func.func @windows
// CHECK: scf.parallel (%{{.*}}, %[[I:.*]]) = ({{.*}}) to ({{.*}}) step ({{.*}}) {
// CHECK: %[[C4:.*]] = arith.constant 4 : index
// CHECK: %[[OFF:.*]] = arith.remui %[[I]], %[[C4]] : index
// CHECK: %[[FIRST:.*]] = arith.subi %[[I]], %[[OFF]] : index
// CHECK: scf.for %{{.*}} = %[[FIRST]] to
// CHECK: lathe.work = 256 : i64
func.func @windows(%q: memref<8x8xf32>, %k: memref<8x4xf32>, %v: memref<8x4xf32>,
                   %o: memref<8x8xf32>) {
  lathe.fused_attention %q, %k, %v into %o {heads = 2 : i64, kv_heads = 1 : i64, window = 4 : i64}
      : memref<8x8xf32>, memref<8x4xf32>, memref<8x4xf32>, memref<8x8xf32>
  return
}
