// RUN: lathe-opt %s --lathe-order-loops --split-input-file | FileCheck %s
// RUN: lathe-opt %s --lathe-order-loops --lathe-partition-kernels=min-work=1 --split-input-file | FileCheck %s --check-prefix=PART

// Tests that a sum over rows (a bias gradient) gets its column loop, the
// one its input streams along, innermost; and that the partitioner then
// splits that inner loop, which runs over the output's rows.

// CHECK-DAG: #[[IN:map[0-9]*]] = affine_map<(d0, d1) -> (d0, d1)>
// CHECK-DAG: #[[OUT:map[0-9]*]] = affine_map<(d0, d1) -> (d1)>
// CHECK-LABEL: func.func @column_sum
// CHECK: linalg.generic
// CHECK-SAME: indexing_maps = [#[[IN]], #[[OUT]]]
// CHECK-SAME: iterator_types = ["reduction", "parallel"]
// PART-LABEL: func.func @column_sum(
// PART-SAME: %[[PART:[a-z0-9]+]]: index, %[[PARTS:[a-z0-9]+]]: index)
// PART: %[[LO:.*]] = arith.minui %{{.*}}, %{{.*}}
// PART: %[[HI:.*]] = arith.minui %{{.*}}, %{{.*}}
// PART: scf.for %{{.*}} = %[[LO]] to %[[HI]]
// PART: scf.for %[[R:.*]] = %{{.*}} to %{{.*}}
// PART-NEXT: scf.for %[[C:.*]] = %[[LO]] to %[[HI]]
// PART-NEXT: %[[RI:.*]] = affine.apply #{{.*}}(%[[R]])
// PART-NEXT: %[[CI:.*]] = affine.apply #{{.*}}(%[[C]])
// PART-NEXT: memref.load %{{.*}}[%[[RI]], %[[CI]]] : memref<256x768xf32>
func.func @column_sum(%x: memref<256x768xf32>, %y: memref<768xf32>) attributes {lathe.kernel} {
  %z = arith.constant 0.0 : f32
  linalg.fill ins(%z : f32) outs(%y : memref<768xf32>)
  linalg.generic {indexing_maps = [affine_map<(c, r) -> (r, c)>, affine_map<(c, r) -> (c)>],
                  iterator_types = ["parallel", "reduction"]}
      ins(%x : memref<256x768xf32>) outs(%y : memref<768xf32>) {
  ^bb0(%a: f32, %o: f32):
    %s = arith.addf %a, %o : f32
    linalg.yield %s : f32
  }
  return
}

// -----

// Tests that a row-wise reduction, whose reduced loop already streams its
// input, keeps its order, and that a transpose (as much data contiguous
// along either loop) keeps its order too.

// CHECK-LABEL: func.func @row_sum
// CHECK: iterator_types = ["parallel", "reduction"]
// CHECK: iterator_types = ["parallel", "parallel"]
func.func @row_sum(%x: memref<64x512xf32>, %y: memref<64xf32>, %t: memref<512x64xf32>) attributes {lathe.kernel} {
  linalg.generic {indexing_maps = [affine_map<(r, c) -> (r, c)>, affine_map<(r, c) -> (r)>],
                  iterator_types = ["parallel", "reduction"]}
      ins(%x : memref<64x512xf32>) outs(%y : memref<64xf32>) {
  ^bb0(%a: f32, %o: f32):
    %s = arith.addf %a, %o : f32
    linalg.yield %s : f32
  }
  linalg.generic {indexing_maps = [affine_map<(r, c) -> (r, c)>, affine_map<(r, c) -> (c, r)>],
                  iterator_types = ["parallel", "parallel"]}
      ins(%x : memref<64x512xf32>) outs(%t : memref<512x64xf32>) {
  ^bb0(%a: f32, %o: f32):
    linalg.yield %a : f32
  }
  return
}

// -----

// Tests that a function that is not a kernel is left alone, and that a
// generic's linalg.index follows its loop.

// CHECK-LABEL: func.func @not_a_kernel
// CHECK: iterator_types = ["parallel", "reduction"]
// CHECK-LABEL: func.func @indexed
// CHECK: iterator_types = ["reduction", "parallel"]
// CHECK: linalg.index 1 : index
func.func @not_a_kernel(%x: memref<256x768xf32>, %y: memref<768xf32>) {
  linalg.generic {indexing_maps = [affine_map<(c, r) -> (r, c)>, affine_map<(c, r) -> (c)>],
                  iterator_types = ["parallel", "reduction"]}
      ins(%x : memref<256x768xf32>) outs(%y : memref<768xf32>) {
  ^bb0(%a: f32, %o: f32):
    %s = arith.addf %a, %o : f32
    linalg.yield %s : f32
  }
  return
}
func.func @indexed(%x: memref<256x768xf32>, %y: memref<768xf32>) attributes {lathe.kernel} {
  linalg.generic {indexing_maps = [affine_map<(c, r) -> (r, c)>, affine_map<(c, r) -> (c)>],
                  iterator_types = ["parallel", "reduction"]}
      ins(%x : memref<256x768xf32>) outs(%y : memref<768xf32>) {
  ^bb0(%a: f32, %o: f32):
    %c = linalg.index 0 : index
    %i = arith.index_cast %c : index to i32
    %f = arith.sitofp %i : i32 to f32
    %m = arith.mulf %a, %f : f32
    %s = arith.addf %m, %o : f32
    linalg.yield %s : f32
  }
  return
}
