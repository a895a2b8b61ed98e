// RUN: lathe-opt %s --split-input-file --lathe-emulate-gpu -verify-diagnostics | FileCheck %s

// Tests that an outlined kernel becomes a host function of the same name
// taking its buffers, the grid and block sizes and a part of the blocks; that
// it loops over its blocks [part * n / parts, (part + 1) * n / parts), then
// threads z, y, x (x innermost); that ids and sizes are the loop counters and
// arguments; and that the launching host function and the gpu.module go.

// CHECK-NOT: gpu.module
// CHECK-NOT: func.func @host
// CHECK-LABEL: func.func @k(
// CHECK-SAME: %[[M:.*]]: memref<64xf32>, %[[GX:[^:]*]]: index, %[[GY:[^:]*]]: index, %[[GZ:[^:]*]]: index, %[[SX:[^:]*]]: index, %[[SY:[^:]*]]: index, %[[SZ:[^:]*]]: index, %[[PART:[^:]*]]: index, %[[PARTS:[^:]*]]: index)
// CHECK-SAME: lathe.kernel
// CHECK-DAG: %[[C0:.*]] = arith.constant 0 : index
// CHECK-DAG: %[[C1:.*]] = arith.constant 1 : index
// CHECK: %[[GXY:.*]] = arith.muli %[[GX]], %[[GY]]
// CHECK: %[[N:.*]] = arith.muli %[[GXY]], %[[GZ]]
// CHECK: %[[PN:.*]] = arith.muli %[[PART]], %[[N]]
// CHECK: %[[FIRST:.*]] = arith.divui %[[PN]], %[[PARTS]]
// CHECK: %[[NEXT:.*]] = arith.addi %[[PART]], %[[C1]]
// CHECK: %[[NN:.*]] = arith.muli %[[NEXT]], %[[N]]
// CHECK: %[[LAST:.*]] = arith.divui %[[NN]], %[[PARTS]]
// CHECK: scf.for %[[B:.*]] = %[[FIRST]] to %[[LAST]] step %[[C1]]
// CHECK: %[[BX:.*]] = arith.remui %[[B]], %[[GX]]
// CHECK: scf.for %{{.*}} = %[[C0]] to %[[SZ]] step %[[C1]]
// CHECK: scf.for %{{.*}} = %[[C0]] to %[[SY]] step %[[C1]]
// CHECK: scf.for %[[TX:.*]] = %[[C0]] to %[[SX]] step %[[C1]]
// CHECK: %[[I:.*]] = arith.muli %[[BX]], %[[SX]]
// CHECK: %[[J:.*]] = arith.addi %[[I]], %[[TX]]
// CHECK: memref.store %{{.*}}, %[[M]][%[[J]]]
module attributes {gpu.container_module} {
  func.func @host(%m: memref<64xf32>) attributes {lathe.kernel} {
    %c1 = arith.constant 1 : index
    %c4 = arith.constant 4 : index
    %c16 = arith.constant 16 : index
    gpu.launch_func @lathe_kernels::@k blocks in (%c4, %c1, %c1)
        threads in (%c16, %c1, %c1) args(%m : memref<64xf32>)
    return
  }
  gpu.module @lathe_kernels {
    gpu.func @k(%m: memref<64xf32>) kernel {
      %v = arith.constant 1.0 : f32
      %bx = gpu.block_id x
      %sx = gpu.block_dim x
      %tx = gpu.thread_id x
      %i = arith.muli %bx, %sx : index
      %j = arith.addi %i, %tx : index
      memref.store %v, %m[%j] : memref<64xf32>
      gpu.return
    }
  }
}

// -----

// Threads that synchronise cannot run one after another: refused, not
// miscompiled.
module attributes {gpu.container_module} {
  gpu.module @lathe_kernels {
    gpu.func @barrier(%m: memref<64xf32>) kernel {
      // expected-error @+1 {{cannot be emulated yet: the threads of its kernel synchronise}}
      gpu.barrier
      gpu.return
    }
  }
}

// -----

// A GPU op without a CPU meaning here is refused by name.
module attributes {gpu.container_module} {
  gpu.module @lathe_kernels {
    gpu.func @lane(%m: memref<64xi32>) kernel {
      // expected-error @+1 {{'gpu.lane_id' op cannot be emulated: no CPU meaning is given to it}}
      %l = gpu.lane_id
      gpu.return
    }
  }
}
