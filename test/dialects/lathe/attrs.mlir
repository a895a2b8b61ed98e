// RUN: lathe-opt %s --split-input-file | lathe-opt --split-input-file | FileCheck %s

// Tests that a taper schedule round-trips: ARCHITECTURES.md §1.2's example
// for w_base 2048, 12 layers, multiple 128.

// CHECK: lathe.mlp_taper = #lathe.taper<"cosine", 1.500000e+00 : f64, 5.000000e-01 : f64, multiple 128, base 2048, widths[3072, 3072, 2944, 2688, 2432, 2176, 1920, 1664, 1408, 1152, 1024, 1024]>
module attributes {lathe.mlp_taper = #lathe.taper<"cosine", 1.5, 0.5, multiple 128, base 2048, widths [3072, 3072, 2944, 2688, 2432, 2176, 1920, 1664, 1408, 1152, 1024, 1024]>} {
}

// -----

// CHECK: #lathe.taper<"linear", 1.500000e+00 : f64, 5.000000e-01 : f64, multiple 32, base 128, widths[192, 160, 96, 64]>
module attributes {lathe.mlp_taper = #lathe.taper<"linear", 1.5, 0.5, multiple 32, base 128, widths [192, 160, 96, 64]>} {
}
