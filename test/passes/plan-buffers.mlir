// RUN: lathe-opt %s --lathe-plan-buffers | FileCheck %s
// RUN: lathe-opt %s --lathe-plan-buffers=alignment=256 | FileCheck %s --check-prefix=ALIGN

// Tests first-fit arena planning on a chain a -> b -> c -> d where each value
// dies at its next use: inputs stay live, a dead buffer's space is reused, a
// result never overlaps an operand of its own launch, reshapes alias their
// source, and the returned value stays live.
//
// Every value is 64 B: x at 0, a at 64, b at 128; c reuses a's space; d
// reuses b's (dead after c), so the arena peaks at 192 B.

// CHECK-LABEL: func.func @chain
// CHECK-SAME: %{{.*}}: tensor<16xf32> {lathe.offset = 0 : i64}
// CHECK-SAME: attributes {lathe.arena_bytes = 192 : i64}
// CHECK: %[[A:.*]] = lathe.launch @k(%{{.*}}) {offsets = array<i64: 64>}
// CHECK: %[[B:.*]] = lathe.launch @k(%[[A]]) {offsets = array<i64: 128>}
// Here a is dead, so c takes a's place.
// CHECK: %[[C:.*]] = lathe.launch @k(%[[B]]) {offsets = array<i64: 64>}
// CHECK: tensor.expand_shape %[[C]] {{.*}} {lathe.offset = 64 : i64}
// CHECK: lathe.launch @k2(%{{.*}}) {offsets = array<i64: 128>}
// ALIGN: attributes {lathe.arena_bytes = 768 : i64}
// ALIGN: lathe.launch @k(%{{.*}}) {offsets = array<i64: 256>}
func.func private @k(%x: tensor<16xf32>, %o: tensor<16xf32>) -> tensor<16xf32> attributes {lathe.kernel}
func.func private @k2(%x: tensor<4x4xf32>, %o: tensor<4x4xf32>) -> tensor<4x4xf32> attributes {lathe.kernel}
func.func @chain(%x: tensor<16xf32>) -> tensor<4x4xf32> {
  %a = lathe.launch @k(%x) : (tensor<16xf32>) -> tensor<16xf32>
  %b = lathe.launch @k(%a) : (tensor<16xf32>) -> tensor<16xf32>
  %c = lathe.launch @k(%b) : (tensor<16xf32>) -> tensor<16xf32>
  %r = tensor.expand_shape %c [[0, 1]] output_shape [4, 4] : tensor<16xf32> into tensor<4x4xf32>
  %d = lathe.launch @k2(%r) : (tensor<4x4xf32>) -> tensor<4x4xf32>
  return %d : tensor<4x4xf32>
}

// Tests that a result tied to a cache operand gets no arena space (offset -1)
// and that views of caches need none either.

// CHECK-LABEL: func.func @cache_update
// CHECK-SAME: attributes {lathe.arena_bytes = 128 : i64}
// CHECK: lathe.launch @upd(%{{.*}}, %{{.*}}) {offsets = array<i64: -1>, tied = array<i64: 1>}
// CHECK: tensor.expand_shape
// CHECK-NOT: lathe.offset
// CHECK: lathe.launch @use
lathe.cache @kc : tensor<8x4xf32>
func.func private @upd(%r: tensor<1x4xf32>, %c: tensor<8x4xf32>, %o: tensor<8x4xf32>) -> tensor<8x4xf32> attributes {lathe.kernel}
func.func private @use(%c: tensor<8x2x2xf32>, %o: tensor<1x4xf32>) -> tensor<1x4xf32> attributes {lathe.kernel}
func.func @cache_update(%r: tensor<1x4xf32>) -> tensor<1x4xf32> {
  %c = lathe.cache_read @kc : tensor<8x4xf32>
  %n = lathe.launch @upd(%r, %c) {tied = array<i64: 1>} : (tensor<1x4xf32>, tensor<8x4xf32>) -> tensor<8x4xf32>
  %v = tensor.expand_shape %n [[0], [1, 2]] output_shape [8, 2, 2] : tensor<8x4xf32> into tensor<8x2x2xf32>
  %y = lathe.launch @use(%v) : (tensor<8x2x2xf32>) -> tensor<1x4xf32>
  return %y : tensor<1x4xf32>
}
