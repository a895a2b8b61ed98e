// RUN: lathe-opt %s --lathe-plan-buffers -verify-diagnostics

// Planning needs every computation to be a kernel launch: a stray linalg op
// would run nowhere.
#id = affine_map<(i) -> (i)>
func.func @unformed(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{'tensor.empty' op cannot be planned: run lathe-form-kernels first}}
  %e = tensor.empty() : tensor<4xf32>
  %y = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]}
      ins(%x : tensor<4xf32>) outs(%e : tensor<4xf32>) {
  ^bb0(%a: f32, %o: f32):
    linalg.yield %a : f32
  } -> tensor<4xf32>
  return %y : tensor<4xf32>
}
