// RUN: lathe-opt %s --split-input-file --lathe-emulate-gpu -verify-diagnostics | FileCheck %s

// Tests that a launch becomes a loop nest over blocks then threads (z, y, x,
// with threadIdx.x innermost) and that block and thread ids in the body are
// the loop counters.

// CHECK-LABEL: func.func @k
// CHECK-NOT: gpu.launch
// CHECK: scf.for %[[BZ:.*]] = %{{.*}} to %[[C1:.*]] step
// CHECK: scf.for %[[BY:.*]] = %{{.*}} to %[[C1]] step
// CHECK: scf.for %[[BX:.*]] = %{{.*}} to %[[C4:.*]] step
// CHECK: scf.for %[[TZ:.*]] = %{{.*}} to %[[C1]] step
// CHECK: scf.for %[[TY:.*]] = %{{.*}} to %[[C1]] step
// CHECK: scf.for %[[TX:.*]] = %{{.*}} to %[[C16:.*]] step
// CHECK: %[[I:.*]] = arith.muli %[[BX]], %[[C16]]
// CHECK: %[[J:.*]] = arith.addi %[[I]], %[[TX]]
// CHECK: memref.store %{{.*}}, %{{.*}}[%[[J]]]
func.func @k(%m: memref<64xf32>) {
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %c16 = arith.constant 16 : index
  %v = arith.constant 1.0 : f32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c4, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c16, %sy = %c1, %sz = %c1) {
    %i = arith.muli %bx, %sx : index
    %j = arith.addi %i, %tx : index
    memref.store %v, %m[%j] : memref<64xf32>
    gpu.terminator
  }
  return
}

// -----

// Threads that synchronise cannot run one after another: refused, not
// miscompiled.
func.func @barrier(%m: memref<64xf32>) {
  %c1 = arith.constant 1 : index
  // expected-error @+1 {{cannot be emulated yet: its threads synchronise}}
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1)
             threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    gpu.barrier
    gpu.terminator
  }
  return
}
