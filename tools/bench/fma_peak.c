/* The machine's fp32 peak as the benchmarks see it: each thread runs
 * independent chains of 8-wide fused multiply-adds (AVX2/FMA), enough of
 * them to cover the FMA latency on both FMA pipes, for a fixed count; the
 * figure is 16 FLOPs per FMA over the wall time of all threads together.
 * No real kernel beats it, so a step time below FLOPs / peak is impossible
 * on this machine.
 *
 *   cc -O3 -mavx2 -mfma -pthread fma_peak.c -o fma_peak && ./fma_peak [threads]
 *
 * prints one JSON object: {"threads": N, "gflops": G, "seconds": S}. */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { CHAINS = 10 };
static const long ITERATIONS = 100000000L;

static void *chains(void *out) {
  __m256 acc[CHAINS];
  const __m256 m = _mm256_set1_ps(1.0000001f), c = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < CHAINS; ++i)
    acc[i] = _mm256_set1_ps((float)i);
  for (long it = 0; it < ITERATIONS; ++it)
    for (int i = 0; i < CHAINS; ++i)
      acc[i] = _mm256_fmadd_ps(acc[i], m, c);
  /* Keep the chains live: their sum goes back to the caller. */
  float lanes[8], sum = 0;
  for (int i = 0; i < CHAINS; ++i) {
    _mm256_storeu_ps(lanes, acc[i]);
    sum += lanes[0];
  }
  *(float *)out = sum;
  return NULL;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  if (threads < 1 || threads > 256) {
    fprintf(stderr, "fma_peak: threads must be in [1, 256]\n");
    return 1;
  }
  pthread_t ids[256];
  float sums[256];
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int t = 0; t < threads; ++t)
    pthread_create(&ids[t], NULL, chains, &sums[t]);
  for (int t = 0; t < threads; ++t)
    pthread_join(ids[t], NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  double flops = (double)threads * (double)ITERATIONS * CHAINS * 16.0;
  printf("{\"threads\": %d, \"gflops\": %.1f, \"seconds\": %.3f, \"checksum\": %g}\n", threads,
         flops / seconds / 1e9, seconds, (double)sums[0]);
  return 0;
}
