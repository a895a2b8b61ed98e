/* lathe runtime C API: load a compiled artifact, bind weights, run entries.
 *
 * Conventions (after IREE's runtime API):
 *  - Every call that can fail returns a lathe_status_t; NULL means success.
 *    A non-NULL status owns a message and must be freed with
 *    lathe_status_free(). The runtime never exits or aborts on bad input.
 *  - Objects returned through out_ parameters are owned by the caller and are
 *    released with the matching _free function.
 *  - Thread safety: a lathe_artifact_t is immutable after loading and may be
 *    shared between threads; a lathe_session_t must be used by one thread at
 *    a time.
 *  - Nothing of MLIR is visible here or linked into the runtime.
 */
#ifndef LATHE_RUNTIME_H
#define LATHE_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lathe_status *lathe_status_t;

/* The message of a failed status, e.g. "t.lathe: not a lathe artifact". */
const char *lathe_status_message(lathe_status_t status);
void lathe_status_free(lathe_status_t status);

typedef struct lathe_artifact lathe_artifact_t;

/* Reads and verifies an artifact file (flatbuffers, identifier "LATH"). */
lathe_status_t lathe_artifact_load(const char *path,
                                   lathe_artifact_t **out_artifact);
void lathe_artifact_free(lathe_artifact_t *artifact);

const char *lathe_artifact_model_name(const lathe_artifact_t *artifact);
/* "cpu" or "cuda". */
const char *lathe_artifact_target(const lathe_artifact_t *artifact);
int64_t lathe_artifact_vocab(const lathe_artifact_t *artifact);
int64_t lathe_artifact_max_seq(const lathe_artifact_t *artifact);
size_t lathe_artifact_param_count(const lathe_artifact_t *artifact);
/* Total number of scalar parameters. */
int64_t lathe_artifact_param_elements(const lathe_artifact_t *artifact);
/* Total bytes of the parameters (elements times their dtype's size). */
uint64_t lathe_artifact_param_bytes(const lathe_artifact_t *artifact);
/* Name of parameter i (its safetensors key); NULL if i is out of range. */
const char *lathe_artifact_param_name(const lathe_artifact_t *artifact,
                                      size_t i);
/* States: runtime-owned tensors kept across entry calls (the KV cache), for
 * inspection. Out of range indices give 0 / NULL. The dtype is spelled as in
 * the schema ("f32", "i32", "f16", "bf16"). */
size_t lathe_artifact_state_count(const lathe_artifact_t *artifact);
const char *lathe_artifact_state_name(const lathe_artifact_t *artifact,
                                      size_t i);
const char *lathe_artifact_state_dtype(const lathe_artifact_t *artifact,
                                       size_t i);
size_t lathe_artifact_state_rank(const lathe_artifact_t *artifact, size_t i);
int64_t lathe_artifact_state_dim(const lathe_artifact_t *artifact, size_t i,
                                 size_t dim);
/* Bytes of the statically planned activation arena. */
uint64_t lathe_artifact_arena_bytes(const lathe_artifact_t *artifact);
/* Entries (e.g. "forward") and their kernel launches, for inspection. Out of
 * range indices give 0 / NULL. */
size_t lathe_artifact_entry_count(const lathe_artifact_t *artifact);
const char *lathe_artifact_entry_name(const lathe_artifact_t *artifact,
                                      size_t entry);
size_t lathe_artifact_launch_count(const lathe_artifact_t *artifact,
                                   size_t entry);
const char *lathe_artifact_launch_kernel(const lathe_artifact_t *artifact,
                                         size_t entry, size_t launch);
/* Floating-point operations of one call of a launch, as the compiler counts
 * them (Launch.flops); 0 where it did not count them or out of range. */
uint64_t lathe_artifact_launch_flops(const lathe_artifact_t *artifact,
                                     size_t entry, size_t launch);
/* A cuda launch that is a GEMM library call (cuBLASLt; kernel "gemm"): its
 * descriptor, row-major, D = epilogue(op(A) op(B) [+ C] [+ bias]) per batch.
 * Returns 1 and fills `*out`, or 0 where the launch is a kernel or out of
 * range. The strings are static. */
typedef struct {
  int64_t m, n, k, batch;
  int trans_a, trans_b, has_c, has_bias, has_aux;
  const char *epilogue;  /* "none", "relu", "gelu" */
  const char *precision; /* "f32", "tf32", "bf16", "f16" */
  /* All of it in one line, as `lathe-run info` and profiles name the call:
   * "gemm 64x256x64 B^T +C +bias gelu(aux) f32". */
  char name[96];
} lathe_gemm_desc_t;
int lathe_artifact_launch_gemm(const lathe_artifact_t *artifact, size_t entry,
                               size_t launch, lathe_gemm_desc_t *out);
/* The name of the entry lathe_session_prefill runs for n tokens: the
 * smallest prefill bucket ("prefill_<B>", B >= n), else "prefill". NULL if
 * the artifact has no prefill entry or n is 0 or above max_seq. */
const char *lathe_artifact_prefill_entry(const lathe_artifact_t *artifact,
                                         size_t n);

/* The cubin of a cuda artifact for `chip` (ptxas's output at compile time):
 * `*out_data` points at `*out_size` bytes owned by the artifact. Fails if
 * the artifact has no cubin for that chip (lathec found no ptxas). */
lathe_status_t lathe_artifact_cubin(const lathe_artifact_t *artifact,
                                    const char *chip, const uint8_t **out_data,
                                    size_t *out_size);

/* The artifact's kernel library, the ELF shared object the cpu and
 * cuda-emulated devices load: `*out_data` points at `*out_size` bytes owned
 * by the artifact. Fails if it has none. */
lathe_status_t lathe_artifact_kernel_library(const lathe_artifact_t *artifact,
                                             const uint8_t **out_data,
                                             size_t *out_size);

/* The PTX of a cuda artifact for `chip` ("sm_80", "sm_90"): a NUL-terminated
 * string owned by the artifact, for loading the kernels from another runtime.
 * Fails if the artifact has no PTX for that chip. */
lathe_status_t lathe_artifact_ptx(const lathe_artifact_t *artifact,
                                  const char *chip, const char **out_ptx);

/* Writes freshly initialised weights (each parameter's init rule, seeded
 * deterministically by `seed`) to a safetensors file. */
lathe_status_t lathe_weights_init(const lathe_artifact_t *artifact,
                                  uint64_t seed, const char *out_path);

typedef struct lathe_session lathe_session_t;

/* A session owns the device state: the activation arena and bound weights.
 * The artifact must outlive the session. It runs on the artifact's own
 * device: "cpu" for a cpu artifact, "cuda" for a cuda one. */
lathe_status_t lathe_session_create(const lathe_artifact_t *artifact,
                                    lathe_session_t **out_session);
void lathe_session_free(lathe_session_t *session);

/* The same on a named device (NULL: the artifact's own):
 *  - "cpu": a cpu artifact's kernels on this CPU;
 *  - "cuda": an NVIDIA GPU through the CUDA driver (fails cleanly with "no
 *    CUDA driver found" or "no CUDA device" where there is none);
 *  - "cuda-emulated": a cuda artifact's launch list, run as the cuda device
 *    runs it, with each GPU kernel (taken after mapping to blocks and
 *    threads) compiled for the CPU as loops over its blocks and threads.
 * $LATHE_CUDA_DRIVER names the driver library to load instead of
 * libcuda.so.1. */
lathe_status_t lathe_session_create_on_device(const lathe_artifact_t *artifact,
                                              const char *device,
                                              lathe_session_t **out_session);

/* What the session runs on: "cpu", "host emulation", or the CUDA device's
 * name, compute capability, chip and code ("NVIDIA H100 80GB HBM3 (9.0;
 * sm_90 cubin)"). Owned by the session. */
const char *lathe_session_device(const lathe_session_t *session);

/* Binds weights from a safetensors file. Every parameter of the artifact
 * must be present with its exact shape and dtype. */
lathe_status_t lathe_session_load_weights(lathe_session_t *session,
                                          const char *safetensors_path);

/* Runs the "forward" entry on n tokens (1 <= n <= max_seq) and writes
 * float32 logits of shape [n, vocab] to out_logits. Fails if the artifact
 * has no forward entry; never touches the KV cache. */
lathe_status_t lathe_session_forward(lathe_session_t *session,
                                     const int32_t *tokens, size_t n,
                                     float *out_logits);

/* Early exit of a looped block (LoopUS halting) in the last entry run:
 * *taken is the 1-based iteration after which the loop left early, 0 if it
 * did not; *points is how many exit points the run passed. Entries that
 * fill a KV cache have none: every iteration runs there, to fill the deeper
 * caches, and the first-halt state is kept instead. */
void lathe_session_loop_exit(const lathe_session_t *session, uint32_t *taken,
                             uint32_t *points);

/* KV-cache decoding. An artifact compiled from a spec has "prefill" and
 * "decode" entries; the session owns the cache and remembers how many
 * positions it holds.
 *
 * Prefill runs n prompt tokens (1 <= n <= max_seq) from position 0, replacing
 * the cache, and writes logits [n, vocab]. */
lathe_status_t lathe_session_prefill(lathe_session_t *session,
                                     const int32_t *tokens, size_t n,
                                     float *out_logits);

/* Decode runs one token at position `pos` and writes logits [vocab]. The
 * cache must hold positions 0..pos-1 (pos <= cached length, pos < max_seq);
 * the token's keys and values are appended at `pos`, and the cache then
 * holds pos + 1 positions (decoding below the end rewinds it). Prefill and
 * decode fail if the artifact lacks the entry. */
lathe_status_t lathe_session_decode(lathe_session_t *session, int32_t token,
                                    size_t pos, float *out_logits);

/* Number of positions the cache holds (0 after creation). */
size_t lathe_session_cached(const lathe_session_t *session);

/// Runs the artifact's `grad` entry (lathec --train): the mean cross-entropy
/// of a window of `n` tokens against `n` targets (n is the entry's length,
/// max_seq), and the gradient of that loss with respect to every parameter.
/// Writes the loss to `*out_loss` and, when `out_path` is not null, the loss
/// (a [1] tensor named "loss") and each gradient, named as its parameter, to
/// a safetensors file.
lathe_status_t lathe_session_grad(lathe_session_t *session,
                                  const int32_t *tokens,
                                  const int32_t *targets, size_t n,
                                  float *out_loss, const char *out_path);

/// Parcae's sampled training depth (loop.sample_max): the mean and the
/// largest iteration count a train step draws for a sequence, n ~
/// Poisson(mean) clamped to [1, max]; both 0 where the depth is fixed.
void lathe_artifact_sampled_iterations(const lathe_artifact_t *artifact,
                                       int64_t *mean, int64_t *max);

/// Fixes the iteration count of every later grad and train step (1 <= n <=
/// the artifact's max), or with n = 0 goes back to the default: grad runs
/// the mean, train steps draw each sequence's count. An error for an
/// artifact whose depth is not sampled.
lathe_status_t lathe_session_set_iterations(lathe_session_t *session,
                                            int64_t n);

/// The iteration count each sequence of the last train step ran (Parcae's
/// sampled depth): copies up to `capacity` of them to `out` and returns how
/// many there were (0 for an artifact whose depth is fixed).
size_t lathe_session_last_iterations(const lathe_session_t *session,
                                     int64_t *out, size_t capacity);

/// LoopFormer's shortcut-consistency training (loop.shortcut): M, the long
/// trajectory's number of steps, or 0.
int64_t lathe_artifact_shortcut_iterations(const lathe_artifact_t *artifact);

/// Fixes the short trajectory of every later grad and train step: `n` step
/// sizes (1 <= n < M), positive and summing to 1; n = 0 goes back to
/// drawing one per step (ARCHITECTURES.md §4.2: a length uniform in
/// 1..M-1, steps multiples of 1/M drawn greedily at random). An error for
/// an artifact without shortcut training.
lathe_status_t lathe_session_set_shortcut(lathe_session_t *session,
                                          const double *steps, size_t n);

/// The short trajectory of the last grad or train step: copies up to
/// `capacity` step sizes to `out` and returns how many there were (0
/// without shortcut training).
size_t lathe_session_last_shortcut(const lathe_session_t *session,
                                   double *out, size_t capacity);

/// LoopUS's random deep supervision (ARCHITECTURES.md §4.3): the steps a
/// train step draws from and how many of them it supervises (distinct,
/// each with its own optimizer update); both 0 without it. For such an
/// artifact grad is the supervised step at s (0 unless fixed) from the
/// state after the encoder and s gated passes of the core, and a train
/// step of `step` makes optimizer steps (step - 1) * supervised + 1, ...
void lathe_artifact_supervision(const lathe_artifact_t *artifact, int64_t *steps,
                           int64_t *supervised);

/// Fixes the supervised steps of every later grad (n = 1: that step) and
/// train step (n = supervised, distinct, ascending, each below steps); n =
/// 0 goes back to step 0 for grad and a draw per train step. An error for an
/// artifact without deep supervision.
lathe_status_t lathe_session_set_supervision(lathe_session_t *session,
                                             const int64_t *steps, size_t n);

/// The supervised steps of the last grad or train step: copies up to
/// `capacity` to `out` and returns how many there were.
size_t lathe_session_last_supervision(const lathe_session_t *session,
                                      int64_t *out, size_t capacity);

/// The training window of an artifact from lathec --train (its grad entry's
/// length over the sequences it packs), or 0 for an inference artifact.
size_t lathe_artifact_train_seq(const lathe_artifact_t *artifact);

/// The sequences one grad/accumulate_grad pass packs as rows (lathec
/// --train-batch; lathe_session_train_step's batch must be a multiple), or
/// 0 for an inference artifact.
size_t lathe_artifact_train_batch(const lathe_artifact_t *artifact);

/// One optimizer step (an artifact from lathec --train): for each of the
/// `batch` sequences (tokens and targets row-major [batch, seq], seq the
/// training window), accumulate_grad adds its gradients into the session's
/// gradient sums; then optimizer_step clips them by global norm (scaled by
/// 1/batch) and applies AdamW in place with learning rate `lr` at `step`
/// (1, 2, ...), and the sums are cleared. Writes the mean loss and the
/// gradient norm before clipping.
lathe_status_t lathe_session_train_step(lathe_session_t *session,
                                        const int32_t *tokens,
                                        const int32_t *targets, size_t batch,
                                        size_t seq, float lr, int64_t step,
                                        float *out_loss,
                                        float *out_grad_norm);

/// The mean cross-entropy of `batch` sequences of `n` <= max_seq tokens
/// against their targets (row-major [batch, n]), through the forward entry;
/// nothing is updated.
lathe_status_t lathe_session_eval_loss(lathe_session_t *session,
                                       const int32_t *tokens,
                                       const int32_t *targets, size_t batch,
                                       size_t n, float *out_loss);

/// Writes the session's weights, and with `with_optimizer` its optimizer
/// state (the Adam moments, as tensors named adam.m.<param> and
/// adam.v.<param>, and `step`, the number of steps taken, as the I64 tensor
/// optimizer.step), to a safetensors file, atomically (a temporary file
/// renamed over `path`), with `meta_count` string pairs as metadata.
lathe_status_t lathe_session_save(const lathe_session_t *session,
                                  const char *path, int with_optimizer,
                                  int64_t step, const char *const *meta_keys,
                                  const char *const *meta_values,
                                  size_t meta_count);

/// Restores the optimizer state that lathe_session_save wrote (load the
/// weights from the same file with lathe_session_load_weights). Every
/// tensor is checked before any is copied; a missing one or a shape that
/// differs is named in the error.
lathe_status_t lathe_session_load_optimizer(lathe_session_t *session,
                                            const char *path,
                                            int64_t *out_step);

/* Profiling, off by default. While it is enabled, the session times every
 * kernel launch with a monotonic clock and adds to that kernel's totals: one
 * call, the launch's wall time, and its Launch.flops. Turning it off keeps
 * the totals; lathe_session_profile_reset clears them. With profiling off a
 * launch costs nothing extra. */
void lathe_session_set_profiling(lathe_session_t *session, int enable);
void lathe_session_profile_reset(lathe_session_t *session);

typedef struct lathe_kernel_profile {
  const char *kernel; /* the kernel's name, owned by the artifact */
  uint64_t calls;
  double seconds;     /* wall time of all its calls */
  uint64_t flops;     /* sum of Launch.flops over its calls (0: not counted) */
} lathe_kernel_profile_t;

/* Number of kernels that ran while profiling since the last reset; they are
 * numbered in the order they first ran. */
size_t lathe_session_profile_count(const lathe_session_t *session);
/* Writes the totals of kernel i to *out and returns 1, or returns 0 (and
 * leaves *out alone) if i >= lathe_session_profile_count. */
int lathe_session_profile_kernel(const lathe_session_t *session, size_t i,
                                 lathe_kernel_profile_t *out);

/* The matrix products that cpu kernels hand to the host BLAS, timed per
 * shape while any session has profiling on (one table per process, since
 * the kernels call the BLAS without a session). A kernel's time includes its
 * products; this table isolates them, so that a fused kernel's GEMMs can be
 * compared with a plain BLAS call of the same shape. */
typedef struct lathe_gemm_profile {
  int64_t m, n, k, batch; /* C [m x n] += A [m x k] B [k x n], batch times */
  uint64_t calls;
  double seconds;
} lathe_gemm_profile_t;

size_t lathe_gemm_profile_count(void);
int lathe_gemm_profile_get(size_t i, lathe_gemm_profile_t *out);
void lathe_gemm_profile_reset(void);

#ifdef __cplusplus
}
#endif

#endif /* LATHE_RUNTIME_H */
