// Reading and writing safetensors files, validating every header field.
#ifndef LATHE_RUNTIME_SAFETENSORS_H
#define LATHE_RUNTIME_SAFETENSORS_H

#include "lathe/runtime.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/MemoryBuffer.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lathe::rt {

struct TensorView {
  std::string dtype; // safetensors spelling: "F32", "BF16", ...
  std::vector<int64_t> shape;
  // Points into the mapped file; may be unaligned.
  const uint8_t *data = nullptr;
  size_t bytes = 0;
};

class SafetensorsFile {
public:
  // Maps `path` and checks the header: JSON shape, dtypes, offsets, sizes.
  static lathe_status_t open(const std::string &path,
                             std::unique_ptr<SafetensorsFile> &out);

  const TensorView *find(llvm::StringRef name) const;
  const std::string &path() const { return path_; }

private:
  std::string path_;
  std::unique_ptr<llvm::MemoryBuffer> file_;
  llvm::StringMap<TensorView> tensors_;
};

struct TensorToWrite {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  const void *data;
  size_t bytes;
};

// Tensors are laid out in the given order, each starting 8-byte aligned
// relative to the data section when the sizes allow it.
lathe_status_t writeSafetensors(const std::string &path,
                                llvm::ArrayRef<TensorToWrite> tensors,
                                const std::map<std::string, std::string> &meta);

} // namespace lathe::rt

#endif // LATHE_RUNTIME_SAFETENSORS_H
