// lathe_session_t: the activation arena, bound weights and the resolved
// kernel schedule of one artifact on the cpu device.
#include "artifact.h"
#include "cpu_device.h"
#include "safetensors.h"
#include "status.h"

#include <cstdlib>
#include <cstring>

using namespace lathe;
using namespace lathe::rt;

namespace {

constexpr size_t kAlign = 64;

struct FreeDeleter {
  void operator()(void *p) const { std::free(p); }
};
using AlignedBytes = std::unique_ptr<uint8_t, FreeDeleter>;

uint64_t roundUp(uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Zeroed, kAlign-aligned, never null for a successful call (even for 0).
AlignedBytes allocAligned(uint64_t bytes) {
  uint64_t size = roundUp(bytes ? bytes : 1);
  auto *p = static_cast<uint8_t *>(std::aligned_alloc(kAlign, size));
  if (p)
    std::memset(p, 0, size);
  return AlignedBytes(p);
}

struct ResolvedLaunch {
  CpuKernelFn fn;
  std::vector<uint32_t> args;
};

} // namespace

struct lathe_session {
  const lathe_artifact *art = nullptr;
  std::unique_ptr<CpuLibrary> lib;
  AlignedBytes arena;
  AlignedBytes paramStorage;
  // Data pointer of each param; all null until weights are loaded.
  std::vector<uint8_t *> paramData;
  bool weightsLoaded = false;
  std::vector<ResolvedLaunch> forward;
  std::vector<void *> argScratch;

  void *bufferData(uint32_t id) const {
    const fb::Buffer *b = art->root->buffers()->Get(id);
    if (b->kind() == fb::BufferKind::param)
      return paramData[b->param()];
    return arena.get() + b->offset();
  }
};

extern "C" lathe_status_t lathe_session_create(const lathe_artifact_t *artifact,
                                               lathe_session_t **out_session) {
  if (!artifact || !out_session)
    return makeStatus("lathe_session_create: null argument");
  *out_session = nullptr;
  const fb::Artifact &a = *artifact->root;
  if (a.target() != fb::Target::cpu)
    return makeStatusF("{0}: this artifact targets {1}; lathe-run's cpu device "
                       "cannot run it",
                       artifact->path, artifact->target);

  auto s = std::make_unique<lathe_session>();
  s->art = artifact;
  s->paramData.assign(lathe_artifact_param_count(artifact), nullptr);

  size_t numEntries = lathe_artifact_entry_count(artifact);
  bool anyLaunch = false;
  for (size_t e = 0; e < numEntries; ++e)
    anyLaunch |= lathe_artifact_launch_count(artifact, e) != 0;
  if (anyLaunch) {
    llvm::ArrayRef<uint8_t> elf(a.cpu_library()->data(),
                                a.cpu_library()->size());
    LATHE_RETURN_IF_ERROR(CpuLibrary::load(elf, artifact->path, s->lib));
  }

  // Resolve every kernel of every entry now, so a broken library fails at
  // session creation rather than halfway through a forward pass.
  for (size_t e = 0; e < numEntries; ++e) {
    const fb::Entry *entry = a.entries()->Get(e);
    if (!entry->launches())
      continue;
    for (const fb::Launch *launch : *entry->launches()) {
      ResolvedLaunch r;
      LATHE_RETURN_IF_ERROR(s->lib->lookup(launch->kernel()->string_view(),
                                           r.fn));
      if (launch->args())
        r.args.assign(launch->args()->begin(), launch->args()->end());
      if (entry == artifact->forward)
        s->forward.push_back(std::move(r));
    }
  }

  s->arena = allocAligned(a.arena_bytes());
  if (!s->arena)
    return makeStatusF("{0}: cannot allocate the {1}-byte arena",
                       artifact->path, a.arena_bytes());
  *out_session = s.release();
  return nullptr;
}

extern "C" void lathe_session_free(lathe_session_t *session) { delete session; }

extern "C" lathe_status_t
lathe_session_load_weights(lathe_session_t *session,
                           const char *safetensors_path) {
  if (!session || !safetensors_path)
    return makeStatus("lathe_session_load_weights: null argument");
  const lathe_artifact *art = session->art;
  std::unique_ptr<SafetensorsFile> file;
  LATHE_RETURN_IF_ERROR(SafetensorsFile::open(safetensors_path, file));

  // Check every parameter before touching the session, so a bad file leaves
  // previously bound weights intact.
  size_t count = lathe_artifact_param_count(art);
  std::vector<const TensorView *> views(count);
  std::vector<uint64_t> offsets(count);
  uint64_t total = 0;
  for (size_t i = 0; i < count; ++i) {
    const fb::Param *p = art->root->params()->Get(i);
    std::string name = p->name()->str();
    const TensorView *t = file->find(name);
    if (!t)
      return makeStatusF("{0}: missing tensor '{1}'", safetensors_path, name);
    std::vector<int64_t> want = shapeOf(p->shape());
    if (t->shape != want)
      return makeStatusF("{0}: tensor '{1}' has shape {2}, expected {3}",
                         safetensors_path, name, formatShape(t->shape),
                         formatShape(want));
    const char *wantDtype = dtypeSafetensorsName(p->dtype());
    if (t->dtype != wantDtype)
      return makeStatusF("{0}: tensor '{1}' has dtype {2}, expected {3}",
                         safetensors_path, name, t->dtype, wantDtype);
    views[i] = t;
    offsets[i] = total;
    total += roundUp(t->bytes);
  }

  AlignedBytes storage = allocAligned(total);
  if (!storage)
    return makeStatusF("{0}: cannot allocate {1} bytes for the weights",
                       safetensors_path, total);
  for (size_t i = 0; i < count; ++i) {
    // Copied, not mapped: safetensors data need not be aligned and the file
    // may change after loading.
    std::memcpy(storage.get() + offsets[i], views[i]->data, views[i]->bytes);
    session->paramData[i] = storage.get() + offsets[i];
  }
  session->paramStorage = std::move(storage);
  session->weightsLoaded = true;
  return nullptr;
}

extern "C" lathe_status_t lathe_session_forward(lathe_session_t *session,
                                                const int32_t *tokens, size_t n,
                                                float *out_logits) {
  if (!session || (!tokens && n) || !out_logits)
    return makeStatus("lathe_session_forward: null argument");
  const lathe_artifact *art = session->art;
  const std::string &path = art->path;
  if (!art->forward)
    return makeStatusF("{0}: the artifact has no 'forward' entry", path);
  int64_t maxSeq = art->root->max_seq();
  int64_t vocab = art->root->vocab();
  if (n == 0)
    return makeStatusF("{0}: no tokens given (forward needs 1 to {1})", path,
                       maxSeq);
  if (uint64_t(n) > uint64_t(maxSeq))
    return makeStatusF("{0}: {1} tokens given, but the artifact's max_seq is "
                       "{2}",
                       path, n, maxSeq);
  for (size_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      return makeStatusF("{0}: token {1} at position {2} is out of range "
                         "[0, {3})",
                         path, tokens[i], i, vocab);
  if (!session->weightsLoaded && lathe_artifact_param_count(art) != 0)
    return makeStatusF("{0}: no weights loaded (call "
                       "lathe_session_load_weights first)",
                       path);

  const fb::Entry *entry = art->forward;
  // The entry is causal: zero padding past n cannot change the first n rows.
  auto *in = static_cast<int32_t *>(
      session->bufferData(entry->inputs()->Get(0)));
  std::memset(in, 0, size_t(maxSeq) * sizeof(int32_t));
  std::memcpy(in, tokens, n * sizeof(int32_t));

  for (const ResolvedLaunch &launch : session->forward) {
    session->argScratch.clear();
    for (uint32_t id : launch.args)
      session->argScratch.push_back(session->bufferData(id));
    launch.fn(session->argScratch.data());
  }

  const auto *out = static_cast<const float *>(
      session->bufferData(entry->outputs()->Get(0)));
  std::memcpy(out_logits, out, n * size_t(vocab) * sizeof(float));
  return nullptr;
}
