/* Runs lathe's exported GPU kernels with the CUDA driver API alone: no lathe
 * runtime. Build against an export directory:
 *
 *   lathec examples/tiny.yaml --target=cuda --emit=kernels -o tiny-kernels
 *   cc -I/usr/local/cuda/include -Itiny-kernels examples/cuda-launch/launch.c -ldl -o launch
 *   ./launch tiny-kernels
 *
 * It loads the PTX for the device's chip, gives every parameter small random
 * values, runs the "forward" entry on tokens 0..max_seq-1 and prints the
 * argmax of the last position's logits. The driver is loaded with dlopen, so
 * on a machine without one the program says so and exits 1. Launches that
 * are GEMM calls (struct lathe_gemm) go to cuBLASLt, also loaded with
 * dlopen, as shown in runGemm. */
#include <cublasLt.h>
#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lathe_kernels.h"

/* The driver entry points used here, looked up by their versioned names. */
static CUresult (*pInit)(unsigned);
static CUresult (*pDeviceGetCount)(int *);
static CUresult (*pDeviceGet)(CUdevice *, int);
static CUresult (*pDeviceGetAttribute)(int *, CUdevice_attribute, CUdevice);
static CUresult (*pPrimaryCtxRetain)(CUcontext *, CUdevice);
static CUresult (*pCtxSetCurrent)(CUcontext);
static CUresult (*pModuleLoadData)(CUmodule *, const void *);
static CUresult (*pModuleGetFunction)(CUfunction *, CUmodule, const char *);
static CUresult (*pMemAlloc)(CUdeviceptr *, size_t);
static CUresult (*pMemsetD8)(CUdeviceptr, unsigned char, size_t);
static CUresult (*pMemcpyHtoD)(CUdeviceptr, const void *, size_t);
static CUresult (*pMemcpyDtoH)(void *, CUdeviceptr, size_t);
static CUresult (*pLaunchKernel)(CUfunction, unsigned, unsigned, unsigned,
                                 unsigned, unsigned, unsigned, unsigned,
                                 CUstream, void **, void **);
static CUresult (*pCtxSynchronize)(void);

/* cuBLASLt's entry points, for the GEMM calls. */
static cublasStatus_t (*pLtCreate)(cublasLtHandle_t *);
static cublasStatus_t (*pLtDescCreate)(cublasLtMatmulDesc_t *,
                                       cublasComputeType_t, cudaDataType_t);
static cublasStatus_t (*pLtDescSet)(cublasLtMatmulDesc_t,
                                    cublasLtMatmulDescAttributes_t,
                                    const void *, size_t);
static cublasStatus_t (*pLtDescDestroy)(cublasLtMatmulDesc_t);
static cublasStatus_t (*pLtLayoutCreate)(cublasLtMatrixLayout_t *,
                                         cudaDataType, uint64_t, uint64_t,
                                         int64_t);
static cublasStatus_t (*pLtLayoutSet)(cublasLtMatrixLayout_t,
                                      cublasLtMatrixLayoutAttribute_t,
                                      const void *, size_t);
static cublasStatus_t (*pLtLayoutDestroy)(cublasLtMatrixLayout_t);
static cublasStatus_t (*pLtPrefCreate)(cublasLtMatmulPreference_t *);
static cublasStatus_t (*pLtPrefSet)(cublasLtMatmulPreference_t,
                                    cublasLtMatmulPreferenceAttributes_t,
                                    const void *, size_t);
static cublasStatus_t (*pLtHeuristic)(
    cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t,
    cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
    cublasLtMatmulPreference_t, int, cublasLtMatmulHeuristicResult_t *, int *);
static cublasStatus_t (*pLtMatmul)(
    cublasLtHandle_t, cublasLtMatmulDesc_t, const void *, const void *,
    cublasLtMatrixLayout_t, const void *, cublasLtMatrixLayout_t, const void *,
    const void *, cublasLtMatrixLayout_t, void *, cublasLtMatrixLayout_t,
    const cublasLtMatmulAlgo_t *, void *, size_t, cudaStream_t);

static int fail(const char *what, CUresult r) {
  fprintf(stderr, "launch: %s failed (CUDA error %d)\n", what, (int)r);
  return 1;
}

#define CHECK(call, what)                                                      \
  do {                                                                         \
    CUresult r_ = (call);                                                      \
    if (r_ != CUDA_SUCCESS)                                                    \
      return fail(what, r_);                                                   \
  } while (0)

static void *load(void *lib, const char *name) {
  void *sym = dlsym(lib, name);
  if (!sym)
    fprintf(stderr, "launch: %s is missing from its library\n", name);
  return sym;
}

/* A column-major layout of `rows` x `cols` (ld), batched as the GEMM is. */
static cublasLtMatrixLayout_t layout(uint64_t rows, uint64_t cols, int64_t ld,
                                     int64_t batch, int64_t stride) {
  cublasLtMatrixLayout_t l = NULL;
  if (pLtLayoutCreate(&l, CUDA_R_32F, rows, cols, ld) != CUBLAS_STATUS_SUCCESS)
    return NULL;
  if (batch > 1) {
    int32_t count = (int32_t)batch;
    pLtLayoutSet(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count);
    pLtLayoutSet(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                 sizeof stride);
  }
  return l;
}

/* One GEMM call of the manifest (gemm_abi). lathe's buffers are row-major,
 * cuBLASLt's column-major: D^T = op(B)^T op(A)^T, so B goes in as
 * cuBLASLt's A, A as its B, and D^T is n x m with D's leading dimension; the
 * bias then runs along D^T's rows, which is what cuBLASLt's bias does. */
static int runGemm(cublasLtHandle_t lt, cublasLtMatmulPreference_t pref,
                   CUdeviceptr workspace, const struct lathe_gemm *g,
                   const CUdeviceptr *operands) {
  static const cublasComputeType_t compute[] = {
      CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32,
      CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_COMPUTE_32F_FAST_16F};
  unsigned next = 3;
  CUdeviceptr c = g->has_c ? operands[next++] : operands[2];
  CUdeviceptr bias = g->has_bias ? operands[next++] : 0;
  CUdeviceptr aux = g->has_aux ? operands[next++] : 0;
  cublasLtMatmulDesc_t desc;
  if (pLtDescCreate(&desc, compute[g->precision], CUDA_R_32F))
    return 1;
  int32_t opA = g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  int32_t opB = g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  uint32_t epilogue = g->epilogue == LATHE_GEMM_RELU ? CUBLASLT_EPILOGUE_RELU
                      : g->epilogue == LATHE_GEMM_GELU
                          ? (g->has_aux ? CUBLASLT_EPILOGUE_GELU_AUX
                                        : CUBLASLT_EPILOGUE_GELU)
                          : CUBLASLT_EPILOGUE_DEFAULT;
  if (g->has_bias)
    epilogue = epilogue == CUBLASLT_EPILOGUE_DEFAULT ? CUBLASLT_EPILOGUE_BIAS
                                                     : epilogue |
                                                           CUBLASLT_EPILOGUE_BIAS;
  pLtDescSet(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof opA);
  pLtDescSet(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opB, sizeof opB);
  pLtDescSet(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue);
  if (g->has_bias)
    pLtDescSet(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
  if (g->has_aux) {
    int64_t ld = g->ldd, stride = g->stride_d;
    pLtDescSet(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux);
    pLtDescSet(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld);
    pLtDescSet(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, &stride,
               sizeof stride);
  }
  cublasLtMatrixLayout_t la = layout(g->trans_b ? g->k : g->n,
                                     g->trans_b ? g->n : g->k, g->ldb,
                                     g->batch, g->stride_b);
  cublasLtMatrixLayout_t lb = layout(g->trans_a ? g->m : g->k,
                                     g->trans_a ? g->k : g->m, g->lda,
                                     g->batch, g->stride_a);
  cublasLtMatrixLayout_t ld = layout(g->n, g->m, g->ldd, g->batch, g->stride_d);
  cublasLtMatmulHeuristicResult_t result;
  int found = 0;
  int bad = !la || !lb || !ld ||
            pLtHeuristic(lt, desc, la, lb, ld, ld, pref, 1, &result, &found) ||
            found < 1;
  float alpha = 1.0f, beta = g->has_c ? 1.0f : 0.0f;
  if (!bad)
    bad = pLtMatmul(lt, desc, &alpha, (const void *)(uintptr_t)operands[1], la,
                    (const void *)(uintptr_t)operands[0], lb, &beta,
                    (const void *)(uintptr_t)c, ld,
                    (void *)(uintptr_t)operands[2], ld, &result.algo,
                    (void *)(uintptr_t)workspace, LATHE_GEMM_WORKSPACE_BYTES,
                    0) != CUBLAS_STATUS_SUCCESS;
  for (unsigned i = 0; i < 3; ++i) {
    cublasLtMatrixLayout_t l = i == 0 ? la : i == 1 ? lb : ld;
    if (l)
      pLtLayoutDestroy(l);
  }
  pLtDescDestroy(desc);
  return bad;
}

static char *readFile(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *data = malloc((size_t)n + 1);
  if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
    free(data);
    data = NULL;
  }
  if (data)
    data[n] = 0;
  fclose(f);
  return data;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: launch EXPORT_DIR\n");
    return 1;
  }
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "launch: no CUDA driver found (libcuda.so.1 cannot be "
                    "loaded)\n");
    return 1;
  }
  if (!(pInit = load(lib, "cuInit")) ||
      !(pDeviceGetCount = load(lib, "cuDeviceGetCount")) ||
      !(pDeviceGet = load(lib, "cuDeviceGet")) ||
      !(pDeviceGetAttribute = load(lib, "cuDeviceGetAttribute")) ||
      !(pPrimaryCtxRetain = load(lib, "cuDevicePrimaryCtxRetain")) ||
      !(pCtxSetCurrent = load(lib, "cuCtxSetCurrent")) ||
      !(pModuleLoadData = load(lib, "cuModuleLoadData")) ||
      !(pModuleGetFunction = load(lib, "cuModuleGetFunction")) ||
      !(pMemAlloc = load(lib, "cuMemAlloc_v2")) ||
      !(pMemsetD8 = load(lib, "cuMemsetD8_v2")) ||
      !(pMemcpyHtoD = load(lib, "cuMemcpyHtoD_v2")) ||
      !(pMemcpyDtoH = load(lib, "cuMemcpyDtoH_v2")) ||
      !(pLaunchKernel = load(lib, "cuLaunchKernel")) ||
      !(pCtxSynchronize = load(lib, "cuCtxSynchronize")))
    return 1;
  int devices = 0;
  if (pInit(0) != CUDA_SUCCESS || pDeviceGetCount(&devices) != CUDA_SUCCESS ||
      devices == 0) {
    fprintf(stderr, "launch: no CUDA device\n");
    return 1;
  }
  CUdevice dev;
  CUcontext ctx;
  int major = 0;
  CHECK(pDeviceGet(&dev, 0), "cuDeviceGet");
  CHECK(pDeviceGetAttribute(&major,
                            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev),
        "cuDeviceGetAttribute");
  CHECK(pPrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
  CHECK(pCtxSetCurrent(ctx), "cuCtxSetCurrent");

  /* sm_90 PTX on Hopper and newer, sm_80 PTX (JIT-compiled forward) else. */
  char path[4096];
  snprintf(path, sizeof path, "%s/kernels.%s.ptx", argv[1],
           major >= 9 ? "sm_90" : "sm_80");
  char *ptx = readFile(path);
  if (!ptx) {
    fprintf(stderr, "launch: cannot read %s\n", path);
    return 1;
  }
  CUmodule module;
  CHECK(pModuleLoadData(&module, ptx), "cuModuleLoadData");

  /* One allocation for the arena; one per parameter and state. */
  size_t numBuffers = sizeof lathe_buffers / sizeof lathe_buffers[0];
  CUdeviceptr arena, params[LATHE_NUM_PARAMS + 1] = {0},
                     states[LATHE_NUM_STATES + 1] = {0};
  CHECK(pMemAlloc(&arena, LATHE_ARENA_BYTES), "cuMemAlloc");
  CHECK(pMemsetD8(arena, 0, LATHE_ARENA_BYTES), "cuMemsetD8");
  CUdeviceptr *where = calloc(numBuffers, sizeof *where);
  srand(1);
  for (size_t i = 0; i < numBuffers; ++i) {
    const struct lathe_buffer *b = &lathe_buffers[i];
    if (b->kind == LATHE_ARENA) {
      where[i] = arena + b->offset;
    } else if (b->kind == LATHE_PARAM) {
      if (!params[b->index]) {
        float *host = malloc(b->bytes);
        for (size_t j = 0; j < b->bytes / 4; ++j)
          host[j] = 0.02f * ((float)rand() / (float)RAND_MAX - 0.5f);
        CHECK(pMemAlloc(&params[b->index], b->bytes), "cuMemAlloc");
        CHECK(pMemcpyHtoD(params[b->index], host, b->bytes), "cuMemcpyHtoD");
        free(host);
      }
      where[i] = params[b->index];
    } else {
      if (!states[b->index]) {
        CHECK(pMemAlloc(&states[b->index], b->bytes), "cuMemAlloc");
        CHECK(pMemsetD8(states[b->index], 0, b->bytes), "cuMemsetD8");
      }
      where[i] = states[b->index];
    }
  }

  /* cuBLASLt for the GEMM calls, where the forward pass has any. */
  cublasLtHandle_t lt = NULL;
  cublasLtMatmulPreference_t pref = NULL;
  CUdeviceptr workspace = 0;
  unsigned gemms = 0;
  for (unsigned i = 0; i < LATHE_forward_NUM_LAUNCHES; ++i)
    gemms += lathe_forward_launches[i].gemm != NULL;
  if (gemms) {
    void *ltLib = dlopen("libcublasLt.so.13", RTLD_NOW | RTLD_LOCAL);
    if (!ltLib) {
      fprintf(stderr, "launch: no cuBLASLt found (libcublasLt.so.13 cannot "
                      "be loaded)\n");
      return 1;
    }
    if (!(pLtCreate = load(ltLib, "cublasLtCreate")) ||
        !(pLtDescCreate = load(ltLib, "cublasLtMatmulDescCreate")) ||
        !(pLtDescSet = load(ltLib, "cublasLtMatmulDescSetAttribute")) ||
        !(pLtDescDestroy = load(ltLib, "cublasLtMatmulDescDestroy")) ||
        !(pLtLayoutCreate = load(ltLib, "cublasLtMatrixLayoutCreate")) ||
        !(pLtLayoutSet = load(ltLib, "cublasLtMatrixLayoutSetAttribute")) ||
        !(pLtLayoutDestroy = load(ltLib, "cublasLtMatrixLayoutDestroy")) ||
        !(pLtPrefCreate = load(ltLib, "cublasLtMatmulPreferenceCreate")) ||
        !(pLtPrefSet = load(ltLib, "cublasLtMatmulPreferenceSetAttribute")) ||
        !(pLtHeuristic = load(ltLib, "cublasLtMatmulAlgoGetHeuristic")) ||
        !(pLtMatmul = load(ltLib, "cublasLtMatmul")))
      return 1;
    uint64_t bytes = LATHE_GEMM_WORKSPACE_BYTES;
    if (pLtCreate(&lt) || pLtPrefCreate(&pref) ||
        pLtPrefSet(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &bytes,
                   sizeof bytes)) {
      fprintf(stderr, "launch: cannot set up cuBLASLt\n");
      return 1;
    }
    CHECK(pMemAlloc(&workspace, LATHE_GEMM_WORKSPACE_BYTES), "cuMemAlloc");
  }

  /* forward's input: tokens 0, 1, 2, ... (within the vocabulary). */
  static int32_t tokens[1 << 16];
  const struct lathe_buffer *in = &lathe_buffers[LATHE_forward_INPUT0];
  size_t n = in->bytes / 4;
  for (size_t t = 0; t < n && t < (1 << 16); ++t)
    tokens[t] = (int32_t)(t % LATHE_VOCAB);
  CHECK(pMemcpyHtoD(where[LATHE_forward_INPUT0], tokens, in->bytes),
        "cuMemcpyHtoD");
  for (unsigned i = 0; i < LATHE_forward_NUM_LAUNCHES; ++i) {
    const struct lathe_launch *l = &lathe_forward_launches[i];
    if (l->gemm) {
      CUdeviceptr operands[6];
      for (unsigned a = 0; a < l->num_args && a < 6; ++a)
        operands[a] = where[l->args[a]];
      if (runGemm(lt, pref, workspace, l->gemm, operands)) {
        fprintf(stderr, "launch: cuBLASLt refused GEMM call %u\n", i);
        return 1;
      }
      continue;
    }
    CUfunction fn;
    CHECK(pModuleGetFunction(&fn, module, l->kernel), l->kernel);
    void *args[64];
    for (unsigned a = 0; a < l->num_args && a < 64; ++a)
      args[a] = &where[l->args[a]];
    CHECK(pLaunchKernel(fn, l->grid[0], l->grid[1], l->grid[2], l->block[0],
                        l->block[1], l->block[2], 0, 0, args, NULL),
          l->kernel);
  }
  CHECK(pCtxSynchronize(), "cuCtxSynchronize");
  /* The logits of the last position: [max_seq, vocab] row-major. */
  const struct lathe_buffer *out = &lathe_buffers[LATHE_forward_OUTPUT0];
  float *logits = malloc(out->bytes);
  CHECK(pMemcpyDtoH(logits, where[LATHE_forward_OUTPUT0], out->bytes),
        "cuMemcpyDtoH");
  const float *last = logits + (out->bytes / 4 - LATHE_VOCAB);
  int best = 0;
  for (int v = 1; v < LATHE_VOCAB; ++v)
    if (last[v] > last[best])
      best = v;
  printf("launch: ran %u kernels and %u GEMM calls of entry 'forward'; last "
         "position's argmax is token %d (logit %g)\n",
         (unsigned)LATHE_forward_NUM_LAUNCHES - gemms, gemms, best,
         (double)last[best]);
  return 0;
}
