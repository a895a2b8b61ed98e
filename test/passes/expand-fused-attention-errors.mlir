// RUN: lathe-opt %s --lathe-expand-fused-attention -verify-diagnostics

// The pass expands buffers only: run one-shot bufferization first.
func.func @tensors(%q: tensor<4x8xf32>, %k: tensor<4x4xf32>, %e: tensor<4x8xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{must be bufferized before lathe-expand-fused-attention}}
  %a = lathe.fused_attention %q, %k, %k into %e {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  return %a : tensor<4x8xf32>
}
