// lathe-make-test-artifact: builds a toy cpu artifact around a kernel
// library compiled by the test (inputs/toy_kernels.c), optionally broken in
// one chosen way, so runtime error paths can be exercised.
//
// --model toy (default), with params embed [V,D], norm [D], lm_head [V,D],
// bias [V]:
//   x = embed[tokens]; h = x * norm; logits = h lm_head^T + bias
// as three launches: toy_embed, toy_scale, toy_lm_head. Entries: forward.
//
// --model kv, the same params plus a state cache [S,D] (the "KV cache"):
//   k[s] = h[s] * (1 + s/8); c[t] = mean(k[0..t]); logits = c lm_head^T + bias
// so logits depend on every earlier token. Entries: forward (no cache),
// prefill (fills the cache) and decode (appends one position), laid out as
// artifact.fbs documents them.
//
// --entries NAME,... keeps only the listed entries (of forward, prefill,
// decode, and train_step: an empty entry standing in for training).
#include "artifact_checksum.h"
#include "artifact_generated.h"
#include "artifact_version.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace lathe;

namespace {

[[noreturn]] void fail(const std::string &msg) {
  std::fprintf(stderr, "lathe-make-test-artifact: %s\n", msg.c_str());
  std::exit(1);
}

bool readFile(const std::string &path, std::vector<uint8_t> &out) {
  std::FILE *f = std::fopen(path.c_str(), "rb");
  if (!f)
    return false;
  uint8_t buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
    out.insert(out.end(), buf, buf + n);
  std::fclose(f);
  return true;
}

} // namespace

int main(int argc, char **argv) {
  std::string kernels, out, target = "cpu", corrupt, model = "toy", entryList;
  int64_t vocab = 32, dim = 8, maxSeq = 8;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc)
        fail(a + " needs a value");
      return argv[++i];
    };
    if (a == "--kernels")
      kernels = value();
    else if (a == "-o")
      out = value();
    else if (a == "--target")
      target = value();
    else if (a == "--model")
      model = value();
    else if (a == "--entries")
      entryList = value();
    else if (a == "--vocab")
      vocab = std::atoll(value().c_str());
    else if (a == "--dim")
      dim = std::atoll(value().c_str());
    else if (a == "--max-seq")
      maxSeq = std::atoll(value().c_str());
    else if (a == "--corrupt")
      corrupt = value();
    else
      fail("unknown option " + a);
  }
  if (out.empty())
    fail("usage: lathe-make-test-artifact [--kernels LIB.so] [--target "
         "cpu|cuda] [--model toy|kv] [--entries forward,prefill,decode,"
         "train_step] [--vocab V --dim D --max-seq S] [--corrupt KIND] -o OUT");
  if (model != "toy" && model != "kv")
    fail("unknown --model " + model);
  bool kv = model == "kv";
  // toy kinds: buffer-id, arena, param-index, version, missing-kernel,
  // not-elf, forward-shape, exit-to, exit-status (an early exit jumping
  // backwards, or reading a non-f32 status), sampled-iterations (Parcae's
  // sampled depth with a mean above its max), shortcut-iterations (a
  // LoopFormer shortcut with one long step), grid (with --target cuda: a
  // block of 2048 threads), gemm (the LM head as a GEMM call whose n runs
  // one row past the weight), gemm-cpu (a GEMM call in a cpu artifact). kv
  // kinds: state-index, state-shape, state-dup,
  // prefill-io, decode-io, decode-arity.
  static const char *kKinds[] = {
      "",           "buffer-id",   "arena",       "param-index",
      "version",    "missing-kernel", "not-elf",  "forward-shape",
      "state-index", "state-shape", "state-dup", "prefill-io",
      "decode-io",  "decode-arity", "exit-to",   "exit-status",
      "sampled-iterations", "shortcut-iterations", "grid", "gemm",
      "gemm-cpu"};
  bool knownKind = false;
  for (const char *k : kKinds)
    knownKind |= corrupt == k;
  if (!knownKind)
    fail("unknown --corrupt kind " + corrupt);

  std::vector<std::string> wanted;
  if (entryList.empty())
    wanted = kv ? std::vector<std::string>{"forward", "prefill", "decode"}
                : std::vector<std::string>{"forward"};
  else if (entryList != "none")
    for (size_t start = 0;;) {
      size_t comma = entryList.find(',', start);
      wanted.push_back(entryList.substr(start, comma == std::string::npos
                                                   ? std::string::npos
                                                   : comma - start));
      if (comma == std::string::npos)
        break;
      start = comma + 1;
    }
  for (const std::string &e : wanted)
    if (e != "forward" && e != "train_step" &&
        (!kv || (e != "prefill" && e != "decode")))
      fail("--model " + model + " has no entry '" + e + "'");

  std::vector<uint8_t> library;
  if (corrupt == "not-elf")
    library = {'n', 'o', 't', ' ', 'e', 'l', 'f'};
  else if (!kernels.empty() && !readFile(kernels, library))
    fail("cannot read " + kernels);

  flatbuffers::FlatBufferBuilder fbb;
  using fb::BufferKind;
  using fb::DType;
  using fb::InitKind;
  auto shape = [&](std::vector<int64_t> s) { return fbb.CreateVector(s); };

  std::vector<flatbuffers::Offset<fb::Param>> params = {
      fb::CreateParam(fbb, fbb.CreateString("embed.weight"),
                      shape({vocab, dim}), DType::f32, InitKind::normal, 1.0f),
      fb::CreateParam(fbb, fbb.CreateString("norm.weight"), shape({dim}),
                      DType::f32, InitKind::ones),
      fb::CreateParam(fbb, fbb.CreateString("lm_head.weight"),
                      shape({vocab, dim}), DType::f32, InitKind::normal, 0.5f),
      fb::CreateParam(fbb, fbb.CreateString("lm_head.bias"), shape({vocab}),
                      DType::f32, InitKind::zeros),
  };
  std::vector<flatbuffers::Offset<fb::State>> states;
  if (kv) {
    states.push_back(fb::CreateState(fbb, fbb.CreateString("toy.cache"),
                                     shape({maxSeq, dim}), DType::f32));
    if (corrupt == "state-dup")
      states.push_back(fb::CreateState(fbb, fbb.CreateString("toy.cache"),
                                       shape({1}), DType::f32));
  }

  // Arena: tokens, x, h, logits (toy); then c, token, pos, c1, logits1 (kv);
  // each 64-byte aligned.
  auto align = [](uint64_t n) { return (n + 63) / 64 * 64; };
  uint64_t offTokens = 0;
  uint64_t offX = offTokens + align(uint64_t(maxSeq) * 4);
  uint64_t offH = offX + align(uint64_t(maxSeq * dim) * 4);
  uint64_t offLogits = offH + align(uint64_t(maxSeq * dim) * 4);
  uint64_t arenaBytes = offLogits + align(uint64_t(maxSeq * vocab) * 4);
  uint64_t offC = arenaBytes;
  uint64_t offTok1 = offC + align(uint64_t(maxSeq * dim) * 4);
  uint64_t offPos1 = offTok1 + 64;
  uint64_t offC1 = offPos1 + 64;
  uint64_t offLogits1 = offC1 + align(uint64_t(dim) * 4);
  if (kv)
    arenaBytes = offLogits1 + align(uint64_t(vocab) * 4);

  auto arena = [&](uint64_t offset, std::vector<int64_t> s, DType dtype) {
    return fb::CreateBuffer(fbb, BufferKind::arena, 0, 0, offset, shape(s),
                            dtype);
  };
  auto param = [&](uint32_t index, std::vector<int64_t> s) {
    return fb::CreateBuffer(fbb, BufferKind::param, index, 0, 0, shape(s),
                            DType::f32);
  };
  auto state = [&](uint32_t index, std::vector<int64_t> s) {
    return fb::CreateBuffer(fbb, BufferKind::state, 0, index, 0, shape(s),
                            DType::f32);
  };

  std::vector<int64_t> tokensShape = {maxSeq};
  if (corrupt == "forward-shape")
    tokensShape = {maxSeq, 1};
  uint32_t embedParam = corrupt == "param-index" ? 99 : 0;
  std::vector<flatbuffers::Offset<fb::Buffer>> buffers = {
      // 0 tokens, 1 x, 2 h, 3 logits
      arena(offTokens, tokensShape, DType::i32),
      arena(offX, {maxSeq, dim}, DType::f32),
      arena(offH, {maxSeq, dim}, DType::f32),
      arena(corrupt == "arena" ? offLogits + 64 : offLogits, {maxSeq, vocab},
            DType::f32),
      // 4..7 params
      param(embedParam, {vocab, dim}),
      param(1, {dim}),
      param(2, {vocab, dim}),
      param(3, {vocab}),
  };
  if (kv) {
    // 8 c, 9 token, 10 pos, 11 c1, 12 logits1, 13 and 14 the cache (two
    // buffers of one state: prefill's and decode's view).
    buffers.push_back(arena(offC, {maxSeq, dim}, DType::f32));
    buffers.push_back(arena(offTok1, {1}, DType::i32));
    buffers.push_back(arena(offPos1, {1}, DType::i32));
    buffers.push_back(arena(offC1, {1, dim}, DType::f32));
    buffers.push_back(arena(offLogits1, {1, vocab}, DType::f32));
    buffers.push_back(state(corrupt == "state-index" ? 7 : 0, {maxSeq, dim}));
    buffers.push_back(
        state(0, corrupt == "state-shape" ? std::vector<int64_t>{maxSeq + 1, dim}
                                          : std::vector<int64_t>{maxSeq, dim}));
  }

  auto launch = [&](const char *kernel, std::vector<uint32_t> args,
                    int32_t exitStatus = -1, uint32_t exitTo = 0) {
    // cuda launches carry a grid and a block; "grid" asks for 2048 threads
    // in a block, more than CUDA allows.
    flatbuffers::Offset<flatbuffers::Vector<uint32_t>> grid, block;
    if (target == "cuda") {
      grid = fbb.CreateVector(std::vector<uint32_t>{1, 1, 1});
      block = fbb.CreateVector(std::vector<uint32_t>{
          corrupt == "grid" ? 2048u : 1u, 1, 1});
    }
    return fb::CreateLaunch(fbb, fbb.CreateString(kernel),
                            fbb.CreateVector(args), grid, block, 0,
                            exitStatus, exitTo);
  };
  // logits = h W^T as a GEMM call, with n one past the vocabulary: B (the
  // [vocab, dim] weight) would be read one row past its end.
  auto gemmLaunch = [&]() {
    auto gemm = fb::CreateGemm(fbb, maxSeq, vocab + 1, dim, false, true, dim,
                               dim, vocab + 1);
    return fb::CreateLaunch(fbb, fbb.CreateString("gemm"),
                            fbb.CreateVector(std::vector<uint32_t>{2, 6, 3}), 0,
                            0, 0, -1, 0, gemm);
  };
  auto entry = [&](const char *name, std::vector<uint32_t> inputs,
                   std::vector<uint32_t> outputs,
                   std::vector<flatbuffers::Offset<fb::Launch>> launches) {
    return fb::CreateEntry(fbb, fbb.CreateString(name),
                           fbb.CreateVector(inputs), fbb.CreateVector(outputs),
                           fbb.CreateVector(launches), /*causal=*/true);
  };
  std::vector<flatbuffers::Offset<fb::Entry>> entries;
  for (const std::string &name : wanted) {
    if (name == "train_step") {
      entries.push_back(entry("train_step", {}, {}, {}));
    } else if (name == "forward" && !kv) {
      entries.push_back(entry(
          "forward", {0}, {3},
          {launch("toy_embed", {0, 4, 1}),
           corrupt == "exit-to"       ? launch("toy_scale", {1, 5, 2}, 1, 1)
           : corrupt == "exit-status" ? launch("toy_scale", {1, 5, 2}, 0, 3)
                                      : launch("toy_scale", {1, 5, 2}),
           corrupt == "gemm" || corrupt == "gemm-cpu"
               ? gemmLaunch()
               : launch(corrupt == "missing-kernel" ? "toy_missing"
                                                    : "toy_lm_head",
                        {2, 6, 7, corrupt == "buffer-id" ? 42u : 3u})}));
    } else if (name == "forward") {
      entries.push_back(entry(
          "forward", {0}, {3},
          {launch("toy_embed", {0, 4, 1}), launch("toy_scale", {1, 5, 2}),
           launch("toy_cummean", {2, 8}), launch("toy_lm_head", {8, 6, 7, 3})}));
    } else if (name == "prefill") {
      entries.push_back(entry(
          "prefill", {0}, {corrupt == "prefill-io" ? 12u : 3u},
          {launch("toy_embed", {0, 4, 1}), launch("toy_scale", {1, 5, 2}),
           launch("toy_cache_fill", {2, 13}),
           launch("toy_cache_mean", {13, 8}),
           launch("toy_lm_head", {8, 6, 7, 3})}));
    } else if (name == "decode") {
      std::vector<uint32_t> inputs = {9, 10};
      if (corrupt == "decode-arity")
        inputs = {9};
      entries.push_back(entry(
          "decode", inputs, {corrupt == "decode-io" ? 3u : 12u},
          {launch("toy_decode_step", {9, 10, 4, 5, 14, 11}),
           launch("toy_lm_head_one", {11, 6, 7, 12})}));
    }
  }

  bool cuda = target == "cuda";
  auto artifact = fb::CreateArtifact(
      fbb, corrupt == "version" ? LATHE_ARTIFACT_VERSION + 1
                                : LATHE_ARTIFACT_VERSION,
      fbb.CreateString(model), cuda ? fb::Target::cuda : fb::Target::cpu,
      vocab, maxSeq, fbb.CreateVector(params),
      states.empty() ? 0 : fbb.CreateVector(states), fbb.CreateVector(buffers),
      arenaBytes, fbb.CreateVector(entries),
      library.empty() ? 0 : fbb.CreateVector(library), /*ptx=*/0,
      /*sampled_iterations_mean=*/corrupt == "sampled-iterations" ? 3 : 0,
      /*sampled_iterations_max=*/corrupt == "sampled-iterations" ? 2 : 0,
      /*shortcut_iterations=*/corrupt == "shortcut-iterations" ? 1 : 0);
  fb::FinishArtifactBuffer(fbb, artifact);

  uint8_t trailer[LATHE_ARTIFACT_TRAILER_BYTES];
  lathe_artifact_trailer(fbb.GetBufferPointer(), fbb.GetSize(), trailer);
  std::FILE *f = std::fopen(out.c_str(), "wb");
  if (!f ||
      std::fwrite(fbb.GetBufferPointer(), 1, fbb.GetSize(), f) !=
          fbb.GetSize() ||
      std::fwrite(trailer, 1, sizeof(trailer), f) != sizeof(trailer) ||
      std::fclose(f) != 0)
    fail("cannot write " + out);
  return 0;
}
