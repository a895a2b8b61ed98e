// Test-only: checks the runtime's decode GEMV (lathe_host_gemm with m = 1,
// served by host_gemv.cpp where the machine has AVX-512, else by OpenBLAS
// sgemv) against a plain double-precision loop, over the cases its blocking
// and threading make distinct: column tails (n not a multiple of 16),
// leftover rows (k not a multiple of the 16-row block), the transposed
// weight (dot form), accumulation into C, a strided x (transposed A), and
// one thread versus a forked pool. Prints one line per case; exits 1 on the
// first mismatch.
#include "host_gemm.h"
#include "thread_pool.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

using namespace lathe::rt;

namespace {
bool check(int64_t n, int64_t k, bool transB, bool accumulate,
           int64_t xStride, ThreadPool *pool) {
  std::mt19937 gen(uint32_t(n * 131 + k * 7 + transB * 3 + accumulate));
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(k * xStride));
  std::vector<float> B(static_cast<size_t>(n * k)), y(static_cast<size_t>(n));
  for (float &v : x)
    v = dist(gen);
  for (float &v : B)
    v = dist(gen);
  for (float &v : y)
    v = dist(gen);
  std::vector<double> want(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    double s = accumulate ? double(y[size_t(j)]) : 0.0;
    for (int64_t i = 0; i < k; ++i)
      s += double(x[size_t(i * xStride)]) *
           double(transB ? B[size_t(j * k + i)] : B[size_t(i * n + j)]);
    want[size_t(j)] = s;
  }
  setGemvThreads(pool);
  // A is 1 x k; transposed (k x 1, lda = xStride) when x is strided.
  hostGemm(int64_t(x.data()), int64_t(B.data()), int64_t(y.data()), 1, n, k,
           xStride != 1, transB, xStride, transB ? k : n, n, 1, 0, 0, 1, 0,
           accumulate);
  setGemvThreads(nullptr);
  double worst = 0;
  for (int64_t j = 0; j < n; ++j)
    worst = std::max(worst, std::fabs(double(y[size_t(j)]) - want[size_t(j)]) /
                                (1.0 + std::fabs(want[size_t(j)])));
  // fp32 sums of k terms of size <= 1: error grows like sqrt(k) ulp.
  bool ok = worst < 1e-5 * std::sqrt(double(k));
  std::printf("%s n=%lld k=%lld transB=%d accumulate=%d xStride=%lld "
              "threads=%u worst=%.2e\n",
              ok ? "ok" : "MISMATCH", (long long)n, (long long)k, int(transB),
              int(accumulate), (long long)xStride, pool ? pool->size() : 1u,
              worst);
  return ok;
}
} // namespace

int main() {
  ThreadPool pool(2);
  const int64_t shapes[][2] = {{768, 768}, {2048, 768}, {768, 2048},
                               {257, 100}, {5, 37},     {50304 / 16, 33}};
  for (auto &shape : shapes)
    for (int transB = 0; transB < 2; ++transB)
      for (int accumulate = 0; accumulate < 2; ++accumulate)
        for (int64_t stride : {int64_t(1), int64_t(3)})
          for (ThreadPool *p : {(ThreadPool *)nullptr, &pool})
            if (!check(shape[0], shape[1], transB, accumulate, stride, p))
              return 1;
  return 0;
}
