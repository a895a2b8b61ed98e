// RUN: lathe-opt %s --split-input-file -verify-diagnostics

// The widths must be the ones the schedule gives; the message shows them.
// expected-error @+1 {{#lathe.taper: widths [192, 160, 128, 32] do not follow from the schedule, which gives [192, 160, 96, 64]}}
module attributes {lathe.mlp_taper = #lathe.taper<"cosine", 1.5, 0.5, multiple 32, base 128, widths [192, 160, 128, 32]>} {
}

// -----

// 4 layers of 100 cannot be rounded to multiples of 64 and keep the budget.
// expected-error @+1 {{#lathe.taper: layers * width = 400 is not a multiple of 64}}
module attributes {lathe.mlp_taper = #lathe.taper<"cosine", 1.5, 0.5, multiple 64, base 100, widths [150, 120, 80, 50]>} {
}

// -----

// A back-heavy taper hurt perplexity in the paper and breaks the
// non-increasing invariant.
// expected-error @+1 {{#lathe.taper: needs max >= min > 0 (front-heavy), got max 0.50, min 1.50}}
module attributes {lathe.mlp_taper = #lathe.taper<"cosine", 0.5, 1.5, multiple 32, base 128, widths [64, 96, 160, 192]>} {
}
