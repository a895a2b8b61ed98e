// RUN: lathe-opt %s --lathe-partition-kernels=min-work=1 --split-input-file | FileCheck %s
// RUN: lathe-opt %s --lathe-partition-kernels --split-input-file | FileCheck %s --check-prefix=SMALL

// Tests that a kernel whose ops all run their first loop over the 64 output
// rows takes (part, parts) and runs rows [min(part * ceil(64 / parts), 64),
// min(lo + chunk, 64)) of both its fill and its generic; with the default
// minimum work, a kernel this small stays whole.

// CHECK-LABEL: func.func @k(
// CHECK-SAME: %{{.*}}: memref<64x8xf32>, %{{.*}}: memref<64x8xf32>, %[[PART:.*]]: index, %[[PARTS:.*]]: index)
// CHECK: %[[N:.*]] = arith.constant 64 : index
// CHECK: %[[CHUNK:.*]] = arith.ceildivui %[[N]], %[[PARTS]]
// CHECK: %[[START:.*]] = arith.muli %[[PART]], %[[CHUNK]]
// CHECK: %[[LO:.*]] = arith.minui %[[START]], %[[N]]
// CHECK: %[[END:.*]] = arith.addi %[[LO]], %[[CHUNK]]
// CHECK: %[[HI:.*]] = arith.minui %[[END]], %[[N]]
// CHECK: scf.for %{{.*}} = %[[LO]] to %[[HI]]
// CHECK: scf.for %{{.*}} = %[[LO]] to %[[HI]]
// CHECK-NOT: linalg.
// SMALL-LABEL: func.func @k(
// SMALL-SAME: memref<64x8xf32>) attributes
// SMALL: linalg.fill
func.func @k(%x: memref<64x8xf32>, %y: memref<64x8xf32>) attributes {lathe.kernel} {
  %z = arith.constant 0.0 : f32
  linalg.fill ins(%z : f32) outs(%y : memref<64x8xf32>)
  linalg.generic {indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>],
                  iterator_types = ["parallel", "parallel"]}
      ins(%x : memref<64x8xf32>) outs(%y : memref<64x8xf32>) {
  ^bb0(%a: f32, %o: f32):
    %s = arith.addf %a, %o : f32
    linalg.yield %s : f32
  }
  return
}

// -----

// Tests that a kernel that calls the host BLAS (which has its own threads)
// is left whole.

// CHECK-LABEL: func.func @blas(
// CHECK-SAME: %{{.*}}: memref<64x8xf32>) attributes
func.func private @lathe_host_gemm(i64)
func.func @blas(%x: memref<64x8xf32>) attributes {lathe.kernel} {
  %c = arith.constant 0 : i64
  func.call @lathe_host_gemm(%c) : (i64) -> ()
  return
}

// -----

// Tests that a kernel that is one static scf.parallel (an expanded fused
// attention) is split along the loop's first dimension, heads, using the
// loop's `lathe.work` estimate rather than its 4 x 8 trip count.

// CHECK-LABEL: func.func @attention(
// CHECK-SAME: %[[PART:[a-z0-9]+]]: index, %[[PARTS:[a-z0-9]+]]: index)
// CHECK: %[[N:.*]] = arith.constant 4 : index
// CHECK: %[[CHUNK:.*]] = arith.ceildivui %[[N]], %[[PARTS]]
// CHECK: %[[LO:.*]] = arith.minui
// CHECK: %[[HI:.*]] = arith.minui
// CHECK: scf.parallel (%{{.*}}, %{{.*}}) = (%[[LO]], %{{.*}}) to (%[[HI]], %{{.*}})
// SMALL-LABEL: func.func @attention(
// SMALL-SAME: %{{.*}}: memref<8x4xf32>, %{{.*}}: memref<8x4xf32>, %{{.*}}: index, %{{.*}}: index)
func.func @attention(%x: memref<8x4xf32>, %y: memref<8x4xf32>) attributes {lathe.kernel} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %c8 = arith.constant 8 : index
  scf.parallel (%h, %i) = (%c0, %c0) to (%c4, %c8) step (%c1, %c1) {
    %v = memref.load %x[%i, %h] : memref<8x4xf32>
    memref.store %v, %y[%i, %h] : memref<8x4xf32>
    scf.reduce
  } {lathe.work = 1000000 : i64}
  return
}

// -----

// Tests that a generic with two outputs (attention's VJP makes P and dS in
// one pass) is partitioned when both have their rows on the same loop.

// CHECK-LABEL: func.func @two_outputs(
// CHECK-SAME: %[[PART:[a-z0-9]+]]: index, %[[PARTS:[a-z0-9]+]]: index)
// CHECK: %[[LO:.*]] = arith.minui
// CHECK: %[[HI:.*]] = arith.minui
// CHECK: scf.for %{{.*}} = %[[LO]] to %[[HI]]
// CHECK-NOT: linalg.
func.func @two_outputs(%x: memref<64x8xf32>, %p: memref<64x8xf32>, %q: memref<64x8xf32>) attributes {lathe.kernel} {
  linalg.generic {indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i, j)>],
                  iterator_types = ["parallel", "parallel"]}
      ins(%x : memref<64x8xf32>) outs(%p, %q : memref<64x8xf32>, memref<64x8xf32>) {
  ^bb0(%a: f32, %o: f32, %o2: f32):
    %s = arith.addf %a, %a : f32
    %m = arith.mulf %a, %a : f32
    linalg.yield %s, %m : f32, f32
  }
  return
}
