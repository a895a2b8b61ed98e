// Loading the artifact's embedded ELF kernel library. dlopen needs a path,
// so the bytes go to an anonymous memfd (no file on disk, gone when closed);
// where memfd_create is unavailable, to a temp file unlinked right after
// dlopen.
#include "cpu_device.h"
#include "host_gemm.h"
#include "status.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

using namespace lathe::rt;

namespace {

bool writeAll(int fd, llvm::ArrayRef<uint8_t> bytes, std::string &err) {
  const uint8_t *p = bytes.data();
  size_t left = bytes.size();
  while (left) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      err = std::strerror(errno);
      return false;
    }
    p += n;
    left -= size_t(n);
  }
  return true;
}

std::string lastDlError() {
  const char *e = dlerror();
  return e ? e : "unknown dlopen error";
}

// Returns the handle, or null with `err` set.
void *openViaMemfd(llvm::ArrayRef<uint8_t> elf, std::string &err,
                   bool &unsupported) {
  unsupported = false;
  int fd = memfd_create("lathe-kernels", MFD_CLOEXEC);
  if (fd < 0) {
    unsupported = true;
    return nullptr;
  }
  void *handle = nullptr;
  std::string fdPath = "/proc/self/fd/" + std::to_string(fd);
  if (::access(fdPath.c_str(), R_OK) != 0) {
    unsupported = true; // no /proc: the fd has no path dlopen can use
  } else if (writeAll(fd, elf, err)) {
    handle = dlopen(fdPath.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle)
      err = lastDlError();
  }
  ::close(fd);
  return handle;
}

void *openViaTempFile(llvm::ArrayRef<uint8_t> elf, std::string &err) {
  const char *dir = std::getenv("TMPDIR");
  std::string path = std::string(dir && *dir ? dir : "/tmp") +
                     "/lathe-kernels-XXXXXX";
  int fd = ::mkstemp(path.data());
  if (fd < 0) {
    err = std::string("cannot create a temp file: ") + std::strerror(errno);
    return nullptr;
  }
  void *handle = nullptr;
  if (writeAll(fd, elf, err)) {
    handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle)
      err = lastDlError();
  }
  ::unlink(path.c_str());
  ::close(fd);
  return handle;
}

} // namespace

lathe_status_t CpuLibrary::load(llvm::ArrayRef<uint8_t> elf,
                                const std::string &owner,
                                std::unique_ptr<CpuLibrary> &out) {
  static const uint8_t kElfMagic[4] = {0x7f, 'E', 'L', 'F'};
  if (elf.size() < 4 || std::memcmp(elf.data(), kElfMagic, 4) != 0)
    return makeStatusF("{0}: the artifact's cpu_library is not an ELF shared "
                       "object",
                       owner);
  std::string err;
  bool unsupported = false;
  void *handle = openViaMemfd(elf, err, unsupported);
  if (!handle && unsupported)
    handle = openViaTempFile(elf, err);
  if (!handle)
    return makeStatusF("{0}: cannot load the cpu kernel library: {1}", owner,
                       err);
  // Host services the kernels call through pointer slots (absent when no
  // kernel needs them).
  if (void *slot = dlsym(handle, "lathe_host_gemm_slot"))
    *static_cast<void **>(slot) = reinterpret_cast<void *>(&hostGemm);
  out.reset(new CpuLibrary);
  out->handle_ = handle;
  out->owner_ = owner;
  return nullptr;
}

CpuLibrary::~CpuLibrary() {
  if (handle_)
    dlclose(handle_);
}

lathe_status_t CpuLibrary::lookup(llvm::StringRef kernel,
                                  CpuKernelFn &out) const {
  std::string symbol = "lathe_kernel_" + kernel.str();
  dlerror();
  void *sym = dlsym(handle_, symbol.c_str());
  if (!sym)
    return makeStatusF("{0}: kernel '{1}' is missing from the cpu library "
                       "(no symbol {2})",
                       owner_, kernel, symbol);
  out = reinterpret_cast<CpuKernelFn>(sym);
  return nullptr;
}

bool CpuLibrary::isPartitioned(llvm::StringRef kernel) const {
  return exports(("lathe_partitioned_" + kernel).str());
}

bool CpuLibrary::exports(llvm::StringRef symbol) const {
  return dlsym(handle_, symbol.str().c_str()) != nullptr;
}

// Buffers of a huge page or more (the weights, the arena) are placed on huge
// pages where the kernel offers them (THP in madvise mode, as on Debian):
// decode streams every weight once per token, and with 4 KiB pages that is a
// TLB miss every 4 KiB; measured, a decode GEMV reads 10-15% faster.
AlignedBytes lathe::rt::allocAligned(uint64_t bytes) {
  constexpr uint64_t kHugePage = uint64_t(2) << 20;
  uint64_t size = roundUp(bytes ? bytes : 1);
  uint64_t align = kAlign;
  if (size >= kHugePage) {
    align = kHugePage;
    size = (size + kHugePage - 1) / kHugePage * kHugePage;
  }
  auto *p = static_cast<uint8_t *>(std::aligned_alloc(align, size));
  if (p) {
    if (align == kHugePage)
      madvise(p, size, MADV_HUGEPAGE); // advice only: failure is harmless
    std::memset(p, 0, size);
  }
  return AlignedBytes(p);
}
