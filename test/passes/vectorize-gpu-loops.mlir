// RUN: lathe-opt %s --lathe-vectorize-gpu-loops --split-input-file | FileCheck %s

// Tests an RMSNorm's apply loop: the row's scale (loaded by row) stays a
// scalar and is broadcast; the input, the gain (indexed by the column) and
// the output move as 16-byte vector<4xf32> accesses at column 4 j, and the
// innermost dimension runs to 128 / 4.

// CHECK-LABEL: func.func @norm
// CHECK-DAG: %[[C32:.*]] = arith.constant 32 : index
// CHECK: scf.parallel (%[[I:.*]], %[[J:.*]]) = (%{{.*}}, %{{.*}}) to (%{{.*}}, %[[C32]])
// CHECK: %[[J4:.*]] = arith.muli %[[J]], %{{.*}} : index
// CHECK: %[[X:.*]] = vector.load %{{.*}}[%[[I]], %[[J4]]] {alignment = 16 : i64} : memref<64x128xf32>, vector<4xf32>
// CHECK: %[[R:.*]] = memref.load %{{.*}}[%[[I]]] : memref<64xf32>
// CHECK: %[[G:.*]] = vector.load %{{.*}}[%[[J4]]] {alignment = 16 : i64} : memref<128xf32>, vector<4xf32>
// CHECK: %[[RB:.*]] = vector.broadcast %[[R]] : f32 to vector<4xf32>
// CHECK: %[[P:.*]] = arith.mulf %[[X]], %[[RB]] : vector<4xf32>
// CHECK: %[[Q:.*]] = arith.mulf %[[P]], %[[G]] : vector<4xf32>
// CHECK: vector.store %[[Q]], %{{.*}}[%[[I]], %[[J4]]] {alignment = 16 : i64} : memref<64x128xf32>, vector<4xf32>
// CHECK-NOT: memref.store
func.func @norm(%x: memref<64x128xf32>, %r: memref<64xf32>, %g: memref<128xf32>, %y: memref<64x128xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c64 = arith.constant 64 : index
  %c128 = arith.constant 128 : index
  scf.parallel (%i, %j) = (%c0, %c0) to (%c64, %c128) step (%c1, %c1) {
    %a = memref.load %x[%i, %j] : memref<64x128xf32>
    %s = memref.load %r[%i] : memref<64xf32>
    %b = memref.load %g[%j] : memref<128xf32>
    %p = arith.mulf %a, %s : f32
    %q = arith.mulf %p, %b : f32
    memref.store %q, %y[%i, %j] : memref<64x128xf32>
    scf.reduce
  }
  return
}

// -----

// Tests what stays scalar: a rotation whose angle is computed from the
// column (index arithmetic on the induction variable), a one-hot that
// compares the column with a target (the vector loop's counter is not each
// lane's column), a row reduction (an inner loop), and rows of 6 elements
// (a 16-byte access would straddle).

// CHECK-LABEL: func.func @stays
// CHECK-NOT: vector.
// CHECK: return
func.func @stays(%x: memref<8x64xf32>, %s: memref<8xf32>, %z: memref<8x6xf32>, %y: memref<8x64xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c6 = arith.constant 6 : index
  %c8 = arith.constant 8 : index
  %c64 = arith.constant 64 : index
  scf.parallel (%i, %j) = (%c0, %c0) to (%c8, %c64) step (%c1, %c1) {
    %a = memref.load %x[%i, %j] : memref<8x64xf32>
    %ji = arith.index_cast %j : index to i32
    %jf = arith.sitofp %ji : i32 to f32
    %c = math.cos %jf : f32
    %p = arith.mulf %a, %c : f32
    memref.store %p, %y[%i, %j] : memref<8x64xf32>
    scf.reduce
  }
  // A one-hot: the column compared with a row's target.
  scf.parallel (%i, %j) = (%c0, %c0) to (%c8, %c64) step (%c1, %c1) {
    %a = memref.load %x[%i, %j] : memref<8x64xf32>
    %t = memref.load %s[%i] : memref<8xf32>
    %ti = arith.fptoui %t : f32 to i32
    %tx = arith.index_cast %ti : i32 to index
    %hit = arith.cmpi eq, %j, %tx : index
    %one = arith.constant 1.0 : f32
    %zero = arith.constant 0.0 : f32
    %o = arith.select %hit, %one, %zero : f32
    %d = arith.subf %a, %o : f32
    memref.store %d, %y[%i, %j] : memref<8x64xf32>
    scf.reduce
  }
  scf.parallel (%i) = (%c0) to (%c8) step (%c1) {
    scf.for %j = %c0 to %c64 step %c1 {
      %a = memref.load %x[%i, %j] : memref<8x64xf32>
      %t = memref.load %s[%i] : memref<8xf32>
      %u = arith.addf %a, %t : f32
      memref.store %u, %s[%i] : memref<8xf32>
    }
    scf.reduce
  }
  scf.parallel (%i, %j) = (%c0, %c0) to (%c8, %c6) step (%c1, %c1) {
    %a = memref.load %z[%i, %j] : memref<8x6xf32>
    %b = arith.mulf %a, %a : f32
    memref.store %b, %z[%i, %j] : memref<8x6xf32>
    scf.reduce
  }
  return
}
