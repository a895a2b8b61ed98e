// lathe_session_t: the activation arena, bound weights, the states (KV cache)
// and the resolved kernel schedules of one artifact on its device: the cpu,
// or a GPU driver (cuda, cuda-emulated). Buffers are device addresses; host
// code reads and writes them only through read/write/zero below, which are
// memcpy on the cpu and copies through the driver on a GPU.
#include "artifact.h"
#include "cpu_device.h"
#include "gpu_device.h"
#include "host_gemm.h"
#include "safetensors.h"
#include "status.h"
#include "thread_pool.h"

#include <algorithm>
#include <deque>
#include <chrono>
#include <cmath>
#include <map>
#include <cstdlib>
#include <sys/mman.h>
#include <unistd.h>
#include <unordered_map>
#include <cstring>
#include <string_view>

using namespace lathe;
using namespace lathe::rt;

namespace {

struct ResolvedLaunch {
  // cpu: the kernel; GPU: the driver's function, grid and block.
  CpuKernelFn fn = nullptr;
  void *gpuFn = nullptr;
  uint32_t grid[3] = {1, 1, 1}, block[3] = {1, 1, 1};
  std::vector<uint32_t> args;
  // Takes (part, parts) after its buffers: run in parts on the threads.
  bool partitioned = false;
  // Index of the kernel's profile totals, and Launch.flops.
  uint32_t slot = 0;
  uint64_t flops = 0;
  // An early exit (Launch.exit_status / exit_to): -1, or the status buffer.
  int64_t exitStatus = -1;
  uint32_t exitTo = 0;
  // GPU: a GEMM library call (Launch.gemm) instead of a kernel.
  const fb::Gemm *gemm = nullptr;
};

struct KernelTotals {
  const char *kernel = nullptr;
  uint64_t calls = 0;
  double seconds = 0;
  uint64_t flops = 0;
};

} // namespace

struct lathe_session {
  const lathe_artifact *art = nullptr;
  // The cpu device's kernels; null on a GPU.
  std::unique_ptr<CpuLibrary> lib;
  // A GPU device's driver; null on the cpu.
  std::unique_ptr<GpuDriver> gpu;
  // The cpu device's memory (a GPU driver owns its own).
  AlignedBytes arenaHost, paramHost;
  std::vector<AlignedBytes> stateHost;
  // Device addresses (host addresses on the cpu): the arena, each param's
  // data (all 0 until weights are loaded) and the one allocation they live
  // in, and one zero-filled allocation per State, in Artifact.states order.
  DeviceAddress arena = 0, paramBlock = 0;
  std::vector<DeviceAddress> paramData;
  bool weightsLoaded = false;
  std::vector<DeviceAddress> states;
  // Positions 0..cached-1 of the cache hold keys and values of real tokens.
  size_t cached = 0;
  // Runs partitioned kernels' parts; LATHE_THREADS overrides the count.
  std::unique_ptr<ThreadPool> pool;
  // The resolved launches of every entry.
  std::unordered_map<const fb::Entry *, std::vector<ResolvedLaunch>> launches;
  std::vector<void *> argScratch;
  std::vector<DeviceAddress> addressScratch;
  // lathe_session_device's answer, made on first use.
  mutable std::string deviceName;
  // Early exits: the exit points passed in the last run, and the ordinal
  // (1-based) of the one taken, 0 if none.
  uint32_t exits = 0, exited = 0;
  // Parcae's sampled depth: a fixed iteration count for grad and train
  // steps (lathe_session_set_iterations), 0 for the default.
  int64_t fixedIterations = 0;
  // The count each sequence of the last train step ran.
  std::vector<int64_t> lastIterations;
  // LoopUS's deep supervision: fixed supervised steps (empty: step 0 for
  // grad, a draw per train step), and the last ones used.
  std::vector<int64_t> fixedSupervision, lastSupervision;

  bool supervised() const { return art->root->supervision_steps() > 0; }
  /// LoopUS's state [T, D] after the encoder for `tokens` (T of them).
  lathe_status_t encodeState(const int32_t *tokens, std::vector<float> &state);
  /// `times` gated passes of the core on `state`, in place.
  lathe_status_t advanceState(std::vector<float> &state, int64_t times);
  /// One supervised step of `entry` (grad or accumulate_grad) from `state`.
  lathe_status_t supervise(const lathe::fb::Entry *entry,
                           const std::vector<float> &state,
                           const int32_t *targets, float &loss);
  /// A train step of LoopUS's deep supervision (lathe_session_train_step).
  lathe_status_t trainSupervised(const lathe::fb::Entry *acc,
                                 const lathe::fb::Entry *opt,
                                 const int32_t *tokens, const int32_t *targets,
                                 size_t batch, size_t seq, float lr,
                                 int64_t step, float *out_loss,
                                 float *out_grad_norm);
  /// optimizer_step with `lr` at `step` over `batch` sequences' sums, which
  /// it then clears.
  lathe_status_t optimizerStep(const lathe::fb::Entry *opt, float lr,
                               int64_t step, size_t batch, float &gradNorm);
  // LoopFormer's shortcut: a fixed short trajectory (empty: draw one per
  // step), and the last one used.
  std::vector<double> fixedShortcut, lastShortcut;

  /// How many inputs grad and accumulate_grad take: tokens and targets,
  /// Parcae's count where the depth is sampled, LoopFormer's short length
  /// and trajectory where it trains the shortcut.
  size_t trainInputCount() const {
    return 2 + (art->root->sampled_iterations_max() > 0 ? 1 : 0) +
           (art->root->shortcut_iterations() > 0 ? 2 : 0);
  }

  /// The training inputs past tokens and targets: Parcae's count, then
  /// LoopFormer's short trajectory (drawn for `step` unless fixed).
  lathe_status_t writeTrainInputs(const lathe::fb::Entry *entry,
                                  int64_t iterations, int64_t step);
  // Profiling: totals per distinct kernel name (slots fixed at creation),
  // and the slots that ran since the last reset, in first-run order.
  bool profiling = false;
  std::vector<KernelTotals> totals;
  std::vector<uint32_t> ranSlots;
  // The profile names of GEMM calls (a deque: totals point into it).
  std::deque<std::string> gemmNames;

  DeviceAddress bufferAddress(uint32_t id) const {
    const fb::Buffer *b = art->root->buffers()->Get(id);
    if (b->kind() == fb::BufferKind::param)
      return paramData[b->param()];
    if (b->kind() == fb::BufferKind::state)
      return states[b->state()];
    return arena + b->offset();
  }

  // Zero-filled memory on the session's device; `host` owns it on the cpu.
  lathe_status_t allocate(uint64_t bytes, DeviceAddress &out,
                          AlignedBytes &host, const char *what) {
    if (gpu) {
      if (lathe_status_t s = gpu->alloc(bytes, out)) {
        std::string why = lathe_status_message(s);
        lathe_status_free(s);
        return makeStatusF("{0}: cannot allocate {1} bytes for {2} on {3}: "
                           "{4}",
                           art->path, bytes, what, gpu->describe(), why);
      }
      return nullptr;
    }
    host = allocAligned(bytes);
    if (!host)
      return makeStatusF("{0}: cannot allocate {1} bytes for {2}", art->path,
                         bytes, what);
    out = reinterpret_cast<DeviceAddress>(host.get());
    return nullptr;
  }
  lathe_status_t write(DeviceAddress dst, const void *src, size_t bytes) {
    if (gpu)
      return gpu->upload(dst, src, bytes);
    std::memcpy(reinterpret_cast<void *>(dst), src, bytes);
    return nullptr;
  }
  lathe_status_t read(void *dst, DeviceAddress src, size_t bytes) const {
    if (gpu)
      return gpu->download(dst, src, bytes);
    std::memcpy(dst, reinterpret_cast<const void *>(src), bytes);
    return nullptr;
  }
  lathe_status_t zero(DeviceAddress dst, size_t bytes) {
    if (gpu)
      return gpu->zero(dst, bytes);
    std::memset(reinterpret_cast<void *>(dst), 0, bytes);
    return nullptr;
  }
  template <typename T> lathe_status_t writeScalar(uint32_t id, T value) {
    return write(bufferAddress(id), &value, sizeof(T));
  }
  template <typename T> lathe_status_t readScalar(uint32_t id, T &value) const {
    return read(&value, bufferAddress(id), sizeof(T));
  }
  /// `bytes` at `src` as host memory: the memory itself on the cpu, else
  /// a copy in `staging`.
  lathe_status_t hostView(DeviceAddress src, size_t bytes,
                          std::vector<uint8_t> &staging,
                          const void *&out) const {
    if (!gpu) {
      out = reinterpret_cast<const void *>(src);
      return nullptr;
    }
    staging.resize(bytes);
    out = staging.data();
    return read(staging.data(), src, bytes);
  }

  void call(const ResolvedLaunch &launch) {
    if (!launch.partitioned) {
      launch.fn(argScratch.data());
      return;
    }
    unsigned parts = pool->size();
    // A GEMV inside a part runs on that part's thread alone.
    setGemvThreads(nullptr);
    pool->run([&](unsigned part) {
      std::vector<void *> args(argScratch);
      args.push_back(reinterpret_cast<void *>(uintptr_t(part)));
      args.push_back(reinterpret_cast<void *>(uintptr_t(parts)));
      launch.fn(args.data());
    });
    setGemvThreads(pool.get());
  }

  lathe_status_t launch(const ResolvedLaunch &launch) {
    if (gpu) {
      addressScratch.clear();
      for (uint32_t id : launch.args)
        addressScratch.push_back(bufferAddress(id));
      if (launch.gemm)
        return gpu->gemm(*launch.gemm, addressScratch.data());
      return gpu->launch(launch.gpuFn, launch.grid, launch.block,
                         addressScratch.data(), addressScratch.size());
    }
    argScratch.clear();
    for (uint32_t id : launch.args)
      argScratch.push_back(reinterpret_cast<void *>(bufferAddress(id)));
    call(launch);
    return nullptr;
  }

  lathe_status_t run(const std::vector<ResolvedLaunch> &launches) {
    // Unpartitioned kernels run on this thread; their GEMVs may use the
    // pool, which is idle between launches.
    setGemvThreads(pool.get());
    struct Unset {
      ~Unset() { setGemvThreads(nullptr); }
    } unset;
    exits = exited = 0;
    for (size_t i = 0; i < launches.size(); ++i) {
      const ResolvedLaunch &resolved = launches[i];
      if (!profiling) {
        LATHE_RETURN_IF_ERROR(launch(resolved));
      } else {
        // A GPU runs launches asynchronously: each is timed alone.
        if (gpu)
          LATHE_RETURN_IF_ERROR(gpu->synchronize());
        auto start = std::chrono::steady_clock::now();
        LATHE_RETURN_IF_ERROR(launch(resolved));
        if (gpu)
          LATHE_RETURN_IF_ERROR(gpu->synchronize());
        auto end = std::chrono::steady_clock::now();
        KernelTotals &t = totals[resolved.slot];
        if (t.calls++ == 0)
          ranSlots.push_back(resolved.slot);
        t.seconds += std::chrono::duration<double>(end - start).count();
        t.flops += resolved.flops;
      }
      if (resolved.exitStatus >= 0) {
        // A loop's halting decision, read as the kernel left it.
        ++exits;
        float halted = 0;
        LATHE_RETURN_IF_ERROR(
            readScalar(uint32_t(resolved.exitStatus), halted));
        if (halted == 1.0f) {
          exited = exits;
          i = resolved.exitTo - 1;
        }
      }
    }
    return nullptr;
  }

  lathe_status_t checkWeights() const {
    if (!weightsLoaded && lathe_artifact_param_count(art) != 0)
      return makeStatusF("{0}: no weights loaded (call "
                         "lathe_session_load_weights first)",
                         art->path);
    return nullptr;
  }

  lathe_status_t checkToken(int32_t token, size_t pos) const {
    int64_t vocab = art->root->vocab();
    if (token < 0 || token >= vocab)
      return makeStatusF("{0}: token {1} at position {2} is out of range "
                         "[0, {3})",
                         art->path, token, pos, vocab);
    return nullptr;
  }

  // Runs `entry` (forward or a prefill bucket: i32[L] -> f32[L, vocab]) on
  // n <= L tokens and copies out the first n rows of logits.
  lathe_status_t runSequence(const fb::Entry *entry, const char *name,
                             const int32_t *tokens, size_t n,
                             float *out_logits) {
    const std::string &path = art->path;
    if (!entry)
      return makeStatusF("{0}: this artifact has no {1} entry", path, name);
    int64_t maxSeq = art->root->max_seq();
    // The entry's own length: max_seq, or a prefill bucket's.
    int64_t length =
        art->root->buffers()->Get(entry->inputs()->Get(0))->shape()->Get(0);
    int64_t vocab = art->root->vocab();
    if (n == 0)
      return makeStatusF("{0}: no tokens given ({1} needs 1 to {2})", path,
                         name, maxSeq);
    if (uint64_t(n) > uint64_t(maxSeq))
      return makeStatusF("{0}: {1} tokens given, but the artifact's max_seq "
                         "is {2}",
                         path, n, maxSeq);
    // Padding is sound only for a causal entry; otherwise the pad tokens
    // would leak into the rows we return.
    if (!entry->causal() && uint64_t(n) != uint64_t(length))
      return makeStatusF("{0}: entry '{1}' is not causal, so it needs exactly "
                         "{2} tokens, not {3}",
                         path, name, length, n);
    for (size_t i = 0; i < n; ++i)
      LATHE_RETURN_IF_ERROR(checkToken(tokens[i], i));
    LATHE_RETURN_IF_ERROR(checkWeights());

    // The entry is causal: zero padding past n cannot change the first n
    // rows.
    std::vector<int32_t> padded(size_t(length), 0);
    std::copy_n(tokens, n, padded.begin());
    LATHE_RETURN_IF_ERROR(write(bufferAddress(entry->inputs()->Get(0)),
                                padded.data(), padded.size() * sizeof(int32_t)));
    // A second input is the window's length: LoopUS decides when to stop
    // from the last real token, so padding must not stand in for it.
    if (entry->inputs()->size() == 2)
      LATHE_RETURN_IF_ERROR(
          writeScalar(entry->inputs()->Get(1), int32_t(n)));
    LATHE_RETURN_IF_ERROR(run(launches[entry]));
    return read(out_logits, bufferAddress(entry->outputs()->Get(0)),
                n * size_t(vocab) * sizeof(float));
  }
};

extern "C" void lathe_session_loop_exit(const lathe_session_t *session,
                                        uint32_t *taken, uint32_t *points) {
  if (taken)
    *taken = session ? session->exited : 0;
  if (points)
    *points = session ? session->exits : 0;
}

extern "C" lathe_status_t lathe_session_create(const lathe_artifact_t *artifact,
                                               lathe_session_t **out_session) {
  return lathe_session_create_on_device(artifact, nullptr, out_session);
}

extern "C" lathe_status_t
lathe_session_create_on_device(const lathe_artifact_t *artifact,
                               const char *device,
                               lathe_session_t **out_session) {
  if (!artifact || !out_session)
    return makeStatus("lathe_session_create: null argument");
  *out_session = nullptr;
  const fb::Artifact &a = *artifact->root;
  bool cudaArtifact = a.target() == fb::Target::cuda;
  std::string name = device ? device : (cudaArtifact ? "cuda" : "cpu");
  if (name != "cpu" && name != "cuda" && name != "cuda-emulated")
    return makeStatusF("{0}: unknown device '{1}' (expected cpu, cuda or "
                       "cuda-emulated)",
                       artifact->path, name);
  if (name == "cpu" && cudaArtifact)
    return makeStatusF("{0}: this artifact targets cuda; run it with "
                       "--device=cuda or --device=cuda-emulated",
                       artifact->path);
  if (name != "cpu" && !cudaArtifact)
    return makeStatusF("{0}: this artifact targets cpu; device '{1}' needs an "
                       "artifact compiled with --target=cuda",
                       artifact->path, name);

  auto s = std::make_unique<lathe_session>();
  s->art = artifact;
  s->paramData.assign(lathe_artifact_param_count(artifact), 0);
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  if (const char *env = std::getenv("LATHE_THREADS"))
    threads = unsigned(std::max(1, std::atoi(env)));
  s->pool = std::make_unique<ThreadPool>(threads);

  size_t numEntries = lathe_artifact_entry_count(artifact);
  bool anyLaunch = false;
  for (size_t e = 0; e < numEntries; ++e)
    if (auto *l = a.entries()->Get(e)->launches())
      anyLaunch |= l->size() != 0;
  // The CUDA driver is looked up at run time, so lathe starts on machines
  // without one.
  if (name == "cuda")
    LATHE_RETURN_IF_ERROR(openCudaDriver(*artifact, s->gpu));
  else if (name == "cuda-emulated")
    LATHE_RETURN_IF_ERROR(openEmulatedDriver(*artifact, *s->pool, s->gpu));
  else if (anyLaunch) {
    if (!a.cpu_library() || a.cpu_library()->size() == 0)
      return makeStatusF("{0}: the artifact has no kernel library for device "
                         "'{1}'",
                         artifact->path, name);
    llvm::ArrayRef<uint8_t> elf(a.cpu_library()->data(),
                                a.cpu_library()->size());
    LATHE_RETURN_IF_ERROR(CpuLibrary::load(elf, artifact->path, s->lib));
    if (s->lib->exports("lathe_gpu_emulation"))
      return makeStatusF("{0}: the artifact's kernel library holds GPU "
                         "kernels, not cpu ones",
                         artifact->path);
  }

  // Resolve every kernel of every entry now, so a broken library or module
  // fails at session creation rather than halfway through a forward pass.
  std::unordered_map<std::string_view, uint32_t> slotOf;
  std::unordered_map<std::string_view, void *> gpuFunctions;
  bool gemmLibrary = false;
  for (size_t e = 0; e < numEntries; ++e) {
    const fb::Entry *entry = a.entries()->Get(e);
    if (!entry->launches())
      continue;
    for (const fb::Launch *launch : *entry->launches()) {
      ResolvedLaunch r;
      std::string_view kernel = launch->kernel()->string_view();
      if (s->gpu && launch->gemm()) {
        if (!gemmLibrary) {
          LATHE_RETURN_IF_ERROR(s->gpu->openGemmLibrary());
          gemmLibrary = true;
        }
        r.gemm = launch->gemm();
      } else if (s->gpu) {
        auto [found, added] = gpuFunctions.try_emplace(kernel, nullptr);
        if (added)
          LATHE_RETURN_IF_ERROR(s->gpu->function(kernel, found->second));
        r.gpuFn = found->second;
        // Three sizes each (checked when the artifact was loaded).
        for (unsigned d = 0; d < 3; ++d) {
          r.grid[d] = launch->grid()->Get(d);
          r.block[d] = launch->block()->Get(d);
        }
      } else {
        LATHE_RETURN_IF_ERROR(s->lib->lookup(kernel, r.fn));
        r.partitioned = s->lib->isPartitioned(kernel);
      }
      if (launch->args())
        r.args.assign(launch->args()->begin(), launch->args()->end());
      // GEMM calls get a slot per descriptor ("gemm 64x256x64 B^T f32"), so
      // a profile tells which product is slow, not only that one is.
      const char *name = launch->kernel()->c_str();
      if (launch->gemm()) {
        std::string described = gemmName(*launch->gemm());
        auto found = std::find(s->gemmNames.begin(), s->gemmNames.end(),
                               described);
        if (found == s->gemmNames.end())
          found = s->gemmNames.insert(s->gemmNames.end(), described);
        name = found->c_str();
        kernel = *found;
      }
      auto [it, added] = slotOf.try_emplace(kernel, uint32_t(s->totals.size()));
      if (added) {
        s->totals.emplace_back();
        s->totals.back().kernel = name;
      }
      r.slot = it->second;
      r.flops = launch->flops();
      r.exitStatus = launch->exit_status();
      r.exitTo = launch->exit_to();
      s->launches[entry].push_back(std::move(r));
    }
  }

  LATHE_RETURN_IF_ERROR(
      s->allocate(a.arena_bytes(), s->arena, s->arenaHost, "the arena"));
  // Zero-filled: the cache of a fresh session holds no positions, and
  // kernels that read it past `cached` must see defined values.
  s->stateHost.resize(artifact->stateBytes.size());
  s->states.resize(artifact->stateBytes.size());
  for (size_t i = 0; i < artifact->stateBytes.size(); ++i) {
    std::string what = "state '" + a.states()->Get(i)->name()->str() + "'";
    LATHE_RETURN_IF_ERROR(s->allocate(artifact->stateBytes[i], s->states[i],
                                      s->stateHost[i], what.c_str()));
  }
  *out_session = s.release();
  return nullptr;
}

extern "C" const char *lathe_session_device(const lathe_session_t *session) {
  if (!session)
    return "";
  if (session->deviceName.empty())
    session->deviceName = session->gpu ? session->gpu->describe() : "cpu";
  return session->deviceName.c_str();
}

extern "C" void lathe_session_free(lathe_session_t *session) { delete session; }

/// Hands back the pages that lie wholly inside [data, data + bytes) of the
/// mapped weight file once they are copied, so that loading never holds the
/// weights twice (peak RSS stays near weights + arena + cache).
static void releasePages(const void *data, size_t bytes) {
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  uintptr_t begin = (uintptr_t(data) + page - 1) & ~(page - 1);
  uintptr_t end = (uintptr_t(data) + bytes) & ~(page - 1);
  if (end > begin)
    madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
}

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

  AlignedBytes host;
  DeviceAddress block = 0;
  LATHE_RETURN_IF_ERROR(session->allocate(total, block, host, "the weights"));
  for (size_t i = 0; i < count; ++i) {
    // Copied, not mapped: safetensors data need not be aligned and the file
    // may change after loading.
    if (lathe_status_t s = session->write(block + offsets[i], views[i]->data,
                                          views[i]->bytes)) {
      if (session->gpu)
        session->gpu->release(block);
      return s;
    }
    releasePages(views[i]->data, views[i]->bytes);
  }
  // Only now, with every tensor in place, do the new weights replace the old.
  if (session->gpu && session->paramBlock)
    session->gpu->release(session->paramBlock);
  session->paramHost = std::move(host);
  session->paramBlock = block;
  for (size_t i = 0; i < count; ++i)
    session->paramData[i] = block + offsets[i];
  session->weightsLoaded = true;
  return nullptr;
}

extern "C" lathe_status_t lathe_session_forward(lathe_session_t *session,
                                                const int32_t *tokens, size_t n,
                                                float *out_logits) {
  if (!session || (!tokens && n) || !out_logits)
    return makeStatus("lathe_session_forward: null argument");
  // forward does not touch the states, so the cache stays as it was.
  return session->runSequence(session->art->forward, "forward", tokens, n,
                              out_logits);
}

extern "C" lathe_status_t lathe_session_prefill(lathe_session_t *session,
                                                const int32_t *tokens, size_t n,
                                                float *out_logits) {
  if (!session || (!tokens && n) || !out_logits)
    return makeStatus("lathe_session_prefill: null argument");
  // The smallest bucket that holds the prompt: less padding to compute.
  const fb::Entry *entry = prefillEntryFor(*session->art, n);
  LATHE_RETURN_IF_ERROR(
      session->runSequence(entry, "prefill", tokens, n, out_logits));
  // Prefill also wrote the padding positions n..max_seq-1; they do not count
  // and the next decode at position n overwrites them.
  session->cached = n;
  return nullptr;
}

extern "C" lathe_status_t lathe_session_decode(lathe_session_t *session,
                                               int32_t token, size_t pos,
                                               float *out_logits) {
  if (!session || !out_logits)
    return makeStatus("lathe_session_decode: null argument");
  const lathe_artifact *art = session->art;
  const std::string &path = art->path;
  const fb::Entry *entry = art->decode;
  if (!entry)
    return makeStatusF("{0}: this artifact has no decode entry", path);
  int64_t maxSeq = art->root->max_seq();
  if (uint64_t(pos) >= uint64_t(maxSeq))
    return makeStatusF("{0}: decode at position {1}, but the artifact's "
                       "max_seq is {2}",
                       path, pos, maxSeq);
  // Decoding past the cached prefix would attend to positions that hold no
  // token (zeros or prefill padding).
  if (pos > session->cached)
    return makeStatusF("{0}: decode at position {1}, but the cache holds only "
                       "{2} positions",
                       path, pos, session->cached);
  LATHE_RETURN_IF_ERROR(session->checkToken(token, pos));
  LATHE_RETURN_IF_ERROR(session->checkWeights());

  LATHE_RETURN_IF_ERROR(session->writeScalar(entry->inputs()->Get(0), token));
  // pos < max_seq <= INT32_MAX (checked when the artifact was loaded).
  LATHE_RETURN_IF_ERROR(
      session->writeScalar(entry->inputs()->Get(1), int32_t(pos)));
  LATHE_RETURN_IF_ERROR(session->run(session->launches[session->art->decode]));
  LATHE_RETURN_IF_ERROR(
      session->read(out_logits, session->bufferAddress(entry->outputs()->Get(0)),
                    size_t(art->root->vocab()) * sizeof(float)));
  // Positions past pos are stale now: a later decode must continue at
  // pos + 1 at the latest.
  session->cached = pos + 1;
  return nullptr;
}

extern "C" size_t lathe_session_cached(const lathe_session_t *session) {
  return session ? session->cached : 0;
}

extern "C" void lathe_session_set_profiling(lathe_session_t *session,
                                            int enable) {
  if (session)
    session->profiling = enable != 0;
  lathe::rt::setGemmProfiling(enable != 0);
}

extern "C" void lathe_session_profile_reset(lathe_session_t *session) {
  if (!session)
    return;
  for (KernelTotals &t : session->totals) {
    t.calls = 0;
    t.seconds = 0;
    t.flops = 0;
  }
  session->ranSlots.clear();
}

extern "C" size_t lathe_session_profile_count(const lathe_session_t *session) {
  return session ? session->ranSlots.size() : 0;
}

extern "C" int lathe_session_profile_kernel(const lathe_session_t *session,
                                            size_t i,
                                            lathe_kernel_profile_t *out) {
  if (!session || !out || i >= session->ranSlots.size())
    return 0;
  const KernelTotals &t = session->totals[session->ranSlots[i]];
  out->kernel = t.kernel;
  out->calls = t.calls;
  out->seconds = t.seconds;
  out->flops = t.flops;
  return 1;
}

/// The entry named `name`, or null.
static const fb::Entry *findEntry(const lathe_artifact *art,
                                  std::string_view name) {
  for (const fb::Entry *e : *art->root->entries())
    if (e->name()->string_view() == name)
      return e;
  return nullptr;
}

static size_t stateElements(const lathe_artifact *art);

extern "C" lathe_status_t lathe_session_grad(lathe_session_t *session,
                                             const int32_t *tokens,
                                             const int32_t *targets, size_t n,
                                             float *out_loss,
                                             const char *out_path) {
  if (!session || !tokens || !targets || !out_loss)
    return makeStatus("lathe_session_grad: null argument");
  const lathe_artifact *art = session->art;
  const std::string &path = art->path;
  const fb::Entry *entry = findEntry(art, "grad");
  if (!entry)
    return makeStatusF("{0}: this artifact has no grad entry (compile it "
                       "with lathec --train)",
                       path);
  // The entry's contract, checked before anything runs: (tokens, targets)
  // -> (loss, one gradient per parameter, in the artifact's order).
  const auto *buffers = art->root->buffers();
  size_t params = lathe_artifact_param_count(art);
  const bool sampled = art->root->sampled_iterations_max() > 0;
  const bool shortcut = art->root->shortcut_iterations() > 0;
  if (!entry->inputs() || entry->inputs()->size() != session->trainInputCount() ||
      !entry->outputs() || entry->outputs()->size() != params + 1)
    return makeStatusF("{0}: entry 'grad' must take (tokens, targets{1}{2}) "
                       "and return the loss and {3} gradients",
                       path, sampled ? ", iterations" : "",
                       shortcut ? ", short length, short trajectory" : "",
                       params);
  int64_t length = buffers->Get(entry->inputs()->Get(0))->shape()->Get(0);
  for (size_t i = 0; i < params; ++i) {
    const fb::Param *p = art->root->params()->Get(i);
    const fb::Buffer *g = buffers->Get(entry->outputs()->Get(i + 1));
    if (g->kind() != fb::BufferKind::arena || !g->shape() || !p->shape() ||
        g->shape()->size() != p->shape()->size() ||
        !std::equal(g->shape()->begin(), g->shape()->end(),
                    p->shape()->begin()))
      return makeStatusF("{0}: entry 'grad' output {1} does not have the "
                         "shape of parameter '{2}'",
                         path, i + 1, p->name()->str());
  }
  if (uint64_t(n) != uint64_t(length)) {
    size_t packed = lathe_artifact_train_batch(art);
    if (packed > 1)
      return makeStatusF("{0}: grad takes exactly {1} tokens and targets (the "
                         "pass it was compiled for: {2} windows of {3}), not "
                         "{4}",
                         path, length, packed, length / int64_t(packed), n);
    return makeStatusF("{0}: grad takes exactly {1} tokens and targets (the "
                       "window it was compiled for), not {2}",
                       path, length, n);
  }
  for (size_t i = 0; i < n; ++i) {
    LATHE_RETURN_IF_ERROR(session->checkToken(tokens[i], i));
    LATHE_RETURN_IF_ERROR(session->checkToken(targets[i], i));
  }
  LATHE_RETURN_IF_ERROR(session->checkWeights());
  if (session->supervised()) {
    // LoopUS: the supervised step at s from the state the encoder and s
    // gated passes of the core leave.
    if (session->fixedSupervision.size() > 1)
      return makeStatusF("{0}: grad runs one supervised step, but {1} were "
                         "fixed",
                         path, session->fixedSupervision.size());
    int64_t step = session->fixedSupervision.empty()
                       ? 0
                       : session->fixedSupervision.front();
    std::vector<float> state(stateElements(art));
    LATHE_RETURN_IF_ERROR(session->encodeState(tokens, state));
    LATHE_RETURN_IF_ERROR(session->advanceState(state, step));
    LATHE_RETURN_IF_ERROR(session->supervise(entry, state, targets, *out_loss));
    session->lastSupervision = {step};
  } else {
    LATHE_RETURN_IF_ERROR(session->write(
        session->bufferAddress(entry->inputs()->Get(0)), tokens,
        n * sizeof(int32_t)));
    LATHE_RETURN_IF_ERROR(session->write(
        session->bufferAddress(entry->inputs()->Get(1)), targets,
        n * sizeof(int32_t)));
    LATHE_RETURN_IF_ERROR(session->writeTrainInputs(
        entry,
        session->fixedIterations ? session->fixedIterations
                                 : art->root->sampled_iterations_mean(),
        /*step=*/0));
    LATHE_RETURN_IF_ERROR(session->run(session->launches[entry]));
    LATHE_RETURN_IF_ERROR(
        session->readScalar(entry->outputs()->Get(0), *out_loss));
  }
  if (!out_path)
    return nullptr;
  std::vector<TensorToWrite> tensors;
  tensors.push_back({"loss", "F32", {1}, out_loss, sizeof(float)});
  std::vector<std::vector<uint8_t>> staging(params);
  for (size_t i = 0; i < params; ++i) {
    const fb::Param *p = art->root->params()->Get(i);
    std::vector<int64_t> shape(p->shape()->begin(), p->shape()->end());
    size_t bytes = sizeof(float);
    for (int64_t d : shape)
      bytes *= size_t(d);
    const void *data = nullptr;
    LATHE_RETURN_IF_ERROR(session->hostView(
        session->bufferAddress(entry->outputs()->Get(i + 1)), bytes, staging[i],
        data));
    tensors.push_back({p->name()->str(), "F32", shape, data, bytes});
  }
  return writeSafetensors(out_path, tensors, {{"format", "pt"}});
}

extern "C" size_t lathe_artifact_train_batch(const lathe_artifact_t *artifact) {
  if (!artifact || !findEntry(artifact, "grad"))
    return 0;
  return size_t(std::max<int64_t>(1, artifact->root->train_batch()));
}

extern "C" size_t lathe_artifact_train_seq(const lathe_artifact_t *artifact) {
  const fb::Entry *grad = artifact ? findEntry(artifact, "grad") : nullptr;
  if (!grad || !grad->inputs() || grad->inputs()->size() == 0)
    return 0;
  // The grad entry packs train_batch windows (the loader checked that they
  // divide its length).
  return size_t(artifact->root->buffers()
                    ->Get(grad->inputs()->Get(0))
                    ->shape()
                    ->Get(0)) /
         lathe_artifact_train_batch(artifact);
}

/// The training draws' generator (splitmix64): the next 64 bits of the
/// stream `state`, which it advances. Seeded streams make a resumed run draw
/// what the uninterrupted one would have.
static uint64_t splitmix64(uint64_t &state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// ARCHITECTURES.md §4.2's short trajectory for M long steps: a length l
/// uniform in 1..M-1, then steps of k/M units drawn greedily at random,
/// each leaving at least one unit per remaining step, the last filling to
/// 1. Seeded by the step (one trajectory per step, as the released code).
static std::vector<double> drawShortcut(int64_t M, int64_t step) {
  uint64_t state = uint64_t(step) * 0xD1B54A32D192ED03ull + 0x2545F4914F6CDD1Dull;
  auto below = [&](int64_t n) { // uniform in [0, n)
    return int64_t(splitmix64(state) % uint64_t(n));
  };
  int64_t length = 1 + below(M - 1), left = M;
  std::vector<double> steps;
  for (int64_t i = 0; i + 1 < length; ++i) {
    int64_t units = 1 + below(left - (length - 1 - i));
    steps.push_back(double(units) / double(M));
    left -= units;
  }
  steps.push_back(double(left) / double(M));
  return steps;
}

lathe_status_t lathe_session::writeTrainInputs(const lathe::fb::Entry *entry,
                                               int64_t iterations,
                                               int64_t step) {
  unsigned next = 2;
  if (art->root->sampled_iterations_max() > 0)
    LATHE_RETURN_IF_ERROR(
        writeScalar(entry->inputs()->Get(next++), int32_t(iterations)));
  int64_t M = art->root->shortcut_iterations();
  if (M == 0)
    return nullptr;
  lastShortcut = fixedShortcut.empty() ? drawShortcut(M, step) : fixedShortcut;
  LATHE_RETURN_IF_ERROR(writeScalar(entry->inputs()->Get(next++),
                                    int32_t(lastShortcut.size())));
  std::vector<float> table(size_t(2 * (M - 1)), 0.0f);
  double time = 0;
  for (size_t j = 0; j < lastShortcut.size(); ++j) {
    table[j] = float(time);
    table[size_t(M - 1) + j] = float(lastShortcut[j]);
    time += lastShortcut[j];
  }
  return write(bufferAddress(entry->inputs()->Get(next)), table.data(),
               table.size() * sizeof(float));
}

/// Copies up to `capacity` of `values` to `out` (if given); their count.
template <typename T>
static size_t copyOut(const std::vector<T> &values, T *out, size_t capacity) {
  if (out)
    std::copy_n(values.begin(), std::min(capacity, values.size()), out);
  return values.size();
}

/// An entry with one input and one output of `state`'s size (LoopUS's
/// encode and advance), or an error naming it.
static lathe_status_t stateEntry(const lathe_artifact *art,
                                 const fb::Entry *entry, const char *name,
                                 size_t inputBytes, size_t stateBytes) {
  auto bytes = [&](uint32_t id) {
    const fb::Buffer *b = art->root->buffers()->Get(id);
    return size_t(*numElements(b->shape())) * dtypeSize(b->dtype());
  };
  if (!entry || !entry->inputs() || entry->inputs()->size() != 1 ||
      !entry->outputs() || entry->outputs()->size() != 1 ||
      bytes(entry->inputs()->Get(0)) != inputBytes ||
      bytes(entry->outputs()->Get(0)) != stateBytes)
    return makeStatusF("{0}: LoopUS's deep supervision needs a '{1}' entry "
                       "of the training window's shape (compile with "
                       "lathec --train)",
                       art->path, name);
  return nullptr;
}

lathe_status_t lathe_session::encodeState(const int32_t *tokens,
                                          std::vector<float> &state) {
  const fb::Entry *entry = findEntry(art, "loopus_encode");
  size_t T = lathe_artifact_train_seq(art);
  LATHE_RETURN_IF_ERROR(stateEntry(art, entry, "loopus_encode",
                                   T * sizeof(int32_t),
                                   state.size() * sizeof(float)));
  LATHE_RETURN_IF_ERROR(write(bufferAddress(entry->inputs()->Get(0)), tokens,
                              T * sizeof(int32_t)));
  LATHE_RETURN_IF_ERROR(run(launches[entry]));
  return read(state.data(), bufferAddress(entry->outputs()->Get(0)),
              state.size() * sizeof(float));
}

lathe_status_t lathe_session::advanceState(std::vector<float> &state,
                                           int64_t times) {
  const fb::Entry *entry = findEntry(art, "loopus_advance");
  size_t bytes = state.size() * sizeof(float);
  LATHE_RETURN_IF_ERROR(
      stateEntry(art, entry, "loopus_advance", bytes, bytes));
  for (int64_t i = 0; i < times; ++i) {
    LATHE_RETURN_IF_ERROR(
        write(bufferAddress(entry->inputs()->Get(0)), state.data(), bytes));
    LATHE_RETURN_IF_ERROR(run(launches[entry]));
    LATHE_RETURN_IF_ERROR(
        read(state.data(), bufferAddress(entry->outputs()->Get(0)), bytes));
  }
  return nullptr;
}

lathe_status_t lathe_session::supervise(const lathe::fb::Entry *entry,
                                        const std::vector<float> &state,
                                        const int32_t *targets, float &loss) {
  size_t T = lathe_artifact_train_seq(art);
  const fb::Buffer *in = art->root->buffers()->Get(entry->inputs()->Get(0));
  if (size_t(*numElements(in->shape())) != state.size() ||
      in->dtype() != fb::DType::f32)
    return makeStatusF("{0}: entry '{1}' does not take LoopUS's state",
                       art->path, entry->name()->str());
  LATHE_RETURN_IF_ERROR(write(bufferAddress(entry->inputs()->Get(0)),
                              state.data(), state.size() * sizeof(float)));
  LATHE_RETURN_IF_ERROR(write(bufferAddress(entry->inputs()->Get(1)), targets,
                              T * sizeof(int32_t)));
  LATHE_RETURN_IF_ERROR(run(launches[entry]));
  return readScalar(entry->outputs()->Get(0), loss);
}

/// The training window's state size for LoopUS: T x D from the encoder's
/// output.
static size_t stateElements(const lathe_artifact *art) {
  const fb::Entry *encode = findEntry(art, "loopus_encode");
  if (!encode || !encode->outputs() || encode->outputs()->size() != 1)
    return 0;
  return size_t(*numElements(
      art->root->buffers()->Get(encode->outputs()->Get(0))->shape()));
}

/// ARCHITECTURES.md §4.3: `count` distinct steps of [0, steps), ascending,
/// drawn by a partial Fisher-Yates shuffle seeded by the train step (so a
/// resumed run draws what the uninterrupted one would have).
static std::vector<int64_t> drawSupervision(int64_t steps, int64_t count,
                                            int64_t step) {
  uint64_t state = uint64_t(step) * 0xA0761D6478BD642Full + 0xE7037ED1A0B428DBull;
  std::vector<int64_t> all(static_cast<size_t>(steps));
  for (int64_t i = 0; i < steps; ++i)
    all[size_t(i)] = i;
  for (int64_t i = 0; i < count; ++i) {
    int64_t j = i + int64_t(splitmix64(state) % uint64_t(steps - i));
    std::swap(all[size_t(i)], all[size_t(j)]);
  }
  std::vector<int64_t> chosen(all.begin(), all.begin() + count);
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

extern "C" void lathe_artifact_supervision(const lathe_artifact_t *artifact,
                                           int64_t *steps,
                                           int64_t *supervised) {
  if (steps)
    *steps = artifact ? artifact->root->supervision_steps() : 0;
  if (supervised)
    *supervised = artifact ? artifact->root->supervised_steps() : 0;
}

extern "C" lathe_status_t
lathe_session_set_supervision(lathe_session_t *session, const int64_t *steps,
                              size_t n) {
  if (!session || (n && !steps))
    return makeStatus("lathe_session_set_supervision: null argument");
  const fb::Artifact *a = session->art->root;
  const std::string &path = session->art->path;
  if (!session->supervised())
    return makeStatusF("{0}: this artifact does not train by deep "
                       "supervision (a LoopUS loop compiled with lathec "
                       "--train)",
                       path);
  for (size_t i = 0; i < n; ++i) {
    if (steps[i] < 0 || steps[i] >= a->supervision_steps())
      return makeStatusF("{0}: supervised step {1} is outside [0, {2})", path,
                         steps[i], a->supervision_steps());
    if (i && steps[i] <= steps[i - 1])
      return makeStatusF("{0}: supervised steps must be distinct and "
                         "ascending, got {1} after {2}",
                         path, steps[i], steps[i - 1]);
  }
  session->fixedSupervision.assign(steps, steps + n);
  return nullptr;
}

extern "C" size_t lathe_session_last_supervision(const lathe_session_t *session,
                                                 int64_t *out,
                                                 size_t capacity) {
  return session ? copyOut(session->lastSupervision, out, capacity) : 0;
}

extern "C" int64_t
lathe_artifact_shortcut_iterations(const lathe_artifact_t *artifact) {
  return artifact ? artifact->root->shortcut_iterations() : 0;
}

extern "C" lathe_status_t lathe_session_set_shortcut(lathe_session_t *session,
                                                     const double *steps,
                                                     size_t n) {
  if (!session || (n && !steps))
    return makeStatus("lathe_session_set_shortcut: null argument");
  int64_t M = session->art->root->shortcut_iterations();
  const std::string &path = session->art->path;
  if (M == 0)
    return makeStatusF("{0}: this artifact does not train LoopFormer's "
                       "shortcut (loop.shortcut)",
                       path);
  if (n >= size_t(M))
    return makeStatusF("{0}: a short trajectory has 1 to {1} steps (the long "
                       "one has {2}), got {3}",
                       path, M - 1, M, n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!(steps[i] > 0) || !std::isfinite(steps[i]))
      return makeStatusF("{0}: short-trajectory step {1} is {2}; steps must "
                         "be positive",
                         path, i + 1, steps[i]);
    sum += steps[i];
  }
  if (n && std::abs(sum - 1.0) > 1e-6)
    return makeStatusF("{0}: the short trajectory's steps sum to {1}, not 1",
                       path, sum);
  session->fixedShortcut.assign(steps, steps + n);
  return nullptr;
}


extern "C" size_t lathe_session_last_shortcut(const lathe_session_t *session,
                                              double *out, size_t capacity) {
  return session ? copyOut(session->lastShortcut, out, capacity) : 0;
}

extern "C" void
lathe_artifact_sampled_iterations(const lathe_artifact_t *artifact,
                                  int64_t *mean, int64_t *max) {
  if (mean)
    *mean = artifact ? artifact->root->sampled_iterations_mean() : 0;
  if (max)
    *max = artifact ? artifact->root->sampled_iterations_max() : 0;
}

extern "C" lathe_status_t lathe_session_set_iterations(lathe_session_t *session,
                                                       int64_t n) {
  if (!session)
    return makeStatus("lathe_session_set_iterations: null session");
  int64_t max = session->art->root->sampled_iterations_max();
  if (max == 0)
    return makeStatusF("{0}: this artifact's loop depth is fixed; only a "
                       "Parcae loop with loop.sample_max takes an iteration "
                       "count",
                       session->art->path);
  if (n < 0 || n > max)
    return makeStatusF("{0}: the iteration count must be between 1 and "
                       "loop.sample_max ({1}), got {2}",
                       session->art->path, max, n);
  session->fixedIterations = n;
  return nullptr;
}

extern "C" size_t lathe_session_last_iterations(const lathe_session_t *session,
                                                int64_t *out, size_t capacity) {
  return session ? copyOut(session->lastIterations, out, capacity) : 0;
}

namespace {
/// Parcae's per-sequence depth (ARCHITECTURES.md §4.1): n ~ Poisson(mean),
/// clamped to [1, max], drawn from a generator seeded by the step and the
/// sequence, so a resumed run draws what the uninterrupted one would have.
int64_t sampleIterations(int64_t mean, int64_t max, int64_t step, size_t b) {
  uint64_t state = uint64_t(step) * 0x9E3779B97F4A7C15ull ^ (uint64_t(b) + 1);
  auto uniform = [&]() {
    // 53 bits into [0, 1)
    return double(splitmix64(state) >> 11) * 0x1.0p-53;
  };
  // Knuth's product of uniforms: fine for the small means of looped cores.
  double limit = std::exp(-double(mean)), p = 1.0;
  int64_t k = 0;
  do {
    ++k;
    p *= uniform();
  } while (p > limit && k <= max);
  return std::clamp<int64_t>(k - 1, 1, max);
}
} // namespace

extern "C" lathe_status_t
lathe_session_train_step(lathe_session_t *session, const int32_t *tokens,
                         const int32_t *targets, size_t batch, size_t seq,
                         float lr, int64_t step, float *out_loss,
                         float *out_grad_norm) {
  if (!session || !tokens || !targets || !out_loss || !out_grad_norm)
    return makeStatus("lathe_session_train_step: null argument");
  const lathe_artifact *art = session->art;
  const std::string &path = art->path;
  const fb::Entry *acc = findEntry(art, "accumulate_grad");
  const fb::Entry *opt = findEntry(art, "optimizer_step");
  if (!acc || !opt)
    return makeStatusF("{0}: this artifact was compiled for inference; it has "
                       "no training entries (compile it with lathec --train)",
                       path);
  const bool sampled = art->root->sampled_iterations_max() > 0;
  if (!acc->inputs() || acc->inputs()->size() != session->trainInputCount() ||
      !acc->outputs() ||
      acc->outputs()->size() != 1 || !opt->inputs() ||
      opt->inputs()->size() != 3 || !opt->outputs() ||
      opt->outputs()->size() != 1)
    return makeStatusF("{0}: the training entries do not have the shape "
                       "lathec --train gives them",
                       path);
  size_t window = lathe_artifact_train_seq(art);
  if (seq != window)
    return makeStatusF("{0}: this artifact trains on windows of {1} tokens, "
                       "not {2} (compile with lathec --train --train-seq {2})",
                       path, window, seq);
  if (batch == 0)
    return makeStatusF("{0}: a batch needs at least one sequence", path);
  const size_t packed = lathe_artifact_train_batch(art);
  if (batch % packed != 0)
    return makeStatusF("{0}: this artifact trains {1} sequences per pass "
                       "(lathec --train-batch {1}); a batch of {2} is not a "
                       "multiple of that",
                       path, packed, batch);
  if (step < 1)
    return makeStatusF("{0}: optimizer steps count from 1, got {1}", path,
                       step);
  for (size_t i = 0; i < batch * seq; ++i) {
    LATHE_RETURN_IF_ERROR(session->checkToken(tokens[i], i % seq));
    LATHE_RETURN_IF_ERROR(session->checkToken(targets[i], i % seq));
  }
  LATHE_RETURN_IF_ERROR(session->checkWeights());
  if (session->supervised())
    return session->trainSupervised(acc, opt, tokens, targets, batch, seq, lr,
                                    step, out_loss, out_grad_norm);
  double lossSum = 0;
  session->lastIterations.clear();
  // One pass per `packed` sequences; each pass's loss and gradients are
  // means over its sequences, so the passes' sums are scaled by 1 / passes.
  const size_t passes = batch / packed, rows = packed * seq;
  for (size_t b = 0; b < passes; ++b) {
    LATHE_RETURN_IF_ERROR(
        session->write(session->bufferAddress(acc->inputs()->Get(0)),
                       tokens + b * rows, rows * sizeof(int32_t)));
    LATHE_RETURN_IF_ERROR(
        session->write(session->bufferAddress(acc->inputs()->Get(1)),
                       targets + b * rows, rows * sizeof(int32_t)));
    int64_t n = 0;
    if (sampled) {
      n = session->fixedIterations
              ? session->fixedIterations
              : sampleIterations(art->root->sampled_iterations_mean(),
                                 art->root->sampled_iterations_max(), step, b);
      session->lastIterations.push_back(n);
    }
    LATHE_RETURN_IF_ERROR(session->writeTrainInputs(acc, n, step));
    LATHE_RETURN_IF_ERROR(session->run(session->launches[acc]));
    float loss = 0;
    LATHE_RETURN_IF_ERROR(session->readScalar(acc->outputs()->Get(0), loss));
    lossSum += loss;
  }
  LATHE_RETURN_IF_ERROR(
      session->optimizerStep(opt, lr, step, passes, *out_grad_norm));
  *out_loss = float(lossSum / double(passes));
  return nullptr;
}

lathe_status_t lathe_session::optimizerStep(const fb::Entry *opt, float lr,
                                            int64_t step, size_t batch,
                                            float &gradNorm) {
  LATHE_RETURN_IF_ERROR(writeScalar(opt->inputs()->Get(0), lr));
  LATHE_RETURN_IF_ERROR(writeScalar(opt->inputs()->Get(1), float(step)));
  LATHE_RETURN_IF_ERROR(
      writeScalar(opt->inputs()->Get(2), 1.0f / float(batch)));
  LATHE_RETURN_IF_ERROR(run(launches[opt]));
  LATHE_RETURN_IF_ERROR(readScalar(opt->outputs()->Get(0), gradNorm));
  // The sums start again from zero for the next step.
  for (size_t i = 0; i < lathe_artifact_state_count(art); ++i)
    if (art->root->states()->Get(i)->name()->string_view().substr(0, 5) ==
        "grad.")
      LATHE_RETURN_IF_ERROR(zero(states[i], art->stateBytes[i]));
  return nullptr;
}

/// ARCHITECTURES.md §4.3's random deep supervision: every sequence's state
/// starts at the encoder's output; at each supervised step (ascending) the
/// states advance to it, each sequence's supervised loss adds its
/// gradients, its state moves one gated pass on (with the weights of that
/// step, before the update), and one optimizer step follows.
lathe_status_t lathe_session::trainSupervised(
    const fb::Entry *acc, const fb::Entry *opt, const int32_t *tokens,
    const int32_t *targets, size_t batch, size_t seq, float lr, int64_t step,
    float *out_loss, float *out_grad_norm) {
  const fb::Artifact *a = art->root;
  std::vector<int64_t> chosen =
      fixedSupervision.empty()
          ? drawSupervision(a->supervision_steps(), a->supervised_steps(), step)
          : fixedSupervision;
  if (int64_t(chosen.size()) != a->supervised_steps())
    return makeStatusF("{0}: a train step supervises {1} steps "
                       "(loop.supervision.supervised), but {2} were fixed",
                       art->path, a->supervised_steps(), chosen.size());
  lastSupervision = chosen;
  std::vector<std::vector<float>> state(batch,
                                        std::vector<float>(stateElements(art)));
  for (size_t b = 0; b < batch; ++b)
    LATHE_RETURN_IF_ERROR(encodeState(tokens + b * seq, state[b]));
  double lossSum = 0, normSum = 0;
  int64_t at = 0;
  for (auto [j, s] : llvm::enumerate(chosen)) {
    for (size_t b = 0; b < batch; ++b) {
      LATHE_RETURN_IF_ERROR(advanceState(state[b], s - at));
      float loss = 0;
      LATHE_RETURN_IF_ERROR(supervise(acc, state[b], targets + b * seq, loss));
      lossSum += loss;
      LATHE_RETURN_IF_ERROR(advanceState(state[b], 1));
    }
    float norm = 0;
    LATHE_RETURN_IF_ERROR(optimizerStep(
        opt, lr, (step - 1) * int64_t(chosen.size()) + int64_t(j) + 1, batch,
        norm));
    normSum += norm;
    at = s + 1;
  }
  *out_loss = float(lossSum / double(batch * chosen.size()));
  *out_grad_norm = float(normSum / double(chosen.size()));
  return nullptr;
}

extern "C" lathe_status_t lathe_session_eval_loss(lathe_session_t *session,
                                                  const int32_t *tokens,
                                                  const int32_t *targets,
                                                  size_t batch, size_t n,
                                                  float *out_loss) {
  if (!session || !tokens || !targets || !out_loss)
    return makeStatus("lathe_session_eval_loss: null argument");
  size_t vocab = size_t(session->art->root->vocab());
  std::vector<float> logits(n * vocab);
  double total = 0;
  for (size_t b = 0; b < batch; ++b) {
    LATHE_RETURN_IF_ERROR(session->runSequence(
        session->art->forward, "forward", tokens + b * n, n, logits.data()));
    for (size_t t = 0; t < n; ++t) {
      int32_t y = targets[b * n + t];
      LATHE_RETURN_IF_ERROR(session->checkToken(y, t));
      const float *row = logits.data() + t * vocab;
      float mx = *std::max_element(row, row + vocab);
      double sum = 0;
      for (size_t v = 0; v < vocab; ++v)
        sum += std::exp(double(row[v]) - mx);
      total += std::log(sum) + mx - row[y];
    }
  }
  *out_loss = float(total / double(batch * n));
  return nullptr;
}

/// The optimizer's states, saved with a checkpoint: AdamW's moments and
/// Muon's momentum.
static bool isOptimizerState(const fb::State *st) {
  std::string_view name = st->name()->string_view();
  return name.substr(0, 5) == "adam." || name.substr(0, 5) == "muon.";
}

extern "C" lathe_status_t
lathe_session_save(const lathe_session_t *session, const char *path,
                   int with_optimizer, int64_t step,
                   const char *const *meta_keys,
                   const char *const *meta_values, size_t meta_count) {
  if (!session || !path || (meta_count && (!meta_keys || !meta_values)))
    return makeStatus("lathe_session_save: null argument");
  const lathe_artifact *art = session->art;
  LATHE_RETURN_IF_ERROR(session->checkWeights());
  std::vector<TensorToWrite> tensors;
  // A GPU's tensors are copied to the host first.
  std::vector<std::vector<uint8_t>> staging(lathe_artifact_param_count(art) +
                                            lathe_artifact_state_count(art));
  for (size_t i = 0; i < lathe_artifact_param_count(art); ++i) {
    const fb::Param *p = art->root->params()->Get(i);
    std::vector<int64_t> shape = shapeOf(p->shape());
    size_t bytes = sizeof(float);
    for (int64_t d : shape)
      bytes *= size_t(d);
    const void *data = nullptr;
    LATHE_RETURN_IF_ERROR(
        session->hostView(session->paramData[i], bytes, staging[i], data));
    tensors.push_back({p->name()->str(), "F32", shape, data, bytes});
  }
  if (with_optimizer)
    tensors.push_back({"optimizer.step", "I64", {1}, &step, sizeof(step)});
  if (with_optimizer)
    for (size_t i = 0; i < lathe_artifact_state_count(art); ++i) {
      const fb::State *st = art->root->states()->Get(i);
      if (!isOptimizerState(st))
        continue;
      const void *data = nullptr;
      LATHE_RETURN_IF_ERROR(session->hostView(
          session->states[i], art->stateBytes[i],
          staging[lathe_artifact_param_count(art) + i], data));
      tensors.push_back({st->name()->str(), "F32", shapeOf(st->shape()), data,
                         art->stateBytes[i]});
    }
  std::map<std::string, std::string> meta{{"format", "pt"}};
  for (size_t i = 0; i < meta_count; ++i)
    meta[meta_keys[i]] = meta_values[i];
  return writeSafetensors(path, tensors, meta);
}

extern "C" lathe_status_t lathe_session_load_optimizer(lathe_session_t *session,
                                                       const char *path,
                                                       int64_t *out_step) {
  if (!session || !path || !out_step)
    return makeStatus("lathe_session_load_optimizer: null argument");
  const lathe_artifact *art = session->art;
  std::unique_ptr<SafetensorsFile> file;
  LATHE_RETURN_IF_ERROR(SafetensorsFile::open(path, file));
  const TensorView *stepView = file->find("optimizer.step");
  if (!stepView || stepView->dtype != "I64" ||
      stepView->shape != std::vector<int64_t>{1})
    return makeStatusF("{0}: no optimizer state (an I64 [1] tensor "
                       "'optimizer.step'): not a training checkpoint",
                       path);
  int64_t step = 0;
  std::memcpy(&step, stepView->data, sizeof(step));
  std::vector<std::pair<size_t, const TensorView *>> copies;
  for (size_t i = 0; i < lathe_artifact_state_count(art); ++i) {
    const fb::State *st = art->root->states()->Get(i);
    if (!isOptimizerState(st))
      continue;
    std::string name = st->name()->str();
    const TensorView *t = file->find(name);
    if (!t)
      return makeStatusF("{0}: missing optimizer tensor '{1}' (a checkpoint "
                         "of a different spec?)",
                         path, name);
    std::vector<int64_t> want = shapeOf(st->shape());
    if (t->shape != want || t->dtype != "F32")
      return makeStatusF("{0}: optimizer tensor '{1}' is {2} {3}, expected "
                         "F32 {4} (a checkpoint of a different spec?)",
                         path, name, t->dtype, formatShape(t->shape),
                         formatShape(want));
    copies.push_back({i, t});
  }
  for (auto [i, t] : copies)
    LATHE_RETURN_IF_ERROR(session->write(session->states[i], t->data, t->bytes));
  *out_step = step;
  return nullptr;
}
