// RUN: lathe-opt %s --lathe-approximate-math | FileCheck %s

// Tests that exp and tanh become polynomial arithmetic (no libm call left to
// block vectorization), while sin and cos, whose arguments may be large, stay.

// CHECK-LABEL: func.func @f
// CHECK-NOT: math.exp
// CHECK-NOT: math.tanh
// CHECK: math.fma
// CHECK: math.sin
// CHECK: math.cos
func.func @f(%x: f32) -> (f32, f32, f32, f32) {
  %e = math.exp %x : f32
  %t = math.tanh %x : f32
  %s = math.sin %x : f32
  %c = math.cos %x : f32
  return %e, %t, %s, %c : f32, f32, f32, f32
}
