// RUN: lathe-opt %s --lathe-expand-scatter-rows -verify-diagnostics

// The expansion writes loads and stores: it needs buffers.
func.func @tensors(%tok: tensor<4xi32>, %dx: tensor<4x8xf32>, %g: tensor<16x8xf32>) -> tensor<16x8xf32> {
  // expected-error @+1 {{must be bufferized before lathe-expand-scatter-rows}}
  %r = lathe.scatter_add_rows %tok, %dx into %g : tensor<4xi32>, tensor<4x8xf32>, tensor<16x8xf32> -> tensor<16x8xf32>
  return %r : tensor<16x8xf32>
}
