// The cpu device: loads an artifact's kernel library and resolves kernels.
#ifndef LATHE_RUNTIME_CPU_DEVICE_H
#define LATHE_RUNTIME_CPU_DEVICE_H

#include "lathe/runtime.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

namespace lathe::rt {

constexpr size_t kAlign = 64;

struct FreeDeleter {
  void operator()(void *p) const { std::free(p); }
};
using AlignedBytes = std::unique_ptr<uint8_t, FreeDeleter>;

inline uint64_t roundUp(uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Host memory for buffers: zeroed, kAlign-aligned, never null for a
// successful call (even for 0 bytes), on huge pages from 2 MiB up.
AlignedBytes allocAligned(uint64_t bytes);

// Every kernel in a cpu library has this C signature: args[i] is the data
// pointer of the launch's i-th buffer.
using CpuKernelFn = void (*)(void **args);

class CpuLibrary {
public:
  // dlopens `elf` (an in-memory ELF shared object) without leaving a file
  // behind. `owner` names the artifact in error messages.
  static lathe_status_t load(llvm::ArrayRef<uint8_t> elf,
                             const std::string &owner,
                             std::unique_ptr<CpuLibrary> &out);
  ~CpuLibrary();

  // Resolves `lathe_kernel_<kernel>`.
  lathe_status_t lookup(llvm::StringRef kernel, CpuKernelFn &out) const;
  // True when the library exports `lathe_partitioned_<kernel>`: the kernel
  // takes (part, parts) after its buffers (lathe-partition-kernels).
  bool isPartitioned(llvm::StringRef kernel) const;
  // True when the library exports `symbol`.
  bool exports(llvm::StringRef symbol) const;

private:
  CpuLibrary() = default;
  void *handle_ = nullptr;
  std::string owner_;
};

} // namespace lathe::rt

#endif // LATHE_RUNTIME_CPU_DEVICE_H
