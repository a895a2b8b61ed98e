/* Kernels of the toy model built by lathe-make-test-artifact. Compiled by the
 * tests with -DV=<vocab> -DD=<dim> -DS=<max_seq>. */
#include <stdint.h>

void lathe_kernel_toy_embed(void **args) {
  const int32_t *tokens = args[0];
  const float *embed = args[1];
  float *x = args[2];
  for (int t = 0; t < S; ++t)
    for (int d = 0; d < D; ++d)
      x[t * D + d] = embed[tokens[t] * D + d];
}

void lathe_kernel_toy_scale(void **args) {
  const float *x = args[0], *g = args[1];
  float *h = args[2];
  for (int t = 0; t < S; ++t)
    for (int d = 0; d < D; ++d)
      h[t * D + d] = x[t * D + d] * g[d];
}

void lathe_kernel_toy_lm_head(void **args) {
  const float *h = args[0], *w = args[1], *b = args[2];
  float *logits = args[3];
  for (int t = 0; t < S; ++t)
    for (int v = 0; v < V; ++v) {
      float acc = b[v];
      for (int d = 0; d < D; ++d)
        acc += h[t * D + d] * w[v * D + d];
      logits[t * V + v] = acc;
    }
}
