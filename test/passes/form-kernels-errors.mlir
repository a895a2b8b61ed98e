// RUN: lathe-opt %s --lathe-form-kernels --split-input-file -verify-diagnostics

// An op that accumulates into a live value would need that value copied into
// its output buffer first; kernel formation refuses rather than miscompile.
#id = affine_map<(i) -> (i)>
func.func @accumulate(%x: tensor<4xf32>, %acc: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{cannot form a kernel: an output is initialised from a live value}}
  %y = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]}
      ins(%x : tensor<4xf32>) outs(%acc : tensor<4xf32>) {
  ^bb0(%a: f32, %o: f32):
    %s = arith.addf %a, %o : f32
    linalg.yield %s : f32
  } -> tensor<4xf32>
  return %y : tensor<4xf32>
}
