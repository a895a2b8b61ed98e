// Internal helpers for building lathe_status_t values (runtime.h's error type).
#ifndef LATHE_RUNTIME_STATUS_H
#define LATHE_RUNTIME_STATUS_H

#include "lathe/runtime.h"

#include "llvm/Support/Error.h"
#include "llvm/Support/FormatVariadic.h"

#include <string>
#include <vector>

struct lathe_status {
  std::string message;
};

namespace lathe::rt {

lathe_status_t makeStatus(std::string message);

// formatv-style: makeStatusF("{0}: missing tensor '{1}'", path, name).
template <typename... Ts>
lathe_status_t makeStatusF(const char *fmt, Ts &&...vals) {
  return makeStatus(llvm::formatv(fmt, std::forward<Ts>(vals)...).str());
}

// "[64,32]", the way shapes appear in messages.
std::string formatShape(const std::vector<int64_t> &shape);

// Consumes the error; a success becomes nullptr.
lathe_status_t statusFromError(llvm::Error err);

// Hands a failed status on to the caller.
#define LATHE_RETURN_IF_ERROR(expr)                                            \
  do {                                                                         \
    if (lathe_status_t lathe_status_tmp_ = (expr))                             \
      return lathe_status_tmp_;                                                \
  } while (0)

} // namespace lathe::rt

#endif // LATHE_RUNTIME_STATUS_H
