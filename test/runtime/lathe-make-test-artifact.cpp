// lathe-make-test-artifact: builds a toy cpu artifact around a kernel
// library compiled by the test (inputs/toy_kernels.c), optionally broken in
// one chosen way, so runtime error paths can be exercised.
//
// The toy model, with params embed [V,D], norm [D], lm_head [V,D], bias [V]:
//   x = embed[tokens]; h = x * norm; logits = h lm_head^T + bias
// as three launches: toy_embed, toy_scale, toy_lm_head.
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
  std::string kernels, out, target = "cpu", corrupt;
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
         "cpu|cuda] [--vocab V --dim D --max-seq S] [--corrupt KIND] -o OUT");
  // Kinds: buffer-id, arena, param-index, version, missing-kernel,
  // not-elf, forward-shape.
  static const char *kKinds[] = {"",        "buffer-id",      "arena",
                                 "param-index", "version",     "missing-kernel",
                                 "not-elf", "forward-shape"};
  bool knownKind = false;
  for (const char *k : kKinds)
    knownKind |= corrupt == k;
  if (!knownKind)
    fail("unknown --corrupt kind " + corrupt);

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

  // Arena: tokens, x, h, logits, each 64-byte aligned.
  auto align = [](uint64_t n) { return (n + 63) / 64 * 64; };
  uint64_t offTokens = 0;
  uint64_t offX = offTokens + align(uint64_t(maxSeq) * 4);
  uint64_t offH = offX + align(uint64_t(maxSeq * dim) * 4);
  uint64_t offLogits = offH + align(uint64_t(maxSeq * dim) * 4);
  uint64_t arenaBytes = offLogits + align(uint64_t(maxSeq * vocab) * 4);

  std::vector<int64_t> tokensShape = {maxSeq};
  if (corrupt == "forward-shape")
    tokensShape = {maxSeq, 1};
  uint32_t embedParam = corrupt == "param-index" ? 99 : 0;
  std::vector<flatbuffers::Offset<fb::Buffer>> buffers = {
      // 0 tokens, 1 x, 2 h, 3 logits
      fb::CreateBuffer(fbb, BufferKind::arena, 0, offTokens,
                       shape(tokensShape), DType::i32),
      fb::CreateBuffer(fbb, BufferKind::arena, 0, offX, shape({maxSeq, dim}),
                       DType::f32),
      fb::CreateBuffer(fbb, BufferKind::arena, 0, offH, shape({maxSeq, dim}),
                       DType::f32),
      fb::CreateBuffer(fbb, BufferKind::arena, 0,
                       corrupt == "arena" ? offLogits + 64 : offLogits,
                       shape({maxSeq, vocab}), DType::f32),
      // 4..7 params
      fb::CreateBuffer(fbb, BufferKind::param, embedParam, 0,
                       shape({vocab, dim}), DType::f32),
      fb::CreateBuffer(fbb, BufferKind::param, 1, 0, shape({dim}), DType::f32),
      fb::CreateBuffer(fbb, BufferKind::param, 2, 0, shape({vocab, dim}),
                       DType::f32),
      fb::CreateBuffer(fbb, BufferKind::param, 3, 0, shape({vocab}),
                       DType::f32),
  };

  auto launch = [&](const char *kernel, std::vector<uint32_t> args) {
    return fb::CreateLaunch(fbb, fbb.CreateString(kernel),
                            fbb.CreateVector(args));
  };
  std::vector<flatbuffers::Offset<fb::Launch>> launches = {
      launch("toy_embed", {0, 4, 1}),
      launch("toy_scale", {1, 5, 2}),
      launch(corrupt == "missing-kernel" ? "toy_missing" : "toy_lm_head",
             {2, 6, 7, corrupt == "buffer-id" ? 42u : 3u}),
  };
  std::vector<flatbuffers::Offset<fb::Entry>> entries = {fb::CreateEntry(
      fbb, fbb.CreateString("forward"), fbb.CreateVector<uint32_t>({0}),
      fbb.CreateVector<uint32_t>({3}), fbb.CreateVector(launches),
      /*causal=*/true)};

  bool cuda = target == "cuda";
  auto artifact = fb::CreateArtifact(
      fbb, corrupt == "version" ? LATHE_ARTIFACT_VERSION + 1
                                : LATHE_ARTIFACT_VERSION,
      fbb.CreateString("toy"), cuda ? fb::Target::cuda : fb::Target::cpu,
      vocab, maxSeq, fbb.CreateVector(params), fbb.CreateVector(buffers),
      arenaBytes, fbb.CreateVector(entries),
      library.empty() ? 0 : fbb.CreateVector(library));
  fb::FinishArtifactBuffer(fbb, artifact);

  std::FILE *f = std::fopen(out.c_str(), "wb");
  if (!f || std::fwrite(fbb.GetBufferPointer(), 1, fbb.GetSize(), f) !=
                fbb.GetSize() ||
      std::fclose(f) != 0)
    fail("cannot write " + out);
  return 0;
}
