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

/* The toy cached model ("kv"): key k[s] = h[s] * (1 + s/8) for h as above,
 * c[t] = mean(k[0..t]), logits = c lm_head^T + bias. forward computes it in
 * one go; prefill writes k into the cache state and reads it back; decode
 * appends one key at `pos` and reads positions 0..pos. Every path sums in
 * the same order, so all three agree. */
static float toy_pos_scale(int s) { return 1.0f + (float)s / 8.0f; }

static void toy_mean_row(const float *k, int t, float *c) {
  for (int d = 0; d < D; ++d) {
    float acc = 0.0f;
    for (int s = 0; s <= t; ++s)
      acc += k[s * D + d];
    c[d] = acc / (float)(t + 1);
  }
}

void lathe_kernel_toy_cummean(void **args) {
  const float *h = args[0];
  float *c = args[1];
  float k[S * D];
  for (int s = 0; s < S; ++s)
    for (int d = 0; d < D; ++d)
      k[s * D + d] = h[s * D + d] * toy_pos_scale(s);
  for (int t = 0; t < S; ++t)
    toy_mean_row(k, t, c + t * D);
}

void lathe_kernel_toy_cache_fill(void **args) {
  const float *h = args[0];
  float *cache = args[1];
  for (int s = 0; s < S; ++s)
    for (int d = 0; d < D; ++d)
      cache[s * D + d] = h[s * D + d] * toy_pos_scale(s);
}

void lathe_kernel_toy_cache_mean(void **args) {
  const float *cache = args[0];
  float *c = args[1];
  for (int t = 0; t < S; ++t)
    toy_mean_row(cache, t, c + t * D);
}

void lathe_kernel_toy_decode_step(void **args) {
  const int32_t *token = args[0], *pos = args[1];
  const float *embed = args[2], *g = args[3];
  float *cache = args[4], *c = args[5];
  int p = pos[0];
  for (int d = 0; d < D; ++d)
    cache[p * D + d] = embed[token[0] * D + d] * g[d] * toy_pos_scale(p);
  toy_mean_row(cache, p, c);
}

void lathe_kernel_toy_lm_head_one(void **args) {
  const float *h = args[0], *w = args[1], *b = args[2];
  float *logits = args[3];
  for (int v = 0; v < V; ++v) {
    float acc = b[v];
    for (int d = 0; d < D; ++d)
      acc += h[d] * w[v * D + d];
    logits[v] = acc;
  }
}
