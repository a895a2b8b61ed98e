// RUN: lathe-opt %s --lathe-dedup-kernels | FileCheck %s

// Tests that two kernels with the same body and type become one, with both
// launches calling the survivor, while a kernel that differs (another
// constant) stays.

// CHECK-LABEL: func.func @forward
// CHECK: lathe.launch @forward_k0(%{{.*}})
// CHECK: lathe.launch @forward_k0(%{{.*}})
// CHECK: lathe.launch @forward_k2(%{{.*}})
// CHECK: func.func private @forward_k0
// CHECK-NOT: func.func private @forward_k1
// CHECK: func.func private @forward_k2
func.func @forward(%x: tensor<4xf32>) -> tensor<4xf32> {
  %a = lathe.launch @forward_k0(%x) : (tensor<4xf32>) -> tensor<4xf32>
  %b = lathe.launch @forward_k1(%a) : (tensor<4xf32>) -> tensor<4xf32>
  %c = lathe.launch @forward_k2(%b) : (tensor<4xf32>) -> tensor<4xf32>
  return %c : tensor<4xf32>
}
#id = affine_map<(i) -> (i)>
func.func private @forward_k0(%x: tensor<4xf32>, %o: tensor<4xf32>) -> tensor<4xf32> attributes {lathe.kernel} {
  %two = arith.constant 2.0 : f32
  %y = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]} ins(%x : tensor<4xf32>) outs(%o : tensor<4xf32>) {
  ^bb0(%a: f32, %b: f32):
    %m = arith.mulf %a, %two : f32
    linalg.yield %m : f32
  } -> tensor<4xf32>
  return %y : tensor<4xf32>
}
func.func private @forward_k1(%x: tensor<4xf32>, %o: tensor<4xf32>) -> tensor<4xf32> attributes {lathe.kernel} {
  %two = arith.constant 2.0 : f32
  %y = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]} ins(%x : tensor<4xf32>) outs(%o : tensor<4xf32>) {
  ^bb0(%a: f32, %b: f32):
    %m = arith.mulf %a, %two : f32
    linalg.yield %m : f32
  } -> tensor<4xf32>
  return %y : tensor<4xf32>
}
func.func private @forward_k2(%x: tensor<4xf32>, %o: tensor<4xf32>) -> tensor<4xf32> attributes {lathe.kernel} {
  %three = arith.constant 3.0 : f32
  %y = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]} ins(%x : tensor<4xf32>) outs(%o : tensor<4xf32>) {
  ^bb0(%a: f32, %b: f32):
    %m = arith.mulf %a, %three : f32
    linalg.yield %m : f32
  } -> tensor<4xf32>
  return %y : tensor<4xf32>
}
