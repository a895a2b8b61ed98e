// RUN: lathe-opt %s -split-input-file -verify-diagnostics

// A normal init needs its standard deviation.
// expected-error @+1 {{with init 'normal' needs a std}}
lathe.param @w : tensor<4x4xf32> init(normal)

// -----

// ones/zeros take no std: a stray one is a spec mistake.
// expected-error @+1 {{takes a std only with init 'normal'}}
lathe.param @g : tensor<4xf32> init(ones, std = 1.0)

// -----

// A negative std is meaningless.
// expected-error @+1 {{expects std > 0}}
lathe.param @w : tensor<4x4xf32> init(normal, std = -1.0)

// -----

// Parameters have static shapes: the artifact plans them statically.
// expected-error @+1 {{expects a static shape}}
lathe.param @w : tensor<?x4xf32> init(zeros)

// -----

func.func @unknown_param() -> tensor<4xf32> {
  // expected-error @+1 {{refers to unknown parameter @missing}}
  %w = lathe.weight @missing : tensor<4xf32>
  return %w : tensor<4xf32>
}

// -----

lathe.param @g : tensor<4xf32> init(ones)
func.func @weight_type_mismatch() -> tensor<8xf32> {
  // The weight's type must be the parameter's.
  // expected-error @+1 {{has type 'tensor<8xf32>' but parameter @g has type 'tensor<4xf32>'}}
  %w = lathe.weight @g : tensor<8xf32>
  return %w : tensor<8xf32>
}

// -----

func.func @embedding_width(%t: tensor<4xi32>, %e: tensor<16x8xf32>) {
  // The result width must be the table's.
  // expected-error @+1 {{result must be [T, D] = [4, 8]}}
  %x = lathe.embedding %t, %e : tensor<4xi32>, tensor<16x8xf32> -> tensor<4x6xf32>
  return
}

// -----

func.func @norm_gain(%x: tensor<4x8xf32>, %g: tensor<6xf32>) {
  // The gain covers the normalised axis.
  // expected-error @+1 {{gain has 6 elements but the normalised axis has 8}}
  %y = lathe.rms_norm %x, %g {eps = 1.0e-5 : f64} : tensor<4x8xf32>, tensor<6xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @norm_eps(%x: tensor<4x8xf32>, %g: tensor<8xf32>) {
  // eps keeps the division finite; zero is not allowed.
  // expected-error @+1 {{expects eps > 0}}
  %y = lathe.rms_norm %x, %g {eps = 0.0 : f64} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @norm_dynamic(%x: tensor<?x8xf32>, %g: tensor<8xf32>) {
  // Shapes are static per artifact.
  // expected-error @+1 {{expects input to have a static shape}}
  %y = lathe.rms_norm %x, %g {eps = 1.0e-5 : f64} : tensor<?x8xf32>, tensor<8xf32> -> tensor<?x8xf32>
  return
}

// -----

func.func @linear_in(%x: tensor<4x8xf32>, %w: tensor<16x6xf32>) {
  // nn.Linear layout: the weight is [out, in].
  // expected-error @+1 {{weight [out, in] has in = 6 but the input has 8 features}}
  %y = lathe.linear %x, %w : tensor<4x8xf32>, tensor<16x6xf32> -> tensor<4x16xf32>
  return
}

// -----

func.func @linear_out(%x: tensor<4x8xf32>, %w: tensor<16x8xf32>) {
  // expected-error @+1 {{result must be [4, 16]}}
  %y = lathe.linear %x, %w : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x12xf32>
  return
}

// -----

func.func @rope_heads(%x: tensor<4x8xf32>) {
  // Heads must split the width evenly.
  // expected-error @+1 {{heads (3) must divide the width (8)}}
  %y = lathe.rope %x {heads = 3 : i64, base = 10000.0 : f64} : tensor<4x8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @rope_odd(%x: tensor<4x6xf32>) {
  // Rotate-half pairs channel i with i + head_dim/2.
  // expected-error @+1 {{head_dim (3) must be even}}
  %y = lathe.rope %x {heads = 2 : i64, base = 10000.0 : f64} : tensor<4x6xf32> -> tensor<4x6xf32>
  return
}

// -----

func.func @gqa_divisibility(%q: tensor<4x12xf32>, %k: tensor<4x8xf32>) {
  // GQA: query heads are shared evenly among K/V heads.
  // expected-error @+1 {{kv_heads (2) must divide heads (3)}}
  %a = lathe.attention %q, %k, %k {heads = 3 : i64, kv_heads = 2 : i64} : tensor<4x12xf32>, tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x12xf32>
  return
}

// -----

func.func @attention_heads(%q: tensor<4x10xf32>, %k: tensor<4x10xf32>) {
  // expected-error @+1 {{heads (4) must divide the query width (10)}}
  %a = lathe.attention %q, %k, %k {heads = 4 : i64, kv_heads = 2 : i64} : tensor<4x10xf32>, tensor<4x10xf32>, tensor<4x10xf32> -> tensor<4x10xf32>
  return
}

// -----

func.func @attention_kv_width(%q: tensor<4x8xf32>, %k: tensor<4x8xf32>) {
  // With head_dim 2 and 2 K/V heads, K is 4 wide.
  // expected-error @+1 {{key width must be kv_heads * head_dim = 4, got 8}}
  %a = lathe.attention %q, %k, %k {heads = 4 : i64, kv_heads = 2 : i64} : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @attention_seq(%q: tensor<4x8xf32>, %k: tensor<5x4xf32>) {
  // expected-error @+1 {{query and key must have the same sequence length}}
  %a = lathe.attention %q, %k, %k {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<5x4xf32>, tensor<5x4xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @mlp_down(%x: tensor<4x8xf32>, %w: tensor<12x8xf32>, %d: tensor<8x10xf32>) {
  // The down projection maps the MLP width back to D.
  // expected-error @+1 {{down weight must be [8, 12]}}
  %y = lathe.mlp swiglu %x gate %w up %w down %d : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<12x8xf32>, tensor<8x10xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @mlp_gate(%x: tensor<4x8xf32>, %w: tensor<12x6xf32>, %d: tensor<8x12xf32>) {
  // expected-error @+1 {{up weight must be [width, 8]}}
  %y = lathe.mlp swiglu %x gate %w up %w down %d : (tensor<4x8xf32>, tensor<12x6xf32>, tensor<12x6xf32>, tensor<8x12xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @mlp_no_gate(%x: tensor<4x8xf32>, %w: tensor<12x8xf32>, %d: tensor<8x12xf32>) {
  // SwiGLU is gated: it cannot run without its gate weight.
  // expected-error @+1 {{swiglu needs a gate weight}}
  %y = lathe.mlp swiglu %x up %w down %d : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @mlp_stray_gate(%x: tensor<4x8xf32>, %w: tensor<12x8xf32>, %d: tensor<8x12xf32>) {
  // A gate weight on an ungated MLP would be silently ignored.
  // expected-error @+1 {{gelu has no gate: drop the gate weight}}
  %y = lathe.mlp gelu %x gate %w up %w down %d : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @mlp_bias(%x: tensor<4x8xf32>, %w: tensor<12x8xf32>, %b: tensor<8xf32>, %d: tensor<8x12xf32>) {
  // The up bias has the MLP width.
  // expected-error @+1 {{up bias must have 12 elements}}
  %y = lathe.mlp gelu %x up %w bias %b down %d : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<8xf32>, tensor<8x12xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @mlp_saved_count(%x: tensor<4x8xf32>, %w: tensor<12x8xf32>, %d: tensor<8x12xf32>) {
  // A gated MLP saves gate, up and activation, or nothing.
  // expected-error @+1 {{saves 2 hidden values; swiglu saves 3 or none}}
  %y:3 = lathe.mlp swiglu %x gate %w up %w down %d : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> (tensor<4x8xf32>, tensor<4x12xf32>, tensor<4x12xf32>)
  return
}

// -----

func.func @mlp_saved_type(%x: tensor<4x8xf32>, %w: tensor<12x8xf32>, %d: tensor<8x12xf32>) {
  // expected-error @+1 {{saved hidden values must be 'tensor<4x12xf32>', got 'tensor<4x8xf32>'}}
  %y:3 = lathe.mlp gelu %x up %w down %d : (tensor<4x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> (tensor<4x8xf32>, tensor<4x12xf32>, tensor<4x8xf32>)
  return
}

// -----

func.func @linear_bias(%x: tensor<4x8xf32>, %w: tensor<16x8xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{bias must have 16 elements}}
  %y = lathe.linear %x, %w bias %b : tensor<4x8xf32>, tensor<16x8xf32>, tensor<8xf32> -> tensor<4x16xf32>
  return
}

// -----

func.func @layer_norm_bias(%x: tensor<4x8xf32>, %g: tensor<8xf32>, %b: tensor<6xf32>) {
  // expected-error @+1 {{gain and bias must have 8 elements, the normalised axis}}
  %y = lathe.layer_norm %x, %g, %b {eps = 1.0e-5 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<6xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @add_types(%a: tensor<4x8xf32>, %b: tensor<4x6xf32>) {
  // expected-error @+1 {{requires the same type for all operands and results}}
  %y = "lathe.add"(%a, %b) : (tensor<4x8xf32>, tensor<4x6xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @launch_unknown(%x: tensor<4xf32>) {
  // expected-error @+1 {{refers to unknown kernel @nowhere}}
  %y = lathe.launch @nowhere(%x) : (tensor<4xf32>) -> tensor<4xf32>
  return
}

// -----

func.func private @plain(%x: tensor<4xf32>, %o: tensor<4xf32>) -> tensor<4xf32>
func.func @launch_not_kernel(%x: tensor<4xf32>) {
  // Only functions formed as kernels can be launched.
  // expected-error @+1 {{@plain is not a lathe.kernel}}
  %y = lathe.launch @plain(%x) : (tensor<4xf32>) -> tensor<4xf32>
  return
}

// -----

func.func private @k(%x: tensor<4xf32>) -> tensor<4xf32> attributes {lathe.kernel}
func.func @launch_arity(%x: tensor<4xf32>) {
  // The kernel must take a buffer for each result.
  // expected-error @+1 {{does not take 1 operands plus one buffer per result}}
  %y = lathe.launch @k(%x) : (tensor<4xf32>) -> tensor<4xf32>
  return
}

// -----

func.func @cache_unknown() -> tensor<8x4xf32> {
  // expected-error @+1 {{refers to unknown cache @nope}}
  %c = lathe.cache_read @nope : tensor<8x4xf32>
  return %c : tensor<8x4xf32>
}

// -----

// A cache has at least one axis (a KV cache's positions, a parameter's).
// expected-error @+1 {{expects a static tensor of rank >= 1, got 'tensor<f32>'}}
lathe.cache @c : tensor<f32>

// -----

lathe.cache @c : tensor<8x4xf32>
func.func @cache_write_width(%r: tensor<1x6xf32>) {
  %c = lathe.cache_read @c : tensor<8x4xf32>
  // expected-error @+1 {{rows are 6 wide but the cache is 4}}
  %n = lathe.cache_write %c, %r : tensor<8x4xf32>, tensor<1x6xf32> -> tensor<8x4xf32>
  return
}

// -----

func.func @cache_write_not_cache(%c: tensor<8x4xf32>, %r: tensor<1x4xf32>) {
  // An in-place write needs storage that the runtime owns.
  // expected-error @+1 {{its cache operand must come from lathe.cache_read or lathe.cache_write}}
  %n = lathe.cache_write %c, %r : tensor<8x4xf32>, tensor<1x4xf32> -> tensor<8x4xf32>
  return
}

// -----

lathe.cache @c : tensor<8x4xf32>
func.func @cache_write_rows(%r: tensor<9x4xf32>) {
  %c = lathe.cache_read @c : tensor<8x4xf32>
  // expected-error @+1 {{writes 9 rows into a cache of 8}}
  %n = lathe.cache_write %c, %r : tensor<8x4xf32>, tensor<9x4xf32> -> tensor<8x4xf32>
  return
}

// -----

func.func @offset_shape(%x: tensor<1x8xf32>, %p: tensor<2xi32>) {
  // A position is one number.
  // expected-error @+1 {{expects the offset as tensor<1xi32>}}
  %y = lathe.rope %x at %p {heads = 2 : i64, base = 10000.0 : f64} : tensor<1x8xf32>, tensor<2xi32> -> tensor<1x8xf32>
  return
}

// -----

func.func @attention_more_queries(%q: tensor<9x8xf32>, %k: tensor<8x4xf32>, %p: tensor<1xi32>) {
  // expected-error @+1 {{has more query rows than key rows}}
  %a = lathe.attention %q, %k, %k at %p {heads = 2 : i64, kv_heads = 1 : i64} : tensor<9x8xf32>, tensor<8x4xf32>, tensor<8x4xf32>, tensor<1xi32> -> tensor<9x8xf32>
  return
}

// -----

func.func private @k(%x: tensor<4xf32>, %o: tensor<4xf32>) -> tensor<4xf32> attributes {lathe.kernel}
func.func @launch_tied(%x: tensor<4xf32>) {
  // expected-error @+1 {{result 0 is tied to an invalid operand 3}}
  %y = lathe.launch @k(%x) {tied = array<i64: 3>} : (tensor<4xf32>) -> tensor<4xf32>
  return
}

// -----

func.func @accumulate_type(%x: tensor<4x8xf32>, %w: tensor<16x8xf32>) {
  // The residual must have the result's shape.
  // expected-error @+1 {{the residual has the result's type}}
  %y = "lathe.linear"(%x, %w, %x) {operandSegmentSizes = array<i32: 1, 1, 0, 1>} : (tensor<4x8xf32>, tensor<16x8xf32>, tensor<4x8xf32>) -> tensor<4x16xf32>
  return
}

// -----

func.func @fused_attention_mixed(%q: tensor<4x8xf32>, %k: tensor<4x4xf32>, %o: memref<4x8xf32>) {
  // Before bufferization everything is a tensor, after it everything a buffer.
  // expected-error @+1 {{operands must be all tensors or all memrefs}}
  lathe.fused_attention %q, %k, %k into %o {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, memref<4x8xf32>
  return
}

// -----

func.func @fused_attention_init(%q: tensor<4x8xf32>, %k: tensor<4x4xf32>, %e: tensor<4x4xf32>) {
  // The output has the query's shape.
  // expected-error @+1 {{init must have the query's shape and element type}}
  %a = lathe.fused_attention %q, %k, %k into %e {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x4xf32> -> tensor<4x4xf32>
  return
}

// -----

func.func @fused_attention_no_result(%q: tensor<4x8xf32>, %k: tensor<4x4xf32>, %e: tensor<4x8xf32>) {
  // On tensors the op returns the updated init.
  // expected-error @+1 {{expects 1 results with tensor operands, got 0}}
  lathe.fused_attention %q, %k, %k into %e {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x8xf32>
  return
}

// -----

func.func @fused_attention_heads(%q: memref<4x8xf32>, %k: memref<4x6xf32>, %o: memref<4x8xf32>) {
  // The shared checks of lathe.attention apply to the kernel form too.
  // expected-error @+1 {{key width must be kv_heads * head_dim = 4, got 6}}
  lathe.fused_attention %q, %k, %k into %o {heads = 2 : i64, kv_heads = 1 : i64} : memref<4x8xf32>, memref<4x6xf32>, memref<4x6xf32>, memref<4x8xf32>
  return
}

// -----

func.func @fused_attention_offset(%q: memref<1x8xf32>, %k: memref<4x4xf32>, %p: memref<1xi64>, %o: memref<1x8xf32>) {
  // expected-error @+1 {{memref<1xi32> once bufferized), got 'memref<1xi64>'}}
  lathe.fused_attention %q, %k, %k at %p into %o {heads = 2 : i64, kv_heads = 1 : i64} : memref<1x8xf32>, memref<4x4xf32>, memref<4x4xf32>, memref<1x8xf32>, memref<1xi64>
  return
}

// -----

func.func @fused_attention_grad_stats(%q: memref<4x8xf32>, %k: memref<4x4xf32>, %s: memref<4x4xf32>) {
  // The workspace holds shift, normaliser and rs per row and head.
  // expected-error @+1 {{stats_init must be f32 [4, 6] (rows, 3 * heads), got 'memref<4x4xf32>'}}
  lathe.fused_attention_grad %q, %k, %k, %q, %q into %q, %k, %k, %s {heads = 2 : i64, kv_heads = 1 : i64} : memref<4x8xf32>, memref<4x4xf32>, memref<4x4xf32>, memref<4x8xf32>, memref<4x8xf32>, memref<4x8xf32>, memref<4x4xf32>, memref<4x4xf32>, memref<4x4xf32>
  return
}

// -----

func.func @fused_attention_grad_init(%q: memref<4x8xf32>, %k: memref<4x4xf32>, %s: memref<4x6xf32>) {
  // expected-error @+1 {{key_grad_init must have the type of the key ('memref<4x4xf32>'), got 'memref<4x8xf32>'}}
  lathe.fused_attention_grad %q, %k, %k, %q, %q into %q, %q, %k, %s {heads = 2 : i64, kv_heads = 1 : i64} : memref<4x8xf32>, memref<4x4xf32>, memref<4x4xf32>, memref<4x8xf32>, memref<4x8xf32>, memref<4x8xf32>, memref<4x8xf32>, memref<4x4xf32>, memref<4x6xf32>
  return
}

// -----

func.func @fused_attention_grad_results(%q: tensor<4x8xf32>, %k: tensor<4x4xf32>, %s: tensor<4x6xf32>) {
  // expected-error @+1 {{expects 4 results with tensor operands, got 3}}
  %g:3 = lathe.fused_attention_grad %q, %k, %k, %q, %q into %q, %k, %k, %s {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x6xf32> -> tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>
  return
}

// -----

func.func @fused_attention_grad_mixed(%q: tensor<4x8xf32>, %k: tensor<4x4xf32>, %s: memref<4x6xf32>) {
  // expected-error @+1 {{operands must be all tensors or all memrefs}}
  lathe.fused_attention_grad %q, %k, %k, %q, %q into %q, %k, %k, %s {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, memref<4x6xf32>
  return
}

// -----

// A constant init needs its value, and only a constant init takes one.
// expected-error @+1 {{with init 'constant' needs a value}}
lathe.param @c : tensor<4xf32> init(constant)

// -----

// expected-error @+1 {{takes a value only with init 'constant'}}
lathe.param @c : tensor<4xf32> init(zeros = 1.0)

// -----

func.func @phase_norm(%x: tensor<4x10xf32>, %g: tensor<10xf32>) {
  // Stripes must tile the row.
  // expected-error @+1 {{phases (3) must be positive and divide the width (10)}}
  %y = lathe.rms_norm %x, %g {eps = 1.0e-6 : f64, phases = 3 : i64} : tensor<4x10xf32>, tensor<10xf32> -> tensor<4x10xf32>
  return
}

// -----

func.func @rotate_odd_stripe(%x: tensor<4x9xf32>, %t: tensor<1xf32>) {
  // Channels turn in pairs inside a stripe.
  // expected-error @+1 {{stripe width D / phases = 3 must be even: channels rotate in pairs}}
  %y = lathe.phase_rotate %x, %t {phases = 3 : i64} : tensor<4x9xf32>, tensor<1xf32> -> tensor<4x9xf32>
  return
}

// -----

func.func @rotate_theta(%x: tensor<4x12xf32>, %t: tensor<4xf32>) {
  // One angle per pair of a stripe, shared by the stripes.
  // expected-error @+1 {{theta must have D / (2 phases) = 2 angles, got 4}}
  %y = lathe.phase_rotate %x, %t {phases = 3 : i64} : tensor<4x12xf32>, tensor<4xf32> -> tensor<4x12xf32>
  return
}

// -----

func.func @phase_gqa(%q: tensor<4x96xf32>, %k: tensor<4x32xf32>) {
  // Phase-aligned GQA: every head inside one stripe.
  // expected-error @+1 {{phases (3) must divide heads (6) and kv_heads (2) so that every head lies in one phase stripe}}
  %a = lathe.attention %q, %k, %k {heads = 6 : i64, kv_heads = 2 : i64, phases = 3 : i64} : tensor<4x96xf32>, tensor<4x32xf32>, tensor<4x32xf32> -> tensor<4x96xf32>
  return
}

// -----

func.func @dc_offset(%x: tensor<4x8xf32>, %p: tensor<2xi32>) {
  // expected-error @+1 {{expects the offset as tensor<1xi32>}}
  %y = lathe.dc_inject %x at %p : tensor<4x8xf32>, tensor<2xi32> -> tensor<4x8xf32>
  return
}

// -----

func.func @depth_no_sources(%w: tensor<8xf32>) {
  // expected-error @+1 {{needs at least one source}}
  %x = "lathe.depth_attention"(%w, %w) <{eps = 1.0e-6 : f64, operandSegmentSizes = array<i32: 0, 0, 1, 1, 0, 0, 0>}> : (tensor<8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @depth_mixed(%a: tensor<4x8xf32>, %b: tensor<2x8xf32>, %w: tensor<8xf32>) {
  // Every source is one [T, D] vector per token.
  // expected-error @+1 {{sources must all have type 'tensor<4x8xf32>', got 'tensor<2x8xf32>'}}
  %x = lathe.depth_attention (%a, %b) query %w gain %w {eps = 1.0e-6 : f64} : (tensor<4x8xf32>, tensor<2x8xf32>), tensor<8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @depth_query(%a: tensor<4x8xf32>, %w: tensor<6xf32>, %g: tensor<8xf32>) {
  // expected-error @+1 {{query has 6 elements but the sources are 8 wide}}
  %x = lathe.depth_attention (%a) query %w gain %g {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), tensor<6xf32>, tensor<8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @depth_base(%a: tensor<4x8xf32>, %w: tensor<8xf32>, %h: tensor<4x4xf32>) {
  // expected-error @+1 {{base must have the sources' type}}
  %x = lathe.depth_attention (%a) query %w gain %w base %h {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>, tensor<4x4xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @depth_eps(%a: tensor<4x8xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{expects eps > 0}}
  %x = lathe.depth_attention (%a) query %w gain %w {eps = 0.0 : f64} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  return
}

// -----

// Identity init is for square matrices.
// expected-error @+1 {{with init 'identity' needs a square matrix, got 'tensor<4x8xf32>'}}
lathe.param @b : tensor<4x8xf32> init(identity)

// -----

func.func @inject_width(%be: tensor<4x8xf32>, %a: tensor<6xf32>) {
  // expected-error @+1 {{A_log has 6 elements but the state is 8 wide}}
  %u = lathe.parcae_inject %be, %a, %a : tensor<4x8xf32>, tensor<6xf32>, tensor<6xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @inject_state(%be: tensor<4x8xf32>, %a: tensor<8xf32>, %h: tensor<2x8xf32>) {
  // expected-error @+1 {{state must have be's type}}
  %u = lathe.parcae_inject %be, %a, %a state %h : tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<2x8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @sinusoid_odd() {
  // Features come in cos/sin halves.
  // expected-error @+1 {{expects one row of an even, nonzero number of features, got 'tensor<1x7xf32>'}}
  %phi = lathe.sinusoid {value = 0.5 : f64} : tensor<1x7xf32>
  return
}

// -----

func.func @modulated_rows(%x: tensor<4x8xf32>, %s: tensor<2x8xf32>) {
  // One modulation row serves every token.
  // expected-error @+1 {{scale must be one row of 8 values, got 'tensor<2x8xf32>'}}
  %n = lathe.modulated_rms_norm %x, %s {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<2x8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @gate_width(%x: tensor<4x8xf32>, %g: tensor<1x4xf32>) {
  // expected-error @+1 {{gate must be one row of 8 values, got 'tensor<1x4xf32>'}}
  %z = lathe.gated_add %x, %x, %g : tensor<4x8xf32>, tensor<1x4xf32>
  return
}

// -----

func.func @depth_norms(%a: tensor<4x8xf32>, %w: tensor<8xf32>, %n: tensor<4xf32>) {
  // One sum of squares per source.
  // expected-error @+1 {{has 2 norms for 1 sources}}
  %x = lathe.depth_attention (%a) norms (%n, %n) query %w gain %w {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), (tensor<4xf32>, tensor<4xf32>), tensor<8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @row_sum_squares(%a: tensor<4x8xf32>) {
  // expected-error @+1 {{has one result per row of its input}}
  %n = lathe.row_sum_squares %a : tensor<4x8xf32> -> tensor<8xf32>
  return
}

// -----

func.func @ce_targets(%y: tensor<4x16xf32>, %t: tensor<3xi32>) {
  // expected-error @+1 {{has 3 targets for 4 rows of logits}}
  %l = lathe.cross_entropy %y, %t : tensor<4x16xf32>, tensor<3xi32> -> tensor<1xf32>
  return
}

// -----

func.func @ce_loss(%y: tensor<4x16xf32>, %t: tensor<4xi32>) {
  // expected-error @+1 {{expects the loss to be a tensor<1xf32>, got 'tensor<2xf32>'}}
  %l = lathe.cross_entropy %y, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<2xf32>
  return
}

// -----

func.func @matmul_contract(%a: tensor<4x16xf32>, %b: tensor<8x8xf32>) {
  // expected-error @+1 {{contracts 16 columns of lhs with 8 rows of rhs}}
  %c = lathe.matmul %a, %b : tensor<4x16xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @matmul_accumulate(%a: tensor<4x16xf32>, %b: tensor<16x8xf32>, %s: tensor<4x4xf32>) {
  // expected-error @+1 {{failed to verify that accumulate has the result's type}}
  %c = "lathe.matmul"(%a, %b, %s) : (tensor<4x16xf32>, tensor<16x8xf32>, tensor<4x4xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @rms_norm_grad_gain(%x: tensor<4x8xf32>, %g: tensor<8xf32>, %h: tensor<4xf32>) {
  // expected-error @+1 {{gain_grad must have the type of the gain ('tensor<8xf32>'), got 'tensor<4xf32>'}}
  %dx, %dg = lathe.rms_norm_grad %x, %g, %x {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<4xf32>
  return
}

// -----

func.func @attention_grad_output(%q: tensor<4x8xf32>, %k: tensor<4x4xf32>) {
  // The forward's output has the query's shape.
  // expected-error @+1 {{failed to verify that output has the query's type}}
  %dq, %dk, %dv = "lathe.attention_grad"(%q, %k, %k, %q, %k) <{heads = 2 : i64, kv_heads = 1 : i64}> : (tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x8xf32>, tensor<4x4xf32>) -> (tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>)
  return
}

// -----

func.func @attention_grad_key(%q: tensor<4x8xf32>, %k: tensor<4x4xf32>, %w: tensor<4x8xf32>) {
  // expected-error @+1 {{key_grad must have the type of the key ('tensor<4x4xf32>'), got 'tensor<4x8xf32>'}}
  %dq, %dk, %dv = lathe.attention_grad %q, %k, %k, %q {heads = 2 : i64, kv_heads = 1 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x4xf32>
  return
}

// -----

func.func @swiglu_grad_type(%g: tensor<4x8xf32>, %u: tensor<4x4xf32>) {
  // expected-error @+1 {{up must have the type of the gate ('tensor<4x8xf32>'), got 'tensor<4x4xf32>'}}
  %a, %b = lathe.swiglu_grad %g, %u, %g : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<4x8xf32>
  return
}

// -----

func.func @embedding_grad_rows(%t: tensor<4xi32>, %d: tensor<3x8xf32>) {
  // expected-error @+1 {{has 3 gradient rows for 4 tokens}}
  %e = lathe.embedding_grad %t, %d : tensor<4xi32>, tensor<3x8xf32> -> tensor<16x8xf32>
  return
}

// -----

func.func @sum_rows_width(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{result must have 8 elements, one per column, got 'tensor<4xf32>'}}
  %s = lathe.sum_rows %x : tensor<4x8xf32> -> tensor<4xf32>
  return
}

// -----

func.func @pad_rows_shrink(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{the width must match and rows only grow}}
  %p = lathe.pad_rows %x : tensor<4x8xf32> -> tensor<2x8xf32>
  return
}

// -----

func.func @activation_gated(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{is GELU or ReLU²; SwiGLU's gating is lathe.swiglu}}
  %h = lathe.activation swiglu %x : tensor<4x8xf32>
  return
}

// -----

func.func @assign_target(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{writes in place, so its target must come from lathe.weight or lathe.cache_read}}
  %y = lathe.assign %x, %x : tensor<4x8xf32>
  return
}

// -----

func.func @global_norm_scale(%x: tensor<4x8xf32>, %s: tensor<2xf32>) {
  // expected-error @+1 {{expects scale to be a tensor<1xf32>, got 'tensor<2xf32>'}}
  %n, %f = lathe.global_norm (%x) scale %s {max_norm = 1.0 : f64} : (tensor<4x8xf32>), tensor<2xf32> -> tensor<1xf32>, tensor<1xf32>
  return
}

// -----

lathe.param @"w" : tensor<4x8xf32> init(zeros)
func.func @adamw_beta(%s: tensor<1xf32>) {
  %w = lathe.weight @"w" : tensor<4x8xf32>
  // expected-error @+1 {{expects betas in [0, 1)}}
  %p, %m, %v = lathe.adamw %w, %w, %w, %w lr %s step %s scale %s factor %s {beta1 = 1.0 : f64, beta2 = 0.95 : f64, eps = 1.0e-08 : f64, weight_decay = 0.1 : f64} : tensor<4x8xf32>, tensor<1xf32>
  return
}

// -----

func.func @theta_grad_pairs(%y: tensor<4x96xf32>) {
  // expected-error @+1 {{has one angle per pair of a stripe, 16, not 8}}
  %dt = lathe.phase_rotate_theta_grad %y, %y {phases = 3 : i64} : tensor<4x96xf32>, tensor<4x96xf32> -> tensor<8xf32>
  return
}

// -----

func.func @parcae_grad_channels(%be: tensor<4x8xf32>, %a: tensor<6xf32>) {
  // expected-error @+1 {{a_log has 6 channels but be is 8 wide}}
  %dbe, %da, %ddt, %dh = lathe.parcae_inject_grad %be, %a, %a grad %be : tensor<4x8xf32>, tensor<6xf32>, tensor<6xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<6xf32>, tensor<6xf32>, tensor<4x8xf32>
  return
}

// -----

func.func @gated_add_grad_row(%x: tensor<4x8xf32>, %g: tensor<2x8xf32>) {
  // expected-error @+1 {{needs one row of 8 values, got 'tensor<2x8xf32>'}}
  %dy, %dg = lathe.gated_add_grad %x, %g, %x : tensor<4x8xf32>, tensor<2x8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<2x8xf32>
  return
}

// -----

// expected-error @+1 {{with init 'uniform' needs a finite bound value > 0}}
lathe.param @u : tensor<4xf32> init(uniform = -1.0)

// -----

func.func @gate_rank(%u: tensor<4x8xf32>, %down: tensor<2x8xf32>, %up: tensor<8x3xf32>, %v: tensor<8xf32>) {
  // expected-error @+1 {{w_up must be [8, 2] to undo w_down's [2, 8], got 'tensor<8x3xf32>'}}
  %h = lathe.selective_gate %u, %u, %down, %up, %v, %v : tensor<4x8xf32>, tensor<2x8xf32>, tensor<8x3xf32>, tensor<8xf32>
  return
}

// -----

func.func @gate_down(%u: tensor<4x8xf32>, %down: tensor<2x6xf32>, %up: tensor<8x2xf32>, %v: tensor<8xf32>) {
  // expected-error @+1 {{w_down must be [r, 8], got 'tensor<2x6xf32>'}}
  %h = lathe.selective_gate %u, %u, %down, %up, %v, %v : tensor<4x8xf32>, tensor<2x6xf32>, tensor<8x2xf32>, tensor<8xf32>
  return
}

// -----

func.func @gate_bias(%u: tensor<4x8xf32>, %down: tensor<2x8xf32>, %up: tensor<8x2xf32>, %v: tensor<6xf32>) {
  // expected-error @+1 {{bias has 6 elements but the state is 8 wide}}
  %h = lathe.selective_gate %u, %u, %down, %up, %v, %v : tensor<4x8xf32>, tensor<2x8xf32>, tensor<8x2xf32>, tensor<6xf32>
  return
}

// -----

func.func @confidence_wq(%u: tensor<4x8xf32>, %v: tensor<8xf32>, %wq: tensor<2x8xf32>, %bq: tensor<1xf32>) {
  // expected-error @+1 {{w_q must be [1, 8], got 'tensor<2x8xf32>'}}
  %q = lathe.halt_confidence %u, %u, %v, %v, %wq, %bq {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<2x8xf32>, tensor<1xf32>
  return
}

// -----

func.func @confidence_length(%u: tensor<4x8xf32>, %v: tensor<8xf32>, %wq: tensor<1x8xf32>, %bq: tensor<1xf32>, %n: tensor<2xi32>) {
  // expected-error @+1 {{expects length as one i32, got 'tensor<2xi32>'}}
  %q = lathe.halt_confidence %u, %u, %v, %v, %wq, %bq length %n {eps = 1.0e-05 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<1x8xf32>, tensor<1xf32> length tensor<2xi32>
  return
}

// -----

func.func @halt_pair(%q: tensor<1xf32>, %h: tensor<4x8xf32>, %s: tensor<2xf32>) {
  // expected-error @+1 {{takes status and kept together}}
  %s1, %k1 = lathe.halt_if %q, %h, %h status %s mode(cdf) {threshold = 0.5 : f64, tolerance = 0.01 : f64} : tensor<1xf32>, tensor<4x8xf32> status tensor<2xf32> -> tensor<2xf32>
  return
}

// -----

func.func @halt_threshold(%q: tensor<1xf32>, %h: tensor<4x8xf32>) {
  // expected-error @+1 {{expects a threshold in (0, 1), got 1.5}}
  %s1, %k1 = lathe.halt_if %q, %h, %h mode(threshold) {threshold = 1.5 : f64, tolerance = 0.01 : f64} : tensor<1xf32>, tensor<4x8xf32> -> tensor<2xf32>
  return
}

// -----

func.func @halt_status(%q: tensor<1xf32>, %h: tensor<4x8xf32>) {
  // expected-error @+1 {{status must be 'tensor<2xf32>', got 'tensor<3xf32>'}}
  %s1, %k1 = lathe.halt_if %q, %h, %h mode(none) {threshold = 0.5 : f64, tolerance = 0.01 : f64} : tensor<1xf32>, tensor<4x8xf32> -> tensor<3xf32>
  return
}

// -----

func.func @route_gate_no_base(%h: tensor<4x8xf32>, %w: tensor<8xf32>, %a: tensor<1xf32>) {
  // expected-error @+1 {{takes a gate only with a base}}
  %x = lathe.depth_attention (%h) query %w gain %w gate %a {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32> gate tensor<1xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @route_gate_shape(%h: tensor<4x8xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{gate must be one scalar (tensor<1xf32>) or one value per token and channel ('tensor<4x8xf32>'), got 'tensor<8xf32>'}}
  %x = lathe.depth_attention (%h) query %w gain %w base %h gate %w {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32> gate tensor<8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @route_null_width(%h: tensor<4x8xf32>, %w: tensor<8xf32>, %n: tensor<6xf32>) {
  // expected-error @+1 {{null has 6 elements but the sources are 8 wide}}
  %x = lathe.depth_attention (%h) query %w gain %w base %h null %n {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32> null tensor<6xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @route_activation(%h: tensor<4x8xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{has a gate activation but no gate}}
  %x = lathe.depth_attention (%h) query %w gain %w base %h {eps = 1.0e-6 : f64, gate_activation = 1 : i32} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @muon_vector(%w: tensor<8xf32>, %s: tensor<1xf32>) {
  // expected-error @+1 {{expects param of rank 2, got 'tensor<8xf32>'}}
  %p, %b = lathe.muon %w, %w, %w lr %s scale %s factor %s {lr_scale = 20.0 : f64, momentum = 0.95 : f64, weight_decay = 0.1 : f64} : tensor<8xf32>, tensor<1xf32>
  return
}

// -----

func.func @muon_momentum(%w: tensor<4x8xf32>, %s: tensor<1xf32>) {
  // expected-error @+1 {{expects a momentum in [0, 1)}}
  %p, %b = lathe.muon %w, %w, %w lr %s scale %s factor %s {lr_scale = 20.0 : f64, momentum = 1.0 : f64, weight_decay = 0.1 : f64} : tensor<4x8xf32>, tensor<1xf32>
  return
}

// -----

func.func @entropy_result(%a: tensor<4x8xf32>, %w: tensor<8xf32>) {
  // The mean over tokens: one value.
  // expected-error @+1 {{result must be tensor<1xf32>, got 'tensor<4xf32>'}}
  %h = lathe.routing_entropy (%a) query %w gain %w {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32> -> tensor<4xf32>
  return
}

// -----

func.func @entropy_width(%a: tensor<4x8xf32>, %w: tensor<6xf32>, %g: tensor<8xf32>) {
  // expected-error @+1 {{query has 6 elements but the sources are 8 wide}}
  %h = lathe.routing_entropy (%a) query %w gain %g {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), tensor<6xf32>, tensor<8xf32> -> tensor<1xf32>
  return
}

// -----

func.func @routing_grad_nothing(%a: tensor<4x8xf32>, %w: tensor<8xf32>) {
  // A VJP with no cotangent at all has nothing to propagate.
  // expected-error @+1 {{needs a cotangent, an entropy cotangent or both}}
  %da, %dw, %dg = lathe.depth_attention_grad (%a) query %w gain %w {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32> -> (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>
  return
}

// -----

func.func @routing_grad_count(%a: tensor<4x8xf32>, %w: tensor<8xf32>, %dy: tensor<4x8xf32>) {
  // One gradient per source.
  // expected-error @+1 {{has 2 sources gradients for 1 sources}}
  %da:2, %dw, %dg = lathe.depth_attention_grad (%a) query %w gain %w cotangent %dy {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32> cotangent tensor<4x8xf32> -> (tensor<4x8xf32>, tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>
  return
}

// -----

func.func @routing_grad_null(%a: tensor<4x8xf32>, %w: tensor<8xf32>, %dy: tensor<4x8xf32>) {
  // expected-error @+1 {{has a null gradient exactly when it has a null}}
  %da, %dw, %dg, %dn = lathe.depth_attention_grad (%a) query %w gain %w cotangent %dy {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32> cotangent tensor<4x8xf32> -> (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32> null tensor<8xf32>
  return
}

// -----

func.func @routing_grad_gate(%a: tensor<4x8xf32>, %w: tensor<8xf32>, %s: tensor<1xf32>) {
  // The gate scales the routed term, whose cotangent is then needed.
  // expected-error @+1 {{takes a gate only with a cotangent of the routed term}}
  %da, %dw, %dg, %ds = lathe.depth_attention_grad (%a) query %w gain %w gate %s entropy %s {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32> gate tensor<1xf32> entropy tensor<1xf32> -> (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32> gate tensor<1xf32>
  return
}

// -----

func.func @routing_grad_cotangent(%a: tensor<4x8xf32>, %w: tensor<8xf32>, %dy: tensor<4x4xf32>) {
  // expected-error @+1 {{cotangent must have the sources' type 'tensor<4x8xf32>'}}
  %da, %dw, %dg = lathe.depth_attention_grad (%a) query %w gain %w cotangent %dy {eps = 1.0e-6 : f64} : (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32> cotangent tensor<4x4xf32> -> (tensor<4x8xf32>), tensor<8xf32>, tensor<8xf32>
  return
}

// -----

func.func @row_sum_squares_grad_rows(%x: tensor<4x8xf32>, %dn: tensor<3xf32>) {
  // expected-error @+1 {{takes one cotangent per row of its input}}
  %dx = lathe.row_sum_squares_grad %x, %dn : tensor<4x8xf32>, tensor<3xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @stop_gradient_count_attrs(%x: tensor<4x8xf32>, %n: tensor<1xi32>) {
  // Where the count stops the gradient depends on backprop.
  // expected-error @+1 {{with a count needs backprop >= 1}}
  %s = lathe.stop_gradient %x count %n {iteration = 1 : i64} : tensor<4x8xf32>, tensor<1xi32>
  return
}

// -----

func.func @stop_gradient_no_count(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{takes iteration and backprop only with a count}}
  %s = lathe.stop_gradient %x {iteration = 1 : i64} : tensor<4x8xf32>
  return
}

// -----

func.func @loop_select_count(%n: tensor<2xi32>, %x: tensor<4x8xf32>) {
  // expected-error @+1 {{count must be tensor<1xi32>, got 'tensor<2xi32>'}}
  %s = lathe.loop_select %n, %x, %x {iteration = 1 : i64} : tensor<2xi32>, tensor<4x8xf32>
  return
}

// -----

func.func @loop_select_iteration(%n: tensor<1xi32>, %x: tensor<4x8xf32>) {
  // expected-error @+1 {{iteration must be >= 0, got -1}}
  %s = lathe.loop_select %n, %x, %x {iteration = -1 : i64} : tensor<1xi32>, tensor<4x8xf32>
  return
}

// -----

func.func @iteration_mask_backprop(%n: tensor<1xi32>, %x: tensor<4x8xf32>) {
  // expected-error @+1 {{unfrozen needs backprop >= 1}}
  %m = lathe.iteration_mask %x, %n unfrozen {iteration = 1 : i64} : tensor<4x8xf32>, tensor<1xi32>
  return
}

// -----

func.func @iteration_mask_extra(%n: tensor<1xi32>, %x: tensor<4x8xf32>) {
  // expected-error @+1 {{takes backprop only with the unfrozen mask}}
  %m = lathe.iteration_mask %x, %n active {backprop = 2 : i64, iteration = 1 : i64} : tensor<4x8xf32>, tensor<1xi32>
  return
}

// -----

func.func @sinusoid_index(%t: tensor<6xf32>) {
  // expected-error @+1 {{index 6 is outside the 6-element table}}
  %phi = lathe.sinusoid %t : tensor<6xf32> -> {index = 6 : i64} : tensor<1x16xf32>
  return
}

// -----

func.func @sinusoid_both(%t: tensor<6xf32>) {
  // expected-error @+1 {{with a table takes an index, not a value}}
  %phi = lathe.sinusoid %t : tensor<6xf32> -> {index = 1 : i64, value = 0.5 : f64} : tensor<1x16xf32>
  return
}

// -----

func.func @sinusoid_neither() {
  // expected-error @+1 {{takes a value, or a table and an index}}
  %phi = lathe.sinusoid : tensor<1x16xf32>
  return
}

// -----

func.func @mse_result(%a: tensor<4x8xf32>) {
  // expected-error @+1 {{result must be tensor<1xf32>, got 'tensor<4xf32>'}}
  %m = lathe.mean_squared_error %a, %a : tensor<4x8xf32> -> tensor<4xf32>
  return
}

// -----

func.func @accuracy_rows(%logits: tensor<4x16xf32>, %t: tensor<3xi32>) {
  // expected-error @+1 {{has 3 targets for 4 rows of logits}}
  %acc = lathe.token_accuracy %logits, %t : tensor<4x16xf32>, tensor<3xi32> -> tensor<1xf32>
  return
}

// -----

func.func @bce_logits(%z: tensor<4x2xf32>, %a: tensor<1xf32>) {
  // expected-error @+1 {{expects one logit per row ([T, 1]), got 'tensor<4x2xf32>'}}
  %l = lathe.binary_cross_entropy %z, %a : tensor<4x2xf32>, tensor<1xf32> -> tensor<1xf32>
  return
}

// -----

func.func @bce_target(%z: tensor<4x1xf32>, %a: tensor<2xf32>) {
  // expected-error @+1 {{expects the target to be a tensor<1xf32>, got 'tensor<2xf32>'}}
  %l = lathe.binary_cross_entropy %z, %a : tensor<4x1xf32>, tensor<2xf32> -> tensor<1xf32>
  return
}

// -----

func.func @gate_grad_channels(%pre: tensor<4x8xf32>, %a: tensor<6xf32>) {
  // expected-error @+1 {{a_log has 6 elements but the state is 8 wide}}
  %dpre, %da, %direct = lathe.selective_gate_grad %pre, %a, %pre, %pre : tensor<4x8xf32>, tensor<6xf32>
  return
}

// -----

// A GEMM that would read past its operand: B^T is 32 x 16, B has 16 x 16.
func.func @gemm_outside(%x: memref<8x16xf32>, %w: memref<16x16xf32>, %y: memref<8x32xf32>) {
  // expected-error @+1 {{addresses element 511 of b, which has 256}}
  lathe.gemm %x, %w into %y {m = 8 : i64, n = 32 : i64, k = 16 : i64, trans_a = false, trans_b = true, lda = 16 : i64, ldb = 16 : i64, ldd = 32 : i64} : memref<8x16xf32>, memref<16x16xf32>, memref<8x32xf32>
  return
}

// -----

// A leading dimension shorter than a row overlaps the rows.
func.func @gemm_ld(%x: memref<8x16xf32>, %w: memref<32x16xf32>, %y: memref<8x32xf32>) {
  // expected-error @+1 {{has a leading dimension 8 for the 16 columns of a}}
  lathe.gemm %x, %w into %y {m = 8 : i64, n = 32 : i64, k = 16 : i64, trans_a = false, trans_b = true, lda = 8 : i64, ldb = 16 : i64, ldd = 32 : i64} : memref<8x16xf32>, memref<32x16xf32>, memref<8x32xf32>
  return
}

// -----

func.func @gemm_bias(%x: memref<8x16xf32>, %w: memref<32x16xf32>, %y: memref<8x32xf32>, %b: memref<16xf32>) {
  // expected-error @+1 {{needs a bias of n = 32 elements, not 16}}
  lathe.gemm %x, %w into %y bias %b {m = 8 : i64, n = 32 : i64, k = 16 : i64, trans_a = false, trans_b = true, lda = 16 : i64, ldb = 16 : i64, ldd = 32 : i64} : memref<8x16xf32>, memref<32x16xf32>, memref<8x32xf32>, memref<16xf32>
  return
}

// -----

// cuBLASLt keeps ReLU's input only as a bit mask, never as values.
func.func @gemm_relu_aux(%x: memref<8x16xf32>, %w: memref<32x16xf32>, %y: memref<8x32xf32>, %h: memref<8x32xf32>) {
  // expected-error @+1 {{keeps an aux value only before a gelu epilogue}}
  lathe.gemm %x, %w into %y aux %h epilogue(relu) {m = 8 : i64, n = 32 : i64, k = 16 : i64, trans_a = false, trans_b = true, lda = 16 : i64, ldb = 16 : i64, ldd = 32 : i64} : memref<8x16xf32>, memref<32x16xf32>, memref<8x32xf32>, memref<8x32xf32>
  return
}

// -----

// cuBLASLt's GELU aux output needs a leading dimension divisible by 8.
func.func @gemm_aux_ld(%x: memref<8x16xf32>, %w: memref<12x16xf32>, %y: memref<8x12xf32>, %h: memref<8x12xf32>) {
  // expected-error @+1 {{keeps aux with a leading dimension or batch stride not divisible by 8}}
  lathe.gemm %x, %w into %y aux %h epilogue(gelu) {m = 8 : i64, n = 12 : i64, k = 16 : i64, trans_a = false, trans_b = true, lda = 16 : i64, ldb = 16 : i64, ldd = 12 : i64} : memref<8x16xf32>, memref<12x16xf32>, memref<8x12xf32>, memref<8x12xf32>
  return
}

// -----

func.func @gemm_strided(%x: memref<8x16xf32, strided<[32, 1]>>, %w: memref<32x16xf32>, %y: memref<8x32xf32>) {
  // expected-error @+1 {{needs static row-major buffers}}
  lathe.gemm %x, %w into %y {m = 8 : i64, n = 32 : i64, k = 16 : i64, trans_a = false, trans_b = true, lda = 32 : i64, ldb = 16 : i64, ldd = 32 : i64} : memref<8x16xf32, strided<[32, 1]>>, memref<32x16xf32>, memref<8x32xf32>
  return
}

// -----

func.func @attention_window_divides(%q: tensor<8x8xf32>, %k: tensor<8x4xf32>) {
  // Packed sequences tile the rows.
  // expected-error @+1 {{window (3) must be positive and divide the 8 rows}}
  %a = lathe.attention %q, %k, %k {heads = 2 : i64, kv_heads = 1 : i64, window = 3 : i64} : tensor<8x8xf32>, tensor<8x4xf32>, tensor<8x4xf32> -> tensor<8x8xf32>
  return
}

// -----

func.func @rope_window_and_offset(%q: tensor<8x8xf32>, %pos: tensor<1xi32>) {
  // expected-error @+1 {{takes a window or an offset, not both}}
  %r = lathe.rope %q at %pos {heads = 2 : i64, base = 10000.0 : f64, window = 4 : i64} : tensor<8x8xf32>, tensor<1xi32> -> tensor<8x8xf32>
  return
}

// -----

func.func @dc_inject_window_negative(%x: tensor<8x8xf32>) {
  // expected-error @+1 {{window (-4) must be positive and divide the 8 rows}}
  %r = lathe.dc_inject %x {window = -4 : i64} : tensor<8x8xf32> -> tensor<8x8xf32>
  return
}

// -----

func.func @repeat_rows_not_multiple(%x: tensor<3x8xf32>) {
  // expected-error @+1 {{a row count that is a multiple of 3 on the repeated side}}
  %r = lathe.repeat_rows %x : tensor<3x8xf32> -> tensor<8x8xf32>
  return
}

// -----

func.func @fold_rows_width(%x: tensor<8x8xf32>) {
  // expected-error @+1 {{needs the same width}}
  %r = lathe.fold_rows %x : tensor<8x8xf32> -> tensor<4x4xf32>
  return
}

// -----

func.func @scatter_add_rows_width(%t: tensor<4xi32>, %d: tensor<4x8xf32>, %g: tensor<16x4xf32>) {
  // expected-error @+1 {{has 4 rows of width 8 for 4 indices into a table of width 4}}
  %e = lathe.scatter_add_rows %t, %d into %g : tensor<4xi32>, tensor<4x8xf32>, tensor<16x4xf32> -> tensor<16x4xf32>
  return
}

// -----

func.func @embedding_grad_accumulate(%t: tensor<4xi32>, %d: tensor<4x8xf32>, %g: tensor<8x8xf32>) {
  // expected-error @+1 {{accumulate must have the type of the result}}
  %e = lathe.embedding_grad %t, %d into %g : tensor<4xi32>, tensor<4x8xf32>, tensor<8x8xf32> -> tensor<16x8xf32>
  return
}
