// RUN: lathe-opt %s --lathe-extract-kernels | FileCheck %s

// Tests that only kernel functions survive: entries and parameters are gone,
// the kernels keep their bodies and attributes.

// CHECK-NOT: lathe.param
// CHECK-NOT: func.func @forward
// CHECK: func.func private @forward_k0(%{{.*}}: tensor<4xf32>, %{{.*}}: tensor<4xf32>) -> tensor<4xf32> attributes {lathe.kernel}
// CHECK-NOT: func.func @forward
lathe.param @g : tensor<4xf32> init(ones)
func.func @forward(%x: tensor<4xf32>) -> tensor<4xf32> {
  %y = lathe.launch @forward_k0(%x) : (tensor<4xf32>) -> tensor<4xf32>
  return %y : tensor<4xf32>
}
func.func private @forward_k0(%x: tensor<4xf32>, %o: tensor<4xf32>) -> tensor<4xf32> attributes {lathe.kernel} {
  return %x : tensor<4xf32>
}
