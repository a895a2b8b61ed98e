// lathe_host_gemm on OpenBLAS: sgemm for matrices, sgemv when one side is a
// vector (decode), where OpenBLAS's sgemm is several times slower.
#include "host_gemm.h"

#include <cblas.h>

void lathe::rt::hostGemm(int64_t a, int64_t b, int64_t c, int64_t m,
                         int64_t n, int64_t k, int64_t transA, int64_t transB,
                         int64_t lda, int64_t ldb, int64_t ldc, int64_t batch,
                         int64_t strideA, int64_t strideB, int64_t groupB,
                         int64_t strideC, int64_t accumulate) {
  const float *A = reinterpret_cast<const float *>(a);
  const float *B = reinterpret_cast<const float *>(b);
  float *C = reinterpret_cast<float *>(c);
  const float beta = accumulate ? 1.0f : 0.0f;
  for (int64_t i = 0; i < batch; ++i) {
    const float *Ai = A + i * strideA;
    const float *Bi = B + (i / groupB) * strideB;
    float *Ci = C + i * strideC;
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
