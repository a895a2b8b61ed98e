// RUN: lathe-opt %s --lathe-attention-to-gpu --split-input-file | FileCheck %s
// RUN: lathe-opt %s --lathe-attention-to-gpu=precision=tf32 --split-input-file | FileCheck %s --check-prefix=TC

// Tests decoding (one query row, a position) with GQA, 4 heads over 2 K/V
// heads of head_dim 16 and a 64-row cache: one block per head, 64 threads
// (128 would exceed the cache), the three partial states in workgroup
// memory (64 maxima, 64 denominators, 64 x 16 value sums), each thread's
// keys from its id in steps of 64 up to position + 1, one barrier, then the
// combination over the 64 partial states.

// CHECK-LABEL: func.func @decode
// CHECK-NOT: lathe.fused_attention
// CHECK-DAG: %[[C4:.*]] = arith.constant 4 : index
// CHECK-DAG: %[[C64:.*]] = arith.constant 64 : index
// CHECK: gpu.launch blocks(%[[H:.*]], %{{.*}}, %{{.*}}) in (%{{.*}} = %[[C4]], %{{.*}} = %{{.*}}, %{{.*}} = %{{.*}}) threads(%[[T:.*]], %{{.*}}, %{{.*}}) in (%{{.*}} = %[[C64]],
// CHECK-SAME: workgroup(%[[M:.*]] : memref<64xf32, #gpu.address_space<workgroup>>, %[[L:.*]] : memref<64xf32, #gpu.address_space<workgroup>>, %[[ACC:.*]] : memref<1024xf32, #gpu.address_space<workgroup>>)
// CHECK: memref.load %{{.*}}[%{{.*}}] : memref<1xi32>
// CHECK: %[[R:.*]]:3 = scf.for %{{.*}} = %[[T]] to %{{.*}} step %{{.*}} iter_args
// CHECK: memref.store %[[R]]#0, %[[M]][%[[T]]]
// CHECK: memref.store %[[R]]#1, %[[L]][%[[T]]]
// CHECK: vector.store %[[R]]#2, %[[ACC]]
// CHECK-NEXT: gpu.barrier
// CHECK-NOT: gpu.barrier
// CHECK: scf.for
// CHECK: memref.store %{{.*}}, %{{.*}}[%{{.*}}, %{{.*}}] : memref<1x64xf32>
// CHECK: gpu.terminator
func.func @decode(%q: memref<1x64xf32>, %k: memref<64x32xf32>, %v: memref<64x32xf32>,
                  %pos: memref<1xi32>, %o: memref<1x64xf32>) {
  lathe.fused_attention %q, %k, %v at %pos into %o {heads = 4 : i64, kv_heads = 2 : i64}
      : memref<1x64xf32>, memref<64x32xf32>, memref<64x32xf32>, memref<1x64xf32>, memref<1xi32>
  return
}

// -----

// Tests that head_dim 128 takes 64 threads (64 x 128 x 4 bytes = 32 KiB of
// partial sums).

// CHECK-LABEL: func.func @wide
// CHECK: threads(%{{.*}}, %{{.*}}, %{{.*}}) in (%{{.*}} = %c64
// CHECK-SAME: memref<8192xf32, #gpu.address_space<workgroup>>
func.func @wide(%q: memref<1x256xf32>, %k: memref<512x256xf32>, %v: memref<512x256xf32>,
                %pos: memref<1xi32>, %o: memref<1x256xf32>) {
  lathe.fused_attention %q, %k, %v at %pos into %o {heads = 2 : i64, kv_heads = 2 : i64}
      : memref<1x256xf32>, memref<512x256xf32>, memref<512x256xf32>, memref<1x256xf32>, memref<1xi32>
  return
}

// -----

// Tests many query rows (forward, prefill, training; no position): 96 rows
// of 4 heads (head_dim 16) over 2 K/V heads take blocks of (head, tile of 64
// rows), 4 x 2 of them, a thread per row; K and V tiles of 64 keys (64 x 16
// floats each) in workgroup memory. The tile loop runs to the block's last
// visible key; in it the threads load the tile together, meet at a barrier,
// score their rows against it, and meet again; a row in the last, partial
// tile stores only if it exists.

// CHECK-LABEL: func.func @prefill
// CHECK-NOT: lathe.fused_attention
// CHECK-DAG: %[[C2:.*]] = arith.constant 2 : index
// CHECK-DAG: %[[C4:.*]] = arith.constant 4 : index
// CHECK-DAG: %[[C64:.*]] = arith.constant 64 : index
// CHECK: gpu.launch blocks(%{{.*}}, %{{.*}}, %{{.*}}) in (%{{.*}} = %[[C4]], %{{.*}} = %[[C2]], %{{.*}} = %{{.*}}) threads(%[[T:.*]], %{{.*}}, %{{.*}}) in (%{{.*}} = %[[C64]],
// CHECK-SAME: workgroup(%[[SK:.*]] : memref<1024xf32, #gpu.address_space<workgroup>>, %[[SV:.*]] : memref<1024xf32, #gpu.address_space<workgroup>>)
// CHECK: scf.for %[[K0:.*]] = %{{.*}} to %{{.*}} step %{{.*}} iter_args
// CHECK: scf.for %{{.*}} = %[[T]] to %{{.*}} step %{{.*}} {
// CHECK: memref.store %{{.*}}, %[[SK]]
// CHECK: memref.store %{{.*}}, %[[SV]]
// CHECK: gpu.barrier
// CHECK: scf.for
// CHECK: vector.load %[[SK]]
// CHECK: vector.load %[[SV]]
// CHECK: gpu.barrier
// CHECK: scf.if
// CHECK: vector.store
// CHECK: gpu.terminator
func.func @prefill(%q: memref<96x64xf32>, %k: memref<96x32xf32>, %v: memref<96x32xf32>, %o: memref<96x64xf32>) {
  lathe.fused_attention %q, %k, %v into %o {heads = 4 : i64, kv_heads = 2 : i64}
      : memref<96x64xf32>, memref<96x32xf32>, memref<96x32xf32>, memref<96x64xf32>
  return
}

// -----

// A batch of windows of 24 rows in 72 (three training sequences): the
// 64-row query tiles straddle sequences. The block's key loop starts at
// its first row's sequence (first - first mod 24), and a key counts for a
// row only from the row's own sequence start (key >= row - row mod 24) up
// to the row; the softmax shift stays finite before a row's first key.
// CHECK-LABEL: func.func @windows
// CHECK: gpu.launch
// CHECK: %[[FIRST:.*]] = arith.muli
// CHECK: %[[ROW:.*]] = arith.minui
// CHECK: %[[C24:.*]] = arith.constant 24 : index
// CHECK: %[[ROFF:.*]] = arith.remui %[[ROW]], %[[C24]]
// CHECK: %[[ROWFIRST:.*]] = arith.subi %[[ROW]], %[[ROFF]]
// CHECK: %[[BOFF:.*]] = arith.remui %[[FIRST]], %{{.*}}
// CHECK: %[[BLOCKFIRST:.*]] = arith.subi %[[FIRST]], %[[BOFF]]
// CHECK: scf.for %{{.*}} = %[[BLOCKFIRST]] to
// CHECK: gpu.barrier
// CHECK: arith.cmpi uge, %{{.*}}, %[[ROWFIRST]]
// CHECK: arith.cmpf oeq
// CHECK: gpu.barrier
func.func @windows(%q: memref<72x64xf32>, %k: memref<72x32xf32>, %v: memref<72x32xf32>,
                   %o: memref<72x64xf32>) {
  lathe.fused_attention %q, %k, %v into %o {heads = 4 : i64, kv_heads = 2 : i64, window = 24 : i64}
      : memref<72x64xf32>, memref<72x32xf32>, memref<72x32xf32>, memref<72x64xf32>
  return
}

// -----

// Tests the tensor-core form (precision below f32): 40 rows of 4 heads
// (head_dim 16) over 2 K/V heads take blocks of (head, 48 rows), a warp
// per 16 rows (96 threads); workgroup memory holds the K and V tiles (32
// keys x 16), the scores (48 x 32) and the rows' maximum, denominator and
// rescale. Q's two A fragments (head_dim / 8) are made before the tile
// loop, which carries the two output fragments (head_dim / 8 columns of
// 8). Per tile: the K/V load and a barrier; S = Q K^T as 4 key steps x 2
// head_dim steps of m16n8k8 tf32 products; a barrier; the row threads'
// softmax step; a barrier; the output fragments rescaled and P V as 4 key
// steps x 2 column blocks; a barrier. At f32 the same op keeps the CUDA-core
// kernel.

// CHECK-LABEL: func.func @tensor_cores
// CHECK-NOT: nvgpu.mma.sync
// CHECK: return

// TC-LABEL: func.func @tensor_cores
// TC-NOT: lathe.fused_attention
// TC: gpu.launch blocks(%{{.*}}, %{{.*}}, %{{.*}}) in (%{{.*}} = %c4, %{{.*}} = %c1{{.*}}, %{{.*}} = %c1{{.*}}) threads(%{{.*}}, %{{.*}}, %{{.*}}) in (%{{.*}} = %c96,
// TC-SAME: workgroup(%[[SK:.*]] : memref<512xf32, #gpu.address_space<workgroup>>, %[[SV:.*]] : memref<512xf32, #gpu.address_space<workgroup>>, %[[SS:.*]] : memref<1536xf32, #gpu.address_space<workgroup>>, %{{.*}} : memref<48xf32, #gpu.address_space<workgroup>>, %{{.*}} : memref<48xf32, #gpu.address_space<workgroup>>, %[[SR:.*]] : memref<48xf32, #gpu.address_space<workgroup>>)
// TC: %[[Q0:.*]] = vector.from_elements {{.*}} : vector<4x1xf32>
// TC: %[[Q1:.*]] = vector.from_elements {{.*}} : vector<4x1xf32>
// TC: %[[O:.*]]:2 = scf.for {{.*}} iter_args({{.*}}) -> (vector<2x2xf32>, vector<2x2xf32>)
// TC: memref.store %{{.*}}, %[[SK]]
// TC: gpu.barrier
// TC: %[[S0:.*]] = nvgpu.mma.sync(%[[Q0]], %{{.*}}, %cst{{.*}}) {mmaShape = [16, 8, 8], tf32Enabled} : (vector<4x1xf32>, vector<2x1xf32>, vector<2x2xf32>) -> vector<2x2xf32>
// TC: nvgpu.mma.sync(%[[Q1]], %{{.*}}, %[[S0]])
// TC: %[[S1:.*]] = nvgpu.mma.sync(%[[Q0]], %{{.*}}, %cst{{.*}}) {mmaShape = [16, 8, 8], tf32Enabled} : (vector<4x1xf32>, vector<2x1xf32>, vector<2x2xf32>) -> vector<2x2xf32>
// TC: nvgpu.mma.sync(%[[Q1]], %{{.*}}, %[[S1]])
// TC: %[[S2:.*]] = nvgpu.mma.sync(%[[Q0]], %{{.*}}, %cst{{.*}}) {mmaShape = [16, 8, 8], tf32Enabled} : (vector<4x1xf32>, vector<2x1xf32>, vector<2x2xf32>) -> vector<2x2xf32>
// TC: nvgpu.mma.sync(%[[Q1]], %{{.*}}, %[[S2]])
// TC: %[[S3:.*]] = nvgpu.mma.sync(%[[Q0]], %{{.*}}, %cst{{.*}}) {mmaShape = [16, 8, 8], tf32Enabled} : (vector<4x1xf32>, vector<2x1xf32>, vector<2x2xf32>) -> vector<2x2xf32>
// TC: nvgpu.mma.sync(%[[Q1]], %{{.*}}, %[[S3]])
// TC: gpu.barrier
// TC: scf.if
// TC: math.exp
// TC: gpu.barrier
// TC: %[[R:.*]] = vector.from_elements %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : vector<2x2xf32>
// TC: arith.mulf %{{.*}}, %[[R]] : vector<2x2xf32>
// TC: arith.mulf %{{.*}}, %[[R]] : vector<2x2xf32>
// TC-COUNT-8: nvgpu.mma.sync
// TC-NEXT: gpu.barrier
// TC-NEXT: scf.yield
// TC: vector.extract %[[O]]#0[0, 0]
// TC: memref.store %{{.*}}, %{{.*}}[%{{.*}}, %{{.*}}] : memref<40x64xf32>
// TC: gpu.terminator
func.func @tensor_cores(%q: memref<40x64xf32>, %k: memref<40x32xf32>, %v: memref<40x32xf32>, %o: memref<40x64xf32>) {
  lathe.fused_attention %q, %k, %v into %o {heads = 4 : i64, kv_heads = 2 : i64}
      : memref<40x64xf32>, memref<40x32xf32>, memref<40x32xf32>, memref<40x64xf32>
  return
}

// -----

// Tests attention's tiled gradient: 40 rows of 4 heads (head_dim 16) over 2
// K/V heads, no [T, T] buffer anywhere. Rows: a block per (head, tile of
// 40 rows), a thread per row; K and V tiles of 40 keys and the rows' score
// gradients (40 x 40, one tile) in workgroup memory. A loop over K tiles
// takes the rows' online maximum and normaliser; the row's (shift,
// normaliser, rs) go to the stats workspace and its dQ row is zeroed; then
// per K/V tile, the row's score gradients into workgroup memory, a
// barrier, and dQ's row read, summed into and written back. Keys: a block
// per (K/V head, tile of 40 keys), a thread per key, Q and dO tiles, the
// rows' stats and the pairs' weights and score gradients in workgroup
// memory; dK and dV rows zeroed, then one loop over (query head of the
// group, row tile) pairs: stage, barrier, pairs, barrier, dK and dV rows
// summed into.

// CHECK-LABEL: func.func @grad
// CHECK-NOT: 40x40xf32
// CHECK: gpu.launch blocks(%{{.*}}, %{{.*}}, %{{.*}}) in (%{{.*}} = %c4{{(_[0-9]+)?}}, %{{[^ ]*}} = %c1{{(_[0-9]+)?}}, %{{[^ ]*}} = %c1{{(_[0-9]+)?}}) threads(%{{.*}}, %{{.*}}, %{{.*}}) in (%{{.*}} = %c40{{(_[0-9]+)?}},
// CHECK-SAME: workgroup(%[[SK:[^ ]*]] : memref<640xf32, #gpu.address_space<workgroup>>, %[[SV:[^ ]*]] : memref<640xf32, #gpu.address_space<workgroup>>, %[[SDS:[^ ]*]] : memref<1600xf32, #gpu.address_space<workgroup>>)
// CHECK: %[[ST:.*]]:2 = scf.for
// CHECK: gpu.barrier
// CHECK: math.exp
// CHECK: gpu.barrier
// CHECK: scf.if
// CHECK: memref.store %[[ST]]#0, %arg8
// CHECK: memref.store %[[ST]]#1, %arg8
// CHECK: memref.store %{{.*}}, %arg8
// CHECK: vector.store %{{.*}}, %arg5
// CHECK: scf.for
// CHECK: memref.store %{{.*}}, %[[SV]]
// CHECK: gpu.barrier
// CHECK: memref.store %{{.*}}, %[[SDS]]
// CHECK: gpu.barrier
// CHECK: scf.if
// CHECK: vector.load %arg5
// CHECK: vector.fma
// CHECK: vector.store %{{.*}}, %arg5
// CHECK: gpu.barrier
// CHECK: gpu.terminator
// CHECK: gpu.launch blocks(%{{.*}}, %{{.*}}, %{{.*}}) in (%{{.*}} = %c2{{(_[0-9]+)?}}, %{{[^ ]*}} = %c1{{(_[0-9]+)?}}, %{{[^ ]*}} = %c1{{(_[0-9]+)?}}) threads(%{{.*}}, %{{.*}}, %{{.*}}) in (%{{.*}} = %c40{{(_[0-9]+)?}},
// CHECK-SAME: workgroup(%[[SQ:[^ ]*]] : memref<640xf32, #gpu.address_space<workgroup>>, %{{[^ ]*}} : memref<640xf32, #gpu.address_space<workgroup>>, %{{[^ ]*}} : memref<120xf32, #gpu.address_space<workgroup>>, %[[SP:[^ ]*]] : memref<1600xf32, #gpu.address_space<workgroup>>, %[[SDS2:[^ ]*]] : memref<1600xf32, #gpu.address_space<workgroup>>)
// CHECK: scf.if
// CHECK: vector.store %{{.*}}, %arg6
// CHECK: vector.store %{{.*}}, %arg7
// CHECK: scf.for %{{.*}} = %c0{{.*}} to
// CHECK: memref.store %{{.*}}, %[[SQ]]
// CHECK: memref.load %arg8
// CHECK: gpu.barrier
// CHECK: memref.store %{{.*}}, %[[SP]]
// CHECK: memref.store %{{.*}}, %[[SDS2]]
// CHECK: gpu.barrier
// CHECK: scf.if
// CHECK: vector.fma
// CHECK: vector.store %{{.*}}, %arg6
// CHECK: vector.fma
// CHECK: vector.store %{{.*}}, %arg7
// CHECK: gpu.barrier
// CHECK: gpu.terminator
// CHECK-NOT: lathe.fused_attention_grad
func.func @grad(%q: memref<40x64xf32>, %k: memref<40x32xf32>, %v: memref<40x32xf32>, %do: memref<40x64xf32>,
                %o: memref<40x64xf32>, %dq: memref<40x64xf32>, %dk: memref<40x32xf32>, %dv: memref<40x32xf32>,
                %st: memref<40x12xf32>) {
  lathe.fused_attention_grad %q, %k, %v, %do, %o into %dq, %dk, %dv, %st {heads = 4 : i64, kv_heads = 2 : i64}
      : memref<40x64xf32>, memref<40x32xf32>, memref<40x32xf32>, memref<40x64xf32>, memref<40x64xf32>,
        memref<40x64xf32>, memref<40x32xf32>, memref<40x32xf32>, memref<40x12xf32>
  return
}
