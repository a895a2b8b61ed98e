// RUN: lathe-opt %s --split-input-file --lathe-export-kernels -verify-diagnostics | FileCheck %s

// Tests that a bufferized kernel with static identity memrefs and no results
// becomes public (so the back ends export it).

// CHECK: func.func @k(%{{.*}}: memref<4xf32>, %{{.*}}: memref<4xf32>) attributes {lathe.kernel}
func.func private @k(%x: memref<4xf32>, %o: memref<4xf32>) attributes {lathe.kernel} {
  return
}

// -----

// A kernel that still returns a buffer has no runtime ABI.
// expected-error @+1 {{kernel still returns values after bufferization}}
func.func private @k(%x: memref<4xf32>) -> memref<4xf32> attributes {lathe.kernel} {
  return %x : memref<4xf32>
}

// -----

// A strided view cannot be passed as one bare pointer.
// expected-error @+1 {{is not a static identity-layout memref}}
func.func private @k(%x: memref<4xf32, strided<[2]>>) attributes {lathe.kernel} {
  return
}
