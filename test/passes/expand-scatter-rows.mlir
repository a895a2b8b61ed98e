// RUN: lathe-opt %s --lathe-expand-scatter-rows --split-input-file | FileCheck %s

// An embedding table's gradient, 8 rows of width 64 into a 256-row table:
// a parallel loop over the 8 groups of 8 columns (work T * D = 512 for the
// CPU partitioner), each walking the rows in order: the row's token picks
// the table row, and 8 columns of it gain the cotangent row's 8 columns.
// CHECK-LABEL: func.func @table
// CHECK: scf.parallel (%[[G:.*]]) = (%{{.*}}) to (%[[C8:.*]]) step
// CHECK: %[[COL:.*]] = arith.muli %[[G]], %{{.*}} : index
// CHECK: scf.for %[[T:.*]] = %{{.*}} to %{{.*}} step
// CHECK: %[[TOK:.*]] = memref.load %arg0[%[[T]]] : memref<8xi32>
// CHECK: %[[ROW:.*]] = arith.index_cast %[[TOK]] : i32 to index
// CHECK: %[[A:.*]] = vector.load %arg2[%[[ROW]], %[[COL]]] : memref<256x64xf32>, vector<8xf32>
// CHECK: %[[X:.*]] = vector.load %arg1[%[[T]], %[[COL]]] : memref<8x64xf32>, vector<8xf32>
// CHECK: %[[S:.*]] = arith.addf %[[A]], %[[X]] : vector<8xf32>
// CHECK: vector.store %[[S]], %arg2[%[[ROW]], %[[COL]]]
// CHECK: lathe.work = 512 : i64
// CHECK-NOT: lathe.scatter_add_rows
func.func @table(%tok: memref<8xi32>, %dx: memref<8x64xf32>, %g: memref<256x64xf32>) {
  lathe.scatter_add_rows %tok, %dx into %g : memref<8xi32>, memref<8x64xf32>, memref<256x64xf32>
  return
}

// -----

// An odd width takes one column per iteration, as scalars.
// CHECK-LABEL: func.func @odd
// CHECK: scf.parallel
// CHECK: memref.load %arg2
// CHECK: memref.load %arg1
// CHECK: arith.addf {{.*}} : f32
// CHECK: memref.store
func.func @odd(%tok: memref<4xi32>, %dx: memref<4x3xf32>, %g: memref<16x3xf32>) {
  lathe.scatter_add_rows %tok, %dx into %g : memref<4xi32>, memref<4x3xf32>, memref<16x3xf32>
  return
}
