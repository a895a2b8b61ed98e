// lathe_host_gemm: OpenBLAS sgemm for matrices; lathe's own GEMV when one
// side is a vector (decode, host_gemv.cpp), else OpenBLAS sgemv, where
// OpenBLAS's sgemm is several times slower.
#include "host_gemm.h"

#include "lathe/runtime.h"

#include <atomic>
#include <chrono>
#include <cblas.h>
#include <mutex>
#include <vector>

namespace {
std::atomic<bool> profiling{false};
std::mutex tableMutex;
std::vector<lathe_gemm_profile_t> table; // one row per (m, n, k, batch)

void record(int64_t m, int64_t n, int64_t k, int64_t batch, double seconds) {
  std::lock_guard<std::mutex> lock(tableMutex);
  for (lathe_gemm_profile_t &row : table)
    if (row.m == m && row.n == n && row.k == k && row.batch == batch) {
      ++row.calls;
      row.seconds += seconds;
      return;
    }
  table.push_back({m, n, k, batch, 1, seconds});
}

void gemm(int64_t a, int64_t b, int64_t c, int64_t m, int64_t n, int64_t k,
          int64_t transA, int64_t transB, int64_t lda, int64_t ldb,
          int64_t ldc, int64_t batch, int64_t strideA, int64_t strideB,
          int64_t groupB, int64_t strideC, int64_t accumulate);
} // namespace

void lathe::rt::setGemmProfiling(bool enable) { profiling = enable; }

extern "C" size_t lathe_gemm_profile_count(void) {
  std::lock_guard<std::mutex> lock(tableMutex);
  return table.size();
}

extern "C" int lathe_gemm_profile_get(size_t i, lathe_gemm_profile_t *out) {
  std::lock_guard<std::mutex> lock(tableMutex);
  if (i >= table.size() || !out)
    return 0;
  *out = table[i];
  return 1;
}

extern "C" void lathe_gemm_profile_reset(void) {
  std::lock_guard<std::mutex> lock(tableMutex);
  table.clear();
}

void lathe::rt::hostGemm(int64_t a, int64_t b, int64_t c, int64_t m,
                         int64_t n, int64_t k, int64_t transA, int64_t transB,
                         int64_t lda, int64_t ldb, int64_t ldc, int64_t batch,
                         int64_t strideA, int64_t strideB, int64_t groupB,
                         int64_t strideC, int64_t accumulate) {
  if (!profiling.load(std::memory_order_relaxed))
    return gemm(a, b, c, m, n, k, transA, transB, lda, ldb, ldc, batch,
                strideA, strideB, groupB, strideC, accumulate);
  auto start = std::chrono::steady_clock::now();
  gemm(a, b, c, m, n, k, transA, transB, lda, ldb, ldc, batch, strideA,
       strideB, groupB, strideC, accumulate);
  std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  record(m, n, k, batch, took.count());
}

namespace {
void gemm(int64_t a, int64_t b, int64_t c, int64_t m, int64_t n, int64_t k,
          int64_t transA, int64_t transB, int64_t lda, int64_t ldb,
          int64_t ldc, int64_t batch, int64_t strideA, int64_t strideB,
          int64_t groupB, int64_t strideC, int64_t accumulate) {
  const float *A = reinterpret_cast<const float *>(a);
  const float *B = reinterpret_cast<const float *>(b);
  float *C = reinterpret_cast<float *>(c);
  const float beta = accumulate ? 1.0f : 0.0f;
  for (int64_t i = 0; i < batch; ++i) {
    const float *Ai = A + i * strideA;
    const float *Bi = B + (i / groupB) * strideB;
    float *Ci = C + i * strideC;
    if (m == 1 && lathe::rt::hostGemv(Ai, transA ? lda : 1, Bi, ldb,
                                      transB != 0, Ci, n, k, accumulate != 0))
      continue;
    if (m == 1) {
      // c[1 x n] = a[1 x k] op(B): y = op(B)^T x, i.e. B^T x for B (k x n).
      if (transB)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, Bi, ldb, Ai,
                    transA ? lda : 1, beta, Ci, 1);
      else
        cblas_sgemv(CblasRowMajor, CblasTrans, k, n, 1.0f, Bi, ldb, Ai,
                    transA ? lda : 1, beta, Ci, 1);
      continue;
    }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, Ai, lda, Bi,
                ldb, beta, Ci, ldc);
  }
}
} // namespace
