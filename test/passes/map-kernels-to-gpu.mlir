// RUN: lathe-opt %s --lathe-map-kernels-to-gpu --cse | FileCheck %s
// RUN: lathe-opt %s --lathe-map-kernels-to-gpu=max-threads=32 --cse | FileCheck %s --check-prefix=SMALL

// Tests that a 64x256 parallel loop is split into a block loop and a thread
// loop: the innermost dimension gets all 256 threads (a power of two that
// divides 256), the outer one steps by 1; with 32 threads, the inner tile is 32.

// CHECK-LABEL: func.func @k
// CHECK-DAG: %[[C256:.*]] = arith.constant 256 : index
// CHECK-DAG: %[[C1:.*]] = arith.constant 1 : index
// CHECK: %[[S0:.*]] = arith.muli %[[C1]], %[[C1]] : index
// CHECK: %[[S1:.*]] = arith.muli %[[C1]], %[[C256]] : index
// CHECK: scf.parallel (%{{.*}}, %{{.*}}) = {{.*}} step (%[[S0]], %[[S1]])
// CHECK: scf.parallel (%{{.*}}, %{{.*}}) = {{.*}} to (%[[S0]], %[[S1]])
// SMALL: %[[C32:.*]] = arith.constant 32 : index
// SMALL: %[[S1:.*]] = arith.muli %{{.*}}, %[[C32]] : index
// SMALL: step (%{{.*}}, %[[S1]])
func.func @k(%o: memref<64x256xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c64 = arith.constant 64 : index
  %c256 = arith.constant 256 : index
  %z = arith.constant 0.0 : f32
  scf.parallel (%i, %j) = (%c0, %c0) to (%c64, %c256) step (%c1, %c1) {
    memref.store %z, %o[%i, %j] : memref<64x256xf32>
    scf.reduce
  }
  return
}
