// The loaded, verified artifact (lathe_artifact_t) and small schema helpers.
#ifndef LATHE_RUNTIME_ARTIFACT_H
#define LATHE_RUNTIME_ARTIFACT_H

#include "artifact_generated.h"
#include "artifact_version.h"
#include "lathe/runtime.h"

#include "llvm/Support/MemoryBuffer.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

struct lathe_artifact {
  std::string path;
  // Owns the flatbuffer; every fb pointer below points into it.
  std::unique_ptr<llvm::MemoryBuffer> file;
  const lathe::fb::Artifact *root = nullptr;
  std::string model;
  std::string target;
  // The entries the session API runs, looked up by name; each is null when
  // the artifact lacks it (at least one of forward/prefill is present).
  const lathe::fb::Entry *forward = nullptr;
  const lathe::fb::Entry *prefill = nullptr;
  // Every prefill entry by the number of tokens it takes, ascending:
  // "prefill_<B>" buckets below max_seq, then "prefill" itself. A prompt
  // runs in the smallest bucket that holds it.
  std::vector<std::pair<int64_t, const lathe::fb::Entry *>> prefillBuckets;
  const lathe::fb::Entry *decode = nullptr;
  int64_t paramElements = 0;
  // Elements times dtype size, summed over the params.
  uint64_t paramBytes = 0;
  // Bytes of each State (elements times dtype size), in Artifact.states order.
  std::vector<uint64_t> stateBytes;
};

namespace lathe::rt {

constexpr uint32_t kArtifactVersion = LATHE_ARTIFACT_VERSION;

// Size in bytes of one element; 0 for a value outside the enum.
size_t dtypeSize(fb::DType dtype);
// The safetensors spelling ("F32", "I32", "F16", "BF16").
const char *dtypeSafetensorsName(fb::DType dtype);
// The schema spelling ("f32", "i32", "f16", "bf16").
const char *dtypeName(fb::DType dtype);

// Product of the dims, or nullopt for a negative dim or one that would not
// fit in memory.
std::optional<int64_t> numElements(const flatbuffers::Vector<int64_t> *shape);

std::vector<int64_t> shapeOf(const flatbuffers::Vector<int64_t> *shape);

// One line naming a GEMM call by its descriptor, for `lathe-run info` and
// profiles: "gemm 64x256x64 B^T +C +bias gelu(aux) f32".
std::string gemmName(const fb::Gemm &gemm);

// The entry lathe_session_prefill runs for n tokens: the smallest bucket
// that holds them, else the full prefill (null if there is none); for n above
// max_seq, the full prefill, which then refuses them.
const fb::Entry *prefillEntryFor(const lathe_artifact &artifact, uint64_t n);

} // namespace lathe::rt

#endif // LATHE_RUNTIME_ARTIFACT_H
