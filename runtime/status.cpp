// lathe_status_t: the runtime's only error channel (never exit/abort).
#include "status.h"

namespace lathe::rt {

lathe_status_t makeStatus(std::string message) {
  auto *s = new lathe_status;
  s->message = std::move(message);
  return s;
}

std::string formatShape(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

lathe_status_t statusFromError(llvm::Error err) {
  if (!err)
    return nullptr;
  return makeStatus(llvm::toString(std::move(err)));
}

} // namespace lathe::rt

extern "C" const char *lathe_status_message(lathe_status_t status) {
  // Callers print messages unconditionally; success has no message to show.
  return status ? status->message.c_str() : "ok";
}

extern "C" void lathe_status_free(lathe_status_t status) { delete status; }
