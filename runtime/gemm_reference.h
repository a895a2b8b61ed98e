// The GEMM library's semantics on host memory: what the cuda-emulated device
// runs for a Launch.gemm, where the cuda device calls cuBLASLt.
#ifndef LATHE_RUNTIME_GEMM_REFERENCE_H
#define LATHE_RUNTIME_GEMM_REFERENCE_H

#include "artifact_generated.h"

namespace lathe::rt {

// The operands of one call, as the launch's args give them (c, bias and aux
// null where the descriptor has none; c may be d).
struct GemmOperands {
  const float *a = nullptr, *b = nullptr;
  float *d = nullptr;
  const float *c = nullptr, *bias = nullptr;
  float *aux = nullptr;
};

// For each batch: D = epilogue(op(A) op(B) [+ C] [+ bias]), aux = the value
// before the epilogue; the products formed from operands rounded to the
// descriptor's precision (tf32, bf16, f16: round to nearest even, as
// cuBLASLt's fast modes convert), accumulated in f32. GELU is the tanh form,
// as cuBLASLt's.
void referenceGemm(const fb::Gemm &g, const GemmOperands &o);

} // namespace lathe::rt

#endif // LATHE_RUNTIME_GEMM_REFERENCE_H
