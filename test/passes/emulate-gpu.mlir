// RUN: lathe-opt %s --split-input-file --lathe-emulate-gpu -verify-diagnostics | FileCheck %s

// Tests that an outlined kernel becomes a host function of the same name
// taking its buffers, the grid and block sizes and a part of the blocks; that
// it loops over its blocks [part * n / parts, (part + 1) * n / parts), then
// threads z, y, x (x innermost); that ids and sizes are the loop counters and
// arguments; and that the launching host function and the gpu.module go.

// CHECK-NOT: gpu.module
// CHECK-NOT: func.func @host
// CHECK-LABEL: func.func @k(
// CHECK-SAME: %[[M:.*]]: memref<64xf32>, %[[GX:[^:]*]]: index, %[[GY:[^:]*]]: index, %[[GZ:[^:]*]]: index, %[[SX:[^:]*]]: index, %[[SY:[^:]*]]: index, %[[SZ:[^:]*]]: index, %[[PART:[^:]*]]: index, %[[PARTS:[^:]*]]: index)
// CHECK-SAME: lathe.kernel
// CHECK-DAG: %[[C0:.*]] = arith.constant 0 : index
// CHECK-DAG: %[[C1:.*]] = arith.constant 1 : index
// CHECK: %[[GXY:.*]] = arith.muli %[[GX]], %[[GY]]
// CHECK: %[[N:.*]] = arith.muli %[[GXY]], %[[GZ]]
// CHECK: %[[PN:.*]] = arith.muli %[[PART]], %[[N]]
// CHECK: %[[FIRST:.*]] = arith.divui %[[PN]], %[[PARTS]]
// CHECK: %[[NEXT:.*]] = arith.addi %[[PART]], %[[C1]]
// CHECK: %[[NN:.*]] = arith.muli %[[NEXT]], %[[N]]
// CHECK: %[[LAST:.*]] = arith.divui %[[NN]], %[[PARTS]]
// CHECK: scf.for %[[B:.*]] = %[[FIRST]] to %[[LAST]] step %[[C1]]
// CHECK: %[[BX:.*]] = arith.remui %[[B]], %[[GX]]
// CHECK: scf.for %{{.*}} = %[[C0]] to %[[SZ]] step %[[C1]]
// CHECK: scf.for %{{.*}} = %[[C0]] to %[[SY]] step %[[C1]]
// CHECK: scf.for %[[TX:.*]] = %[[C0]] to %[[SX]] step %[[C1]]
// CHECK: %[[I:.*]] = arith.muli %[[BX]], %[[SX]]
// CHECK: %[[J:.*]] = arith.addi %[[I]], %[[TX]]
// CHECK: memref.store %{{.*}}, %[[M]][%[[J]]]
module attributes {gpu.container_module} {
  func.func @host(%m: memref<64xf32>) attributes {lathe.kernel} {
    %c1 = arith.constant 1 : index
    %c4 = arith.constant 4 : index
    %c16 = arith.constant 16 : index
    gpu.launch_func @lathe_kernels::@k blocks in (%c4, %c1, %c1)
        threads in (%c16, %c1, %c1) args(%m : memref<64xf32>)
    return
  }
  gpu.module @lathe_kernels {
    gpu.func @k(%m: memref<64xf32>) kernel {
      %v = arith.constant 1.0 : f32
      %bx = gpu.block_id x
      %sx = gpu.block_dim x
      %tx = gpu.thread_id x
      %i = arith.muli %bx, %sx : index
      %j = arith.addi %i, %tx : index
      memref.store %v, %m[%j] : memref<64xf32>
      gpu.return
    }
  }
}

// -----

// Tests a barrier with workgroup memory: one buffer that every block of
// the part reuses (allocated before the block loop, so the stack does not
// grow with the blocks), and two thread loops, one per phase. The global index
// is a function of ids and sizes, so the second phase recomputes it; the
// value loaded before the barrier is kept per thread in a buffer of the
// block and reloaded at the thread's slot (tz * by + ty) * bx + tx.

// CHECK-LABEL: func.func @reverse(
// CHECK-SAME: %[[IN:[^:]*]]: memref<64xf32>, %[[OUT:[^:]*]]: memref<64xf32>, %{{[^:]*}}: index, %{{[^:]*}}: index, %{{[^:]*}}: index, %[[SX:[^:]*]]: index, %[[SY:[^:]*]]: index, %[[SZ:[^:]*]]: index,
// CHECK: %[[TILE:.*]] = memref.alloca() : memref<16xf32>
// CHECK: %[[SPILL:.*]] = memref.alloca(%{{.*}}) : memref<?xf32>
// CHECK: scf.for %[[B:.*]] =
// CHECK-NOT: memref.alloca
// CHECK: scf.for
// CHECK: scf.for
// CHECK: scf.for %[[TX:.*]] =
// CHECK: %[[V:.*]] = memref.load %[[IN]]
// CHECK: memref.store %[[V]], %[[TILE]][%[[TX]]]
// CHECK: %[[W:.*]] = arith.mulf %[[V]], %[[V]]
// CHECK: memref.store %[[W]], %[[SPILL]][%{{.*}}]
// CHECK-NOT: gpu.barrier
// CHECK: scf.for
// CHECK: scf.for
// CHECK: scf.for %[[TX2:.*]] =
// CHECK: %[[KEPT:.*]] = memref.load %[[SPILL]][%{{.*}}]
// CHECK: arith.muli
// CHECK: %[[G:.*]] = arith.addi %{{.*}}, %[[TX2]]
// CHECK: %[[R:.*]] = arith.subi
// CHECK: %[[U:.*]] = memref.load %[[TILE]][%[[R]]]
// CHECK: %[[S:.*]] = arith.addf %[[U]], %[[KEPT]]
// CHECK: memref.store %[[S]], %[[OUT]][%[[G]]]
module attributes {gpu.container_module} {
  gpu.module @lathe_kernels {
    gpu.func @reverse(%in: memref<64xf32>, %out: memref<64xf32>)
        workgroup(%tile: memref<16xf32, #gpu.address_space<workgroup>>) kernel {
      %c15 = arith.constant 15 : index
      %bx = gpu.block_id x
      %sx = gpu.block_dim x
      %tx = gpu.thread_id x
      %i = arith.muli %bx, %sx : index
      %g = arith.addi %i, %tx : index
      %v = memref.load %in[%g] : memref<64xf32>
      memref.store %v, %tile[%tx] : memref<16xf32, #gpu.address_space<workgroup>>
      %w = arith.mulf %v, %v : f32
      gpu.barrier
      %r = arith.subi %c15, %tx : index
      %u = memref.load %tile[%r] : memref<16xf32, #gpu.address_space<workgroup>>
      %s = arith.addf %u, %w : f32
      memref.store %s, %out[%g] : memref<64xf32>
      gpu.return
    }
  }
}

// -----

// Tests a loop over tiles with barriers in its body: the loop runs once per
// block around the thread loops of its two phases (load the tile; use it),
// its carried values (a scalar and a vector) live per thread in buffers of
// the block, set before the loop, reloaded in each phase, stored back at
// the end of the last phase, and read after the loop. The loop's bounds are
// the same for every thread, so they are cloned at block level.

// CHECK-LABEL: func.func @tiles(
// CHECK: %[[TILE:.*]] = memref.alloca() : memref<16xf32>
// CHECK-DAG: %[[ACC:.*]] = memref.alloca(%{{.*}}) : memref<?xf32>
// CHECK-DAG: %[[VEC:.*]] = memref.alloca(%{{.*}}) : memref<?xvector<2xf32>>
// CHECK: scf.for %[[B:.*]] =
// The init phase: each thread's starting values.
// CHECK: scf.for
// CHECK: scf.for
// CHECK: scf.for
// CHECK: memref.store %{{.*}}, %[[ACC]][%{{.*}}]
// CHECK: memref.store %{{.*}}, %[[VEC]][%{{.*}}]
// The tile loop, then its phases' thread loops inside it.
// CHECK: scf.for %[[K:.*]] = %{{.*}} to %{{.*}} step %{{.*}} {
// CHECK: scf.for
// CHECK: scf.for
// CHECK: scf.for %[[TX:.*]] =
// CHECK: arith.addi %[[K]], %[[TX]]
// CHECK: memref.store %{{.*}}, %[[TILE]][%[[TX]]]
// CHECK: scf.for
// CHECK: scf.for
// CHECK: scf.for
// CHECK-DAG: memref.load %[[ACC]][%{{.*}}]
// CHECK-DAG: memref.load %[[VEC]][%{{.*}}]
// CHECK: memref.store %{{.*}}, %[[ACC]][%{{.*}}]
// CHECK: memref.store %{{.*}}, %[[VEC]][%{{.*}}]
// After the loop: the carried values, reloaded.
// CHECK: scf.for
// CHECK: scf.for
// CHECK: scf.for
// CHECK-DAG: memref.load %[[ACC]][%{{.*}}]
// CHECK-DAG: memref.load %[[VEC]][%{{.*}}]
// CHECK: memref.store %{{.*}}, %{{.*}}[%{{.*}}] : memref<16xf32>
// CHECK-NOT: gpu.barrier
module attributes {gpu.container_module} {
  gpu.module @lathe_kernels {
    gpu.func @tiles(%in: memref<64xf32>, %out: memref<16xf32>)
        workgroup(%tile: memref<16xf32, #gpu.address_space<workgroup>>) kernel {
      %c0 = arith.constant 0 : index
      %c15 = arith.constant 15 : index
      %c16 = arith.constant 16 : index
      %c64 = arith.constant 64 : index
      %zero = arith.constant 0.0 : f32
      %zeros = arith.constant dense<0.0> : vector<2xf32>
      %tx = gpu.thread_id x
      %r:2 = scf.for %k = %c0 to %c64 step %c16 iter_args(%acc = %zero, %vec = %zeros) -> (f32, vector<2xf32>) {
        %g = arith.addi %k, %tx : index
        %x = memref.load %in[%g] : memref<64xf32>
        memref.store %x, %tile[%tx] : memref<16xf32, #gpu.address_space<workgroup>>
        gpu.barrier
        %j = arith.subi %c15, %tx : index
        %y = memref.load %tile[%j] : memref<16xf32, #gpu.address_space<workgroup>>
        %a = arith.addf %acc, %y : f32
        %yb = vector.broadcast %y : f32 to vector<2xf32>
        %v = arith.addf %vec, %yb : vector<2xf32>
        gpu.barrier
        scf.yield %a, %v : f32, vector<2xf32>
      }
      %e = vector.extract %r#1[0] : f32 from vector<2xf32>
      %s = arith.addf %r#0, %e : f32
      memref.store %s, %out[%tx] : memref<16xf32>
      gpu.return
    }
  }
}

// -----

// A barrier under a condition, or in a loop whose trip count differs from
// thread to thread, has no phase order that every thread shares: refused
// rather than miscompiled.
module attributes {gpu.container_module} {
  gpu.module @lathe_kernels {
    gpu.func @conditional(%m: memref<64xf32>, %c: i1) kernel {
      scf.if %c {
        // expected-error @+1 {{cannot be emulated yet: a barrier inside control flow other than a loop at the top of the kernel}}
        gpu.barrier
      }
      gpu.return
    }
  }
}

// -----

module attributes {gpu.container_module} {
  gpu.module @lathe_kernels {
    // expected-error @+1 {{cannot be emulated: a loop with barriers has bounds that are not the same for every thread of a block}}
    gpu.func @divergent(%m: memref<64xf32>) kernel {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %tx = gpu.thread_id x
      scf.for %k = %c0 to %tx step %c1 {
        gpu.barrier
      }
      gpu.return
    }
  }
}

// -----

// Threads that exchange values directly are refused too.
module attributes {gpu.container_module} {
  gpu.module @lathe_kernels {
    gpu.func @shuffle(%m: memref<64xf32>, %v: f32) kernel {
      %c1 = arith.constant 1 : i32
      %c32 = arith.constant 32 : i32
      // expected-error @+1 {{cannot be emulated yet: the threads of its kernel exchange values (shuffle or reduction)}}
      %r, %ok = gpu.shuffle xor %v, %c1, %c32 : f32
      gpu.return
    }
  }
}

// -----

// A GPU op without a CPU meaning here is refused by name.
module attributes {gpu.container_module} {
  gpu.module @lathe_kernels {
    gpu.func @lane(%m: memref<64xi32>) kernel {
      // expected-error @+1 {{'gpu.lane_id' op cannot be emulated: no CPU meaning is given to it}}
      %l = gpu.lane_id
      gpu.return
    }
  }
}

// -----

// Tests a warp's matrix product: it starts a phase (the lanes' fragments are
// all made before any lane reads them), its A and B fragments are kept per
// thread, and each lane gathers its warp's 32 A and 32 B fragments (from
// slot warp + l) into two buffers made once per function, then calls the
// module's m16n8k8 tf32 function for its own D fragment, which the next
// phase reads back.

// CHECK-LABEL: func.func @mma(
// CHECK-DAG: %[[WA:.*]] = memref.alloca() : memref<32xvector<4x1xf32>>
// CHECK-DAG: %[[WB:.*]] = memref.alloca() : memref<32xvector<2x1xf32>>
// CHECK-DAG: %[[SA:.*]] = memref.alloca(%{{.*}}) : memref<?xvector<4x1xf32>>
// CHECK-DAG: %[[SB:.*]] = memref.alloca(%{{.*}}) : memref<?xvector<2x1xf32>>
// CHECK-DAG: %[[SD:.*]] = memref.alloca(%{{.*}}) : memref<?xvector<2x2xf32>>
// The first phase: each lane's fragments.
// CHECK: scf.for %[[TX:.*]] =
// CHECK: memref.store %{{.*}}, %[[SA]][%[[SLOT:.*]]] : memref<?xvector<4x1xf32>>
// CHECK: memref.store %{{.*}}, %[[SB]][%[[SLOT]]] : memref<?xvector<2x1xf32>>
// The second: the product, from the warp's fragments.
// CHECK: scf.for %[[TX2:.*]] =
// CHECK: %[[LANE:.*]] = arith.remui %[[SLOT2:.*]], %[[C32:.*]] : index
// CHECK: %[[WARP:.*]] = arith.subi %[[SLOT2]], %[[LANE]] : index
// CHECK: scf.for %[[L:.*]] = %{{.*}} to %[[C32]]
// CHECK: %[[FROM:.*]] = arith.addi %[[WARP]], %[[L]]
// CHECK: memref.load %[[SA]][%[[FROM]]]
// CHECK: memref.store %{{.*}}, %[[WA]][%[[L]]]
// CHECK: memref.load %[[SB]][%[[FROM]]]
// CHECK: memref.store %{{.*}}, %[[WB]][%[[L]]]
// CHECK: %[[D:.*]] = func.call @__lathe_emulated_mma_m16n8k8_tf32(%[[WA]], %[[WB]], %[[LANE]], %{{.*}})
// CHECK: memref.store %[[D]], %[[SD]]
// The third phase stores the lane's D fragment.
// CHECK: scf.for
// CHECK: memref.load %[[SD]]
// CHECK: vector.extract
// The function: element 0 of D is row g, column 2q; its step k reads A[g][k]
// (lane 4g + k mod 4, register 2 (k / 4)) and B[k][2q] (lane 4 (2q) + k mod
// 4, register k / 4), each cut to tf32 (mask -8192 = 0xffffe000). So steps
// 0-3 read A's register 0 and B's 0, steps 4-7 A's 2 and B's 1; element 2
// (row g + 8) reads A's registers 1 and 3.
// CHECK-LABEL: func.func private @__lathe_emulated_mma_m16n8k8_tf32(
// CHECK-SAME: %[[A:[^:]*]]: memref<32xvector<4x1xf32>>, %[[B:[^:]*]]: memref<32xvector<2x1xf32>>, %[[LN:[^:]*]]: index, %[[C:[^:]*]]: vector<2x2xf32>) -> vector<2x2xf32>
// CHECK: %[[G:.*]] = arith.divui %[[LN]], %{{.*}}
// CHECK: %[[Q:.*]] = arith.remui %[[LN]], %{{.*}}
// CHECK: %[[MASK:.*]] = arith.constant -8192 : i32
// CHECK: %[[Q2:.*]] = arith.muli %[[Q]], %{{.*}}
// CHECK: %[[COL:.*]] = arith.addi %[[Q2]], %{{.*}}
// CHECK: %[[C00:.*]] = vector.extract %[[C]][0, 0]
// CHECK: %[[G4:.*]] = arith.muli %[[G]], %{{.*}}
// CHECK: %[[AL:.*]] = arith.addi %[[G4]], %{{.*}}
// CHECK: %[[COL4:.*]] = arith.muli %[[COL]], %{{.*}}
// CHECK: %[[BL:.*]] = arith.addi %[[COL4]], %{{.*}}
// CHECK: %[[AF:.*]] = memref.load %[[A]][%[[AL]]]
// CHECK: %[[AE:.*]] = vector.extract %[[AF]][0, 0] : f32 from vector<4x1xf32>
// CHECK: %[[AI:.*]] = arith.bitcast %[[AE]] : f32 to i32
// CHECK: %[[AM:.*]] = arith.andi %[[AI]], %[[MASK]]
// CHECK: %[[AT:.*]] = arith.bitcast %[[AM]] : i32 to f32
// CHECK: %[[BF:.*]] = memref.load %[[B]][%[[BL]]]
// CHECK: %[[BE:.*]] = vector.extract %[[BF]][0, 0] : f32 from vector<2x1xf32>
// CHECK: %[[BI:.*]] = arith.bitcast %[[BE]] : f32 to i32
// CHECK: %[[BM:.*]] = arith.andi %[[BI]], %[[MASK]]
// CHECK: %[[BT:.*]] = arith.bitcast %[[BM]] : i32 to f32
// CHECK: %[[P0:.*]] = arith.mulf %[[AT]], %[[BT]]
// CHECK: arith.addf %[[C00]], %[[P0]]
// CHECK-COUNT-3: vector.extract %{{.*}}[0, 0] : f32 from vector<4x1xf32>
// CHECK: vector.extract %{{.*}}[2, 0] : f32 from vector<4x1xf32>
// CHECK-NEXT: arith.bitcast
// CHECK-NEXT: arith.andi
// CHECK-NEXT: arith.bitcast
// CHECK-NEXT: memref.load %[[B]]
// CHECK-NEXT: vector.extract %{{.*}}[1, 0] : f32 from vector<2x1xf32>
// CHECK: vector.insert %{{.*}}, %[[C]] [0, 0]
// CHECK: vector.extract %[[C]][0, 1]
// CHECK: vector.insert %{{.*}} [0, 1]
// CHECK: vector.extract %[[C]][1, 0]
// CHECK: vector.extract %{{.*}}[1, 0] : f32 from vector<4x1xf32>
// CHECK: vector.extract %{{.*}}[3, 0] : f32 from vector<4x1xf32>
// CHECK: vector.insert %{{.*}} [1, 0]
// CHECK: %[[DD:.*]] = vector.insert %{{.*}} [1, 1]
// CHECK: return %[[DD]]
module attributes {gpu.container_module} {
  gpu.module @lathe_kernels {
    gpu.func @mma(%a: memref<256xf32>, %b: memref<64xf32>, %out: memref<128xf32>) kernel {
      %c2 = arith.constant 2 : index
      %c4 = arith.constant 4 : index
      %c64 = arith.constant 64 : index
      %c128 = arith.constant 128 : index
      %c192 = arith.constant 192 : index
      %zero = arith.constant dense<0.0> : vector<2x2xf32>
      %tx = gpu.thread_id x
      %i = arith.muli %tx, %c4 : index
      %a0 = memref.load %a[%tx] : memref<256xf32>
      %ia = arith.addi %tx, %c64 : index
      %a1 = memref.load %a[%ia] : memref<256xf32>
      %ib = arith.addi %tx, %c128 : index
      %a2 = memref.load %a[%ib] : memref<256xf32>
      %ic = arith.addi %tx, %c192 : index
      %a3 = memref.load %a[%ic] : memref<256xf32>
      %af = vector.from_elements %a0, %a1, %a2, %a3 : vector<4x1xf32>
      %b0 = memref.load %b[%tx] : memref<64xf32>
      %jb = arith.addi %tx, %c2 : index
      %b1 = memref.load %b[%jb] : memref<64xf32>
      %bf = vector.from_elements %b0, %b1 : vector<2x1xf32>
      %d = nvgpu.mma.sync (%af, %bf, %zero) {mmaShape = [16, 8, 8], tf32Enabled}
          : (vector<4x1xf32>, vector<2x1xf32>, vector<2x2xf32>) -> vector<2x2xf32>
      gpu.barrier
      %d0 = vector.extract %d[0, 0] : f32 from vector<2x2xf32>
      memref.store %d0, %out[%i] : memref<128xf32>
      gpu.return
    }
  }
}

// -----

// A warp's product under a condition would leave lanes without a turn, and
// only the product the attention kernels make is given a CPU meaning.
module attributes {gpu.container_module} {
  gpu.module @lathe_kernels {
    gpu.func @conditional_mma(%a: vector<4x1xf32>, %b: vector<2x1xf32>, %c: vector<2x2xf32>, %p: i1) kernel {
      scf.if %p {
        // expected-error @+1 {{cannot be emulated yet: a warp's matrix product inside control flow other than a loop at the top of the kernel}}
        %d = nvgpu.mma.sync (%a, %b, %c) {mmaShape = [16, 8, 8], tf32Enabled}
            : (vector<4x1xf32>, vector<2x1xf32>, vector<2x2xf32>) -> vector<2x2xf32>
      }
      gpu.return
    }
  }
}

// -----

module attributes {gpu.container_module} {
  gpu.module @lathe_kernels {
    gpu.func @f16_mma(%a: vector<4x2xf16>, %b: vector<2x2xf16>, %c: vector<2x2xf32>) kernel {
      // expected-error @+1 {{cannot be emulated yet: only m16n8k8 products of tf32 fragments into f32 are}}
      %d = nvgpu.mma.sync (%a, %b, %c) {mmaShape = [16, 8, 16]}
          : (vector<4x2xf16>, vector<2x2xf16>, vector<2x2xf32>) -> vector<2x2xf32>
      gpu.return
    }
  }
}

// -----

module attributes {gpu.container_module} {
  gpu.module @lathe_kernels {
    gpu.func @argument_fragment(%a: vector<4x1xf32>, %m: memref<64xf32>) kernel {
      %c0 = arith.constant 0 : index
      %zero = arith.constant dense<0.0> : vector<2x2xf32>
      %b0 = memref.load %m[%c0] : memref<64xf32>
      %bf = vector.from_elements %b0, %b0 : vector<2x1xf32>
      // expected-error @+1 {{cannot be emulated yet: a fragment that is not made by an op of the kernel's body}}
      %d = nvgpu.mma.sync (%a, %bf, %zero) {mmaShape = [16, 8, 8], tf32Enabled}
          : (vector<4x1xf32>, vector<2x1xf32>, vector<2x2xf32>) -> vector<2x2xf32>
      gpu.return
    }
  }
}
