// Host services that compiled cpu kernels call through pointer slots.
#ifndef LATHE_RUNTIME_HOST_GEMM_H
#define LATHE_RUNTIME_HOST_GEMM_H

#include <cstdint>

namespace lathe::rt {

// The contract of `lathe_host_gemm` (see passes/ContractionToBlas.cpp): for
// each batch b, C_b (m x n, row-major, ldc) = [C_b +] op(A_b) op(B_{b/groupB})
// with op(A) m x k and op(B) k x n, transposes and leading dimensions as
// given; pointers and sizes travel as int64 so the kernel's call is uniform.
void hostGemm(int64_t a, int64_t b, int64_t c, int64_t m, int64_t n, int64_t k,
              int64_t transA, int64_t transB, int64_t lda, int64_t ldb,
              int64_t ldc, int64_t batch, int64_t strideA, int64_t strideB,
              int64_t groupB, int64_t strideC, int64_t accumulate);

class ThreadPool;

/// y (1 x n) = [y +] x op(B) with B k x n (ldb) or, transB, n x k: lathe's
/// own GEMV for decode (host_gemv.cpp), split over the pool that
/// setGemvThreads gave the calling thread. Returns false where it has no
/// kernel for this machine, and the caller falls back to the BLAS.
bool hostGemv(const float *x, int64_t xStride, const float *B, int64_t ldb,
              bool transB, float *y, int64_t n, int64_t k, bool accumulate);

/// The threads hostGemv may fork over when called on this thread (null:
/// none, e.g. inside a partitioned kernel's part, already on the pool).
void setGemvThreads(ThreadPool *pool);

/// Turns the per-shape timing of hostGemm on or off (process-wide).
void setGemmProfiling(bool enable);

} // namespace lathe::rt

#endif // LATHE_RUNTIME_HOST_GEMM_H
