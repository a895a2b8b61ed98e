// RUN: lathe-opt %s --lathe-differentiate --split-input-file --verify-diagnostics

// expected-error @+1 {{marked lathe.differentiate must return one tensor<1xf32>, the loss}}
func.func @not_a_loss(%x: tensor<4x8xf32>) -> tensor<4x8xf32> attributes {lathe.differentiate} {
  return %x : tensor<4x8xf32>
}

// -----

lathe.param @"w" : tensor<16x8xf32> init(normal, std = 0.02)
lathe.param @"b" : tensor<16xf32> init(zeros)
func.func @bias(%x: tensor<4x8xf32>, %t: tensor<4xi32>) -> tensor<1xf32> attributes {lathe.differentiate} {
  %w = lathe.weight @"w" : tensor<16x8xf32>
  %b = lathe.weight @"b" : tensor<16xf32>
  // expected-error @+1 {{has no vector-Jacobian product for a bias yet}}
  %y = lathe.linear %x, %w bias %b : tensor<4x8xf32>, tensor<16x8xf32>, tensor<16xf32> -> tensor<4x16xf32>
  %l = lathe.cross_entropy %y, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
  return %l : tensor<1xf32>
}

// -----

lathe.param @"theta" : tensor<2xf32> init(zeros)
lathe.param @"w" : tensor<16x8xf32> init(normal, std = 0.02)
func.func @no_vjp(%x: tensor<4x8xf32>, %t: tensor<4xi32>) -> tensor<1xf32> attributes {lathe.differentiate} {
  %th = lathe.weight @"theta" : tensor<2xf32>
  // expected-error @+1 {{lies between the parameters and the loss but has no vector-Jacobian product}}
  %r = lathe.phase_rotate %x, %th {phases = 2 : i64} : tensor<4x8xf32>, tensor<2xf32> -> tensor<4x8xf32>
  %w = lathe.weight @"w" : tensor<16x8xf32>
  %y = lathe.linear %r, %w : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %l = lathe.cross_entropy %y, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
  return %l : tensor<1xf32>
}

// -----

lathe.param @"w" : tensor<8x8xf32> init(normal, std = 0.02)
lathe.param @"h" : tensor<16x8xf32> init(normal, std = 0.02)
func.func @softpick(%x: tensor<4x8xf32>, %t: tensor<4xi32>) -> tensor<1xf32> attributes {lathe.differentiate} {
  %w = lathe.weight @"w" : tensor<8x8xf32>
  %q = lathe.linear %x, %w : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  // expected-error @+1 {{has no vector-Jacobian product for softpick yet}}
  %a = lathe.attention %q, %q, %q normalizer(softpick) {heads = 2 : i64, kv_heads = 2 : i64} : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  %h = lathe.weight @"h" : tensor<16x8xf32>
  %y = lathe.linear %a, %h : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %l = lathe.cross_entropy %y, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<1xf32>
  return %l : tensor<1xf32>
}
