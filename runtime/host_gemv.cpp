// Matrix-vector products for decode (m = 1), on the session's threads.
//
// Decode is bound by reading the weights once per token, so what matters is
// how close a GEMV streams to the machine's read bandwidth. Measured on the
// development machine (2 cores, AVX-512, weights cold, 768 x 2048 fp32):
// OpenBLAS sgemv reads at about 11.5 GB/s per thread, and with its own two
// threads contends with the session's pool for the same two cores. Splitting
// the *rows* of the k x n weight between threads, so each streams one
// contiguous block, and accumulating 16 rows per pass over a partial y that
// stays in L1, reads at 35-37 GB/s on two threads: more than one stream per
// thread keeps more cache misses in flight. (Splitting columns instead, so
// both threads read half of every row, reached 25 GB/s.)
#include "host_gemm.h"
#include "thread_pool.h"

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define LATHE_GEMV_AVX512 1
#endif

namespace lathe::rt {
namespace {

thread_local ThreadPool *tlsPool = nullptr;

// Below this many weight elements one thread is faster than a fork-join.
constexpr int64_t kParallelElements = 1 << 16;
constexpr int64_t kRowBlock = 16;

#if LATHE_GEMV_AVX512
// p[i, k): the last partial vector of a row, zero-filled.
__attribute__((target("avx512f"))) inline __m512 tail(const float *p,
                                                      int64_t i, int64_t k) {
  return _mm512_maskz_loadu_ps(__mmask16((1u << (k - i)) - 1), p + i);
}

// y[0, n) += sum over rows i in [i0, i1) of x[i] * W[i, 0..n), W row-major
// with leading dimension ldw.
__attribute__((target("avx512f"))) void axpyRowsAvx512(
    const float *W, int64_t ldw, int64_t n, const float *x, float *y,
    int64_t i0, int64_t i1) {
  int64_t i = i0;
  for (; i + kRowBlock <= i1; i += kRowBlock) {
    __m512 xv[kRowBlock];
    const float *r[kRowBlock];
    for (int q = 0; q < kRowBlock; ++q) {
      xv[q] = _mm512_set1_ps(x[i + q]);
      r[q] = W + (i + q) * ldw;
    }
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
      __m512 acc = _mm512_loadu_ps(y + j);
      for (int q = 0; q < kRowBlock; ++q)
        acc = _mm512_fmadd_ps(xv[q], _mm512_loadu_ps(r[q] + j), acc);
      _mm512_storeu_ps(y + j, acc);
    }
    if (j < n) {
      __mmask16 m = __mmask16((1u << (n - j)) - 1);
      __m512 acc = _mm512_maskz_loadu_ps(m, y + j);
      for (int q = 0; q < kRowBlock; ++q)
        acc = _mm512_fmadd_ps(xv[q], _mm512_maskz_loadu_ps(m, r[q] + j), acc);
      _mm512_mask_storeu_ps(y + j, m, acc);
    }
  }
  for (; i < i1; ++i) {
    const float *r = W + i * ldw;
    __m512 xi = _mm512_set1_ps(x[i]);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
      _mm512_storeu_ps(y + j, _mm512_fmadd_ps(xi, _mm512_loadu_ps(r + j),
                                              _mm512_loadu_ps(y + j)));
    if (j < n) {
      __mmask16 m = __mmask16((1u << (n - j)) - 1);
      _mm512_mask_storeu_ps(
          y + j, m,
          _mm512_fmadd_ps(xi, _mm512_maskz_loadu_ps(m, r + j),
                          _mm512_maskz_loadu_ps(m, y + j)));
    }
  }
}

// y[j] (+)= dot(W[j, 0..k), x) for rows j in [j0, j1): the layout of a
// weight stored transposed (n x k), e.g. a head tied to the embedding.
__attribute__((target("avx512f"))) void dotRowsAvx512(
    const float *W, int64_t ldw, int64_t k, const float *x, float *y,
    int64_t j0, int64_t j1, bool accumulate) {
  constexpr int R = 8;
  int64_t j = j0;
  for (; j + R <= j1; j += R) {
    __m512 acc[R];
    for (int q = 0; q < R; ++q)
      acc[q] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
      __m512 xv = _mm512_loadu_ps(x + i);
      for (int q = 0; q < R; ++q)
        acc[q] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(W + (j + q) * ldw + i),
                                 acc[q]);
    }
    if (i < k) {
      __m512 xv = tail(x, i, k);
      for (int q = 0; q < R; ++q)
        acc[q] = _mm512_fmadd_ps(xv, tail(W + (j + q) * ldw, i, k), acc[q]);
    }
    for (int q = 0; q < R; ++q) {
      float s = _mm512_reduce_add_ps(acc[q]);
      y[j + q] = accumulate ? y[j + q] + s : s;
    }
  }
  for (; j < j1; ++j) {
    __m512 acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16)
      acc = _mm512_fmadd_ps(_mm512_loadu_ps(x + i),
                            _mm512_loadu_ps(W + j * ldw + i), acc);
    if (i < k)
      acc = _mm512_fmadd_ps(tail(x, i, k), tail(W + j * ldw, i, k), acc);
    float s = _mm512_reduce_add_ps(acc);
    y[j] = accumulate ? y[j] + s : s;
  }
}
#endif

// [begin, end) of part `p` of `parts` over `count` items, in whole blocks.
void share(int64_t count, int64_t block, unsigned p, unsigned parts,
           int64_t &begin, int64_t &end) {
  int64_t blocks = (count + block - 1) / block;
  begin = std::min(count, blocks * int64_t(p) / int64_t(parts) * block);
  end = std::min(count, blocks * int64_t(p + 1) / int64_t(parts) * block);
}

} // namespace

void setGemvThreads(ThreadPool *pool) { tlsPool = pool; }

bool hostGemv(const float *x, int64_t xStride, const float *B, int64_t ldb,
              bool transB, float *y, int64_t n, int64_t k, bool accumulate) {
#if LATHE_GEMV_AVX512
  if (!__builtin_cpu_supports("avx512f"))
    return false;
  // A strided x (a transposed A) is gathered once; the kernels want it dense.
  thread_local std::vector<float> xDense;
  if (xStride != 1) {
    xDense.resize(size_t(k));
    for (int64_t i = 0; i < k; ++i)
      xDense[size_t(i)] = x[i * xStride];
    x = xDense.data();
  }
  ThreadPool *pool = tlsPool;
  unsigned parts = pool && n * k >= kParallelElements ? pool->size() : 1;
  if (transB) {
    auto part = [&](unsigned p) {
      int64_t j0, j1;
      share(n, 8, p, parts, j0, j1);
      dotRowsAvx512(B, ldb, k, x, y, j0, j1, accumulate);
    };
    if (parts == 1)
      part(0);
    else
      pool->run(part);
    return true;
  }
  if (parts == 1) {
    if (!accumulate)
      std::memset(y, 0, size_t(n) * sizeof(float));
    axpyRowsAvx512(B, ldb, n, x, y, 0, k);
    return true;
  }
  // Each part sums its rows into its own partial y; part 0 writes into y.
  thread_local std::vector<std::vector<float>> partials;
  partials.resize(parts);
  for (unsigned p = 1; p < parts; ++p)
    partials[p].resize(size_t(n));
  std::vector<std::vector<float>> &partial = partials;
  pool->run([&](unsigned p) {
    int64_t i0, i1;
    share(k, kRowBlock, p, parts, i0, i1);
    // Each part clears its own output, so those lines start in its cache.
    float *out = p == 0 ? y : partial[p].data();
    if (p != 0 || !accumulate)
      std::memset(out, 0, size_t(n) * sizeof(float));
    axpyRowsAvx512(B, ldb, n, x, out, i0, i1);
  });
  for (unsigned p = 1; p < parts; ++p) {
    const float *src = partial[p].data();
    for (int64_t j = 0; j < n; ++j)
      y[j] += src[j];
  }
  return true;
#else
  (void)x, (void)xStride, (void)B, (void)ldb, (void)transB, (void)y, (void)n,
      (void)k, (void)accumulate;
  return false;
#endif
}

} // namespace lathe::rt
