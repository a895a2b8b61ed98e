// The two GpuDrivers: the CUDA driver API, loaded at run time, and the host
// emulating it with lathe-emulate-gpu's CPU copies of the kernels.
#include "gpu_device.h"

#include "cpu_device.h"
#include "gemm_reference.h"
#include "status.h"
#include "thread_pool.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <map>
#include <vector>

using namespace lathe;
using namespace lathe::rt;

//===----------------------------------------------------------------------===//
// The emulated device
//===----------------------------------------------------------------------===//

namespace {
class EmulatedDriver final : public GpuDriver {
public:
  EmulatedDriver(std::unique_ptr<CpuLibrary> library, ThreadPool &pool)
      : library_(std::move(library)), pool_(pool) {}

  lathe_status_t alloc(size_t bytes, DeviceAddress &out) override {
    AlignedBytes memory = allocAligned(bytes);
    if (!memory)
      return makeStatusF("cannot allocate {0} bytes of emulated device memory",
                         bytes);
    out = reinterpret_cast<DeviceAddress>(memory.get());
    blocks_[out] = std::move(memory);
    return nullptr;
  }
  void release(DeviceAddress address) override { blocks_.erase(address); }
  lathe_status_t upload(DeviceAddress dst, const void *src,
                        size_t bytes) override {
    std::memcpy(reinterpret_cast<void *>(dst), src, bytes);
    return nullptr;
  }
  lathe_status_t download(void *dst, DeviceAddress src,
                          size_t bytes) override {
    std::memcpy(dst, reinterpret_cast<const void *>(src), bytes);
    return nullptr;
  }
  lathe_status_t zero(DeviceAddress dst, size_t bytes) override {
    std::memset(reinterpret_cast<void *>(dst), 0, bytes);
    return nullptr;
  }
  lathe_status_t function(std::string_view kernel, void *&out) override {
    CpuKernelFn fn = nullptr;
    LATHE_RETURN_IF_ERROR(library_->lookup(kernel, fn));
    out = reinterpret_cast<void *>(fn);
    return nullptr;
  }
  lathe_status_t launch(void *function, const uint32_t grid[3],
                        const uint32_t block[3], const DeviceAddress *args,
                        size_t count) override {
    auto fn = reinterpret_cast<CpuKernelFn>(function);
    // The kernel's buffers, grid, block, then part and parts (see
    // lathe-emulate-gpu): blocks are independent, so the parts run at once.
    std::vector<void *> slots;
    for (size_t i = 0; i < count; ++i)
      slots.push_back(reinterpret_cast<void *>(args[i]));
    for (unsigned d = 0; d < 3; ++d)
      slots.push_back(reinterpret_cast<void *>(uintptr_t(grid[d])));
    for (unsigned d = 0; d < 3; ++d)
      slots.push_back(reinterpret_cast<void *>(uintptr_t(block[d])));
    uint64_t blocks = uint64_t(grid[0]) * grid[1] * grid[2];
    unsigned parts = unsigned(std::min<uint64_t>(pool_.size(), blocks));
    if (parts <= 1) {
      slots.push_back(reinterpret_cast<void *>(uintptr_t(0)));
      slots.push_back(reinterpret_cast<void *>(uintptr_t(1)));
      fn(slots.data());
      return nullptr;
    }
    pool_.run([&](unsigned part) {
      if (part >= parts)
        return;
      std::vector<void *> mine(slots);
      mine.push_back(reinterpret_cast<void *>(uintptr_t(part)));
      mine.push_back(reinterpret_cast<void *>(uintptr_t(parts)));
      fn(mine.data());
    });
    return nullptr;
  }
  lathe_status_t gemm(const fb::Gemm &g, const DeviceAddress *args) override {
    auto at = [&](size_t i) { return reinterpret_cast<float *>(args[i]); };
    GemmOperands o;
    o.a = at(0);
    o.b = at(1);
    o.d = at(2);
    size_t next = 3;
    if (g.has_c())
      o.c = at(next++);
    if (g.has_bias())
      o.bias = at(next++);
    if (g.has_aux())
      o.aux = at(next++);
    referenceGemm(g, o);
    return nullptr;
  }
  lathe_status_t openGemmLibrary() override { return nullptr; }
  lathe_status_t synchronize() override { return nullptr; }
  std::string describe() const override { return "host emulation"; }

private:
  std::unique_ptr<CpuLibrary> library_;
  ThreadPool &pool_;
  std::map<DeviceAddress, AlignedBytes> blocks_;
};
} // namespace

lathe_status_t lathe::rt::openEmulatedDriver(const lathe_artifact &artifact,
                                             ThreadPool &pool,
                                             std::unique_ptr<GpuDriver> &out) {
  const fb::Artifact &a = *artifact.root;
  if (!a.cpu_library() || a.cpu_library()->size() == 0)
    return makeStatusF("{0}: the artifact has no emulated kernels, so device "
                       "'cuda-emulated' cannot run it",
                       artifact.path);
  std::unique_ptr<CpuLibrary> library;
  LATHE_RETURN_IF_ERROR(CpuLibrary::load(
      llvm::ArrayRef<uint8_t>(a.cpu_library()->data(), a.cpu_library()->size()),
      artifact.path, library));
  // Cpu kernels take no grid: run as GPU kernels they would misread theirs.
  if (!library->exports("lathe_gpu_emulation"))
    return makeStatusF("{0}: the artifact's kernel library is not an "
                       "emulation of GPU kernels (lathe-emulate-gpu), so "
                       "device 'cuda-emulated' cannot run it",
                       artifact.path);
  out = std::make_unique<EmulatedDriver>(std::move(library), pool);
  return nullptr;
}

//===----------------------------------------------------------------------===//
// The CUDA driver
//===----------------------------------------------------------------------===//

namespace {
// The driver API's types as its ABI has them (cuda.h), so that the runtime
// builds where no CUDA toolkit is installed.
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
struct CUctx_st;
struct CUmod_st;
struct CUfunc_st;
struct CUstream_st;
using CUcontext = CUctx_st *;
using CUmodule = CUmod_st *;
using CUfunction = CUfunc_st *;
using CUstream = CUstream_st *;
constexpr int kAttrComputeMajor = 75; // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kAttrComputeMinor = 76; // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR

// Every entry point used, by its versioned symbol.
struct CudaApi {
  CUresult (*init)(unsigned);
  CUresult (*deviceGetCount)(int *);
  CUresult (*deviceGet)(CUdevice *, int);
  CUresult (*deviceGetAttribute)(int *, int, CUdevice);
  CUresult (*deviceGetName)(char *, int, CUdevice);
  CUresult (*primaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*primaryCtxRelease)(CUdevice);
  CUresult (*ctxSetCurrent)(CUcontext);
  CUresult (*moduleLoadData)(CUmodule *, const void *);
  CUresult (*moduleUnload)(CUmodule);
  CUresult (*moduleGetFunction)(CUfunction *, CUmodule, const char *);
  CUresult (*memAlloc)(CUdeviceptr *, size_t);
  CUresult (*memFree)(CUdeviceptr);
  CUresult (*memsetD8Async)(CUdeviceptr, unsigned char, size_t, CUstream);
  CUresult (*memcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream);
  CUresult (*memcpyDtoHAsync)(void *, CUdeviceptr, size_t, CUstream);
  CUresult (*launchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned,
                           unsigned, unsigned, unsigned, CUstream, void **,
                           void **);
  CUresult (*streamCreate)(CUstream *, unsigned);
  CUresult (*streamDestroy)(CUstream);
  CUresult (*streamSynchronize)(CUstream);
  CUresult (*getErrorName)(CUresult, const char **);
};

// cuBLASLt's ABI (cublasLt.h, cublas_api.h, library_types.h), likewise.
struct LtHandle;
struct LtDesc;
struct LtLayout;
struct LtPref;
using cublasStatus_t = int;
struct LtAlgo {
  uint64_t data[8];
};
struct LtHeuristic {
  LtAlgo algo;
  size_t workspaceSize;
  cublasStatus_t state;
  float wavesCount;
  int reserved[4];
};
constexpr int kCudaR32F = 0;            // CUDA_R_32F
constexpr int kCompute32F = 68;         // CUBLAS_COMPUTE_32F
constexpr int kCompute32FFast16F = 74;  // CUBLAS_COMPUTE_32F_FAST_16F
constexpr int kCompute32FFast16BF = 75; // CUBLAS_COMPUTE_32F_FAST_16BF
constexpr int kCompute32FFastTF32 = 77; // CUBLAS_COMPUTE_32F_FAST_TF32
constexpr int kDescTransA = 3;          // CUBLASLT_MATMUL_DESC_TRANSA
constexpr int kDescTransB = 4;          // CUBLASLT_MATMUL_DESC_TRANSB
constexpr int kDescEpilogue = 7;        // CUBLASLT_MATMUL_DESC_EPILOGUE
constexpr int kDescBiasPointer = 8;     // CUBLASLT_MATMUL_DESC_BIAS_POINTER
constexpr int kDescAuxPointer = 11;     // ..._EPILOGUE_AUX_POINTER
constexpr int kDescAuxLd = 12;          // ..._EPILOGUE_AUX_LD
constexpr int kDescAuxBatchStride = 13; // ..._EPILOGUE_AUX_BATCH_STRIDE
constexpr int kLayoutBatchCount = 5;    // CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT
constexpr int kLayoutBatchStride = 6;   // ..._STRIDED_BATCH_OFFSET
constexpr int kPrefMaxWorkspace = 1;    // ..._PREF_MAX_WORKSPACE_BYTES
constexpr uint32_t kEpilogueDefault = 1, kEpilogueRelu = 2, kEpilogueBias = 4,
                   kEpilogueGelu = 32, kEpilogueAux = 128;

struct CublasLtApi {
  cublasStatus_t (*create)(LtHandle **);
  cublasStatus_t (*destroy)(LtHandle *);
  const char *(*statusName)(cublasStatus_t);
  cublasStatus_t (*descCreate)(LtDesc **, int, int);
  cublasStatus_t (*descDestroy)(LtDesc *);
  cublasStatus_t (*descSet)(LtDesc *, int, const void *, size_t);
  cublasStatus_t (*layoutCreate)(LtLayout **, int, uint64_t, uint64_t, int64_t);
  cublasStatus_t (*layoutDestroy)(LtLayout *);
  cublasStatus_t (*layoutSet)(LtLayout *, int, const void *, size_t);
  cublasStatus_t (*prefCreate)(LtPref **);
  cublasStatus_t (*prefDestroy)(LtPref *);
  cublasStatus_t (*prefSet)(LtPref *, int, const void *, size_t);
  cublasStatus_t (*heuristic)(LtHandle *, LtDesc *, LtLayout *, LtLayout *,
                              LtLayout *, LtLayout *, LtPref *, int,
                              LtHeuristic *, int *);
  cublasStatus_t (*matmul)(LtHandle *, LtDesc *, const void *, const void *,
                           LtLayout *, const void *, LtLayout *, const void *,
                           const void *, LtLayout *, void *, LtLayout *,
                           const LtAlgo *, void *, size_t, CUstream);
};

// One GEMM descriptor as cuBLASLt sees it. lathe's buffers are row-major and
// cuBLASLt's column-major, so the call computes D^T = op(B)^T op(A)^T: B is
// cuBLASLt's A, A its B, and D^T is n x m with D's leading dimension. The
// bias then runs along D^T's rows, which is what cuBLASLt's bias does.
struct GemmPlan {
  LtDesc *desc = nullptr;
  LtLayout *a = nullptr, *b = nullptr, *c = nullptr, *d = nullptr;
  LtAlgo algo{};
  // The bias and aux addresses the heuristic saw (it reads their alignment).
  DeviceAddress bias = 0, aux = 0;
  bool planned = false;
};

template <typename Fn> bool bind(void *lib, const char *name, Fn &slot) {
  slot = reinterpret_cast<Fn>(dlsym(lib, name));
  return slot != nullptr;
}

class CudaDriver final : public GpuDriver {
public:
  ~CudaDriver() override {
    if (context_)
      api_.ctxSetCurrent(context_);
    for (auto &[key, plan] : plans_) {
      for (LtLayout *l : {plan.a, plan.b, plan.c, plan.d})
        if (l)
          lt_.layoutDestroy(l);
      if (plan.desc)
        lt_.descDestroy(plan.desc);
    }
    if (pref_)
      lt_.prefDestroy(pref_);
    if (handle_)
      lt_.destroy(handle_);
    if (ltLib_)
      dlclose(ltLib_);
    for (DeviceAddress a : live_)
      api_.memFree(a);
    if (stream_)
      api_.streamDestroy(stream_);
    if (module_)
      api_.moduleUnload(module_);
    if (context_)
      api_.primaryCtxRelease(device_);
    if (lib_)
      dlclose(lib_);
  }

  // "cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY (2)". The driver names its
  // errors; the common ones are named here too, for a driver (the toolkit's
  // stub) that does not.
  std::string error(const char *call, CUresult r) const {
    const char *name = nullptr;
    if (api_.getErrorName && api_.getErrorName(r, &name) != 0)
      name = nullptr;
    static const std::pair<CUresult, const char *> kKnown[] = {
        {1, "CUDA_ERROR_INVALID_VALUE"},
        {2, "CUDA_ERROR_OUT_OF_MEMORY"},
        {3, "CUDA_ERROR_NOT_INITIALIZED"},
        {34, "CUDA_ERROR_STUB_LIBRARY"},
        {100, "CUDA_ERROR_NO_DEVICE"},
        {101, "CUDA_ERROR_INVALID_DEVICE"},
        {209, "CUDA_ERROR_NO_BINARY_FOR_GPU"},
        {218, "CUDA_ERROR_INVALID_PTX"},
        {222, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"},
        {500, "CUDA_ERROR_NOT_FOUND"},
        {700, "CUDA_ERROR_ILLEGAL_ADDRESS"},
        {701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"}};
    for (auto [code, known] : kKnown)
      if (!name && code == r)
        name = known;
    return llvm::formatv("{0}: {1} ({2})", call, name ? name : "CUDA error", r)
        .str();
  }
  lathe_status_t check(const char *call, CUresult r) const {
    if (r == 0)
      return nullptr;
    return makeStatusF("{0}: {1}", owner_, error(call, r));
  }
  lathe_status_t current() const {
    return check("cuCtxSetCurrent", api_.ctxSetCurrent(context_));
  }

  lathe_status_t alloc(size_t bytes, DeviceAddress &out) override {
    LATHE_RETURN_IF_ERROR(current());
    CUdeviceptr p = 0;
    LATHE_RETURN_IF_ERROR(
        check("cuMemAlloc", api_.memAlloc(&p, std::max<size_t>(bytes, 1))));
    live_.push_back(p);
    out = p;
    return zero(p, bytes);
  }
  void release(DeviceAddress address) override {
    auto it = std::find(live_.begin(), live_.end(), address);
    if (it == live_.end())
      return;
    live_.erase(it);
    if (lathe_status_t s = current())
      lathe_status_free(s); // nothing to free it in then
    else
      api_.memFree(address);
  }
  lathe_status_t upload(DeviceAddress dst, const void *src,
                        size_t bytes) override {
    if (!bytes)
      return nullptr;
    LATHE_RETURN_IF_ERROR(current());
    // From pageable memory the call returns once `src` is staged, so the
    // caller may reuse it at once.
    return check("cuMemcpyHtoDAsync",
                 api_.memcpyHtoDAsync(dst, src, bytes, stream_));
  }
  lathe_status_t download(void *dst, DeviceAddress src,
                          size_t bytes) override {
    if (!bytes)
      return nullptr;
    LATHE_RETURN_IF_ERROR(current());
    LATHE_RETURN_IF_ERROR(check("cuMemcpyDtoHAsync",
                                api_.memcpyDtoHAsync(dst, src, bytes, stream_)));
    return synchronize();
  }
  lathe_status_t zero(DeviceAddress dst, size_t bytes) override {
    if (!bytes)
      return nullptr;
    LATHE_RETURN_IF_ERROR(current());
    return check("cuMemsetD8Async", api_.memsetD8Async(dst, 0, bytes, stream_));
  }
  lathe_status_t function(std::string_view kernel, void *&out) override {
    LATHE_RETURN_IF_ERROR(current());
    std::string name(kernel);
    CUfunction fn = nullptr;
    if (CUresult r = api_.moduleGetFunction(&fn, module_, name.c_str()))
      return makeStatusF("{0}: kernel '{1}' is missing from the {2} module "
                         "({3})",
                         owner_, name, chip_, error("cuModuleGetFunction", r));
    out = fn;
    return nullptr;
  }
  lathe_status_t launch(void *function, const uint32_t grid[3],
                        const uint32_t block[3], const DeviceAddress *args,
                        size_t count) override {
    // Bare pointers: each kernel parameter is one device address
    // (useBarePtrCallConv), and the driver wants a pointer to each.
    params_.assign(args, args + count);
    pointers_.clear();
    for (CUdeviceptr &p : params_)
      pointers_.push_back(&p);
    return check("cuLaunchKernel",
                 api_.launchKernel(static_cast<CUfunction>(function), grid[0],
                                   grid[1], grid[2], block[0], block[1],
                                   block[2], /*sharedMemBytes=*/0, stream_,
                                   pointers_.data(), nullptr));
  }
  lathe_status_t synchronize() override {
    LATHE_RETURN_IF_ERROR(current());
    return check("cuStreamSynchronize", api_.streamSynchronize(stream_));
  }
  std::string describe() const override { return description_; }

  lathe_status_t ltCheck(const char *call, cublasStatus_t r) const {
    if (r == 0)
      return nullptr;
    const char *name = lt_.statusName ? lt_.statusName(r) : nullptr;
    return makeStatusF("{0}: {1}: {2} ({3})", owner_, call,
                       name ? name : "cuBLAS error", r);
  }

  // cuBLASLt, its handle, preference and workspace.
  lathe_status_t openGemmLibrary() override {
    if (handle_)
      return nullptr;
    const char *library = std::getenv("LATHE_CUBLASLT");
    if (!library || !*library)
      library = "libcublasLt.so.13";
    ltLib_ = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (!ltLib_)
      return makeStatusF("{0}: no cuBLASLt found ({1} cannot be loaded); "
                         "lathec --gemm=kernels compiles the matrix products "
                         "as lathe's own kernels",
                         owner_, library);
    const char *missing = nullptr;
    auto need = [&](const char *name, auto &slot) {
      if (!missing && !bind(ltLib_, name, slot))
        missing = name;
    };
    need("cublasLtCreate", lt_.create);
    need("cublasLtDestroy", lt_.destroy);
    need("cublasLtMatmulDescCreate", lt_.descCreate);
    need("cublasLtMatmulDescDestroy", lt_.descDestroy);
    need("cublasLtMatmulDescSetAttribute", lt_.descSet);
    need("cublasLtMatrixLayoutCreate", lt_.layoutCreate);
    need("cublasLtMatrixLayoutDestroy", lt_.layoutDestroy);
    need("cublasLtMatrixLayoutSetAttribute", lt_.layoutSet);
    need("cublasLtMatmulPreferenceCreate", lt_.prefCreate);
    need("cublasLtMatmulPreferenceDestroy", lt_.prefDestroy);
    need("cublasLtMatmulPreferenceSetAttribute", lt_.prefSet);
    need("cublasLtMatmulAlgoGetHeuristic", lt_.heuristic);
    need("cublasLtMatmul", lt_.matmul);
    bind(ltLib_, "cublasLtGetStatusName", lt_.statusName); // optional
    if (missing)
      return makeStatusF("{0}: cuBLASLt {1} lacks {2}", owner_, library,
                         missing);
    LATHE_RETURN_IF_ERROR(current());
    LATHE_RETURN_IF_ERROR(ltCheck("cublasLtCreate", lt_.create(&handle_)));
    LATHE_RETURN_IF_ERROR(
        ltCheck("cublasLtMatmulPreferenceCreate", lt_.prefCreate(&pref_)));
    uint64_t bytes = workspaceBytes_;
    LATHE_RETURN_IF_ERROR(ltCheck(
        "cublasLtMatmulPreferenceSetAttribute",
        lt_.prefSet(pref_, kPrefMaxWorkspace, &bytes, sizeof(bytes))));
    if (workspaceBytes_)
      LATHE_RETURN_IF_ERROR(alloc(workspaceBytes_, workspace_));
    return nullptr;
  }

  // Descriptor, layouts and algorithm for `g` with these bias/aux addresses.
  lathe_status_t plan(const fb::Gemm &g, DeviceAddress bias, DeviceAddress aux,
                      GemmPlan &p) {
    if (!p.desc) {
      int compute = kCompute32F;
      switch (g.precision()) {
      case fb::GemmPrecision::tf32:
        compute = kCompute32FFastTF32;
        break;
      case fb::GemmPrecision::bf16:
        compute = kCompute32FFast16BF;
        break;
      case fb::GemmPrecision::f16:
        compute = kCompute32FFast16F;
        break;
      default:
        break;
      }
      LATHE_RETURN_IF_ERROR(ltCheck("cublasLtMatmulDescCreate",
                                    lt_.descCreate(&p.desc, compute, kCudaR32F)));
      // cuBLASLt's A is our B, its B our A (see GemmPlan).
      int32_t opA = g.trans_b() ? 1 : 0, opB = g.trans_a() ? 1 : 0;
      uint32_t epilogue = kEpilogueDefault;
      if (g.epilogue() == fb::GemmEpilogue::relu)
        epilogue = kEpilogueRelu;
      else if (g.epilogue() == fb::GemmEpilogue::gelu)
        epilogue = kEpilogueGelu | (g.has_aux() ? kEpilogueAux : 0);
      if (g.has_bias())
        epilogue = epilogue == kEpilogueDefault ? kEpilogueBias
                                                : epilogue | kEpilogueBias;
      LATHE_RETURN_IF_ERROR(ltCheck("cublasLtMatmulDescSetAttribute",
                                    lt_.descSet(p.desc, kDescTransA, &opA, 4)));
      LATHE_RETURN_IF_ERROR(ltCheck("cublasLtMatmulDescSetAttribute",
                                    lt_.descSet(p.desc, kDescTransB, &opB, 4)));
      LATHE_RETURN_IF_ERROR(
          ltCheck("cublasLtMatmulDescSetAttribute",
                  lt_.descSet(p.desc, kDescEpilogue, &epilogue, 4)));
      if (g.has_aux()) {
        int64_t ld = g.ldd(), stride = g.stride_d();
        LATHE_RETURN_IF_ERROR(
            ltCheck("cublasLtMatmulDescSetAttribute",
                    lt_.descSet(p.desc, kDescAuxLd, &ld, 8)));
        LATHE_RETURN_IF_ERROR(
            ltCheck("cublasLtMatmulDescSetAttribute",
                    lt_.descSet(p.desc, kDescAuxBatchStride, &stride, 8)));
      }
      // Column-major shapes: stored rows are cuBLASLt's columns.
      auto layout = [&](LtLayout *&out, uint64_t rows, uint64_t cols,
                        int64_t ld, int64_t stride) -> lathe_status_t {
        LATHE_RETURN_IF_ERROR(
            ltCheck("cublasLtMatrixLayoutCreate",
                    lt_.layoutCreate(&out, kCudaR32F, rows, cols, ld)));
        if (g.batch() == 1)
          return nullptr;
        int32_t count = int32_t(g.batch());
        LATHE_RETURN_IF_ERROR(
            ltCheck("cublasLtMatrixLayoutSetAttribute",
                    lt_.layoutSet(out, kLayoutBatchCount, &count, 4)));
        return ltCheck("cublasLtMatrixLayoutSetAttribute",
                       lt_.layoutSet(out, kLayoutBatchStride, &stride, 8));
      };
      uint64_t m = g.m(), n = g.n(), k = g.k();
      // B stored k x n (or n x k): as stored, column-major n x k (k x n).
      LATHE_RETURN_IF_ERROR(layout(p.a, g.trans_b() ? k : n,
                                   g.trans_b() ? n : k, g.ldb(), g.stride_b()));
      LATHE_RETURN_IF_ERROR(layout(p.b, g.trans_a() ? m : k,
                                   g.trans_a() ? k : m, g.lda(), g.stride_a()));
      LATHE_RETURN_IF_ERROR(layout(p.c, n, m, g.ldd(), g.stride_d()));
      LATHE_RETURN_IF_ERROR(layout(p.d, n, m, g.ldd(), g.stride_d()));
    }
    // The heuristic reads the bias and aux pointers' alignment.
    if (g.has_bias())
      LATHE_RETURN_IF_ERROR(
          ltCheck("cublasLtMatmulDescSetAttribute",
                  lt_.descSet(p.desc, kDescBiasPointer, &bias, 8)));
    if (g.has_aux())
      LATHE_RETURN_IF_ERROR(
          ltCheck("cublasLtMatmulDescSetAttribute",
                  lt_.descSet(p.desc, kDescAuxPointer, &aux, 8)));
    LtHeuristic result{};
    int found = 0;
    LATHE_RETURN_IF_ERROR(ltCheck(
        "cublasLtMatmulAlgoGetHeuristic",
        lt_.heuristic(handle_, p.desc, p.a, p.b, p.c, p.d, pref_, 1, &result,
                      &found)));
    if (found < 1)
      return makeStatusF("{0}: cuBLASLt has no algorithm for the GEMM "
                         "m={1} n={2} k={3} batch={4}",
                         owner_, g.m(), g.n(), g.k(), g.batch());
    p.algo = result.algo;
    p.bias = bias;
    p.aux = aux;
    p.planned = true;
    return nullptr;
  }

  lathe_status_t gemm(const fb::Gemm &g, const DeviceAddress *args) override {
    LATHE_RETURN_IF_ERROR(openGemmLibrary());
    LATHE_RETURN_IF_ERROR(current());
    size_t next = 3;
    DeviceAddress c = g.has_c() ? args[next++] : 0;
    DeviceAddress bias = g.has_bias() ? args[next++] : 0;
    DeviceAddress aux = g.has_aux() ? args[next++] : 0;
    GemmPlan &p = plans_[&g];
    if (!p.planned || p.bias != bias || p.aux != aux)
      LATHE_RETURN_IF_ERROR(plan(g, bias, aux, p));
    const float alpha = 1.0f, beta = g.has_c() ? 1.0f : 0.0f;
    DeviceAddress d = args[2];
    auto ptr = [](DeviceAddress x) { return reinterpret_cast<void *>(x); };
    return ltCheck("cublasLtMatmul",
                   lt_.matmul(handle_, p.desc, &alpha, ptr(args[1]), p.a,
                              ptr(args[0]), p.b, &beta, ptr(c ? c : d), p.c,
                              ptr(d), p.d, &p.algo, ptr(workspace_),
                              workspaceBytes_, stream_));
  }

  static lathe_status_t open(const lathe_artifact &artifact,
                             std::unique_ptr<GpuDriver> &out);

private:
  void *lib_ = nullptr;
  CudaApi api_{};
  std::string owner_, chip_, description_;
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
  CUmodule module_ = nullptr;
  CUstream stream_ = nullptr;
  std::vector<DeviceAddress> live_;
  std::vector<CUdeviceptr> params_;
  std::vector<void *> pointers_;
  // cuBLASLt, loaded at the first GEMM call.
  void *ltLib_ = nullptr;
  CublasLtApi lt_{};
  LtHandle *handle_ = nullptr;
  LtPref *pref_ = nullptr;
  uint64_t workspaceBytes_ = 0;
  DeviceAddress workspace_ = 0;
  std::map<const fb::Gemm *, GemmPlan> plans_;
};

lathe_status_t CudaDriver::open(const lathe_artifact &artifact,
                                std::unique_ptr<GpuDriver> &out) {
  const std::string &path = artifact.path;
  // $LATHE_CUDA_DRIVER names another driver library: the toolkit's stub, or
  // a test double.
  const char *library = std::getenv("LATHE_CUDA_DRIVER");
  if (!library || !*library)
    library = "libcuda.so.1";
  void *lib = dlopen(library, RTLD_NOW | RTLD_LOCAL);
  if (!lib)
    return makeStatusF("{0}: no CUDA driver found ({1} cannot be loaded); "
                       "--device=cuda-emulated runs the same GPU kernels on "
                       "the CPU",
                       path, library);
  auto d = std::make_unique<CudaDriver>();
  d->lib_ = lib;
  d->owner_ = path;
  d->workspaceBytes_ = artifact.root->gemm_workspace_bytes();
  CudaApi &api = d->api_;
  const char *missing = nullptr;
  auto need = [&](const char *name, auto &slot) {
    if (!missing && !bind(lib, name, slot))
      missing = name;
  };
  need("cuInit", api.init);
  need("cuDeviceGetCount", api.deviceGetCount);
  need("cuDeviceGet", api.deviceGet);
  need("cuDeviceGetAttribute", api.deviceGetAttribute);
  need("cuDeviceGetName", api.deviceGetName);
  need("cuDevicePrimaryCtxRetain", api.primaryCtxRetain);
  need("cuDevicePrimaryCtxRelease_v2", api.primaryCtxRelease);
  need("cuCtxSetCurrent", api.ctxSetCurrent);
  need("cuModuleLoadData", api.moduleLoadData);
  need("cuModuleUnload", api.moduleUnload);
  need("cuModuleGetFunction", api.moduleGetFunction);
  need("cuMemAlloc_v2", api.memAlloc);
  need("cuMemFree_v2", api.memFree);
  need("cuMemsetD8Async", api.memsetD8Async);
  need("cuMemcpyHtoDAsync_v2", api.memcpyHtoDAsync);
  need("cuMemcpyDtoHAsync_v2", api.memcpyDtoHAsync);
  need("cuLaunchKernel", api.launchKernel);
  need("cuStreamCreate", api.streamCreate);
  need("cuStreamDestroy_v2", api.streamDestroy);
  need("cuStreamSynchronize", api.streamSynchronize);
  bind(lib, "cuGetErrorName", api.getErrorName); // optional: names errors
  if (missing)
    return makeStatusF("{0}: the CUDA driver {1} lacks {2} (too old a driver?)",
                       path, library, missing);

  int devices = 0;
  if (CUresult r = api.init(0))
    return makeStatusF("{0}: no CUDA device ({1})", path,
                       d->error("cuInit", r));
  if (CUresult r = api.deviceGetCount(&devices))
    return makeStatusF("{0}: no CUDA device ({1})", path,
                       d->error("cuDeviceGetCount", r));
  if (devices == 0)
    return makeStatusF("{0}: no CUDA device", path);
  LATHE_RETURN_IF_ERROR(d->check("cuDeviceGet", api.deviceGet(&d->device_, 0)));
  int major = 0, minor = 0;
  LATHE_RETURN_IF_ERROR(d->check(
      "cuDeviceGetAttribute",
      api.deviceGetAttribute(&major, kAttrComputeMajor, d->device_)));
  LATHE_RETURN_IF_ERROR(d->check(
      "cuDeviceGetAttribute",
      api.deviceGetAttribute(&minor, kAttrComputeMinor, d->device_)));
  char name[256] = {};
  if (api.deviceGetName(name, sizeof(name) - 1, d->device_))
    std::strcpy(name, "CUDA device");

  // sm_90 code for Hopper and newer (PTX JITs forward), sm_80 for Ampere
  // and Ada. A cubin runs only on its own major version, at or above its
  // minor: sm_90's on 9.0, sm_80's on 8.x.
  if (major < 8)
    return makeStatusF("{0}: the CUDA device {1} has compute capability "
                       "{2}.{3}; lathe's kernels need sm_80 or newer",
                       path, name, major, minor);
  std::string chip = major >= 9 ? "sm_90" : "sm_80";
  const fb::PtxModule *module = nullptr;
  if (const auto *modules = artifact.root->ptx())
    for (const fb::PtxModule *m : *modules)
      if (m->chip()->string_view() == chip)
        module = m;
  if (!module)
    return makeStatusF("{0}: the artifact has no {1} module for the CUDA "
                       "device {2} (compute capability {3}.{4})",
                       path, chip, name, major, minor);
  bool cubin = module->cubin() && module->cubin()->size() &&
               major == (chip == "sm_90" ? 9 : 8);
  d->chip_ = chip;
  d->description_ = llvm::formatv("{0} ({1}.{2}; {3} {4})", name, major, minor,
                                  chip, cubin ? "cubin" : "PTX, JIT-compiled")
                        .str();

  LATHE_RETURN_IF_ERROR(d->check(
      "cuDevicePrimaryCtxRetain", api.primaryCtxRetain(&d->context_, d->device_)));
  LATHE_RETURN_IF_ERROR(d->current());
  const void *image = cubin ? static_cast<const void *>(module->cubin()->data())
                            : static_cast<const void *>(module->text()->c_str());
  if (CUresult r = api.moduleLoadData(&d->module_, image))
    return makeStatusF("{0}: cannot load the {1} {2} on {3} ({4})", path, chip,
                       cubin ? "cubin" : "PTX", name,
                       d->error("cuModuleLoadData", r));
  LATHE_RETURN_IF_ERROR(
      d->check("cuStreamCreate", api.streamCreate(&d->stream_, 0)));
  out = std::move(d);
  return nullptr;
}
} // namespace

lathe_status_t lathe::rt::openCudaDriver(const lathe_artifact &artifact,
                                         std::unique_ptr<GpuDriver> &out) {
  return CudaDriver::open(artifact, out);
}
