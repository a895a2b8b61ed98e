// The GPU devices: a cuda artifact's launch list runs on a GpuDriver, either
// the CUDA driver (loaded with dlopen) or the host emulating one with the
// artifact's CPU copies of the same kernels. The session drives both the same
// way and touches device memory only through the driver, so the emulated
// device checks the cuda device's schedule, buffers and copies as well as the
// kernels.
#ifndef LATHE_RUNTIME_GPU_DEVICE_H
#define LATHE_RUNTIME_GPU_DEVICE_H

#include "artifact.h"
#include "lathe/runtime.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace lathe::rt {

class ThreadPool;

// A device address: a CUdeviceptr, or a host address for the emulated device.
using DeviceAddress = uint64_t;

class GpuDriver {
public:
  virtual ~GpuDriver() = default;
  // Zero-filled device memory; never 0 for a successful call (even for 0
  // bytes).
  virtual lathe_status_t alloc(size_t bytes, DeviceAddress &out) = 0;
  virtual void release(DeviceAddress address) = 0;
  virtual lathe_status_t upload(DeviceAddress dst, const void *src,
                                size_t bytes) = 0;
  // Waits for the launches before it.
  virtual lathe_status_t download(void *dst, DeviceAddress src,
                                  size_t bytes) = 0;
  virtual lathe_status_t zero(DeviceAddress dst, size_t bytes) = 0;
  // A kernel of the artifact's module, by its launch-list name.
  virtual lathe_status_t function(std::string_view kernel, void *&out) = 0;
  virtual lathe_status_t launch(void *function, const uint32_t grid[3],
                                const uint32_t block[3],
                                const DeviceAddress *args, size_t count) = 0;
  // A GEMM library call (Launch.gemm), queued like a launch. `args` are the
  // device addresses of a, b, d, then c, bias and aux as the descriptor has
  // them. The cuda device plans each descriptor once (cuBLASLt's layouts,
  // epilogue and heuristic algorithm) and reuses the plan.
  virtual lathe_status_t gemm(const fb::Gemm &gemm,
                              const DeviceAddress *args) = 0;
  // Loads the GEMM library, so that a missing one fails when a session is
  // created rather than at its first GEMM.
  virtual lathe_status_t openGemmLibrary() = 0;
  // Waits for everything queued (profiling times launches one by one).
  virtual lathe_status_t synchronize() = 0;
  // What `lathe-run info` and errors call the device ("NVIDIA H100 (sm_90,
  // cubin)", "host emulation").
  virtual std::string describe() const = 0;
};

// The CUDA driver API from libcuda.so.1 (or $LATHE_CUDA_DRIVER), device 0,
// with the artifact's module for the device's chip: cubin where the chip
// matches, PTX (JIT-compiled by the driver) otherwise. Where the artifact has
// GEMM calls, cuBLASLt too, from libcublasLt.so.13 (or $LATHE_CUBLASLT), with
// the artifact's gemm_workspace_bytes of workspace.
lathe_status_t openCudaDriver(const lathe_artifact &artifact,
                              std::unique_ptr<GpuDriver> &out);

// The artifact's GPU kernels as CPU functions (lathe-emulate-gpu), their
// blocks spread over `pool`'s threads; GEMM calls run the reference GEMM
// (gemm_reference.h).
lathe_status_t openEmulatedDriver(const lathe_artifact &artifact,
                                  ThreadPool &pool,
                                  std::unique_ptr<GpuDriver> &out);

} // namespace lathe::rt

#endif // LATHE_RUNTIME_GPU_DEVICE_H
