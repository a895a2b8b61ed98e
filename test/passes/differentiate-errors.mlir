// RUN: lathe-opt %s --lathe-differentiate --split-input-file --verify-diagnostics

// expected-error @+1 {{marked lathe.differentiate must return one tensor<1xf32>, the loss}}
func.func @not_a_loss(%x: tensor<4x8xf32>) -> tensor<4x8xf32> attributes {lathe.differentiate} {
  return %x : tensor<4x8xf32>
}

// -----

lathe.param @"w" : tensor<16x8xf32> init(normal, std = 0.02)
func.func @no_vjp(%x: tensor<4x8xf32>, %t: tensor<4xi32>) -> tensor<1xf32> attributes {lathe.differentiate} {
  %w = lathe.weight @"w" : tensor<16x8xf32>
  %y = lathe.linear %x, %w : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %l = lathe.cross_entropy %y, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
  // (The token accuracy is piecewise constant: a loss may only read it as a
  // target, as LoopUS's confidence loss does.)
  // expected-error @+1 {{lies between the parameters and the loss but has no vector-Jacobian product}}
  %acc = lathe.token_accuracy %y, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
  %s = lathe.add %l, %acc : tensor<1xf32>
  return %s : tensor<1xf32>
}

// -----

lathe.param @"w" : tensor<16x8xf32> init(normal, std = 0.02)
func.func @middle_rows(%x: tensor<4x8xf32>, %t: tensor<2xi32>) -> tensor<1xf32> attributes {lathe.differentiate} {
  %w = lathe.weight @"w" : tensor<16x8xf32>
  // expected-error @+1 {{only a slice of leading rows has a vector-Jacobian product}}
  %r = tensor.extract_slice %w[2, 0] [2, 8] [1, 1] : tensor<16x8xf32> to tensor<2x8xf32>
  %y = lathe.linear %r, %w : tensor<2x8xf32>, tensor<16x8xf32> -> tensor<2x16xf32>
  %l = lathe.cross_entropy %y, %t : tensor<2x16xf32>, tensor<2xi32> -> tensor<1xf32>
  return %l : tensor<1xf32>
}
