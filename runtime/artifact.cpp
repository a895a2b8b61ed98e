// Artifact loading: flatbuffers verification plus the semantic checks that
// let the rest of the runtime trust every index and offset it reads.
#include "artifact.h"
#include "lathe/gemm_shape.h"
#include "artifact_checksum.h"
#include "status.h"

#include "llvm/ADT/StringSet.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <cstdio>
#include <algorithm>
#include <limits>

using namespace lathe;
using namespace lathe::rt;

namespace lathe::rt {

size_t dtypeSize(fb::DType dtype) {
  switch (dtype) {
  case fb::DType::f32:
  case fb::DType::i32:
    return 4;
  case fb::DType::f16:
  case fb::DType::bf16:
    return 2;
  }
  return 0;
}

const char *dtypeSafetensorsName(fb::DType dtype) {
  switch (dtype) {
  case fb::DType::f32:
    return "F32";
  case fb::DType::i32:
    return "I32";
  case fb::DType::f16:
    return "F16";
  case fb::DType::bf16:
    return "BF16";
  }
  return "?";
}

const char *dtypeName(fb::DType dtype) {
  switch (dtype) {
  case fb::DType::f32:
    return "f32";
  case fb::DType::i32:
    return "i32";
  case fb::DType::f16:
    return "f16";
  case fb::DType::bf16:
    return "bf16";
  }
  return "?";
}

std::optional<int64_t> numElements(const flatbuffers::Vector<int64_t> *shape) {
  // Anything past 2^48 elements is a corrupt shape, not a model; the bound
  // also keeps later byte-size arithmetic far from overflow.
  constexpr int64_t kMax = int64_t(1) << 48;
  int64_t n = 1;
  if (!shape)
    return n;
  for (int64_t d : *shape) {
    if (d < 0 || d > kMax)
      return std::nullopt;
    if (d != 0 && n > kMax / d)
      return std::nullopt;
    n *= d;
  }
  return n;
}

std::vector<int64_t> shapeOf(const flatbuffers::Vector<int64_t> *shape) {
  if (!shape)
    return {};
  return std::vector<int64_t>(shape->begin(), shape->end());
}

} // namespace lathe::rt

namespace {

bool validDType(fb::DType d) { return dtypeSize(d) != 0; }

// Everything flatbuffers' verifier cannot know: indices, ranges, shapes.
lathe_status_t checkSemantics(lathe_artifact &art) {
  const fb::Artifact &a = *art.root;
  const std::string &path = art.path;
  auto corrupt = [&](const std::string &what) {
    return makeStatus(path + ": invalid lathe artifact: " + what);
  };

  if (a.version() != kArtifactVersion)
    return makeStatusF("{0}: unsupported artifact version {1} (this runtime "
                       "reads version {2})",
                       path, a.version(), kArtifactVersion);
  if (a.target() != fb::Target::cpu && a.target() != fb::Target::cuda)
    return corrupt(llvm::formatv("unknown target {0}", int(a.target())).str());
  if (a.vocab() < 1)
    return corrupt(llvm::formatv("vocab {0} is not positive", a.vocab()).str());
  if (a.max_seq() < 1)
    return corrupt(
        llvm::formatv("max_seq {0} is not positive", a.max_seq()).str());

  if (a.sampled_iterations_mean() != 0 || a.sampled_iterations_max() != 0) {
    if (a.sampled_iterations_mean() < 1 ||
        a.sampled_iterations_max() < a.sampled_iterations_mean())
      return corrupt(llvm::formatv("sampled iterations: mean {0} and max {1} "
                                   "need 1 <= mean <= max",
                                   a.sampled_iterations_mean(),
                                   a.sampled_iterations_max())
                         .str());
  }

  if (a.shortcut_iterations() == 1 || a.shortcut_iterations() < 0)
    return corrupt(llvm::formatv("shortcut iterations {0}: a short trajectory "
                                 "needs at least 2 long steps",
                                 a.shortcut_iterations())
                       .str());
  if ((a.supervision_steps() != 0 || a.supervised_steps() != 0) &&
      (a.supervised_steps() < 1 ||
       a.supervised_steps() > a.supervision_steps()))
    return corrupt(llvm::formatv("deep supervision: {0} supervised of {1} "
                                 "steps needs 1 <= supervised <= steps",
                                 a.supervised_steps(), a.supervision_steps())
                       .str());
  size_t numParams = a.params() ? a.params()->size() : 0;
  size_t numStates = a.states() ? a.states()->size() : 0;
  size_t numBuffers = a.buffers() ? a.buffers()->size() : 0;

  llvm::StringSet<> names;
  int64_t total = 0;
  for (size_t i = 0; i < numParams; ++i) {
    const fb::Param *p = a.params()->Get(i);
    std::string name = p->name()->str();
    std::string where = llvm::formatv("param {0} ('{1}')", i, name).str();
    if (name.empty())
      return corrupt(llvm::formatv("param {0} has an empty name", i).str());
    if (!names.insert(name).second)
      return corrupt(where + " is listed twice");
    if (!validDType(p->dtype()))
      return corrupt(where + " has an unknown dtype");
    if (p->init() < fb::InitKind::MIN || p->init() > fb::InitKind::MAX)
      return corrupt(where + " has an unknown init kind");
    if (p->init() == fb::InitKind::uniform &&
        !(p->value() > 0.0f && std::isfinite(p->value())))
      return corrupt(where + " has an invalid bound for uniform init");
    if (p->init() == fb::InitKind::normal &&
        !(p->std() >= 0.0f && p->std() < std::numeric_limits<float>::infinity()))
      return corrupt(where + " has an invalid std for normal init");
    if (p->init() == fb::InitKind::constant && !std::isfinite(p->value()))
      return corrupt(where + " has a non-finite constant init value");
    std::optional<int64_t> n = numElements(p->shape());
    if (!n)
      return corrupt(where + " has an invalid shape");
    if (p->init() == fb::InitKind::identity &&
        (p->shape()->size() != 2 || p->shape()->Get(0) != p->shape()->Get(1)))
      return corrupt(where + " has identity init but is not a square matrix");
    if (total > (int64_t(1) << 50) - *n)
      return corrupt("parameters are too large");
    total += *n;
    art.paramBytes += uint64_t(*n) * dtypeSize(p->dtype());
  }
  art.paramElements = total;

  // States are allocated whole by every session, so their sizes are bounded
  // like the arena's.
  llvm::StringSet<> stateNames;
  uint64_t stateTotal = 0;
  for (size_t i = 0; i < numStates; ++i) {
    const fb::State *st = a.states()->Get(i);
    std::string name = st->name()->str();
    std::string where = llvm::formatv("state {0} ('{1}')", i, name).str();
    if (name.empty())
      return corrupt(llvm::formatv("state {0} has an empty name", i).str());
    if (!stateNames.insert(name).second)
      return corrupt(where + " is listed twice");
    if (!validDType(st->dtype()))
      return corrupt(where + " has an unknown dtype");
    std::optional<int64_t> n = numElements(st->shape());
    if (!n)
      return corrupt(where + " has an invalid shape");
    uint64_t bytes = uint64_t(*n) * dtypeSize(st->dtype());
    if (stateTotal > (uint64_t(1) << 50) - bytes)
      return corrupt("states are too large");
    stateTotal += bytes;
    art.stateBytes.push_back(bytes);
  }

  uint64_t arenaBytes = a.arena_bytes();
  // Same bound as for shapes; also keeps the session's round-up from
  // wrapping around.
  if (arenaBytes > (uint64_t(1) << 50))
    return corrupt(llvm::formatv("arena_bytes {0} is too large", arenaBytes)
                       .str());
  for (size_t i = 0; i < numBuffers; ++i) {
    const fb::Buffer *b = a.buffers()->Get(i);
    std::string where = llvm::formatv("buffer {0}", i).str();
    if (!validDType(b->dtype()))
      return corrupt(where + " has an unknown dtype");
    std::optional<int64_t> n = numElements(b->shape());
    if (!n)
      return corrupt(where + " has an invalid shape");
    uint64_t bytes = uint64_t(*n) * dtypeSize(b->dtype());
    if (b->kind() == fb::BufferKind::arena) {
      if (b->offset() > arenaBytes || bytes > arenaBytes - b->offset())
        return corrupt(llvm::formatv("{0} (offset {1}, {2} bytes) does not fit "
                                     "in arena_bytes {3}",
                                     where, b->offset(), bytes, arenaBytes)
                           .str());
    } else if (b->kind() == fb::BufferKind::param ||
               b->kind() == fb::BufferKind::state) {
      // A parameter or a state is allocated whole, by the session; a buffer
      // may view it in another shape (a reshape, heads split off, leading
      // rows) but never past its end, or kernels would run off the
      // allocation.
      bool param = b->kind() == fb::BufferKind::param;
      const char *kind = param ? "param" : "state";
      uint32_t index = param ? b->param() : b->state();
      size_t count = param ? numParams : numStates;
      if (index >= count)
        return corrupt(llvm::formatv("{0} refers to {1} {2}, but there are "
                                     "{3} {1}s",
                                     where, kind, index, count)
                           .str());
      const auto *name = param ? a.params()->Get(index)->name()
                               : a.states()->Get(index)->name();
      const auto *shape = param ? a.params()->Get(index)->shape()
                                : a.states()->Get(index)->shape();
      fb::DType dtype = param ? a.params()->Get(index)->dtype()
                              : a.states()->Get(index)->dtype();
      if (dtype != b->dtype() || *numElements(shape) < *n)
        return corrupt(llvm::formatv("{0} does not match the size and dtype "
                                     "of {1} '{2}'",
                                     where, kind, name->str())
                           .str());
    } else {
      return corrupt(where + " has an unknown kind");
    }
  }

  auto checkIds = [&](const flatbuffers::Vector<uint32_t> *ids,
                      const std::string &where) -> lathe_status_t {
    if (!ids)
      return nullptr;
    for (uint32_t id : *ids)
      if (id >= numBuffers)
        return corrupt(llvm::formatv("{0} refers to buffer {1}, but there are "
                                     "{2} buffers",
                                     where, id, numBuffers)
                           .str());
    return nullptr;
  };

  // An early exit reads one f32 status and jumps forward within its list.
  auto checkExit = [&](const fb::Launch *launch, size_t l, size_t count,
                       const std::string &where) -> lathe_status_t {
    if (launch->exit_status() == -1)
      return nullptr;
    if (launch->exit_status() < 0 || uint32_t(launch->exit_status()) >= numBuffers)
      return corrupt(llvm::formatv("{0} has exit status buffer {1}, but there "
                                   "are {2} buffers",
                                   where, launch->exit_status(), numBuffers)
                         .str());
    const fb::Buffer *b = a.buffers()->Get(uint32_t(launch->exit_status()));
    if (b->dtype() != fb::DType::f32 || *numElements(b->shape()) < 1)
      return corrupt(where + " has an exit status that is not an f32 buffer");
    if (launch->exit_to() <= l || launch->exit_to() > count)
      return corrupt(llvm::formatv("{0} exits to launch {1}, outside ({2}, {3}]",
                                   where, launch->exit_to(), l, count)
                         .str());
    return nullptr;
  };

  // A GPU launch's sizes, within what every CUDA device since sm_30 takes:
  // the emulated device runs them as given, the cuda device passes them on.
  auto checkGrid = [&](const fb::Launch *launch,
                       const std::string &where) -> lathe_status_t {
    const auto *grid = launch->grid();
    const auto *block = launch->block();
    if (!grid || !block || grid->size() != 3 || block->size() != 3)
      return corrupt(where + " needs a grid and a block of 3 sizes each");
    const uint32_t gridMax[3] = {0x7fffffffu, 65535, 65535};
    const uint32_t blockMax[3] = {1024, 1024, 64};
    uint64_t threads = 1;
    for (unsigned d = 0; d < 3; ++d) {
      if (grid->Get(d) == 0 || grid->Get(d) > gridMax[d] ||
          block->Get(d) == 0 || block->Get(d) > blockMax[d])
        return corrupt(llvm::formatv("{0} has grid ({1}, {2}, {3}) and block "
                                     "({4}, {5}, {6}), outside CUDA's limits",
                                     where, grid->Get(0), grid->Get(1),
                                     grid->Get(2), block->Get(0),
                                     block->Get(1), block->Get(2))
                           .str());
      threads *= block->Get(d);
    }
    if (threads > 1024)
      return corrupt(llvm::formatv("{0} has {1} threads per block; CUDA "
                                   "allows 1024",
                                   where, threads)
                         .str());
    return nullptr;
  };

  // A GEMM library call: its operands are f32 buffers, and every element
  // its descriptor addresses lies inside them (gemm_shape.h, as lathec's
  // verifier checks lathe.gemm), since cuBLASLt trusts the numbers.
  auto checkGemm = [&](const fb::Launch *launch,
                       const std::string &where) -> lathe_status_t {
    const fb::Gemm *g = launch->gemm();
    if (a.target() != fb::Target::cuda)
      return corrupt(where + " is a GEMM call, which only cuda artifacts have");
    size_t expected = 3 + g->has_c() + g->has_bias() + g->has_aux();
    size_t count = launch->args() ? launch->args()->size() : 0;
    if (count != expected)
      return corrupt(llvm::formatv("{0} is a GEMM of {1} operands with {2} "
                                   "args",
                                   where, expected, count)
                         .str());
    if (g->epilogue() < fb::GemmEpilogue::MIN ||
        g->epilogue() > fb::GemmEpilogue::MAX ||
        g->precision() < fb::GemmPrecision::MIN ||
        g->precision() > fb::GemmPrecision::MAX)
      return corrupt(where + " has an unknown GEMM epilogue or precision");
    if (g->has_aux() && g->epilogue() != fb::GemmEpilogue::gelu)
      return corrupt(where + " keeps a GEMM aux value without a gelu epilogue");
    int64_t sizes[6];
    for (size_t i = 0; i < count; ++i) {
      const fb::Buffer *b = a.buffers()->Get(launch->args()->Get(i));
      if (b->dtype() != fb::DType::f32)
        return corrupt(where + " has a GEMM operand that is not f32");
      sizes[i] = *numElements(b->shape());
    }
    GemmShape shape;
    shape.m = g->m();
    shape.n = g->n();
    shape.k = g->k();
    shape.batch = g->batch();
    shape.transA = g->trans_a();
    shape.transB = g->trans_b();
    shape.lda = g->lda();
    shape.ldb = g->ldb();
    shape.ldd = g->ldd();
    shape.strideA = g->stride_a();
    shape.strideB = g->stride_b();
    shape.strideD = g->stride_d();
    shape.sizeA = sizes[0];
    shape.sizeB = sizes[1];
    shape.sizeD = sizes[2];
    size_t next = 3;
    if (g->has_c())
      shape.sizeC = sizes[next++];
    if (g->has_bias())
      shape.sizeBias = sizes[next++];
    if (g->has_aux())
      shape.sizeAux = sizes[next++];
    if (std::string why = checkGemmShape(shape); !why.empty())
      return corrupt(where + " " + why);
    return nullptr;
  };

  llvm::StringSet<> entryNames;
  size_t numEntries = a.entries() ? a.entries()->size() : 0;
  bool anyLaunch = false;
  for (size_t e = 0; e < numEntries; ++e) {
    const fb::Entry *entry = a.entries()->Get(e);
    std::string ename = entry->name()->str();
    std::string where = "entry '" + ename + "'";
    if (!entryNames.insert(ename).second)
      return corrupt(where + " is listed twice");
    LATHE_RETURN_IF_ERROR(checkIds(entry->inputs(), where + " input"));
    LATHE_RETURN_IF_ERROR(checkIds(entry->outputs(), where + " output"));
    size_t numLaunches = entry->launches() ? entry->launches()->size() : 0;
    for (size_t l = 0; l < numLaunches; ++l) {
      const fb::Launch *launch = entry->launches()->Get(l);
      std::string lwhere = llvm::formatv("{0} launch {1} (kernel '{2}')",
                                         where, l, launch->kernel()->str())
                               .str();
      if (launch->kernel()->size() == 0)
        return corrupt(where + " has a launch with an empty kernel name");
      LATHE_RETURN_IF_ERROR(checkIds(launch->args(), lwhere));
      LATHE_RETURN_IF_ERROR(checkExit(launch, l, numLaunches, lwhere));
      if (launch->gemm())
        LATHE_RETURN_IF_ERROR(checkGemm(launch, lwhere));
      else if (a.target() == fb::Target::cuda)
        LATHE_RETURN_IF_ERROR(checkGrid(launch, lwhere));
      anyLaunch = true;
    }
    llvm::StringRef bucket(ename);
    int64_t tokens = 0;
    if (ename == "forward")
      art.forward = entry;
    else if (ename == "prefill")
      art.prefill = entry;
    else if (bucket.consume_front("prefill_")) {
      if (bucket.getAsInteger(10, tokens) || tokens <= 0 ||
          tokens >= a.max_seq())
        return corrupt(where + " is not a prefill bucket below max_seq");
      art.prefillBuckets.push_back({tokens, entry});
    }
    else if (ename == "decode")
      art.decode = entry;
  }

  if (a.target() == fb::Target::cpu && anyLaunch &&
      (!a.cpu_library() || a.cpu_library()->size() == 0))
    return corrupt("target cpu but no cpu_library");

  if (!art.forward && !art.prefill)
    return corrupt("the artifact has neither a 'forward' nor a 'prefill' "
                   "entry");

  // The session API relies on these exact I/O layouts (see artifact.fbs).
  auto buffer = [&](uint32_t id) { return a.buffers()->Get(id); };
  auto isArena = [](const fb::Buffer *b, fb::DType dtype,
                    const std::vector<int64_t> &shape) {
    return b->kind() == fb::BufferKind::arena && b->dtype() == dtype &&
           shapeOf(b->shape()) == shape;
  };
  auto count = [](const flatbuffers::Vector<uint32_t> *v) -> size_t {
    return v ? v->size() : 0;
  };
  if (art.prefill)
    art.prefillBuckets.push_back({a.max_seq(), art.prefill});
  else if (!art.prefillBuckets.empty())
    return corrupt("prefill buckets without the full 'prefill' entry");
  std::sort(art.prefillBuckets.begin(), art.prefillBuckets.end());
  std::vector<std::pair<int64_t, const fb::Entry *>> sequences =
      art.prefillBuckets;
  if (art.forward)
    sequences.push_back({a.max_seq(), art.forward});
  for (auto [length, e] : sequences) {
    std::vector<int64_t> seqTokens{length}, seqLogits{length, a.vocab()};
    std::string where = "entry '" + e->name()->str() + "'";
    // A second input, where present, is the window's length (LoopUS).
    if ((count(e->inputs()) != 1 && count(e->inputs()) != 2) ||
        count(e->outputs()) != 1)
      return corrupt(where + " must have one input (tokens) or two (tokens, "
                             "length) and one output");
    if (!isArena(buffer(e->inputs()->Get(0)), fb::DType::i32, seqTokens))
      return corrupt(where + " input must be an i32 arena buffer of shape " +
                     formatShape(seqTokens));
    if (count(e->inputs()) == 2 &&
        !isArena(buffer(e->inputs()->Get(1)), fb::DType::i32, {1}))
      return corrupt(where + " input 1 (length) must be an i32 arena buffer "
                             "of shape [1]");
    if (!isArena(buffer(e->outputs()->Get(0)), fb::DType::f32, seqLogits))
      return corrupt(where + " output must be an f32 arena buffer of shape " +
                     formatShape(seqLogits));
  }
  if (const fb::Entry *e = art.decode) {
    std::vector<int64_t> one{1}, oneLogits{1, a.vocab()};
    if (count(e->inputs()) != 2 || count(e->outputs()) != 1)
      return corrupt("entry 'decode' must have two inputs (token, pos) and "
                     "one output");
    if (!isArena(buffer(e->inputs()->Get(0)), fb::DType::i32, one))
      return corrupt("entry 'decode' input 0 (token) must be an i32 arena "
                     "buffer of shape [1]");
    if (!isArena(buffer(e->inputs()->Get(1)), fb::DType::i32, one))
      return corrupt("entry 'decode' input 1 (pos) must be an i32 arena "
                     "buffer of shape [1]");
    if (!isArena(buffer(e->outputs()->Get(0)), fb::DType::f32, oneLogits))
      return corrupt("entry 'decode' output must be an f32 arena buffer of "
                     "shape " +
                     formatShape(oneLogits));
    // The position travels as an i32.
    if (a.max_seq() > std::numeric_limits<int32_t>::max())
      return corrupt(llvm::formatv("max_seq {0} does not fit the i32 position "
                                   "of entry 'decode'",
                                   a.max_seq())
                         .str());
  }
  // Packed training passes: whole windows, and only where every training
  // input is drawn per step rather than per sequence.
  if (int64_t tb = a.train_batch(); tb != 0) {
    if (tb < 0)
      return corrupt(llvm::formatv("train_batch {0} is negative", tb).str());
    if (tb > 1 && (a.sampled_iterations_max() != 0 ||
                   a.supervision_steps() != 0 || a.shortcut_iterations() != 0))
      return corrupt(llvm::formatv("train_batch {0} packs sequences, which "
                                   "per-sequence training draws rule out",
                                   tb)
                         .str());
    if (a.entries())
      for (const fb::Entry *e : *a.entries()) {
        llvm::StringRef name = e->name() ? e->name()->string_view() : "";
        if ((name == "grad" || name == "accumulate_grad") &&
            count(e->inputs()) > 0) {
          const fb::Buffer *in = buffer(e->inputs()->Get(0));
          if (in && in->shape() && in->shape()->size() > 0 &&
              in->shape()->Get(0) % tb != 0)
            return corrupt(llvm::formatv("entry '{0}' takes {1} tokens, not "
                                         "a whole number of its {2} windows",
                                         name, in->shape()->Get(0), tb)
                               .str());
        }
      }
  }
  return nullptr;
}

} // namespace

extern "C" lathe_status_t lathe_artifact_load(const char *path,
                                              lathe_artifact_t **out_artifact) {
  if (!path || !out_artifact)
    return makeStatus("lathe_artifact_load: null argument");
  *out_artifact = nullptr;
  auto art = std::make_unique<lathe_artifact>();
  art->path = path;

  // 16-byte alignment: the verifier checks the alignment of 8-byte scalars.
  auto fileOr = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false,
                                            /*IsVolatile=*/false, llvm::Align(16));
  if (!fileOr)
    return makeStatusF("{0}: cannot read: {1}", path,
                       fileOr.getError().message());
  art->file = std::move(*fileOr);
  const auto *data =
      reinterpret_cast<const uint8_t *>(art->file->getBufferStart());
  size_t size = art->file->getBufferSize();

  // The identifier sits at bytes 4..8, after the root offset.
  if (size >= 8 && !lathe::fb::ArtifactBufferHasIdentifier(data))
    return makeStatusF("{0}: not a lathe artifact (bad identifier)", path);
  if (size < 8)
    return makeStatusF("{0}: truncated or corrupt lathe artifact", path);
  if (size >= FLATBUFFERS_MAX_BUFFER_SIZE)
    return makeStatusF("{0}: artifact is too large ({1} bytes)", path, size);
  if (!lathe_artifact_trailer_ok(data, size))
    return makeStatusF("{0}: truncated or corrupt lathe artifact (checksum "
                       "mismatch)",
                       path);
  size -= LATHE_ARTIFACT_TRAILER_BYTES;

  flatbuffers::Verifier verifier(data, size);
  if (!lathe::fb::VerifyArtifactBuffer(verifier))
    return makeStatusF("{0}: truncated or corrupt lathe artifact", path);
  art->root = lathe::fb::GetArtifact(data);
  art->model = art->root->model() ? art->root->model()->str() : "";
  art->target = art->root->target() == fb::Target::cuda ? "cuda" : "cpu";

  LATHE_RETURN_IF_ERROR(checkSemantics(*art));
  *out_artifact = art.release();
  return nullptr;
}

extern "C" void lathe_artifact_free(lathe_artifact_t *artifact) {
  delete artifact;
}

extern "C" const char *lathe_artifact_model_name(const lathe_artifact_t *a) {
  return a->model.c_str();
}

extern "C" const char *lathe_artifact_target(const lathe_artifact_t *a) {
  return a->target.c_str();
}

extern "C" int64_t lathe_artifact_vocab(const lathe_artifact_t *a) {
  return a->root->vocab();
}

extern "C" int64_t lathe_artifact_max_seq(const lathe_artifact_t *a) {
  return a->root->max_seq();
}

extern "C" size_t lathe_artifact_param_count(const lathe_artifact_t *a) {
  return a->root->params() ? a->root->params()->size() : 0;
}

extern "C" int64_t lathe_artifact_param_elements(const lathe_artifact_t *a) {
  return a->paramElements;
}

extern "C" uint64_t lathe_artifact_param_bytes(const lathe_artifact_t *a) {
  return a->paramBytes;
}

extern "C" const char *lathe_artifact_param_name(const lathe_artifact_t *a,
                                                 size_t i) {
  if (i >= lathe_artifact_param_count(a))
    return nullptr;
  return a->root->params()->Get(i)->name()->c_str();
}

extern "C" uint64_t lathe_artifact_arena_bytes(const lathe_artifact_t *a) {
  return a->root->arena_bytes();
}

extern "C" size_t lathe_artifact_entry_count(const lathe_artifact_t *a) {
  return a->root->entries() ? a->root->entries()->size() : 0;
}

static const lathe::fb::Entry *entryAt(const lathe_artifact_t *a, size_t e) {
  if (e >= lathe_artifact_entry_count(a))
    return nullptr;
  return a->root->entries()->Get(e);
}

extern "C" const char *lathe_artifact_entry_name(const lathe_artifact_t *a,
                                                 size_t entry) {
  const lathe::fb::Entry *e = entryAt(a, entry);
  return e ? e->name()->c_str() : nullptr;
}

extern "C" size_t lathe_artifact_launch_count(const lathe_artifact_t *a,
                                              size_t entry) {
  const lathe::fb::Entry *e = entryAt(a, entry);
  return e && e->launches() ? e->launches()->size() : 0;
}

extern "C" const char *lathe_artifact_launch_kernel(const lathe_artifact_t *a,
                                                    size_t entry,
                                                    size_t launch) {
  if (launch >= lathe_artifact_launch_count(a, entry))
    return nullptr;
  return entryAt(a, entry)->launches()->Get(launch)->kernel()->c_str();
}

extern "C" uint64_t lathe_artifact_launch_flops(const lathe_artifact_t *a,
                                                size_t entry, size_t launch) {
  if (launch >= lathe_artifact_launch_count(a, entry))
    return 0;
  return entryAt(a, entry)->launches()->Get(launch)->flops();
}

extern "C" int lathe_artifact_launch_gemm(const lathe_artifact_t *a,
                                          size_t entry, size_t launch,
                                          lathe_gemm_desc_t *out) {
  if (launch >= lathe_artifact_launch_count(a, entry))
    return 0;
  const fb::Gemm *g = entryAt(a, entry)->launches()->Get(launch)->gemm();
  if (!g || !out)
    return 0;
  *out = {g->m(),        g->n(),        g->k(),
          g->batch(),    g->trans_a(),  g->trans_b(),
          g->has_c(),    g->has_bias(), g->has_aux(),
          fb::EnumNameGemmEpilogue(g->epilogue()),
          fb::EnumNameGemmPrecision(g->precision()),
          {}};
  std::string name = gemmName(*g);
  std::snprintf(out->name, sizeof(out->name), "%s", name.c_str());
  return 1;
}

std::string lathe::rt::gemmName(const fb::Gemm &g) {
  std::string s = "gemm " + std::to_string(g.m()) + "x" + std::to_string(g.n()) +
                  "x" + std::to_string(g.k());
  if (g.batch() > 1)
    s += " batch " + std::to_string(g.batch());
  if (g.trans_a())
    s += " A^T";
  if (g.trans_b())
    s += " B^T";
  if (g.has_c())
    s += " +C";
  if (g.has_bias())
    s += " +bias";
  if (g.epilogue() != fb::GemmEpilogue::none)
    s += std::string(" ") + fb::EnumNameGemmEpilogue(g.epilogue()) +
         (g.has_aux() ? "(aux)" : "");
  return s + " " + fb::EnumNameGemmPrecision(g.precision());
}

const lathe::fb::Entry *lathe::rt::prefillEntryFor(const lathe_artifact &a,
                                                   uint64_t n) {
  for (auto [length, bucket] : a.prefillBuckets)
    if (uint64_t(length) >= n)
      return bucket;
  return a.prefill;
}

extern "C" const char *lathe_artifact_prefill_entry(const lathe_artifact_t *a,
                                                    size_t n) {
  if (n == 0 || uint64_t(n) > uint64_t(a->root->max_seq()))
    return nullptr;
  const lathe::fb::Entry *e = lathe::rt::prefillEntryFor(*a, n);
  return e ? e->name()->c_str() : nullptr;
}

extern "C" lathe_status_t lathe_artifact_ptx(const lathe_artifact_t *a,
                                             const char *chip,
                                             const char **out_ptx) {
  *out_ptx = nullptr;
  std::string available;
  if (const auto *modules = a->root->ptx()) {
    for (const auto *m : *modules) {
      if (m->chip()->str() == chip) {
        *out_ptx = m->text()->c_str();
        return nullptr;
      }
      available += (available.empty() ? "" : ", ") + m->chip()->str();
    }
  }
  return lathe::rt::makeStatusF("{0}: no PTX for chip '{1}' (the artifact has: "
                                "{2})",
                                a->path, chip,
                                available.empty() ? "none" : available);
}

extern "C" lathe_status_t lathe_artifact_cubin(const lathe_artifact_t *a,
                                               const char *chip,
                                               const uint8_t **out_data,
                                               size_t *out_size) {
  *out_data = nullptr;
  *out_size = 0;
  std::string available;
  if (const auto *modules = a->root->ptx())
    for (const auto *m : *modules) {
      if (!m->cubin() || m->cubin()->size() == 0)
        continue;
      if (m->chip()->str() == chip) {
        *out_data = m->cubin()->data();
        *out_size = m->cubin()->size();
        return nullptr;
      }
      available += (available.empty() ? "" : ", ") + m->chip()->str();
    }
  return lathe::rt::makeStatusF(
      "{0}: no cubin for chip '{1}' (the artifact has: {2}; lathec embeds "
      "cubins where it finds ptxas)",
      a->path, chip, available.empty() ? "none" : available);
}

extern "C" lathe_status_t
lathe_artifact_kernel_library(const lathe_artifact_t *a,
                              const uint8_t **out_data, size_t *out_size) {
  *out_data = nullptr;
  *out_size = 0;
  const auto *library = a->root->cpu_library();
  if (!library || library->size() == 0)
    return lathe::rt::makeStatusF("{0}: the artifact has no kernel library",
                                  a->path);
  *out_data = library->data();
  *out_size = library->size();
  return nullptr;
}

extern "C" size_t lathe_artifact_state_count(const lathe_artifact_t *a) {
  return a->root->states() ? a->root->states()->size() : 0;
}

static const lathe::fb::State *stateAt(const lathe_artifact_t *a, size_t i) {
  if (i >= lathe_artifact_state_count(a))
    return nullptr;
  return a->root->states()->Get(i);
}

extern "C" const char *lathe_artifact_state_name(const lathe_artifact_t *a,
                                                 size_t i) {
  const lathe::fb::State *st = stateAt(a, i);
  return st ? st->name()->c_str() : nullptr;
}

extern "C" const char *lathe_artifact_state_dtype(const lathe_artifact_t *a,
                                                  size_t i) {
  const lathe::fb::State *st = stateAt(a, i);
  return st ? lathe::rt::dtypeName(st->dtype()) : nullptr;
}

extern "C" size_t lathe_artifact_state_rank(const lathe_artifact_t *a,
                                            size_t i) {
  const lathe::fb::State *st = stateAt(a, i);
  return st && st->shape() ? st->shape()->size() : 0;
}

extern "C" int64_t lathe_artifact_state_dim(const lathe_artifact_t *a,
                                            size_t i, size_t d) {
  if (d >= lathe_artifact_state_rank(a, i))
    return 0;
  return stateAt(a, i)->shape()->Get(d);
}
