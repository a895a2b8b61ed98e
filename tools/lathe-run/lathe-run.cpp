// lathe-run: inspect an artifact, initialise weights, run a forward pass,
// generate text with the KV cache.
// A thin shell over include/lathe/runtime.h; every failure is one line
// "lathe-run: <message>" on stderr and exit code 1.
#include "lathe/runtime.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cctype>
#include <cmath>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <sys/mman.h>
#include <numeric>
#include <thread>
#include <vector>

namespace {

const char *const kUsage =
    "usage: lathe-run ARTIFACT info\n"
    "       lathe-run ARTIFACT dump-ptx CHIP -o KERNELS.ptx\n"
    "       lathe-run ARTIFACT dump-cubin CHIP -o KERNELS.cubin\n"
    "       lathe-run ARTIFACT dump-library -o KERNELS.so\n"
    "       lathe-run ARTIFACT init [--seed N] -o WEIGHTS.safetensors\n"
    "       lathe-run ARTIFACT forward --weights WEIGHTS.safetensors\n"
    "                 --tokens T0,T1,... [--logits-out LOGITS.npy]\n"
    "       lathe-run ARTIFACT cached-forward --weights WEIGHTS.safetensors\n"
    "                 --tokens T0,T1,... [--prefill N] [--positions P,...]\n"
    "                 [--logits-out LOGITS.npy]\n"
    "       lathe-run ARTIFACT generate --weights WEIGHTS.safetensors\n"
    "                 --prompt TEXT -n N [--temperature T] [--top-k K]\n"
    "                 [--seed S]\n"
    "       lathe-run ARTIFACT bench --weights WEIGHTS.safetensors\n"
    "                 [--prompt-len N] [--decode N] [--repeat R] [--profile]\n"
    "                 [--bandwidth-mib M]\n"
    "       lathe-run ARTIFACT grad --weights WEIGHTS.safetensors\n"
    "                 --tokens T0,T1,... --targets Y0,Y1,... [--out G.safetensors]\n"
    "       lathe-run ARTIFACT train --data FILE --out W.safetensors\n"
    "                 [--steps N] [--batch B] [--seq T] [--lr LR] [--min-lr LR]\n"
    "                 [--warmup N] [--eval-every K] [--eval-batches N]\n"
    "                 [--seed S] [--weights INIT | --resume CHECKPOINT]\n"
    "       lathe-run ARTIFACT bench-train [--weights W] [--batch B] [--steps N]\n"
    "                 [--warmup-steps N] [--lr LR] [--data FILE] [--profile]\n"
    "       lathe-run ARTIFACT train-step --weights W --tokens A;B;.. --targets A;B;..\n"
    "                 --lr LR [--step N] [--resume CHECKPOINT] --out W2\n"
    "\n"
    "cached-forward runs the first N tokens (default 1) through prefill and\n"
    "the rest one at a time through decode, at consecutive positions unless\n"
    "--positions gives them; its output matches forward's.\n"
    "generate uses a byte-level tokenizer (vocab 256): it prints the prompt\n"
    "and each sampled byte as it comes (text, newlines and tabs as they are,\n"
    "other bytes as \\xNN, a backslash as \\\\), and stops after N new tokens\n"
    "or when the sequence\n"
    "reaches max_seq. It samples softmax(logits / T) (T defaults to 1) over\n"
    "the top-k tokens (default: all) with a generator seeded by --seed\n"
    "(default 0); --temperature 0 is greedy (argmax, ties to the lowest id).\n"
    "bench times prefill of a fixed --prompt-len-token prompt (default 256)\n"
    "and greedy decoding of --decode tokens after it (default 128), --repeat\n"
    "times (default 3; medians reported), measures peak RSS and the machine's\n"
    "read bandwidth (2 threads over --bandwidth-mib MiB, default 1024; 0\n"
    "skips it; the faster of one stream and 16 interleaved streams per\n"
    "thread), and prints one JSON object on stdout (progress on stderr).\n"
    "--profile adds per-kernel times and GFLOP/s.\n"
    "grad (an artifact from lathec --train) prints the mean cross-entropy of\n"
    "one max_seq window against its targets and writes it, with the gradient\n"
    "of every parameter, to --out.\n"
    "--iterations N (grad, train-step, train, bench-train; a Parcae loop with\n"
    "loop.sample_max) fixes every sequence's iteration count; by default grad\n"
    "runs loop.iterations and train steps draw n ~ Poisson(loop.iterations)\n"
    "clamped to [1, loop.sample_max] per sequence.\n"
    "--shortcut D1,D2,.. (the same commands; LoopFormer with loop.shortcut)\n"
    "fixes the short trajectory of shortcut-consistency training; by default\n"
    "each step draws one (grad: step 0's draw) and grad and train-step print\n"
    "it.\n"
    "--supervise S1,S2,.. (the same commands; a LoopUS loop) fixes the\n"
    "supervised steps of deep supervision: one for grad (default 0), all of\n"
    "a train step's (loop.supervision.supervised, ascending); by default each\n"
    "train step draws them, each with its own optimizer update, and grad and\n"
    "train-step print them.\n"
    "train (an artifact from lathec --train) trains on FILE's bytes as\n"
    "tokens (the last tenth held out): --steps optimizer steps (default 200)\n"
    "of --batch windows (default 4) of the compiled window, AdamW with lr\n"
    "--lr (default 1e-3) warmed up over --warmup steps then cosine-decayed to\n"
    "--min-lr; held-out loss every --eval-every steps, each time writing the\n"
    "checkpoint (weights + optimizer state) to --out, the log to OUT.csv and\n"
    "the loss curve to OUT.svg, atomically. --resume continues a checkpoint.\n"
    "train-step runs one optimizer step on the given sequences.\n"
    "bench-train times --steps optimizer steps (after --warmup-steps) of\n"
    "--batch windows (default 4) taken in order from --data (default: seeded\n"
    "random bytes) and prints JSON: step times, tokens/s, losses, peak RSS.\n";

[[noreturn]] void fail(const std::string &message) {
  std::fprintf(stderr, "lathe-run: %s\n", message.c_str());
  std::exit(1);
}

void check(lathe_status_t status) {
  if (!status)
    return;
  std::string message = lathe_status_message(status);
  lathe_status_free(status);
  fail(message);
}

struct ArtifactDeleter {
  void operator()(lathe_artifact_t *a) const { lathe_artifact_free(a); }
};
struct SessionDeleter {
  void operator()(lathe_session_t *s) const { lathe_session_free(s); }
};
using ArtifactPtr = std::unique_ptr<lathe_artifact_t, ArtifactDeleter>;
using SessionPtr = std::unique_ptr<lathe_session_t, SessionDeleter>;

// "--name value" and "--name=value" options after the command.
struct Options {
  std::vector<std::pair<std::string, std::string>> values;

  const std::string *get(const std::string &name) const {
    const std::string *found = nullptr;
    for (const auto &kv : values)
      if (kv.first == name)
        found = &kv.second;
    return found;
  }
  const std::string &require(const std::string &name,
                             const std::string &command) const {
    const std::string *v = get(name);
    if (!v)
      fail(command + " needs " + name);
    return *v;
  }
};

// `flags` take no value ("--profile" reads as "--profile=1").
Options parseOptions(int argc, char **argv, int first,
                     const std::vector<std::string> &allowed,
                     const std::string &command,
                     const std::vector<std::string> &flags = {}) {
  Options opts;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    std::string name = arg, value;
    bool hasValue = false;
    size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      hasValue = true;
    }
    bool known = false;
    for (const std::string &a : allowed)
      known |= a == name;
    if (!known)
      fail("unknown option '" + arg + "' for " + command +
           " (see lathe-run --help)");
    bool isFlag = false;
    for (const std::string &f : flags)
      isFlag |= f == name;
    if (!hasValue && isFlag) {
      value = "1";
    } else if (!hasValue) {
      if (i + 1 >= argc)
        fail("option " + name + " needs a value");
      value = argv[++i];
    }
    opts.values.emplace_back(name, value);
  }
  return opts;
}

bool parseInt64(const std::string &s, int64_t &out) {
  if (s.empty())
    return false;
  errno = 0;
  char *end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || std::isspace((unsigned char)s[0]))
    return false;
  out = v;
  return true;
}

std::vector<int32_t> parseTokens(const std::string &list) {
  std::vector<int32_t> tokens;
  if (list.empty())
    fail("bad --tokens '': expected a comma-separated list of token ids");
  size_t start = 0;
  while (true) {
    size_t comma = list.find(',', start);
    std::string item = list.substr(start, comma == std::string::npos
                                              ? std::string::npos
                                              : comma - start);
    int64_t v;
    if (!parseInt64(item, v) || v < INT32_MIN || v > INT32_MAX)
      fail("bad --tokens '" + list + "': '" + item +
           "' is not an integer token id");
    tokens.push_back(int32_t(v));
    if (comma == std::string::npos)
      break;
    start = comma + 1;
  }
  return tokens;
}

// NumPy .npy v1.0: magic, version, little-endian u16 header length, a
// Python-literal dict padded with spaces and '\n' to a 64-byte boundary.
void writeNpy(const std::string &path, const float *data, size_t rows,
              size_t cols) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                     std::to_string(rows) + ", " + std::to_string(cols) +
                     "), }";
  size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  std::FILE *f = std::fopen(path.c_str(), "wb");
  if (!f)
    fail(path + ": cannot write: " + std::strerror(errno));
  const char magic[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  uint16_t len = uint16_t(dict.size());
  const unsigned char lenBytes[2] = {(unsigned char)(len & 0xff),
                                     (unsigned char)(len >> 8)};
  bool ok = std::fwrite(magic, 1, 8, f) == 8 &&
            std::fwrite(lenBytes, 1, 2, f) == 2 &&
            std::fwrite(dict.data(), 1, dict.size(), f) == dict.size() &&
            std::fwrite(data, sizeof(float), rows * cols, f) == rows * cols;
  // The data is host-endian f32; '<f4' is right on the little-endian hosts
  // lathe supports.
  if (std::fclose(f) != 0 || !ok)
    fail(path + ": cannot write: " + std::strerror(errno));
}

std::string tokenLabel(int64_t token, int64_t vocab) {
  std::string s = std::to_string(token);
  // A 256-token vocabulary is bytes: show printable ones as characters.
  if (vocab == 256 && token >= 0x20 && token < 0x7f)
    s += std::string(" '") + char(token) + "'";
  return s;
}

void writeBytes(const std::string &out, const void *data, size_t n) {
  FILE *f = std::fopen(out.c_str(), "wb");
  if (!f)
    fail(out + ": cannot write: " + std::strerror(errno));
  bool ok = std::fwrite(data, 1, n, f) == n;
  ok = std::fclose(f) == 0 && ok;
  if (!ok)
    fail(out + ": write failed");
}

int runDumpPtx(const lathe_artifact_t *art, const std::string &chip,
               const Options &opts) {
  const std::string &out = opts.require("-o", "dump-ptx");
  const char *ptx = nullptr;
  check(lathe_artifact_ptx(art, chip.c_str(), &ptx));
  writeBytes(out, ptx, std::strlen(ptx));
  return 0;
}

int runDumpCubin(const lathe_artifact_t *art, const std::string &chip,
                 const Options &opts) {
  const std::string &out = opts.require("-o", "dump-cubin");
  const uint8_t *data = nullptr;
  size_t size = 0;
  check(lathe_artifact_cubin(art, chip.c_str(), &data, &size));
  writeBytes(out, data, size);
  return 0;
}

int runDumpLibrary(const lathe_artifact_t *art, const Options &opts) {
  const std::string &out = opts.require("-o", "dump-library");
  const uint8_t *data = nullptr;
  size_t size = 0;
  check(lathe_artifact_kernel_library(art, &data, &size));
  writeBytes(out, data, size);
  return 0;
}

int runInfo(const lathe_artifact_t *art) {
  std::printf("model:   %s\n", lathe_artifact_model_name(art));
  std::printf("target:  %s\n", lathe_artifact_target(art));
  std::printf("vocab:   %" PRId64 "\n", lathe_artifact_vocab(art));
  std::printf("max_seq: %" PRId64 "\n", lathe_artifact_max_seq(art));
  std::printf("params:  %zu tensors, %" PRId64 " elements\n",
              lathe_artifact_param_count(art),
              lathe_artifact_param_elements(art));
  std::printf("arena:   %" PRIu64 " bytes\n", lathe_artifact_arena_bytes(art));
  // A training artifact: its window and the family objective's draws.
  if (size_t window = lathe_artifact_train_seq(art)) {
    std::string extra;
    int64_t mean = 0, max = 0, steps = 0, supervised = 0;
    lathe_artifact_sampled_iterations(art, &mean, &max);
    if (max)
      extra += ", depth ~ Poisson(" + std::to_string(mean) + ") in [1, " +
               std::to_string(max) + "]";
    if (int64_t m = lathe_artifact_shortcut_iterations(art))
      extra += ", shortcut against " + std::to_string(m) + " long steps";
    lathe_artifact_supervision(art, &steps, &supervised);
    if (steps)
      extra += ", deep supervision of " + std::to_string(supervised) +
               " in " + std::to_string(steps) + " steps";
    if (size_t packed = lathe_artifact_train_batch(art); packed > 1)
      extra += ", " + std::to_string(packed) + " sequences per pass";
    std::printf("train:   windows of %zu tokens%s\n", window, extra.c_str());
  }
  for (size_t i = 0; i < lathe_artifact_state_count(art); ++i) {
    std::string shape = "[";
    for (size_t d = 0; d < lathe_artifact_state_rank(art, i); ++d)
      shape += (d ? "," : "") + std::to_string(lathe_artifact_state_dim(art, i, d));
    std::printf("state %s: %s] %s\n", lathe_artifact_state_name(art, i),
                shape.c_str(), lathe_artifact_state_dtype(art, i));
  }
  for (size_t e = 0; e < lathe_artifact_entry_count(art); ++e) {
    size_t n = lathe_artifact_launch_count(art, e);
    std::printf("entry %s: %zu launches\n", lathe_artifact_entry_name(art, e),
                n);
    for (size_t l = 0; l < n; ++l) {
      lathe_gemm_desc_t g;
      if (!lathe_artifact_launch_gemm(art, e, l, &g)) {
        std::printf("  %zu: %s\n", l, lathe_artifact_launch_kernel(art, e, l));
        continue;
      }
      std::printf("  %zu: %s\n", l, g.name);
    }
  }
  return 0;
}

int runInit(const lathe_artifact_t *art, const Options &opts) {
  int64_t seed = 0;
  if (const std::string *s = opts.get("--seed"))
    if (!parseInt64(*s, seed) || seed < 0)
      fail("bad --seed '" + *s + "': expected a non-negative integer");
  const std::string &out = opts.require("-o", "init");
  check(lathe_weights_init(art, uint64_t(seed), out.c_str()));
  std::printf("wrote %zu tensors (%" PRId64 " parameters) to %s\n",
              lathe_artifact_param_count(art),
              lathe_artifact_param_elements(art), out.c_str());
  return 0;
}

// The shared output of forward and cached-forward, so the two can be
// compared directly.
void printLogits(const std::vector<int32_t> &tokens,
                 const std::vector<float> &logits, int64_t vocab,
                 const Options &opts) {
  if (const std::string *out = opts.get("--logits-out"))
    writeNpy(*out, logits.data(), tokens.size(), size_t(vocab));
  std::printf("logits [%zu, %" PRId64 "]\n", tokens.size(), vocab);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const float *row = logits.data() + i * size_t(vocab);
    int64_t best = 0;
    for (int64_t v = 1; v < vocab; ++v)
      if (row[v] > row[best])
        best = v;
    std::printf("  pos %zu: token %s -> argmax %s (logit %.6g)\n", i,
                tokenLabel(tokens[i], vocab).c_str(),
                tokenLabel(best, vocab).c_str(), double(row[best]));
  }
}

// --device, for the commands that run the model; empty: the artifact's own.
std::string gDevice;
// --iterations (Parcae's sampled depth); 0: the artifact's default.
int64_t gIterations = 0;
// --shortcut (LoopFormer's short trajectory); empty: drawn per step.
std::vector<double> gShortcut;
// --supervise (LoopUS's supervised steps); empty: step 0 / drawn per step.
std::vector<int64_t> gSupervise;

SessionPtr openSession(const lathe_artifact_t *art,
                       const std::string &weights) {
  lathe_session_t *raw = nullptr;
  check(lathe_session_create_on_device(
      art, gDevice.empty() ? nullptr : gDevice.c_str(), &raw));
  SessionPtr session(raw);
  if (gIterations)
    check(lathe_session_set_iterations(session.get(), gIterations));
  if (!gShortcut.empty())
    check(lathe_session_set_shortcut(session.get(), gShortcut.data(),
                                     gShortcut.size()));
  if (!gSupervise.empty())
    check(lathe_session_set_supervision(session.get(), gSupervise.data(),
                                        gSupervise.size()));
  check(lathe_session_load_weights(session.get(), weights.c_str()));
  return session;
}

bool hasEntry(const lathe_artifact_t *art, const char *name) {
  for (size_t e = 0; e < lathe_artifact_entry_count(art); ++e)
    if (!std::strcmp(lathe_artifact_entry_name(art, e), name))
      return true;
  return false;
}

// One line of what the last grad or train step drew, "LABEL v1 v2 ...",
// from a lathe_session_last_* getter; nothing where it drew nothing.
template <typename T>
void printDraws(const lathe_session_t *session, const char *label,
                size_t (*last)(const lathe_session_t *, T *, size_t)) {
  std::vector<T> values(last(session, nullptr, 0));
  if (values.empty())
    return;
  last(session, values.data(), values.size());
  std::printf("%s", label);
  for (T v : values) {
    if constexpr (std::is_floating_point_v<T>)
      std::printf(" %.6g", double(v));
    else
      std::printf(" %" PRId64, int64_t(v));
  }
  std::printf("\n");
}

// Parcae's per-sequence depth, LoopFormer's short trajectory, LoopUS's
// supervised steps: whichever the artifact's objective draws.
void printTrainDraws(const lathe_session_t *session) {
  printDraws<int64_t>(session, "iterations", lathe_session_last_iterations);
  printDraws<double>(session, "shortcut", lathe_session_last_shortcut);
  printDraws<int64_t>(session, "supervised", lathe_session_last_supervision);
}

int runGrad(const lathe_artifact_t *art, const Options &opts) {
  const std::string &weights = opts.require("--weights", "grad");
  std::vector<int32_t> tokens = parseTokens(opts.require("--tokens", "grad"));
  std::vector<int32_t> targets =
      parseTokens(opts.require("--targets", "grad"));
  if (targets.size() != tokens.size())
    fail("grad needs as many --targets as --tokens (" +
         std::to_string(tokens.size()) + "), got " +
         std::to_string(targets.size()));
  const std::string *out = opts.get("--out");
  SessionPtr session = openSession(art, weights);
  float loss = 0;
  check(lathe_session_grad(session.get(), tokens.data(), targets.data(),
                           tokens.size(), &loss, out ? out->c_str() : nullptr));
  std::printf("loss %.6f\n", double(loss));
  printTrainDraws(session.get());
  return 0;
}

int runForward(const lathe_artifact_t *art, const Options &opts) {
  const std::string &weights = opts.require("--weights", "forward");
  std::vector<int32_t> tokens =
      parseTokens(opts.require("--tokens", "forward"));
  SessionPtr session = openSession(art, weights);

  int64_t vocab = lathe_artifact_vocab(art);
  // Sized for at most max_seq rows: a longer list is rejected by the runtime
  // before it writes anything, and must not cost a huge allocation first.
  size_t rows = std::min<size_t>(tokens.size(),
                                 size_t(lathe_artifact_max_seq(art)));
  std::vector<float> logits(rows * size_t(vocab));
  check(lathe_session_forward(session.get(), tokens.data(), tokens.size(),
                              logits.data()));
  uint32_t taken = 0, points = 0;
  lathe_session_loop_exit(session.get(), &taken, &points);
  if (taken)
    std::fprintf(stderr, "loop: halted after iteration %u\n", taken);
  else if (points)
    std::fprintf(stderr, "loop: ran all %u iterations\n", points + 1);
  printLogits(tokens, logits, vocab, opts);
  return 0;
}

// Prefill on the first N tokens, then one decode per remaining token, at
// consecutive positions or at explicit --positions (to exercise rewinds).
int runCachedForward(const lathe_artifact_t *art, const Options &opts) {
  const std::string &weights = opts.require("--weights", "cached-forward");
  std::vector<int32_t> tokens =
      parseTokens(opts.require("--tokens", "cached-forward"));
  int64_t prefill = 1;
  if (const std::string *p = opts.get("--prefill"))
    if (!parseInt64(*p, prefill) || prefill < 1 ||
        uint64_t(prefill) > tokens.size())
      fail("bad --prefill '" + *p + "': expected an integer from 1 to the "
           "number of tokens (" + std::to_string(tokens.size()) + ")");
  size_t numDecode = tokens.size() - size_t(prefill);
  std::vector<int64_t> positions;
  if (const std::string *p = opts.get("--positions")) {
    std::vector<int32_t> list = parseTokens(*p);
    if (list.size() != numDecode)
      fail("bad --positions '" + *p + "': expected " +
           std::to_string(numDecode) + " positions, one per decoded token");
    for (int32_t v : list) {
      if (v < 0)
        fail("bad --positions '" + *p + "': positions are non-negative");
      positions.push_back(v);
    }
  } else {
    for (size_t i = 0; i < numDecode; ++i)
      positions.push_back(prefill + int64_t(i));
  }
  SessionPtr session = openSession(art, weights);

  int64_t vocab = lathe_artifact_vocab(art);
  // One row per listed token, so as large as the command line, no larger.
  std::vector<float> logits(tokens.size() * size_t(vocab));
  check(lathe_session_prefill(session.get(), tokens.data(), size_t(prefill),
                              logits.data()));
  for (size_t i = 0; i < numDecode; ++i) {
    size_t t = size_t(prefill) + i;
    check(lathe_session_decode(session.get(), tokens[t], size_t(positions[i]),
                               logits.data() + t * size_t(vocab)));
  }
  printLogits(tokens, logits, vocab, opts);
  return 0;
}

bool parseDouble(const std::string &s, double &out) {
  if (s.empty() || std::isspace((unsigned char)s[0]))
    return false;
  errno = 0;
  char *end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || *end != '\0')
    return false;
  out = v;
  return true;
}

// SplitMix64: tiny, fast, and fully determined by the seed on every
// platform, unlike std::uniform_real_distribution.
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1).
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
};

// Orders token ids best first: higher logit, then lower id; NaN last.
bool better(const float *row, int32_t a, int32_t b) {
  float la = row[a], lb = row[b];
  if (std::isnan(la) != std::isnan(lb))
    return std::isnan(lb);
  if (!std::isnan(la) && la != lb)
    return la > lb;
  return a < b;
}

int32_t sampleToken(const float *row, int64_t vocab, double temperature,
                    int64_t topK, Rng &rng) {
  if (temperature == 0) {
    int32_t best = 0;
    for (int32_t v = 1; v < vocab; ++v)
      if (better(row, v, best))
        best = v;
    return best;
  }
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  for (int32_t v = 0; v < vocab; ++v)
    ids[size_t(v)] = v;
  size_t k = size_t(std::min<int64_t>(topK, vocab));
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                    [&](int32_t a, int32_t b) { return better(row, a, b); });
  // (l - max) / T rather than l / T - max / T: no overflow for tiny T.
  double top = row[ids[0]];
  std::vector<double> weights(k);
  double total = 0;
  for (size_t i = 0; i < k; ++i) {
    double w = std::exp((double(row[ids[i]]) - top) / temperature);
    weights[i] = std::isfinite(w) ? w : 0.0;
    total += weights[i];
  }
  // Non-finite logits leave nothing to sample from: fall back to the best.
  if (!(total > 0) || !std::isfinite(total))
    return ids[0];
  double u = rng.uniform() * total;
  for (size_t i = 0; i < k; ++i) {
    if (u < weights[i])
      return ids[i];
    u -= weights[i];
  }
  // Rounding can leave u just past the last weight.
  for (size_t i = k; i-- > 0;)
    if (weights[i] > 0)
      return ids[i];
  return ids[0];
}

// Text stays text: printable ASCII, newlines and tabs (generated verse
// keeps its lines); every other byte as \xNN, and a backslash doubled so
// the output stays unambiguous.
void printByte(int32_t b) {
  if (b == '\\')
    std::fputs("\\\\", stdout);
  else if ((b >= 0x20 && b < 0x7f) || b == '\n' || b == '\t')
    std::fputc(b, stdout);
  else
    std::printf("\\x%02x", unsigned(b));
}

int runGenerate(const lathe_artifact_t *art, const std::string &path,
                const Options &opts) {
  const std::string &weights = opts.require("--weights", "generate");
  const std::string &prompt = opts.require("--prompt", "generate");
  const std::string &nText = opts.require("-n", "generate");
  int64_t numNew = 0;
  if (!parseInt64(nText, numNew) || numNew < 0)
    fail("bad -n '" + nText + "': expected a non-negative integer");
  double temperature = 1.0;
  if (const std::string *t = opts.get("--temperature"))
    if (!parseDouble(*t, temperature) || !(temperature >= 0) ||
        !std::isfinite(temperature))
      fail("bad --temperature '" + *t +
           "': expected a non-negative number (0 is greedy)");
  int64_t vocab = lathe_artifact_vocab(art);
  int64_t topK = vocab;
  if (const std::string *k = opts.get("--top-k"))
    if (!parseInt64(*k, topK) || topK <= 0)
      fail("bad --top-k '" + *k + "': expected a positive integer");
  int64_t seed = 0;
  if (const std::string *s = opts.get("--seed"))
    if (!parseInt64(*s, seed) || seed < 0)
      fail("bad --seed '" + *s + "': expected a non-negative integer");

  if (vocab != 256)
    fail(path + ": generate needs a byte-level vocabulary of 256 tokens, but "
         "this artifact's vocab is " + std::to_string(vocab));
  if (prompt.empty())
    fail("generate needs a non-empty --prompt");
  int64_t maxSeq = lathe_artifact_max_seq(art);
  if (int64_t(prompt.size()) > maxSeq)
    fail(path + ": the prompt is " + std::to_string(prompt.size()) +
         " bytes, but the artifact's max_seq is " + std::to_string(maxSeq));
  // Checked up front so that nothing is printed before the error.
  for (const char *entry : {"prefill", "decode"})
    if (!hasEntry(art, entry))
      fail(path + ": this artifact has no " + entry +
           " entry (generate needs prefill and decode)");

  SessionPtr session = openSession(art, weights);
  std::vector<int32_t> tokens(prompt.begin(), prompt.end());
  for (int32_t &t : tokens)
    t = int32_t(uint8_t(t));
  std::vector<float> logits(tokens.size() * size_t(vocab));
  check(lathe_session_prefill(session.get(), tokens.data(), tokens.size(),
                              logits.data()));
  for (int32_t t : tokens)
    printByte(t);
  std::fflush(stdout);

  // Next-token logits: the last prefill row, then each decode's output.
  std::vector<float> row(logits.end() - vocab, logits.end());
  Rng rng{uint64_t(seed)};
  size_t length = tokens.size();
  int64_t made = 0;
  bool full = false;
  while (made < numNew) {
    // The sequence, generated tokens included, never exceeds max_seq.
    if (int64_t(length) >= maxSeq) {
      full = true;
      break;
    }
    int32_t next = sampleToken(row.data(), vocab, temperature, topK, rng);
    printByte(next);
    std::fflush(stdout);
    ++made;
    ++length;
    if (made == numNew || int64_t(length) >= maxSeq) {
      full = made < numNew;
      break;
    }
    check(lathe_session_decode(session.get(), next, length - 1, row.data()));
  }
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (full)
    std::fprintf(stderr,
                 "lathe-run: stopped after %" PRId64 " new tokens: the "
                 "sequence reached max_seq (%" PRId64 ")\n",
                 made, maxSeq);
  return 0;
}

// ---------------------------------------------------------------- bench

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> v) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Peak resident set of this process so far: VmHWM of /proc/self/status, the
// high-water mark of this address space. getrusage's ru_maxrss is only the
// fallback: Linux carries it over from the parent through fork and exec, so
// under a large parent (a Python script) it reports the parent's size.
uint64_t peakRssBytes() {
  if (std::FILE *f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    uint64_t kib = 0;
    bool found = false;
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "VmHWM: %" SCNu64, &kib) == 1) {
        found = true;
        break;
      }
    std::fclose(f);
    if (found)
      return kib * 1024;
  }
  struct rusage usage;
  if (getrusage(RUSAGE_SELF, &usage) != 0)
    return 0;
  return uint64_t(usage.ru_maxrss) * 1024;
}

// Current resident set (/proc/self/statm); 0 if unknown.
uint64_t currentRssBytes() {
  uint64_t pages = 0, resident = 0;
  if (std::FILE *f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%" SCNu64 " %" SCNu64, &pages, &resident) != 2)
      resident = 0;
    std::fclose(f);
  }
  return resident * uint64_t(sysconf(_SC_PAGESIZE));
}

// Size of the last-level data or unified cache from sysfs; 0 if unknown.
uint64_t lastLevelCacheBytes() {
  uint64_t best = 0;
  int bestLevel = -1;
  for (int i = 0; i < 16; ++i) {
    std::string dir =
        "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    auto readLine = [](const std::string &path) {
      std::string s;
      if (std::FILE *f = std::fopen(path.c_str(), "r")) {
        char buf[64];
        if (std::fgets(buf, sizeof buf, f))
          s = buf;
        std::fclose(f);
      }
      while (!s.empty() && std::isspace((unsigned char)s.back()))
        s.pop_back();
      return s;
    };
    std::string level = readLine(dir + "level");
    if (level.empty())
      break;
    if (readLine(dir + "type") == "Instruction")
      continue;
    std::string size = readLine(dir + "size");
    char *end = nullptr;
    uint64_t bytes = std::strtoull(size.c_str(), &end, 10);
    if (end && (*end == 'K' || *end == 'k'))
      bytes <<= 10;
    else if (end && *end == 'M')
      bytes <<= 20;
    int l = std::atoi(level.c_str());
    if (l > bestLevel || (l == bestLevel && bytes > best)) {
      bestLevel = l;
      best = bytes;
    }
  }
  return best;
}

// Sums n 64-bit words with four independent vector accumulators, so the
// loop is bound by loads, not by the add latency.
typedef uint64_t U64x2 __attribute__((vector_size(16)));
uint64_t sumWords(const uint64_t *p, size_t n) {
  U64x2 a0 = {0, 0}, a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    U64x2 x0, x1, x2, x3;
    std::memcpy(&x0, p + i, 16);
    std::memcpy(&x1, p + i + 2, 16);
    std::memcpy(&x2, p + i + 4, 16);
    std::memcpy(&x3, p + i + 6, 16);
    a0 += x0;
    a1 += x1;
    a2 += x2;
    a3 += x3;
  }
  U64x2 a = a0 + a1 + a2 + a3;
  uint64_t s = a[0] + a[1];
  for (; i < n; ++i)
    s += p[i];
  return s;
}

// Sums n words in blocks of `streams` rows of kRowWords words, reading the
// rows of a block side by side, a cache line from each in turn: the access
// pattern of a GEMV that accumulates many weight rows per pass. On the
// development machine a core keeps more misses in flight this way than with
// one sequential stream.
constexpr size_t kRowWords = 1024; // 8 KiB: a 2048-wide fp32 weight row
uint64_t sumWordsInterleaved(const uint64_t *p, size_t n, size_t streams) {
  U64x2 a0 = {0, 0}, a1 = a0, a2 = a0, a3 = a0;
  size_t block = streams * kRowWords, done = n / block * block;
  for (size_t b = 0; b < done; b += block)
    for (size_t i = 0; i < kRowWords; i += 8)
      for (size_t s = 0; s < streams; ++s) {
        const uint64_t *q = p + b + s * kRowWords + i;
        U64x2 x0, x1, x2, x3;
        std::memcpy(&x0, q, 16);
        std::memcpy(&x1, q + 2, 16);
        std::memcpy(&x2, q + 4, 16);
        std::memcpy(&x3, q + 6, 16);
        a0 += x0;
        a1 += x1;
        a2 += x2;
        a3 += x3;
      }
  U64x2 a = a0 + a1 + a2 + a3;
  return a[0] + a[1] + sumWords(p + done, n - done);
}

volatile uint64_t gBandwidthSink;

struct Bandwidth {
  // Per pass: one sequential stream per thread, then kBandwidthStreams per
  // thread.
  std::vector<double> singleGBs, multiGBs;
  double singleMedianGBs = 0, multiMedianGBs = 0;
  // The better of the two: the read bandwidth the machine can deliver.
  double medianGBs = 0;
};

constexpr size_t kBandwidthStreams = 16;

// A buffer that `threads` threads first touch (each its own share), then
// read: once as one stream per thread and once as kBandwidthStreams
// interleaved streams. On huge pages, as the runtime places the weights: the
// bound should be what the machine can do at its best.
class BandwidthBuffer {
public:
  BandwidthBuffer(uint64_t bytes, int threads)
      : words_(size_t(bytes / sizeof(uint64_t))), threads_(threads) {
    constexpr size_t kHugePage = size_t(2) << 20;
    size_t allocBytes =
        (words_ * sizeof(uint64_t) + kHugePage - 1) / kHugePage * kHugePage;
    data_ = static_cast<uint64_t *>(std::aligned_alloc(kHugePage, allocBytes));
    if (!data_)
      return;
    madvise(data_, allocBytes, MADV_HUGEPAGE);
    forEachShare([&](size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i)
        data_[i] = i;
    });
  }
  ~BandwidthBuffer() { std::free(data_); }
  bool ok() const { return data_ != nullptr; }

  // One timed pass, GB/s (1e9 bytes): from a common start signal to the
  // last thread's finish.
  double pass(size_t streams) {
    std::atomic<bool> go{false};
    std::vector<Clock::time_point> ends(static_cast<size_t>(threads_));
    std::vector<uint64_t> sums(static_cast<size_t>(threads_));
    std::vector<std::thread> pool;
    for (int t = 0; t < threads_; ++t)
      pool.emplace_back([&, t] {
        size_t begin, end;
        share(t, begin, end);
        while (!go.load(std::memory_order_acquire))
          ;
        sums[size_t(t)] =
            streams == 1
                ? sumWords(data_ + begin, end - begin)
                : sumWordsInterleaved(data_ + begin, end - begin, streams);
        ends[size_t(t)] = Clock::now();
      });
    auto start = Clock::now();
    go.store(true, std::memory_order_release);
    for (std::thread &th : pool)
      th.join();
    Clock::time_point last = *std::max_element(ends.begin(), ends.end());
    for (uint64_t s : sums)
      gBandwidthSink = gBandwidthSink + s;
    double seconds = std::chrono::duration<double>(last - start).count();
    return double(words_ * sizeof(uint64_t)) / seconds / 1e9;
  }

private:
  void share(int t, size_t &begin, size_t &end) const {
    begin = words_ * size_t(t) / size_t(threads_);
    end = words_ * size_t(t + 1) / size_t(threads_);
  }
  template <typename Fn> void forEachShare(Fn fn) {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads_; ++t)
      pool.emplace_back([&, t] {
        size_t begin, end;
        share(t, begin, end);
        fn(begin, end);
      });
    for (std::thread &th : pool)
      th.join();
  }

  size_t words_;
  int threads_;
  uint64_t *data_ = nullptr;
};

// Measures read bandwidth in a helper process, between the benchmark's
// repeats. Its own process, so that its buffer (1 GiB by default) never
// counts in the benchmark's peak RSS; between repeats, so that the bound and
// the decode rate it bounds see the same moments of a shared machine, whose
// bandwidth was seen to swing by 1.5x within minutes.
class BandwidthProbe {
public:
  // Forks the helper; it allocates and touches the buffer and runs one
  // uncounted pass (TLB, clocks) while the caller loads the model, and then
  // says it is ready (waitReady).
  void start(uint64_t bytes, int threads) {
    int toChild[2], toParent[2];
    if (pipe(toChild) != 0 || pipe(toParent) != 0)
      fail(std::string("cannot create pipes for the bandwidth test: ") +
           std::strerror(errno));
    std::fflush(nullptr);
    pid_ = fork();
    if (pid_ < 0)
      fail(std::string("cannot fork the bandwidth test: ") +
           std::strerror(errno));
    if (pid_ == 0) {
      ::close(toChild[1]);
      ::close(toParent[0]);
      serve(toChild[0], toParent[1], bytes, threads);
    }
    ::close(toChild[0]);
    ::close(toParent[1]);
    out_ = toChild[1];
    in_ = toParent[0];
  }

  // Waits until the helper has its buffer and has warmed up: nothing of it
  // may overlap a timed run.
  void waitReady() {
    char ready = 0;
    if (!readAll(in_, &ready, 1) || ready != 'r')
      fail("the bandwidth test failed (cannot allocate its buffer, or its "
           "process ended)");
  }

  // One pass of each pattern, appended to `bw`.
  void measure(Bandwidth &bw) {
    char command = 'p';
    double reply[2];
    if (::write(out_, &command, 1) != 1 || !readAll(in_, reply, sizeof reply) ||
        reply[0] < 0)
      fail("the bandwidth test failed (cannot allocate its buffer, or its "
           "process ended)");
    bw.singleGBs.push_back(reply[0]);
    bw.multiGBs.push_back(reply[1]);
  }

  ~BandwidthProbe() {
    if (pid_ <= 0)
      return;
    ::close(out_); // end of commands: the helper exits
    ::close(in_);
    int status;
    waitpid(pid_, &status, 0);
  }

private:
  static bool readAll(int fd, void *data, size_t bytes) {
    auto *p = static_cast<char *>(data);
    while (bytes) {
      ssize_t n = ::read(fd, p, bytes);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return false;
      p += n, bytes -= size_t(n);
    }
    return true;
  }

  [[noreturn]] static void serve(int in, int out, uint64_t bytes,
                                 int threads) {
    BandwidthBuffer buffer(bytes, threads);
    if (buffer.ok()) {
      buffer.pass(1);
      buffer.pass(kBandwidthStreams);
    }
    char ready = buffer.ok() ? 'r' : 'f';
    if (::write(out, &ready, 1) != 1)
      _exit(1);
    char command;
    while (readAll(in, &command, 1)) {
      double reply[2] = {-1, -1};
      if (buffer.ok()) {
        reply[0] = buffer.pass(1);
        reply[1] = buffer.pass(kBandwidthStreams);
      }
      if (::write(out, reply, sizeof reply) != ssize_t(sizeof reply))
        break;
    }
    _exit(0); // never return into the parent's code
  }

  pid_t pid_ = -1;
  int out_ = -1, in_ = -1;
};

void finishBandwidth(Bandwidth &bw) {
  bw.singleMedianGBs = median(bw.singleGBs);
  bw.multiMedianGBs = median(bw.multiGBs);
  bw.medianGBs = std::max(bw.singleMedianGBs, bw.multiMedianGBs);
}

size_t entryIndex(const lathe_artifact_t *art, const char *name) {
  for (size_t e = 0; e < lathe_artifact_entry_count(art); ++e)
    if (!std::strcmp(lathe_artifact_entry_name(art, e), name))
      return e;
  return size_t(-1);
}

uint64_t entryFlops(const lathe_artifact_t *art, size_t entry) {
  uint64_t total = 0;
  for (size_t l = 0; l < lathe_artifact_launch_count(art, entry); ++l)
    total += lathe_artifact_launch_flops(art, entry, l);
  return total;
}

uint64_t dtypeBytes(const char *dtype) {
  if (!std::strcmp(dtype, "f16") || !std::strcmp(dtype, "bf16"))
    return 2;
  return 4; // f32, i32
}

int32_t argmaxToken(const float *row, int64_t vocab) {
  int32_t best = 0;
  for (int32_t v = 1; v < vocab; ++v)
    if (better(row, v, best))
      best = v;
  return best;
}

int64_t parseCount(const Options &opts, const std::string &name,
                   int64_t defaultValue, int64_t minValue) {
  int64_t v = defaultValue;
  if (const std::string *s = opts.get(name))
    if (!parseInt64(*s, v) || v < minValue)
      fail("bad " + name + " '" + *s + "': expected an integer >= " +
           std::to_string(minValue));
  return v;
}

// A JSON number, or null for NaN/inf (0/0 when nothing was timed).
llvm::json::Value number(double v) {
  if (std::isfinite(v))
    return v;
  return nullptr;
}

llvm::json::Array numbers(const std::vector<double> &values) {
  llvm::json::Array a;
  for (double v : values)
    a.push_back(number(v));
  return a;
}

// The per-kernel times (sorted, with the entries that launch each kernel)
// and the host BLAS calls by shape, as `bench --profile` and `bench-train
// --profile` print them.
void addProfile(const lathe_artifact_t *art, lathe_session_t *session,
                llvm::json::Object &out) {
  // The entries that launch each kernel (one, for lathec's per-entry
  // kernel names; an artifact may share a kernel between entries).
  std::map<std::string, std::vector<std::string>> entriesOf;
  for (size_t e = 0; e < lathe_artifact_entry_count(art); ++e)
    for (size_t l = 0; l < lathe_artifact_launch_count(art, e); ++l) {
      std::vector<std::string> &list =
          entriesOf[lathe_artifact_launch_kernel(art, e, l)];
      const char *name = lathe_artifact_entry_name(art, e);
      if (list.empty() || list.back() != name)
        list.push_back(name);
    }
  std::vector<lathe_kernel_profile_t> kernels(
      lathe_session_profile_count(session));
  for (size_t i = 0; i < kernels.size(); ++i)
    lathe_session_profile_kernel(session, i, &kernels[i]);
  std::sort(kernels.begin(), kernels.end(),
            [](const lathe_kernel_profile_t &a,
               const lathe_kernel_profile_t &b) {
              if (a.seconds != b.seconds)
                return a.seconds > b.seconds;
              return std::strcmp(a.kernel, b.kernel) < 0;
            });
  double totalSeconds = 0;
  for (const lathe_kernel_profile_t &k : kernels)
    totalSeconds += k.seconds;
  llvm::json::Array list;
  for (const lathe_kernel_profile_t &k : kernels) {
    llvm::json::Object o;
    o["kernel"] = k.kernel;
    llvm::json::Array entries;
    for (const std::string &e : entriesOf[k.kernel])
      entries.push_back(e);
    o["entries"] = std::move(entries);
    o["calls"] = int64_t(k.calls);
    o["seconds"] = k.seconds;
    o["seconds_per_call"] = k.seconds / double(k.calls);
    o["flops_per_call"] = int64_t(k.flops / k.calls);
    o["gflops_per_s"] = k.flops && k.seconds > 0
                            ? number(double(k.flops) / k.seconds / 1e9)
                            : llvm::json::Value(nullptr);
    o["share"] = totalSeconds > 0 ? k.seconds / totalSeconds : 0.0;
    list.push_back(std::move(o));
  }
  out["profile_kernel_seconds"] = totalSeconds;
  out["profile"] = std::move(list);
  // The host BLAS calls inside those kernels, by shape.
  llvm::json::Array gemms;
  for (size_t i = 0; i < lathe_gemm_profile_count(); ++i) {
    lathe_gemm_profile_t g;
    lathe_gemm_profile_get(i, &g);
    double flops = 2.0 * double(g.m) * double(g.n) * double(g.k) *
                   double(g.batch) * double(g.calls);
    gemms.push_back(llvm::json::Object{
        {"m", g.m}, {"n", g.n}, {"k", g.k}, {"batch", g.batch},
        {"calls", int64_t(g.calls)}, {"seconds", g.seconds},
        {"gflops_per_s", g.seconds > 0 ? number(flops / g.seconds / 1e9)
                                       : llvm::json::Value(nullptr)}});
  }
  out["gemm_profile"] = std::move(gemms);
}

int runBench(const lathe_artifact_t *art, const std::string &path,
             const Options &opts) {
  const std::string &weights = opts.require("--weights", "bench");
  int64_t promptLen = parseCount(opts, "--prompt-len", 256, 1);
  int64_t numDecode = parseCount(opts, "--decode", 128, 0);
  int64_t repeat = parseCount(opts, "--repeat", 3, 1);
  int64_t bandwidthMiB = parseCount(opts, "--bandwidth-mib", 1024, 0);
  bool profile = false;
  if (const std::string *p = opts.get("--profile")) {
    if (*p != "0" && *p != "1")
      fail("bad --profile '" + *p + "': expected 0 or 1 (or --profile alone)");
    profile = *p == "1";
  }
  constexpr int kBandwidthThreads = 2;
  // Passes of each pattern after each repeat.
  constexpr int kBandwidthPassesPerRepeat = 2;
  constexpr uint64_t kSlackBytes = uint64_t(64) << 20;

  int64_t maxSeq = lathe_artifact_max_seq(art);
  int64_t vocab = lathe_artifact_vocab(art);
  if (promptLen > maxSeq)
    fail("bad --prompt-len '" + std::to_string(promptLen) +
         "': the artifact's max_seq is " + std::to_string(maxSeq));
  if (promptLen + numDecode > maxSeq)
    fail("bad --decode '" + std::to_string(numDecode) + "': the prompt (" +
         std::to_string(promptLen) + " tokens) and the decoded tokens must "
         "fit in max_seq (" + std::to_string(maxSeq) + ")");
  const char *prefillName = lathe_artifact_prefill_entry(art, size_t(promptLen));
  if (!prefillName)
    fail(path + ": this artifact has no prefill entry (bench needs prefill)");
  size_t prefillEntry = entryIndex(art, prefillName);
  size_t decodeEntry = entryIndex(art, "decode");
  if (numDecode > 0 && decodeEntry == size_t(-1))
    fail(path + ": this artifact has no decode entry (bench --decode " +
         std::to_string(numDecode) + " needs one; use --decode 0)");

  // A fixed text, cycled, one byte per token (clipped into the vocabulary):
  // every run and every build sees the same prompt.
  static const char kText[] =
      "It was the best of times, it was the worst of times, it was the age "
      "of wisdom, it was the age of foolishness, it was the epoch of belief, "
      "it was the epoch of incredulity, it was the season of Light, it was "
      "the season of Darkness.\n";
  std::vector<int32_t> prompt(static_cast<size_t>(promptLen));
  for (size_t i = 0; i < prompt.size(); ++i)
    prompt[i] = int32_t(uint8_t(kText[i % (sizeof kText - 1)]) % vocab);

  uint64_t llc = lastLevelCacheBytes();
  uint64_t bwBytes = uint64_t(bandwidthMiB) << 20;
  BandwidthProbe probe;
  Bandwidth bw;
  if (bwBytes) {
    if (llc && bwBytes < 4 * llc)
      std::fprintf(stderr,
                   "bench: warning: the bandwidth buffer (%llu bytes) is "
                   "smaller than 4x the last-level cache (%llu bytes)\n",
                   (unsigned long long)bwBytes, (unsigned long long)llc);
    // Before the session exists, so that the helper shares none of it.
    probe.start(bwBytes, kBandwidthThreads);
  }

  uint64_t rssAtStart = currentRssBytes();
  std::fprintf(stderr, "bench: loading %s\n", weights.c_str());
  auto loadStart = Clock::now();
  SessionPtr session = openSession(art, weights);
  double loadSeconds = secondsSince(loadStart);
  uint64_t peakAfterLoad = peakRssBytes();
  lathe_session_set_profiling(session.get(), profile);
  if (bwBytes)
    probe.waitReady();

  std::vector<float> logits(size_t(promptLen) * size_t(vocab));
  std::vector<float> row(static_cast<size_t>(vocab));
  std::vector<double> prefillSeconds, decodeSeconds;
  for (int64_t r = 0; r < repeat; ++r) {
    std::fprintf(stderr, "bench: repeat %lld/%lld: prefill %lld tokens (%s)\n",
                 (long long)(r + 1), (long long)repeat, (long long)promptLen,
                 prefillName);
    auto start = Clock::now();
    check(lathe_session_prefill(session.get(), prompt.data(), prompt.size(),
                                logits.data()));
    prefillSeconds.push_back(secondsSince(start));
    if (numDecode > 0) {
      std::fprintf(stderr, "bench: repeat %lld/%lld: decode %lld tokens\n",
                   (long long)(r + 1), (long long)repeat,
                   (long long)numDecode);
      // Greedy decoding from the last prompt row: the tokens a user would
      // see.
      const float *last = logits.data() + (prompt.size() - 1) * size_t(vocab);
      int32_t token = argmaxToken(last, vocab);
      start = Clock::now();
      for (int64_t i = 0; i < numDecode; ++i) {
        check(lathe_session_decode(session.get(), token,
                                   size_t(promptLen + i), row.data()));
        token = argmaxToken(row.data(), vocab);
      }
      decodeSeconds.push_back(secondsSince(start));
    }
    if (bwBytes) {
      std::fprintf(stderr,
                   "bench: repeat %lld/%lld: read bandwidth over %lld MiB, "
                   "%d threads\n",
                   (long long)(r + 1), (long long)repeat,
                   (long long)bandwidthMiB, kBandwidthThreads);
      for (int p = 0; p < kBandwidthPassesPerRepeat; ++p)
        probe.measure(bw);
    }
  }
  if (bwBytes)
    finishBandwidth(bw);
  uint64_t peakRss = peakRssBytes();

  uint64_t weightBytes = lathe_artifact_param_bytes(art);
  uint64_t kvBytes = 0;
  for (size_t i = 0; i < lathe_artifact_state_count(art); ++i) {
    uint64_t n = dtypeBytes(lathe_artifact_state_dtype(art, i));
    for (size_t d = 0; d < lathe_artifact_state_rank(art, i); ++d)
      n *= uint64_t(lathe_artifact_state_dim(art, i, d));
    kvBytes += n;
  }
  uint64_t arenaBytes = lathe_artifact_arena_bytes(art);
  uint64_t budget = weightBytes + kvBytes + arenaBytes + kSlackBytes;


  double prefillMedian = median(prefillSeconds);
  double decodeMedian = median(decodeSeconds);
  double prefillTps = double(promptLen) / prefillMedian;
  double decodeTps =
      numDecode ? double(numDecode) / decodeMedian : std::nan("");
  uint64_t prefillFlops = entryFlops(art, prefillEntry);
  uint64_t decodeFlops =
      decodeEntry == size_t(-1) ? 0 : entryFlops(art, decodeEntry);
  // Every decode step reads every weight once (the bound ignores the KV
  // cache and activations, so it is optimistic).
  double boundTps = bwBytes && weightBytes
                        ? bw.medianGBs * 1e9 / double(weightBytes)
                        : std::nan("");

  llvm::json::Object out;
  out["artifact"] = path;
  out["model"] = lathe_artifact_model_name(art);
  out["target"] = lathe_artifact_target(art);
  out["device"] = lathe_session_device(session.get());
  out["vocab"] = vocab;
  out["max_seq"] = maxSeq;
  out["prompt_len"] = promptLen;
  out["decode_tokens"] = numDecode;
  out["repeat"] = repeat;
  out["load_seconds"] = loadSeconds;

  out["prefill_entry"] = prefillName;
  out["prefill_kernels"] = int64_t(lathe_artifact_launch_count(art, prefillEntry));
  out["prefill_seconds"] = numbers(prefillSeconds);
  out["prefill_median_seconds"] = prefillMedian;
  out["prefill_tokens_per_s"] = number(prefillTps);
  out["prefill_flops"] = int64_t(prefillFlops);
  out["prefill_gflops_per_s"] =
      prefillFlops ? number(double(prefillFlops) / prefillMedian / 1e9)
                   : llvm::json::Value(nullptr);

  if (decodeEntry == size_t(-1))
    out["decode_kernels"] = nullptr;
  else
    out["decode_kernels"] = int64_t(lathe_artifact_launch_count(art, decodeEntry));
  out["decode_seconds"] = numbers(decodeSeconds);
  out["decode_median_seconds"] = numDecode ? number(decodeMedian)
                                           : llvm::json::Value(nullptr);
  out["decode_tokens_per_s"] = number(decodeTps);
  out["decode_flops_per_token"] = int64_t(decodeFlops);
  out["decode_gflops_per_s"] =
      numDecode && decodeFlops
          ? number(double(decodeFlops) * double(numDecode) / decodeMedian / 1e9)
          : llvm::json::Value(nullptr);

  out["peak_rss_bytes"] = int64_t(peakRss);
  out["peak_rss_after_load_bytes"] = int64_t(peakAfterLoad);
  // The process before the session (code, libLLVM, libc): part of the peak.
  out["rss_before_load_bytes"] = int64_t(rssAtStart);
  out["weights_bytes"] = int64_t(weightBytes);
  out["kv_cache_bytes"] = int64_t(kvBytes);
  out["arena_bytes"] = int64_t(arenaBytes);
  out["rss_slack_bytes"] = int64_t(kSlackBytes);
  out["rss_budget_bytes"] = int64_t(budget);
  out["rss_within_budget"] = peakRss <= budget;

  out["bandwidth_threads"] = kBandwidthThreads;
  out["bandwidth_buffer_bytes"] = int64_t(bwBytes);
  out["llc_bytes"] = int64_t(llc);
  out["bandwidth_streams"] = int64_t(kBandwidthStreams);
  out["bandwidth_passes_gbs"] = numbers(bw.singleGBs);
  out["bandwidth_multi_stream_passes_gbs"] = numbers(bw.multiGBs);
  out["read_bandwidth_single_stream_gbs"] =
      bwBytes ? number(bw.singleMedianGBs) : llvm::json::Value(nullptr);
  out["read_bandwidth_multi_stream_gbs"] =
      bwBytes ? number(bw.multiMedianGBs) : llvm::json::Value(nullptr);
  // The bound uses the faster pattern: the machine can read that fast.
  out["read_bandwidth_gbs"] =
      bwBytes ? number(bw.medianGBs) : llvm::json::Value(nullptr);
  out["decode_bytes_per_token"] = int64_t(weightBytes);
  out["decode_bound_tokens_per_s"] = number(boundTps);
  out["decode_vs_bound"] = number(decodeTps / boundTps);

  out["profiled"] = profile;
  if (profile) {
    addProfile(art, session.get(), out);
  }

  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv("{0:2}", llvm::json::Value(std::move(out)));
  os.flush();
  std::fputs(text.c_str(), stdout);
  std::fputc('\n', stdout);
  return 0;
}

} // namespace

// ---------------------------------------------------------------- train

// The training window of an artifact from lathec --train; an inference
// artifact is refused.
size_t requireTrainWindow(const lathe_artifact_t *art, const std::string &path) {
  size_t window = lathe_artifact_train_seq(art);
  if (!window)
    fail(path + ": this artifact was compiled for inference; it has no "
         "training entries (compile it with lathec --train)");
  return window;
}

// --batch for train and bench-train: 4 sequences by default (rounded up to
// the sequences an artifact packs per pass), and always a multiple of them.
int64_t parseTrainBatch(const lathe_artifact_t *art, const Options &opts) {
  int64_t packed = int64_t(std::max<size_t>(1, lathe_artifact_train_batch(art)));
  int64_t batch =
      parseCount(opts, "--batch", (4 + packed - 1) / packed * packed, 1);
  if (batch % packed != 0)
    fail("bad --batch '" + std::to_string(batch) + "': this artifact trains " +
         std::to_string(packed) + " sequences per pass (lathec --train-batch " +
         std::to_string(packed) + "), so --batch must be a multiple of " +
         std::to_string(packed));
  return batch;
}

// The bytes of `path` as tokens, at most `limit` of them.
std::vector<int32_t> readByteTokens(const std::string &path,
                                    size_t limit = SIZE_MAX) {
  FILE *f = std::fopen(path.c_str(), "rb");
  if (!f)
    fail(path + ": cannot read: " + std::strerror(errno));
  std::vector<int32_t> bytes;
  for (int c; bytes.size() < limit && (c = std::fgetc(f)) != EOF;)
    bytes.push_back(int32_t(c));
  std::fclose(f);
  return bytes;
}


// Linear warmup from 0, then cosine decay to minLr at `total`; step t (from
// 1) is the t-th update (the convention of test/reference/train.py).
double learningRate(int64_t t, double lr, int64_t warmup, int64_t total,
                    double minLr) {
  if (t < warmup)
    return lr * double(t) / double(warmup);
  if (t >= total || total == warmup)
    return t >= total ? minLr : lr;
  double progress = double(t - warmup) / double(total - warmup);
  return minLr + (lr - minLr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

std::string formatDuration(double seconds) {
  int64_t s = int64_t(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(s / 3600),
                (long long)(s / 60 % 60), (long long)(s % 60));
  return buf;
}

// path without its .safetensors extension, plus `suffix`.
std::string besideWeights(const std::string &path, const std::string &suffix) {
  std::string stem = path;
  const std::string ext = ".safetensors";
  if (stem.size() > ext.size() &&
      stem.compare(stem.size() - ext.size(), ext.size(), ext) == 0)
    stem.resize(stem.size() - ext.size());
  return stem + suffix;
}

struct LogRow {
  int64_t step;
  double lr, loss, gradNorm, tokensPerSecond, elapsed;
  double valLoss; // NaN when not evaluated at this step
};

// The loss curve as an SVG line chart: train loss per step, held-out loss
// at each evaluation.
std::string lossCurveSvg(const std::vector<LogRow> &rows,
                         const std::string &title) {
  const double W = 640, H = 360, left = 56, right = 16, top = 32, bottom = 40;
  double lo = INFINITY, hi = -INFINITY;
  int64_t last = 1;
  for (const LogRow &r : rows) {
    for (double v : {r.loss, r.valLoss})
      if (std::isfinite(v))
        lo = std::min(lo, v), hi = std::max(hi, v);
    last = std::max(last, r.step);
  }
  if (!std::isfinite(lo))
    lo = 0, hi = 1;
  if (hi - lo < 1e-6)
    hi = lo + 1;
  auto x = [&](double step) {
    return left + (W - left - right) * step / double(last);
  };
  auto y = [&](double v) {
    return top + (H - top - bottom) * (hi - v) / (hi - lo);
  };
  std::string out;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" "
                "height=\"%g\" font-family=\"sans-serif\" font-size=\"12\">\n"
                "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                W, H);
  out += buf;
  std::snprintf(buf, sizeof buf,
                "<text x=\"%g\" y=\"20\">%s: loss (train blue, held-out "
                "orange)</text>\n",
                left, title.c_str());
  out += buf;
  std::snprintf(buf, sizeof buf,
                "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" "
                "stroke=\"black\"/>\n<line x1=\"%g\" y1=\"%g\" x2=\"%g\" "
                "y2=\"%g\" stroke=\"black\"/>\n",
                left, top, left, H - bottom, left, H - bottom, W - right,
                H - bottom);
  out += buf;
  for (int i = 0; i <= 4; ++i) {
    double v = lo + (hi - lo) * i / 4;
    std::snprintf(buf, sizeof buf,
                  "<text x=\"4\" y=\"%g\">%.3f</text>\n", y(v) + 4, v);
    out += buf;
  }
  std::snprintf(buf, sizeof buf,
                "<text x=\"%g\" y=\"%g\">step %lld</text>\n", W - right - 70,
                H - 12, (long long)last);
  out += buf;
  auto polyline = [&](bool val, const char *color) {
    std::string pts;
    for (const LogRow &r : rows) {
      double v = val ? r.valLoss : r.loss;
      if (!std::isfinite(v))
        continue;
      std::snprintf(buf, sizeof buf, "%.1f,%.1f ", x(double(r.step)), y(v));
      pts += buf;
    }
    if (!pts.empty())
      out += "<polyline fill=\"none\" stroke=\"" + std::string(color) +
             "\" stroke-width=\"1.5\" points=\"" + pts + "\"/>\n";
  };
  polyline(false, "#1f77b4");
  polyline(true, "#ff7f0e");
  out += "</svg>\n";
  return out;
}

// Writes `text` to `path` through a temporary file renamed over it.
void writeTextAtomically(const std::string &path, const std::string &text) {
  std::string tmp = path + ".tmp";
  FILE *f = std::fopen(tmp.c_str(), "wb");
  if (!f)
    fail(path + ": cannot write: " + std::strerror(errno));
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  ok &= std::fclose(f) == 0;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    fail(path + ": cannot write: " + std::strerror(errno));
  }
}

// One optimizer step on given sequences ("1,2,3;4,5,6": one per batch row),
// from --weights (and the optimizer state in --resume): what the tests hold
// against a reference step.
int runTrainStep(const lathe_artifact_t *art, const Options &opts) {
  auto rows = [&](const char *name) {
    std::vector<int32_t> all;
    size_t width = 0, count = 0;
    std::string list = opts.require(name, "train-step");
    size_t begin = 0;
    while (begin <= list.size()) {
      size_t end = list.find(';', begin);
      if (end == std::string::npos)
        end = list.size();
      std::vector<int32_t> row = parseTokens(list.substr(begin, end - begin));
      if (count && row.size() != width)
        fail(std::string("train-step: every ") + name +
             " row needs the same length");
      width = row.size();
      ++count;
      all.insert(all.end(), row.begin(), row.end());
      begin = end + 1;
    }
    return std::make_pair(all, std::make_pair(count, width));
  };
  auto [tokens, shape] = rows("--tokens");
  auto [targets, targetShape] = rows("--targets");
  if (shape != targetShape)
    fail("train-step: --tokens and --targets need the same rows and lengths");
  double lr = 0;
  if (!parseDouble(opts.require("--lr", "train-step"), lr) || !(lr >= 0))
    fail("bad --lr: expected a number >= 0");
  int64_t step = parseCount(opts, "--step", 1, 1);
  const std::string &out = opts.require("--out", "train-step");
  SessionPtr session =
      openSession(art, opts.require("--weights", "train-step"));
  if (const std::string *resume = opts.get("--resume")) {
    int64_t at = 0;
    check(lathe_session_load_optimizer(session.get(), resume->c_str(), &at));
  }
  float loss = 0, norm = 0;
  check(lathe_session_train_step(session.get(), tokens.data(), targets.data(),
                                 shape.first, shape.second, float(lr), step,
                                 &loss, &norm));
  check(lathe_session_save(session.get(), out.c_str(), 1, step, nullptr,
                           nullptr, 0));
  std::printf("loss %.6f grad_norm %.6f\n", double(loss), double(norm));
  printTrainDraws(session.get());
  return 0;
}

int runTrain(const lathe_artifact_t *art, const std::string &path,
             const Options &opts) {
  size_t window = requireTrainWindow(art, path);
  const std::string &dataPath = opts.require("--data", "train");
  const std::string &outPath = opts.require("--out", "train");
  int64_t steps = parseCount(opts, "--steps", 200, 1);
  int64_t batch = parseTrainBatch(art, opts);
  int64_t maxSeq = lathe_artifact_max_seq(art);
  int64_t seq = parseCount(opts, "--seq", int64_t(window), 1);
  if (seq > maxSeq)
    fail("bad --seq '" + std::to_string(seq) + "': the artifact's max_seq is " +
         std::to_string(maxSeq));
  if (seq != int64_t(window))
    fail("bad --seq '" + std::to_string(seq) + "': this artifact trains on "
         "windows of " + std::to_string(window) +
         " tokens (compile with lathec --train --train-seq " +
         std::to_string(seq) + ")");
  auto real = [&](const char *name, double dflt, double lo) {
    const std::string *v = opts.get(name);
    double out = dflt;
    if (v && (!parseDouble(*v, out) || !(out >= lo)))
      fail(std::string("bad ") + name + " '" + *v + "': expected a number >= " +
           std::to_string(lo));
    return out;
  };
  double lr = real("--lr", 1e-3, 0.0);
  double minLr = real("--min-lr", lr / 10, 0.0);
  int64_t warmup = parseCount(opts, "--warmup", std::min<int64_t>(steps / 10, 100), 0);
  int64_t evalEvery = parseCount(opts, "--eval-every", std::max<int64_t>(steps / 10, 1), 1);
  int64_t evalBatches = parseCount(opts, "--eval-batches", 4, 1);
  int64_t seed = parseCount(opts, "--seed", 0, 0);
  int64_t vocab = lathe_artifact_vocab(art);
  if (vocab < 256)
    fail(path + ": training reads bytes as tokens, which needs vocab >= 256, "
         "not " + std::to_string(vocab));

  // The output directory must take files before any time is spent; what
  // is there already (an earlier run's checkpoint and log) stays as it is.
  std::string csvPath = besideWeights(outPath, ".csv");
  std::string svgPath = besideWeights(outPath, ".svg");
  {
    std::string probe = csvPath + ".tmp";
    FILE *p = std::fopen(probe.c_str(), "wb");
    if (!p)
      fail(csvPath + ": cannot write: " + std::strerror(errno));
    std::fclose(p);
    std::remove(probe.c_str());
  }

  // Bytes are tokens; the last tenth is held out.
  std::vector<int32_t> data = readByteTokens(dataPath);
  size_t need = size_t(seq + 1);
  size_t held = data.size() / 10;
  if (data.size() < 10 * need || held < need)
    fail(dataPath + ": " + std::to_string(data.size()) +
         " bytes is too short to train on windows of " + std::to_string(seq) +
         " tokens (needs at least " + std::to_string(10 * need) +
         ", a tenth of it held out)");
  std::vector<int32_t> trainData(data.begin(), data.end() - long(held));
  std::vector<int32_t> valData(data.end() - long(held), data.end());

  // Weights: --resume (weights and optimizer state), --weights, or the
  // spec's init.
  int64_t done = 0;
  SessionPtr session;
  std::string initPath;
  if (const std::string *resume = opts.get("--resume")) {
    session = openSession(art, *resume);
    check(lathe_session_load_optimizer(session.get(), resume->c_str(), &done));
    std::fprintf(stderr, "train: resumed %s at step %lld\n", resume->c_str(),
                 (long long)done);
  } else if (const std::string *w = opts.get("--weights")) {
    session = openSession(art, *w);
  } else {
    initPath = besideWeights(outPath, ".init.safetensors");
    check(lathe_weights_init(art, uint64_t(seed), initPath.c_str()));
    session = openSession(art, initPath);
    std::remove(initPath.c_str());
  }
  if (done >= steps)
    fail("the checkpoint is at step " + std::to_string(done) +
         ", already --steps " + std::to_string(steps));

  // Windows: seq + 1 bytes from a random offset; the held-out windows are
  // fixed, so every evaluation sees the same text.
  Rng rng{uint64_t(seed) * 0x2545f4914f6cdd1dull + uint64_t(done)};
  auto sample = [&](const std::vector<int32_t> &src, Rng &r,
                    std::vector<int32_t> &tokens, std::vector<int32_t> &targets,
                    int64_t count) {
    tokens.resize(size_t(count * seq));
    targets.resize(size_t(count * seq));
    for (int64_t b = 0; b < count; ++b) {
      size_t start = size_t(r.next() % uint64_t(src.size() - need + 1));
      for (int64_t t = 0; t < seq; ++t) {
        tokens[size_t(b * seq + t)] = src[start + size_t(t)];
        targets[size_t(b * seq + t)] = src[start + size_t(t) + 1];
      }
    }
  };
  std::vector<int32_t> valTokens, valTargets;
  Rng valRng{uint64_t(seed) + 17};
  sample(valData, valRng, valTokens, valTargets, evalBatches);
  auto evaluate = [&]() {
    float loss = 0;
    check(lathe_session_eval_loss(session.get(), valTokens.data(),
                                  valTargets.data(), size_t(evalBatches),
                                  size_t(seq), &loss));
    return double(loss);
  };

  std::string model = lathe_artifact_model_name(art);
  const char *metaKeys[] = {"lathe.model", "lathe.data"};
  const char *metaValues[] = {model.c_str(), dataPath.c_str()};
  auto save = [&](int64_t step) {
    check(lathe_session_save(session.get(), outPath.c_str(), 1, step, metaKeys,
                             metaValues, 2));
  };

  std::vector<LogRow> rows;
  std::string csv = "step,lr,loss,grad_norm,val_loss,tokens_per_s,elapsed_s\n";
  bool tty = isatty(fileno(stderr));
  std::fprintf(stderr,
               "train: %s, %lld steps of %lld x %lld tokens, lr %g (warmup "
               "%lld, cosine to %g), %zu training bytes, %zu held out\n",
               model.c_str(), (long long)steps, (long long)batch,
               (long long)seq, lr, (long long)warmup, minLr, trainData.size(),
               valData.size());
  double first = evaluate();
  std::fprintf(stderr, "train: step %lld held-out loss %.4f\n", (long long)done,
               first);
  rows.push_back({done, 0, NAN, NAN, 0, 0, first});
  csv += std::to_string(done) + ",,,," + std::to_string(first) + ",,0\n";
  auto start = Clock::now();
  std::vector<int32_t> tokens, targets;
  for (int64_t step = done + 1; step <= steps; ++step) {
    sample(trainData, rng, tokens, targets, batch);
    double stepLr = learningRate(step, lr, warmup, steps, minLr);
    float loss = 0, norm = 0;
    auto t0 = Clock::now();
    check(lathe_session_train_step(session.get(), tokens.data(),
                                   targets.data(), size_t(batch), size_t(seq),
                                   float(stepLr), step, &loss, &norm));
    double took = secondsSince(t0), elapsed = secondsSince(start);
    double tps = double(batch * seq) / took;
    double eta = elapsed / double(step - done) * double(steps - step);
    LogRow row{step, stepLr, loss, norm, tps, elapsed, NAN};
    bool evalNow = step % evalEvery == 0 || step == steps;
    if (evalNow)
      row.valLoss = evaluate();
    rows.push_back(row);
    char line[256];
    std::snprintf(line, sizeof line,
                  "%lld,%.6g,%.6f,%.6f,%s,%.1f,%.3f\n", (long long)step,
                  stepLr, double(loss), double(norm),
                  evalNow ? std::to_string(row.valLoss).c_str() : "",
                  tps, elapsed);
    csv += line;
    int width = 24;
    int filled = int(double(width) * double(step) / double(steps));
    std::string bar = std::string(size_t(filled), '#') +
                      std::string(size_t(width - filled), '.');
    if (tty || evalNow || step == done + 1)
      std::fprintf(stderr,
                   "%s[%s] step %lld/%lld loss %.4f | %.0f tok/s | ETA %s%s",
                   tty ? "\r" : "", bar.c_str(), (long long)step,
                   (long long)steps, double(loss), tps,
                   formatDuration(eta).c_str(), tty ? "" : "\n");
    if (evalNow) {
      std::fprintf(stderr, "%sheld-out loss %.4f at step %lld\n",
                   tty ? "\n" : "", row.valLoss, (long long)step);
      // A checkpoint at every evaluation: weights, optimizer state, log
      // and plot, each written atomically.
      save(step);
      writeTextAtomically(csvPath, csv);
      writeTextAtomically(svgPath, lossCurveSvg(rows, model));
    }
  }
  std::fprintf(stderr, "train: wrote %s, %s and %s\n", outPath.c_str(),
               csvPath.c_str(), svgPath.c_str());
  return 0;
}

// ---------------------------------------------------------------- bench-train

// Times optimizer steps of --batch windows of the training length: the
// benchmark's training side. Windows are consecutive from the start of
// --data (bytes as tokens), so a peer can take exactly the same ones: step
// s, row b reads bytes [(s B + b)(T + 1), ... + T + 1).
/// The FLOPs of the train step just run: batch x accumulate_grad and one
/// optimizer step; with LoopUS's deep supervision, per sequence the
/// encoder, max(S) + 1 gated passes and |S| supervised steps, and |S|
/// optimizer steps, S the supervised steps drawn.
uint64_t trainStepFlops(const lathe_artifact_t *art,
                        const lathe_session_t *session, int64_t batch) {
  uint64_t accumulate = entryFlops(art, entryIndex(art, "accumulate_grad"));
  uint64_t optimizer = entryFlops(art, entryIndex(art, "optimizer_step"));
  std::vector<int64_t> chosen(lathe_session_last_supervision(session, nullptr, 0));
  if (chosen.empty()) {
    // A pass packs train_batch sequences (the schedule's count covers them).
    uint64_t passes = uint64_t(batch) /
                      std::max<size_t>(1, lathe_artifact_train_batch(art));
    return passes * accumulate + optimizer;
  }
  lathe_session_last_supervision(session, chosen.data(), chosen.size());
  uint64_t n = chosen.size(), passes = uint64_t(chosen.back()) + 1;
  return uint64_t(batch) *
             (entryFlops(art, entryIndex(art, "loopus_encode")) +
              passes * entryFlops(art, entryIndex(art, "loopus_advance")) +
              n * accumulate) +
         n * optimizer;
}

int runBenchTrain(const lathe_artifact_t *art, const std::string &path,
                  const Options &opts) {
  size_t window = requireTrainWindow(art, path);
  int64_t batch = parseTrainBatch(art, opts);
  int64_t steps = parseCount(opts, "--steps", 5, 1);
  int64_t warmupSteps = parseCount(opts, "--warmup-steps", 1, 0);
  int64_t seq = int64_t(window);
  double lr = 1e-4;
  if (const std::string *v = opts.get("--lr"))
    if (!parseDouble(*v, lr) || !(lr >= 0))
      fail("bad --lr '" + *v + "': expected a number >= 0");
  bool profile = false;
  if (const std::string *p = opts.get("--profile")) {
    if (*p != "0" && *p != "1")
      fail("bad --profile '" + *p + "': expected 0 or 1 (or --profile alone)");
    profile = *p == "1";
  }
  size_t need = size_t((warmupSteps + steps) * batch * (seq + 1));
  std::vector<int32_t> bytes;
  std::string dataPath = "synthetic";
  if (const std::string *d = opts.get("--data")) {
    dataPath = *d;
    bytes = readByteTokens(*d, need);
    if (bytes.size() < need)
      fail(*d + ": " + std::to_string(bytes.size()) + " bytes is too short "
           "for " + std::to_string(warmupSteps + steps) + " steps of " +
           std::to_string(batch) + " windows of " + std::to_string(seq + 1) +
           " bytes");
  } else {
    Rng rng{0};
    int64_t vocab = lathe_artifact_vocab(art);
    for (size_t i = 0; i < need; ++i)
      bytes.push_back(int32_t(rng.next() % uint64_t(std::min<int64_t>(vocab, 256))));
  }

  uint64_t rssAtStart = currentRssBytes();
  SessionPtr session;
  if (const std::string *w = opts.get("--weights")) {
    session = openSession(art, *w);
  } else {
    char tmpl[] = "/tmp/lathe-bench-train-XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd < 0)
      fail(std::string("cannot create a temporary file: ") +
           std::strerror(errno));
    ::close(fd);
    check(lathe_weights_init(art, 0, tmpl));
    session = openSession(art, tmpl);
    std::remove(tmpl);
  }

  std::vector<int32_t> tokens(size_t(batch * seq)), targets(tokens.size());
  std::vector<double> stepSeconds, stepFlops, losses, norms;
  for (int64_t s = 0; s < warmupSteps + steps; ++s) {
    for (int64_t b = 0; b < batch; ++b) {
      size_t start = size_t((s * batch + b) * (seq + 1));
      for (int64_t t = 0; t < seq; ++t) {
        tokens[size_t(b * seq + t)] = bytes[start + size_t(t)];
        targets[size_t(b * seq + t)] = bytes[start + size_t(t) + 1];
      }
    }
    if (s == warmupSteps)
      lathe_session_set_profiling(session.get(), profile);
    float loss = 0, norm = 0;
    auto t0 = Clock::now();
    check(lathe_session_train_step(session.get(), tokens.data(),
                                   targets.data(), size_t(batch), size_t(seq),
                                   float(lr), s + 1, &loss, &norm));
    double took = secondsSince(t0);
    std::fprintf(stderr, "bench-train: step %lld/%lld%s: %.3f s, loss %.4f\n",
                 (long long)(s + 1), (long long)(warmupSteps + steps),
                 s < warmupSteps ? " (warmup)" : "", took, double(loss));
    losses.push_back(loss);
    norms.push_back(norm);
    if (s >= warmupSteps) {
      stepSeconds.push_back(took);
      stepFlops.push_back(double(trainStepFlops(art, session.get(), batch)));
    }
  }
  double flopsPerStep =
      std::accumulate(stepFlops.begin(), stepFlops.end(), 0.0) /
      double(std::max<size_t>(1, stepFlops.size()));
  double med = median(stepSeconds);
  llvm::json::Object out;
  out["artifact"] = path;
  out["model"] = lathe_artifact_model_name(art);
  out["device"] = lathe_session_device(session.get());
  out["batch"] = batch;
  out["seq"] = seq;
  out["steps"] = steps;
  out["warmup_steps"] = warmupSteps;
  out["lr"] = lr;
  out["data"] = dataPath;
  out["step_seconds"] = numbers(stepSeconds);
  out["step_median_seconds"] = med;
  out["tokens_per_s"] = double(batch * seq) / med;
  out["flops_per_step"] = int64_t(flopsPerStep);
  out["gflops_per_s"] = flopsPerStep / med / 1e9;
  out["losses"] = numbers(losses);
  out["grad_norms"] = numbers(norms);
  out["peak_rss_bytes"] = int64_t(peakRssBytes());
  out["rss_before_load_bytes"] = int64_t(rssAtStart);
  out["arena_bytes"] = int64_t(lathe_artifact_arena_bytes(art));
  out["weights_bytes"] = int64_t(lathe_artifact_param_bytes(art));
  out["profiled"] = profile;
  if (profile)
    addProfile(art, session.get(), out);
  llvm::outs() << llvm::json::Value(std::move(out)) << "\n";
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && (!std::strcmp(argv[1], "--help") ||
                    !std::strcmp(argv[1], "-h"))) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (argc < 3)
    fail("expected an artifact and a command (see lathe-run --help)");
  std::string command = argv[2];
  std::vector<std::string> allowed;
  if (command == "info")
    allowed = {};
  else if (command == "init")
    allowed = {"--seed", "-o"};
  else if (command == "forward")
    allowed = {"--weights", "--tokens", "--logits-out", "--device"};
  else if (command == "cached-forward")
    allowed = {"--weights", "--tokens", "--prefill", "--positions",
               "--logits-out", "--device"};
  else if (command == "generate")
    allowed = {"--weights", "--prompt", "-n", "--temperature", "--top-k",
               "--seed", "--device"};
  else if (command == "grad")
    allowed = {"--weights", "--tokens", "--targets", "--out", "--device",
               "--iterations",
               "--shortcut", "--supervise"};
  else if (command == "dump-ptx" || command == "dump-cubin" ||
           command == "dump-library")
    allowed = {"-o"};
  else if (command == "bench")
    allowed = {"--weights", "--prompt-len", "--decode", "--repeat",
               "--profile", "--bandwidth-mib", "--device"};
  else if (command == "bench-train")
    allowed = {"--weights", "--batch", "--steps", "--warmup-steps", "--lr",
               "--data", "--profile", "--device", "--iterations",
               "--shortcut", "--supervise"};
  else if (command == "train-step")
    allowed = {"--weights", "--tokens", "--targets", "--lr", "--step",
               "--resume", "--out", "--device", "--iterations",
               "--shortcut", "--supervise"};
  else if (command == "train")
    allowed = {"--data", "--steps", "--batch", "--seq", "--weights", "--out",
               "--lr", "--min-lr", "--warmup", "--eval-every",
               "--eval-batches", "--seed", "--resume", "--device",
               "--iterations",
               "--shortcut", "--supervise"};
  else
    fail("unknown command '" + command + "' (see lathe-run --help)");
  // dump-ptx and dump-cubin take the chip as a positional argument.
  std::string chip;
  int firstOption = 3;
  if (command == "dump-ptx" || command == "dump-cubin") {
    if (argc < 4 || argv[3][0] == '-')
      fail(command + " needs a chip, e.g. '" + command + " sm_90 -o k." +
           (command == "dump-ptx" ? "ptx" : "cubin") + "'");
    chip = argv[3];
    firstOption = 4;
  }
  Options opts;
  opts = parseOptions(argc, argv, firstOption, allowed, command,
                        command == "bench" || command == "bench-train"
                            ? std::vector<std::string>{"--profile"}
                            : std::vector<std::string>{});

  if (const std::string *device = opts.get("--device"))
    gDevice = *device;
  if (const std::string *list = opts.get("--shortcut")) {
    // Step sizes, as numbers or fractions: 0.5,0.25,0.25 or 2/4,1/4,1/4.
    llvm::SmallVector<llvm::StringRef> parts;
    llvm::StringRef(*list).split(parts, ',');
    for (llvm::StringRef part : parts) {
      auto [num, den] = part.split('/');
      double a = 0, b = 1;
      if (!parseDouble(num.str(), a) || (!den.empty() && !parseDouble(den.str(), b)) ||
          b == 0)
        fail("bad --shortcut '" + *list +
             "': expected step sizes like 0.5,0.25,0.25 or 2/4,1/4,1/4");
      gShortcut.push_back(a / b);
    }
  }
  if (const std::string *list = opts.get("--supervise")) {
    llvm::SmallVector<llvm::StringRef> parts;
    llvm::StringRef(*list).split(parts, ',');
    for (llvm::StringRef part : parts) {
      int64_t v = 0;
      if (!parseInt64(part.str(), v) || v < 0)
        fail("bad --supervise '" + *list +
             "': expected step indices like 0,3,7");
      gSupervise.push_back(v);
    }
  }
  if (const std::string *n = opts.get("--iterations"))
    if (!parseInt64(*n, gIterations) || gIterations < 1)
      fail("bad --iterations '" + *n + "': expected a count >= 1");

  lathe_artifact_t *raw = nullptr;
  check(lathe_artifact_load(argv[1], &raw));
  ArtifactPtr art(raw);
  if (command == "info")
    return runInfo(art.get());
  if (command == "init")
    return runInit(art.get(), opts);
  if (command == "dump-ptx")
    return runDumpPtx(art.get(), chip, opts);
  if (command == "dump-cubin")
    return runDumpCubin(art.get(), chip, opts);
  if (command == "dump-library")
    return runDumpLibrary(art.get(), opts);
  if (command == "cached-forward")
    return runCachedForward(art.get(), opts);
  if (command == "generate")
    return runGenerate(art.get(), argv[1], opts);
  if (command == "train")
    return runTrain(art.get(), argv[1], opts);
  if (command == "train-step")
    return runTrainStep(art.get(), opts);
  if (command == "bench-train")
    return runBenchTrain(art.get(), argv[1], opts);
  if (command == "grad")
    return runGrad(art.get(), opts);
  if (command == "bench")
    return runBench(art.get(), argv[1], opts);
  return runForward(art.get(), opts);
}
