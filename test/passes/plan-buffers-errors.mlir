// RUN: lathe-opt %s --lathe-plan-buffers -split-input-file -verify-diagnostics

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

// -----

// After an in-place update the old value is gone: reading it would see the
// new contents.
lathe.cache @kc : tensor<8x4xf32>
func.func private @upd(%r: tensor<1x4xf32>, %c: tensor<8x4xf32>, %o: tensor<8x4xf32>) -> tensor<8x4xf32> attributes {lathe.kernel}
func.func private @use(%c: tensor<8x4xf32>, %o: tensor<1x4xf32>) -> tensor<1x4xf32> attributes {lathe.kernel}
func.func @stale_read(%r: tensor<1x4xf32>) -> tensor<1x4xf32> {
  %c = lathe.cache_read @kc : tensor<8x4xf32>
  %n = lathe.launch @upd(%r, %c) {tied = array<i64: 1>} : (tensor<1x4xf32>, tensor<8x4xf32>) -> tensor<8x4xf32>
  // expected-error @+1 {{reads a value that an earlier launch updated in place}}
  %y = lathe.launch @use(%c) : (tensor<8x4xf32>) -> tensor<1x4xf32>
  return %y : tensor<1x4xf32>
}
