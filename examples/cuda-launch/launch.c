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
 * on a machine without one the program says so and exits 1. */
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
    fprintf(stderr, "launch: the CUDA driver has no %s\n", name);
  return sym;
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
  printf("launch: ran %u kernels of entry 'forward'; last position's argmax "
         "is token %d (logit %g)\n",
         (unsigned)LATHE_forward_NUM_LAUNCHES, best, (double)last[best]);
  return 0;
}
