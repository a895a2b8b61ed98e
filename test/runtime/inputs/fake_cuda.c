/* A CUDA driver for tests on machines without a GPU: the "device" is this
 * host. lathe's cuda device loads it through $LATHE_CUDA_DRIVER and drives it
 * exactly as it drives libcuda.so.1, so the runtime's side of the driver API
 * (symbols, module choice, allocations, copies, launch parameters) runs here.
 *
 *  - Memory is malloc'd; every copy, memset and kernel pointer argument must
 *    lie inside a live allocation.
 *  - cuModuleLoadData takes PTX (its .entry names and .param counts are
 *    parsed) or a cubin (ELF: its symbol table gives the kernel names, and
 *    each kernel's .nv.info.<name> section one EIATTR_KPARAM_INFO record,
 *    attribute 0x17, per parameter).
 *  - cuLaunchKernel checks the grid and block against CUDA's limits and the
 *    parameter count against the module, then runs the kernel's CPU
 *    emulation from the library named by $FAKE_CUDA_KERNELS (`lathe-run ART
 *    dump-library`), so results can be compared with the cpu device.
 *  - $FAKE_CUDA_CC ("9.0" by default) is the compute capability reported;
 *    $FAKE_CUDA_DEVICES the device count (1). At exit, with $FAKE_CUDA_LOG
 *    set, a summary line is appended to that file.
 *
 * The same library is also a cuBLASLt ($LATHE_CUBLASLT), with the real
 * header's types and enums: it checks the descriptors, layouts, epilogue
 * attributes, heuristic, workspace and pointers a cublasLtMatmul call gets,
 * and computes the product the way cuBLASLt documents it, column-major:
 *   D = epilogue(alpha op(A) op(B) + beta C + bias), bias along D's rows,
 * with the operands rounded as the compute type allows (tf32, bf16, f16).
 *
 * Any violation prints "fake-cuda: ..." on stderr and returns an error, so
 * the runtime reports it and the test fails. Built as libcuda.so.1 on
 * LD_LIBRARY_PATH it also serves hosts other than lathe's runtime (the
 * kernel-export example, with the synchronous calls on the default stream). */
#include <cublasLt.h>
#include <cuda.h>
#include <math.h>
#include <dlfcn.h>
#include <elf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ALLOCS 4096
#define MAX_FUNCS 8192

struct alloc {
  char *base;
  size_t bytes;
};
static struct alloc allocs[MAX_ALLOCS];
static int numAllocs;

struct func {
  char name[256];
  int params; /* -1: unknown (cubin) */
  void (*emulation)(void **);
};
static struct func funcs[MAX_FUNCS];
static int numFuncs;
static int moduleIsCubin;
static void *kernels;
static int initialized;
static unsigned long long launches, bytesUp, bytesDown, violations, gemms;
static int ltObjects; /* cuBLASLt handles and descriptors not destroyed */

static CUresult violation(const char *what, const char *detail) {
  fprintf(stderr, "fake-cuda: %s%s%s\n", what, detail ? ": " : "",
          detail ? detail : "");
  ++violations;
  return CUDA_ERROR_INVALID_VALUE;
}

/* The allocation holding [p, p + n), or NULL. */
static struct alloc *inside(CUdeviceptr p, size_t n) {
  for (int i = 0; i < numAllocs; ++i) {
    uintptr_t base = (uintptr_t)allocs[i].base;
    if (p >= base && p + n <= base + allocs[i].bytes && p + n >= p)
      return &allocs[i];
  }
  return NULL;
}

__attribute__((destructor)) static void summary(void) {
  const char *log = getenv("FAKE_CUDA_LOG");
  if (!log || !initialized)
    return;
  FILE *f = fopen(log, "a");
  if (!f)
    return;
  fprintf(f,
          "fake-cuda: %llu launches, %llu gemms, %llu bytes up, %llu bytes "
          "down, %llu violations, %d allocations live, %d cublasLt objects "
          "live\n",
          launches, gemms, bytesUp, bytesDown, violations, numAllocs,
          ltObjects);
  fclose(f);
}

CUresult cuInit(unsigned flags) {
  if (flags != 0)
    return violation("cuInit", "flags must be 0");
  initialized = 1;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int *count) {
  const char *n = getenv("FAKE_CUDA_DEVICES");
  *count = n ? atoi(n) : 1;
  return initialized ? CUDA_SUCCESS : CUDA_ERROR_NOT_INITIALIZED;
}

CUresult cuDeviceGet(CUdevice *dev, int ordinal) {
  if (ordinal != 0)
    return CUDA_ERROR_INVALID_DEVICE;
  *dev = 0;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int *value, CUdevice_attribute attr,
                              CUdevice dev) {
  const char *cc = getenv("FAKE_CUDA_CC");
  int major = 9, minor = 0;
  if (cc)
    sscanf(cc, "%d.%d", &major, &minor);
  if (dev != 0)
    return CUDA_ERROR_INVALID_DEVICE;
  if (attr == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
    *value = major;
  else if (attr == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
    *value = minor;
  else
    return CUDA_ERROR_INVALID_VALUE;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char *name, int len, CUdevice dev) {
  (void)dev;
  snprintf(name, (size_t)len, "fake CUDA device");
  return CUDA_SUCCESS;
}

static int contextRetained;
CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev) {
  (void)dev;
  ++contextRetained;
  *ctx = (CUcontext)(uintptr_t)0x1000;
  return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
  (void)dev;
  if (contextRetained-- <= 0)
    return violation("cuDevicePrimaryCtxRelease", "not retained");
  return CUDA_SUCCESS;
}
CUresult cuCtxSetCurrent(CUcontext ctx) {
  if (ctx != (CUcontext)(uintptr_t)0x1000)
    return violation("cuCtxSetCurrent", "not the primary context");
  return CUDA_SUCCESS;
}

CUresult cuGetErrorName(CUresult error, const char **name) {
  switch (error) {
  case CUDA_ERROR_INVALID_VALUE: *name = "CUDA_ERROR_INVALID_VALUE"; break;
  case CUDA_ERROR_NOT_FOUND: *name = "CUDA_ERROR_NOT_FOUND"; break;
  case CUDA_ERROR_NOT_SUPPORTED: *name = "CUDA_ERROR_NOT_SUPPORTED"; break;
  case CUDA_ERROR_OUT_OF_MEMORY: *name = "CUDA_ERROR_OUT_OF_MEMORY"; break;
  default: return CUDA_ERROR_INVALID_VALUE;
  }
  return CUDA_SUCCESS;
}

static void addFunc(const char *name, size_t len, int params) {
  if (numFuncs == MAX_FUNCS || len >= sizeof funcs[0].name)
    return;
  memcpy(funcs[numFuncs].name, name, len);
  funcs[numFuncs].name[len] = 0;
  funcs[numFuncs].params = params;
  funcs[numFuncs].emulation = NULL;
  ++numFuncs;
}

/* ".entry NAME(" then ".param" lines up to ")". */
static CUresult loadPtx(const char *ptx) {
  if (!strstr(ptx, ".version") || !strstr(ptx, ".target"))
    return violation("cuModuleLoadData", "neither PTX nor a cubin");
  for (const char *p = strstr(ptx, ".entry "); p; p = strstr(p, ".entry ")) {
    p += 7;
    const char *open = strchr(p, '(');
    const char *close = open ? strchr(open, ')') : NULL;
    if (!close)
      return violation("cuModuleLoadData", "malformed .entry");
    int params = 0;
    for (const char *q = strstr(open, ".param"); q && q < close;
         q = strstr(q + 6, ".param"))
      ++params;
    const char *end = open;
    while (end > p && (end[-1] == ' ' || end[-1] == '\n'))
      --end;
    addFunc(p, (size_t)(end - p), params);
    p = close;
  }
  return CUDA_SUCCESS;
}

/* The parameter count of kernel `name` from its .nv.info.<name> section:
 * records of (format, attribute) bytes, then 16 bits: a value (formats 1
 * to 3) or the size of the bytes that follow (format 4); -1 if absent. */
static int cubinParams(const unsigned char *image, const Elf64_Shdr *sh,
                       int shnum, const char *sectionNames, const char *name) {
  char wanted[300];
  snprintf(wanted, sizeof wanted, ".nv.info.%s", name);
  for (int i = 0; i < shnum; ++i) {
    if (strcmp(sectionNames + sh[i].sh_name, wanted) != 0)
      continue;
    const unsigned char *p = image + sh[i].sh_offset,
                        *end = p + sh[i].sh_size;
    int params = 0;
    while (p + 4 <= end) {
      unsigned size = p[2] | (unsigned)p[3] << 8;
      if (p[0] == 4) {
        params += p[1] == 0x17;
        p += 4 + size;
      } else if (p[0] >= 1 && p[0] <= 3) {
        p += 4;
      } else {
        return -1; /* a format this double does not know */
      }
    }
    return params;
  }
  return -1;
}

/* Function symbols of a 64-bit ELF cubin, with their parameter counts. */
static CUresult loadCubin(const unsigned char *image) {
  const Elf64_Ehdr *eh = (const Elf64_Ehdr *)image;
  if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_shentsize != sizeof(Elf64_Shdr))
    return violation("cuModuleLoadData", "not a 64-bit cubin");
  const Elf64_Shdr *sh = (const Elf64_Shdr *)(image + eh->e_shoff);
  const char *sectionNames = (const char *)(image + sh[eh->e_shstrndx].sh_offset);
  for (int i = 0; i < eh->e_shnum; ++i) {
    if (sh[i].sh_type != SHT_SYMTAB)
      continue;
    const Elf64_Sym *sym = (const Elf64_Sym *)(image + sh[i].sh_offset);
    const char *names = (const char *)(image + sh[sh[i].sh_link].sh_offset);
    size_t count = sh[i].sh_size / sizeof(Elf64_Sym);
    for (size_t j = 0; j < count; ++j)
      if (ELF64_ST_TYPE(sym[j].st_info) == STT_FUNC) {
        const char *name = names + sym[j].st_name;
        addFunc(name, strlen(name),
                cubinParams(image, sh, eh->e_shnum, sectionNames, name));
      }
  }
  return CUDA_SUCCESS;
}

CUresult cuModuleLoadData(CUmodule *module, const void *image) {
  if (!initialized)
    return CUDA_ERROR_NOT_INITIALIZED;
  numFuncs = 0;
  const unsigned char *bytes = image;
  moduleIsCubin = memcmp(bytes, ELFMAG, SELFMAG) == 0;
  CUresult r = moduleIsCubin ? loadCubin(bytes) : loadPtx(image);
  if (r != CUDA_SUCCESS)
    return r;
  const char *library = getenv("FAKE_CUDA_KERNELS");
  /* The kernels call libm (sincosf, expf); a host program without it (the
   * export example) still runs them. */
  if (library && !kernels)
    dlopen("libm.so.6", RTLD_NOW | RTLD_GLOBAL);
  if (library && !kernels && !(kernels = dlopen(library, RTLD_NOW | RTLD_LOCAL)))
    return violation("cannot load $FAKE_CUDA_KERNELS", dlerror());
  *module = (CUmodule)(uintptr_t)0x2000;
  return CUDA_SUCCESS;
}

CUresult cuModuleUnload(CUmodule module) {
  (void)module;
  numFuncs = 0;
  return CUDA_SUCCESS;
}

CUresult cuModuleGetFunction(CUfunction *fn, CUmodule module,
                             const char *name) {
  if (module != (CUmodule)(uintptr_t)0x2000)
    return violation("cuModuleGetFunction", "no such module");
  for (int i = 0; i < numFuncs; ++i)
    if (strcmp(funcs[i].name, name) == 0) {
      if (kernels && !funcs[i].emulation) {
        char symbol[300];
        snprintf(symbol, sizeof symbol, "lathe_kernel_%s", name);
        funcs[i].emulation = (void (*)(void **))dlsym(kernels, symbol);
        if (!funcs[i].emulation)
          return violation("no emulation for kernel", name);
      }
      *fn = (CUfunction)&funcs[i];
      return CUDA_SUCCESS;
    }
  return CUDA_ERROR_NOT_FOUND;
}

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
  if (bytes == 0)
    return violation("cuMemAlloc", "0 bytes");
  if (numAllocs == MAX_ALLOCS)
    return CUDA_ERROR_OUT_OF_MEMORY;
  /* Uninitialised on purpose, like device memory: the runtime must zero. */
  char *base = malloc(bytes);
  if (!base)
    return CUDA_ERROR_OUT_OF_MEMORY;
  memset(base, 0xA5, bytes);
  allocs[numAllocs].base = base;
  allocs[numAllocs].bytes = bytes;
  ++numAllocs;
  *p = (CUdeviceptr)(uintptr_t)base;
  return CUDA_SUCCESS;
}

CUresult cuMemFree_v2(CUdeviceptr p) {
  for (int i = 0; i < numAllocs; ++i)
    if ((uintptr_t)allocs[i].base == p) {
      free(allocs[i].base);
      allocs[i] = allocs[--numAllocs];
      return CUDA_SUCCESS;
    }
  return violation("cuMemFree", "not an allocation");
}

static int streams;
CUresult cuStreamCreate(CUstream *stream, unsigned flags) {
  (void)flags;
  ++streams;
  *stream = (CUstream)(uintptr_t)0x3000;
  return CUDA_SUCCESS;
}
CUresult cuStreamDestroy_v2(CUstream stream) {
  if (stream != (CUstream)(uintptr_t)0x3000 || streams-- <= 0)
    return violation("cuStreamDestroy", "no such stream");
  return CUDA_SUCCESS;
}
/* The stream lathe creates, or the legacy default stream (0) that other
 * hosts (examples/cuda-launch/launch.c) use. */
static CUresult checkStream(CUstream stream, const char *call) {
  if (stream != (CUstream)(uintptr_t)0x3000 && stream != NULL)
    return violation(call, "not a stream of this context");
  return CUDA_SUCCESS;
}
CUresult cuStreamSynchronize(CUstream stream) {
  return checkStream(stream, "cuStreamSynchronize");
}

CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n,
                         CUstream stream) {
  if (checkStream(stream, "cuMemsetD8Async"))
    return CUDA_ERROR_INVALID_VALUE;
  if (!inside(p, n))
    return violation("cuMemsetD8Async", "outside every allocation");
  memset((void *)(uintptr_t)p, v, n);
  return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n,
                              CUstream stream) {
  if (checkStream(stream, "cuMemcpyHtoDAsync"))
    return CUDA_ERROR_INVALID_VALUE;
  if (!inside(dst, n))
    return violation("cuMemcpyHtoDAsync", "outside every allocation");
  memcpy((void *)(uintptr_t)dst, src, n);
  bytesUp += n;
  return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n,
                              CUstream stream) {
  if (checkStream(stream, "cuMemcpyDtoHAsync"))
    return CUDA_ERROR_INVALID_VALUE;
  if (!inside(src, n))
    return violation("cuMemcpyDtoHAsync", "outside every allocation");
  memcpy(dst, (const void *)(uintptr_t)src, n);
  bytesDown += n;
  return CUDA_SUCCESS;
}

/* The synchronous forms, on the default stream. */
CUresult cuMemsetD8_v2(CUdeviceptr p, unsigned char v, size_t n) {
  return cuMemsetD8Async(p, v, n, NULL);
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
  return cuMemcpyHtoDAsync_v2(dst, src, n, NULL);
}
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
  return cuMemcpyDtoHAsync_v2(dst, src, n, NULL);
}
CUresult cuCtxSynchronize(void) { return CUDA_SUCCESS; }

CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                        unsigned bx, unsigned by, unsigned bz, unsigned shared,
                        CUstream stream, void **params, void **extra) {
  struct func *fn = (struct func *)f;
  if (fn < funcs || fn >= funcs + numFuncs)
    return violation("cuLaunchKernel", "not a function of the module");
  if (checkStream(stream, "cuLaunchKernel"))
    return CUDA_ERROR_INVALID_VALUE;
  if (extra || !params)
    return violation("cuLaunchKernel", "parameters must come as kernelParams");
  if (!gx || !gy || !gz || !bx || !by || !bz || gy > 65535 || gz > 65535 ||
      bx > 1024 || by > 1024 || bz > 64 ||
      (unsigned long long)bx * by * bz > 1024)
    return violation("cuLaunchKernel", "grid or block outside CUDA's limits");
  if (shared != 0)
    return violation("cuLaunchKernel", "dynamic shared memory requested");
  if (fn->params < 0)
    return violation("cuLaunchKernel: the module does not say how many "
                     "parameters this kernel takes",
                     fn->name);
  void *slots[512];
  if (fn->params + 8 > 512)
    return violation("cuLaunchKernel", "too many parameters");
  for (int i = 0; i < fn->params; ++i) {
    CUdeviceptr p = *(CUdeviceptr *)params[i];
    if (!inside(p, 1)) {
      char detail[320];
      snprintf(detail, sizeof detail, "%s parameter %d is outside every allocation",
               fn->name, i);
      return violation("cuLaunchKernel", detail);
    }
    slots[i] = (void *)(uintptr_t)p;
  }
  ++launches;
  if (!fn->emulation)
    return CUDA_SUCCESS;
  unsigned sizes[6] = {gx, gy, gz, bx, by, bz};
  for (int d = 0; d < 6; ++d)
    slots[fn->params + d] = (void *)(uintptr_t)sizes[d];
  slots[fn->params + 6] = (void *)(uintptr_t)0; /* part */
  slots[fn->params + 7] = (void *)(uintptr_t)1; /* parts */
  fn->emulation(slots);
  return CUDA_SUCCESS;
}

/*===----------------------------------------------------------------------===*
 * cuBLASLt
 *===----------------------------------------------------------------------===*/

static cublasStatus_t ltViolation(const char *what, const char *detail) {
  violation(what, detail);
  return CUBLAS_STATUS_INVALID_VALUE;
}

struct ltHandle {
  int magic;
};
struct ltDesc {
  int magic;
  cublasComputeType_t compute;
  int32_t transA, transB;
  uint32_t epilogue;
  const void *bias;
  void *aux;
  int64_t auxLd, auxStride;
};
struct ltLayout {
  int magic;
  uint64_t rows, cols;
  int64_t ld, stride;
  int32_t batch;
};
struct ltPref {
  int magic;
  uint64_t workspace;
};
enum { kHandle = 0x4c74, kDesc = 0x4c75, kLayout = 0x4c76, kPref = 0x4c77 };
enum { kAlgoMagic = 0x1a7e };
static size_t heuristicWorkspace;

const char *cublasLtGetStatusName(cublasStatus_t status) {
  return status == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS"
         : status == CUBLAS_STATUS_NOT_SUPPORTED
             ? "CUBLAS_STATUS_NOT_SUPPORTED"
             : "CUBLAS_STATUS_INVALID_VALUE";
}

cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle) {
  if (!initialized)
    return ltViolation("cublasLtCreate", "before cuInit");
  struct ltHandle *h = calloc(1, sizeof *h);
  h->magic = kHandle;
  *handle = (cublasLtHandle_t)h;
  ++ltObjects;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  struct ltHandle *h = (struct ltHandle *)handle;
  if (!h || h->magic != kHandle)
    return ltViolation("cublasLtDestroy", "not a handle");
  h->magic = 0;
  free(h);
  --ltObjects;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc,
                                        cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32 &&
      compute != CUBLAS_COMPUTE_32F_FAST_16BF &&
      compute != CUBLAS_COMPUTE_32F_FAST_16F)
    return ltViolation("cublasLtMatmulDescCreate", "not an f32 compute type");
  if (scale != CUDA_R_32F)
    return ltViolation("cublasLtMatmulDescCreate", "scale type must be f32");
  struct ltDesc *d = calloc(1, sizeof *d);
  d->magic = kDesc;
  d->compute = compute;
  d->epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  *desc = (cublasLtMatmulDesc_t)d;
  ++ltObjects;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  struct ltDesc *d = (struct ltDesc *)desc;
  if (!d || d->magic != kDesc)
    return ltViolation("cublasLtMatmulDescDestroy", "not a descriptor");
  d->magic = 0;
  free(d);
  --ltObjects;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size) {
  struct ltDesc *d = (struct ltDesc *)desc;
  if (!d || d->magic != kDesc)
    return ltViolation("cublasLtMatmulDescSetAttribute", "not a descriptor");
  switch (attr) {
  case CUBLASLT_MATMUL_DESC_TRANSA:
  case CUBLASLT_MATMUL_DESC_TRANSB: {
    int32_t op;
    if (size != sizeof op)
      return ltViolation("cublasLtMatmulDescSetAttribute", "TRANS size");
    memcpy(&op, buf, sizeof op);
    if (op != CUBLAS_OP_N && op != CUBLAS_OP_T)
      return ltViolation("cublasLtMatmulDescSetAttribute", "TRANS value");
    *(attr == CUBLASLT_MATMUL_DESC_TRANSA ? &d->transA : &d->transB) = op;
    return CUBLAS_STATUS_SUCCESS;
  }
  case CUBLASLT_MATMUL_DESC_EPILOGUE: {
    uint32_t e;
    if (size != sizeof e)
      return ltViolation("cublasLtMatmulDescSetAttribute", "EPILOGUE size");
    memcpy(&e, buf, sizeof e);
    if (e != CUBLASLT_EPILOGUE_DEFAULT && e != CUBLASLT_EPILOGUE_RELU &&
        e != CUBLASLT_EPILOGUE_BIAS && e != CUBLASLT_EPILOGUE_RELU_BIAS &&
        e != CUBLASLT_EPILOGUE_GELU && e != CUBLASLT_EPILOGUE_GELU_BIAS &&
        e != CUBLASLT_EPILOGUE_GELU_AUX && e != CUBLASLT_EPILOGUE_GELU_AUX_BIAS)
      return ltViolation("cublasLtMatmulDescSetAttribute",
                         "an epilogue the fake does not model");
    d->epilogue = e;
    return CUBLAS_STATUS_SUCCESS;
  }
  case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
  case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER:
    if (size != sizeof(void *))
      return ltViolation("cublasLtMatmulDescSetAttribute", "pointer size");
    if (attr == CUBLASLT_MATMUL_DESC_BIAS_POINTER)
      memcpy(&d->bias, buf, sizeof(void *));
    else
      memcpy(&d->aux, buf, sizeof(void *));
    return CUBLAS_STATUS_SUCCESS;
  case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD:
  case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE:
    if (size != sizeof(int64_t))
      return ltViolation("cublasLtMatmulDescSetAttribute", "AUX size");
    memcpy(attr == CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD ? &d->auxLd
                                                        : &d->auxStride,
           buf, sizeof(int64_t));
    return CUBLAS_STATUS_SUCCESS;
  default:
    return ltViolation("cublasLtMatmulDescSetAttribute",
                       "an attribute the fake does not model");
  }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout,
                                          cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (type != CUDA_R_32F)
    return ltViolation("cublasLtMatrixLayoutCreate", "not f32");
  if (!rows || !cols || ld < (int64_t)rows)
    return ltViolation("cublasLtMatrixLayoutCreate",
                       "column-major ld below the rows");
  struct ltLayout *l = calloc(1, sizeof *l);
  l->magic = kLayout;
  l->rows = rows;
  l->cols = cols;
  l->ld = ld;
  l->batch = 1;
  *layout = (cublasLtMatrixLayout_t)l;
  ++ltObjects;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  struct ltLayout *l = (struct ltLayout *)layout;
  if (!l || l->magic != kLayout)
    return ltViolation("cublasLtMatrixLayoutDestroy", "not a layout");
  l->magic = 0;
  free(l);
  --ltObjects;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(
    cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attr,
    const void *buf, size_t size) {
  struct ltLayout *l = (struct ltLayout *)layout;
  if (!l || l->magic != kLayout)
    return ltViolation("cublasLtMatrixLayoutSetAttribute", "not a layout");
  if (attr == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT && size == sizeof(int32_t)) {
    memcpy(&l->batch, buf, size);
    return l->batch >= 1 ? CUBLAS_STATUS_SUCCESS
                         : ltViolation("BATCH_COUNT", "below 1");
  }
  if (attr == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET &&
      size == sizeof(int64_t)) {
    memcpy(&l->stride, buf, size);
    return CUBLAS_STATUS_SUCCESS;
  }
  return ltViolation("cublasLtMatrixLayoutSetAttribute",
                     "an attribute or size the fake does not model");
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref) {
  struct ltPref *p = calloc(1, sizeof *p);
  p->magic = kPref;
  *pref = (cublasLtMatmulPreference_t)p;
  ++ltObjects;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  struct ltPref *p = (struct ltPref *)pref;
  if (!p || p->magic != kPref)
    return ltViolation("cublasLtMatmulPreferenceDestroy", "not a preference");
  p->magic = 0;
  free(p);
  --ltObjects;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(
    cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr,
    const void *buf, size_t size) {
  struct ltPref *p = (struct ltPref *)pref;
  if (!p || p->magic != kPref)
    return ltViolation("cublasLtMatmulPreferenceSetAttribute", "not a preference");
  if (attr != CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES || size != sizeof(uint64_t))
    return ltViolation("cublasLtMatmulPreferenceSetAttribute",
                       "an attribute the fake does not model");
  memcpy(&p->workspace, buf, size);
  return CUBLAS_STATUS_SUCCESS;
}

/* op(X) of a layout: its rows and columns after the transpose. */
static void opShape(const struct ltLayout *l, int32_t op, uint64_t *rows,
                    uint64_t *cols) {
  *rows = op == CUBLAS_OP_N ? l->rows : l->cols;
  *cols = op == CUBLAS_OP_N ? l->cols : l->rows;
}

/* What cuBLASLt would refuse: shapes that do not chain, batches that differ,
 * an epilogue without its pointer or with a bad aux leading dimension. */
static const char *checkMatmul(const struct ltDesc *d, const struct ltLayout *a,
                               const struct ltLayout *b,
                               const struct ltLayout *c,
                               const struct ltLayout *dl) {
  uint64_t am, ak, bk, bn;
  opShape(a, d->transA, &am, &ak);
  opShape(b, d->transB, &bk, &bn);
  if (ak != bk)
    return "op(A) and op(B) do not share k";
  if (dl->rows != am || dl->cols != bn)
    return "D is not op(A) rows by op(B) columns";
  if (c->rows != dl->rows || c->cols != dl->cols || c->ld != dl->ld ||
      c->batch != dl->batch || c->stride != dl->stride)
    return "C's layout differs from D's";
  if (a->batch != dl->batch || b->batch != dl->batch)
    return "batch counts differ";
  if ((d->epilogue & CUBLASLT_EPILOGUE_BIAS) && !d->bias)
    return "a bias epilogue without CUBLASLT_MATMUL_DESC_BIAS_POINTER";
  if (d->epilogue == CUBLASLT_EPILOGUE_GELU_AUX ||
      d->epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) {
    if (!d->aux)
      return "GELU_AUX without CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER";
    if (d->auxLd % 8 || d->auxLd < (int64_t)dl->rows)
      return "GELU_AUX's leading dimension must be a multiple of 8 and at "
             "least D's rows";
    if (dl->batch > 1 && d->auxStride % 8)
      return "GELU_AUX's batch stride must be a multiple of 8";
  }
  return NULL;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
    cublasLtMatrixLayout_t A, cublasLtMatrixLayout_t B,
    cublasLtMatrixLayout_t C, cublasLtMatrixLayout_t D,
    cublasLtMatmulPreference_t pref, int requested,
    cublasLtMatmulHeuristicResult_t results[], int *returned) {
  struct ltHandle *h = (struct ltHandle *)handle;
  struct ltDesc *d = (struct ltDesc *)desc;
  struct ltPref *p = (struct ltPref *)pref;
  if (!h || h->magic != kHandle || !d || d->magic != kDesc || !p ||
      p->magic != kPref || requested < 1)
    return ltViolation("cublasLtMatmulAlgoGetHeuristic", "bad arguments");
  const char *why = checkMatmul(d, (struct ltLayout *)A, (struct ltLayout *)B,
                                (struct ltLayout *)C, (struct ltLayout *)D);
  if (why)
    return ltViolation("cublasLtMatmulAlgoGetHeuristic", why);
  memset(&results[0], 0, sizeof results[0]);
  results[0].algo.data[0] = kAlgoMagic;
  /* Like the real one, an algorithm that wants part of the workspace. */
  results[0].workspaceSize = p->workspace < (1u << 20) ? p->workspace : (1u << 20);
  heuristicWorkspace = results[0].workspaceSize;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

/* Rounds to `bits` mantissa bits, to nearest even: the fast compute types'
 * down-conversion of f32 operands. */
static float keepMantissa(float x, unsigned bits) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if (((u >> 23) & 0xff) == 0xff)
    return x;
  unsigned drop = 23 - bits;
  u += ((1u << (drop - 1)) - 1) + ((u >> drop) & 1u);
  u &= ~((1u << drop) - 1u);
  memcpy(&x, &u, 4);
  return x;
}
static float asCompute(float x, cublasComputeType_t compute) {
  switch (compute) {
  case CUBLAS_COMPUTE_32F_FAST_TF32:
    return keepMantissa(x, 10);
  case CUBLAS_COMPUTE_32F_FAST_16BF:
    return keepMantissa(x, 7);
  case CUBLAS_COMPUTE_32F_FAST_16F:
    return (float)(_Float16)x;
  default:
    return x;
  }
}

/* The bytes a column-major layout spans across its batches. */
static size_t span(const struct ltLayout *l) {
  return 4 * ((size_t)(l->batch - 1) * (size_t)l->stride +
              (l->cols - 1) * (size_t)l->ld + l->rows);
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle,
                              cublasLtMatmulDesc_t desc, const void *alpha,
                              const void *Aptr, cublasLtMatrixLayout_t A,
                              const void *Bptr, cublasLtMatrixLayout_t B,
                              const void *beta, const void *Cptr,
                              cublasLtMatrixLayout_t C, void *Dptr,
                              cublasLtMatrixLayout_t D,
                              const cublasLtMatmulAlgo_t *algo, void *workspace,
                              size_t workspaceBytes, cudaStream_t stream) {
  struct ltHandle *h = (struct ltHandle *)handle;
  struct ltDesc *d = (struct ltDesc *)desc;
  const struct ltLayout *a = (struct ltLayout *)A, *b = (struct ltLayout *)B,
                        *c = (struct ltLayout *)C, *dl = (struct ltLayout *)D;
  if (!h || h->magic != kHandle || !d || d->magic != kDesc || !a ||
      a->magic != kLayout || !b || b->magic != kLayout || !c ||
      c->magic != kLayout || !dl || dl->magic != kLayout)
    return ltViolation("cublasLtMatmul", "bad handle, descriptor or layout");
  if (checkStream((CUstream)stream, "cublasLtMatmul"))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!algo || algo->data[0] != kAlgoMagic)
    return ltViolation("cublasLtMatmul", "an algorithm the heuristic did not give");
  if (workspaceBytes < heuristicWorkspace ||
      (workspaceBytes && !inside((CUdeviceptr)(uintptr_t)workspace,
                                 workspaceBytes)))
    return ltViolation("cublasLtMatmul",
                       "the workspace is smaller than the heuristic asked or "
                       "not device memory");
  const char *why = checkMatmul(d, a, b, c, dl);
  if (why)
    return ltViolation("cublasLtMatmul", why);
  /* alpha and beta are host scalars (the default pointer mode). */
  float al = *(const float *)alpha, be = *(const float *)beta;
  if (!inside((CUdeviceptr)(uintptr_t)Aptr, span(a)) ||
      !inside((CUdeviceptr)(uintptr_t)Bptr, span(b)) ||
      !inside((CUdeviceptr)(uintptr_t)Dptr, span(dl)) ||
      (be != 0.0f && !inside((CUdeviceptr)(uintptr_t)Cptr, span(c))))
    return ltViolation("cublasLtMatmul",
                       "an operand runs outside its device allocation");
  int hasBias = (d->epilogue & CUBLASLT_EPILOGUE_BIAS) != 0;
  int gelu = (d->epilogue & CUBLASLT_EPILOGUE_GELU) != 0;
  int relu = (d->epilogue & CUBLASLT_EPILOGUE_RELU) != 0;
  int aux = (d->epilogue & 128) != 0;
  if (hasBias && !inside((CUdeviceptr)(uintptr_t)d->bias, 4 * dl->rows))
    return ltViolation("cublasLtMatmul", "the bias is not device memory");
  if (aux && !inside((CUdeviceptr)(uintptr_t)d->aux,
                     4 * ((size_t)(dl->batch - 1) * (size_t)d->auxStride +
                          (dl->cols - 1) * (size_t)d->auxLd + dl->rows)))
    return ltViolation("cublasLtMatmul", "aux runs outside device memory");
  const float *Af = Aptr, *Bf = Bptr, *Cf = Cptr, *bias = d->bias;
  float *Df = Dptr, *auxf = d->aux;
  uint64_t M = dl->rows, N = dl->cols, K = d->transA == CUBLAS_OP_N ? a->cols
                                                                    : a->rows;
  for (int32_t batch = 0; batch < dl->batch; ++batch) {
    const float *Ab = Af + batch * a->stride, *Bb = Bf + batch * b->stride;
    for (uint64_t j = 0; j < N; ++j)
      for (uint64_t i = 0; i < M; ++i) {
        float acc = 0.0f;
        for (uint64_t p = 0; p < K; ++p) {
          float x = d->transA == CUBLAS_OP_N ? Ab[i + p * a->ld]
                                             : Ab[p + i * a->ld];
          float y = d->transB == CUBLAS_OP_N ? Bb[p + j * b->ld]
                                             : Bb[j + p * b->ld];
          acc += asCompute(x, d->compute) * asCompute(y, d->compute);
        }
        size_t at = batch * dl->stride + i + j * dl->ld;
        float v = al * acc;
        if (be != 0.0f)
          v += be * Cf[batch * c->stride + i + j * c->ld];
        if (hasBias)
          v += bias[i];
        if (aux)
          auxf[batch * d->auxStride + i + j * d->auxLd] = v;
        if (gelu)
          v = 0.5f * v *
              (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)));
        else if (relu)
          v = v > 0.0f ? v : 0.0f;
        Df[at] = v;
      }
  }
  ++gemms;
  return CUBLAS_STATUS_SUCCESS;
}
