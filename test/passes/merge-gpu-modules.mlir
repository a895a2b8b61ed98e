// RUN: lathe-opt %s --lathe-merge-gpu-modules | FileCheck %s

// Tests that kernels outlined into separate gpu.modules end up in one module,
// named after their old modules, and that launches are retargeted.

// CHECK: gpu.module @lathe_kernels
// CHECK-DAG: gpu.func @a_kernel
// CHECK-DAG: gpu.func @b_kernel
// CHECK-NOT: gpu.module @a_kernel
// CHECK-LABEL: func.func @host
// CHECK: gpu.launch_func @lathe_kernels::@a_kernel
// CHECK: gpu.launch_func @lathe_kernels::@b_kernel
module attributes {gpu.container_module} {
  gpu.module @a_kernel {
    gpu.func @a_kernel(%m: memref<4xf32>) kernel { gpu.return }
  }
  gpu.module @b_kernel {
    gpu.func @b_kernel(%m: memref<4xf32>) kernel { gpu.return }
  }
  func.func @host(%m: memref<4xf32>) {
    %c1 = arith.constant 1 : index
    gpu.launch_func @a_kernel::@a_kernel blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%m : memref<4xf32>)
    gpu.launch_func @b_kernel::@b_kernel blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%m : memref<4xf32>)
    return
  }
}
