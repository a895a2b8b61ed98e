// The reference GEMM: the host BLAS for the product, then the epilogue.
#include "gemm_reference.h"

#include "host_gemm.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

using namespace lathe;
using namespace lathe::rt;

namespace {

// Keeps `bits` of f32's 23 mantissa bits, rounding to nearest even.
float roundMantissa(float x, unsigned bits) {
  if (!std::isfinite(x))
    return x;
  uint32_t u;
  std::memcpy(&u, &x, 4);
  unsigned drop = 23 - bits;
  uint32_t half = (1u << (drop - 1)) - 1;
  u += half + ((u >> drop) & 1u);
  u &= ~((1u << drop) - 1u);
  std::memcpy(&x, &u, 4);
  return x;
}

float toFormat(float x, fb::GemmPrecision p) {
  switch (p) {
  case fb::GemmPrecision::tf32:
    return roundMantissa(x, 10);
  case fb::GemmPrecision::bf16:
    return roundMantissa(x, 7);
  case fb::GemmPrecision::f16:
    return float(_Float16(x)); // range and subnormals as f16 has them
  default:
    return x;
  }
}

// The operand as the product reads it: a rounded copy of every element the
// descriptor addresses, or the buffer itself for f32.
const float *operand(const float *x, int64_t extent, fb::GemmPrecision p,
                     std::vector<float> &copy) {
  if (p == fb::GemmPrecision::f32)
    return x;
  copy.resize(size_t(extent));
  for (int64_t i = 0; i < extent; ++i)
    copy[size_t(i)] = toFormat(x[i], p);
  return copy.data();
}

float gelu(float x) {
  const float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}

} // namespace

void lathe::rt::referenceGemm(const fb::Gemm &g, const GemmOperands &o) {
  int64_t m = g.m(), n = g.n(), k = g.k(), batch = g.batch();
  bool ta = g.trans_a(), tb = g.trans_b();
  int64_t rowsA = ta ? k : m, colsA = ta ? m : k;
  int64_t rowsB = tb ? n : k, colsB = tb ? k : n;
  std::vector<float> ca, cb;
  const float *a = operand(
      o.a, (batch - 1) * g.stride_a() + (rowsA - 1) * g.lda() + colsA,
      g.precision(), ca);
  const float *b = operand(
      o.b, (batch - 1) * g.stride_b() + (rowsB - 1) * g.ldb() + colsB,
      g.precision(), cb);
  // D starts as C (beta = 1) or zero (beta = 0), then accumulates.
  for (int64_t i = 0; i < batch; ++i)
    for (int64_t r = 0; r < m; ++r) {
      float *row = o.d + i * g.stride_d() + r * g.ldd();
      const float *from = o.c ? o.c + i * g.stride_d() + r * g.ldd() : nullptr;
      if (!from)
        std::memset(row, 0, size_t(n) * sizeof(float));
      else if (from != row)
        std::memmove(row, from, size_t(n) * sizeof(float));
    }
  hostGemm(int64_t(reinterpret_cast<uintptr_t>(a)),
           int64_t(reinterpret_cast<uintptr_t>(b)),
           int64_t(reinterpret_cast<uintptr_t>(o.d)), m, n, k, ta, tb,
           g.lda(), g.ldb(), g.ldd(), batch, g.stride_a(), g.stride_b(),
           /*groupB=*/1, g.stride_d(), /*accumulate=*/1);
  if (!o.bias && g.epilogue() == fb::GemmEpilogue::none)
    return;
  for (int64_t i = 0; i < batch; ++i)
    for (int64_t r = 0; r < m; ++r) {
      int64_t at = i * g.stride_d() + r * g.ldd();
      for (int64_t j = 0; j < n; ++j) {
        float v = o.d[at + j] + (o.bias ? o.bias[j] : 0.0f);
        if (o.aux)
          o.aux[at + j] = v;
        if (g.epilogue() == fb::GemmEpilogue::gelu)
          v = gelu(v);
        else if (g.epilogue() == fb::GemmEpilogue::relu)
          v = v > 0.0f ? v : 0.0f;
        o.d[at + j] = v;
      }
    }
}
