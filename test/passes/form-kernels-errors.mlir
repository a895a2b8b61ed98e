// RUN: lathe-opt %s --lathe-form-kernels --split-input-file -verify-diagnostics

// A kernel can only take buffers: a scalar that the entry receives as an
// argument (not computed from a tensor) has no buffer to pass.
#id = affine_map<(i) -> (i)>
func.func @scalar_argument(%x: tensor<4xf32>, %s: f32) -> tensor<4xf32> {
  %e = tensor.empty() : tensor<4xf32>
  // expected-error @+1 {{cannot form a kernel: it uses 'f32' value that is not computed from tensors}}
  %y = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]}
      ins(%x : tensor<4xf32>) outs(%e : tensor<4xf32>) {
  ^bb0(%a: f32, %o: f32):
    %m = arith.mulf %a, %s : f32
    linalg.yield %m : f32
  } -> tensor<4xf32>
  return %y : tensor<4xf32>
}
