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
 * Any violation prints "fake-cuda: ..." on stderr and returns an error, so
 * the runtime reports it and the test fails. Built as libcuda.so.1 on
 * LD_LIBRARY_PATH it also serves hosts other than lathe's runtime (the
 * kernel-export example, with the synchronous calls on the default stream). */
#include <cuda.h>
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
static unsigned long long launches, bytesUp, bytesDown, violations;

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
          "fake-cuda: %llu launches, %llu bytes up, %llu bytes down, %llu "
          "violations, %d allocations live\n",
          launches, bytesUp, bytesDown, violations, numAllocs);
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
