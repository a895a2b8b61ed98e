// lathe-run: inspect an artifact, initialise weights, run a forward pass,
// generate text with the KV cache.
// A thin shell over include/lathe/runtime.h; every failure is one line
// "lathe-run: <message>" on stderr and exit code 1.
#include "lathe/runtime.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

const char *const kUsage =
    "usage: lathe-run ARTIFACT info\n"
    "       lathe-run ARTIFACT dump-ptx CHIP -o KERNELS.ptx\n"
    "       lathe-run ARTIFACT init [--seed N] -o WEIGHTS.safetensors\n"
    "       lathe-run ARTIFACT forward --weights WEIGHTS.safetensors\n"
    "                 --tokens T0,T1,... [--logits-out LOGITS.npy]\n"
    "       lathe-run ARTIFACT cached-forward --weights WEIGHTS.safetensors\n"
    "                 --tokens T0,T1,... [--prefill N] [--positions P,...]\n"
    "                 [--logits-out LOGITS.npy]\n"
    "       lathe-run ARTIFACT generate --weights WEIGHTS.safetensors\n"
    "                 --prompt TEXT -n N [--temperature T] [--top-k K]\n"
    "                 [--seed S]\n"
    "       lathe-run ARTIFACT train ...\n"
    "\n"
    "cached-forward runs the first N tokens (default 1) through prefill and\n"
    "the rest one at a time through decode, at consecutive positions unless\n"
    "--positions gives them; its output matches forward's.\n"
    "generate uses a byte-level tokenizer (vocab 256): it prints the prompt\n"
    "and each sampled byte as it comes (bytes outside ' '..'~' as \\xNN, a\n"
    "backslash as \\\\), and stops after N new tokens or when the sequence\n"
    "reaches max_seq. It samples softmax(logits / T) (T defaults to 1) over\n"
    "the top-k tokens (default: all) with a generator seeded by --seed\n"
    "(default 0); --temperature 0 is greedy (argmax, ties to the lowest id).\n"
    "train needs an artifact compiled for training (a train_step entry).\n";

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

Options parseOptions(int argc, char **argv, int first,
                     const std::vector<std::string> &allowed,
                     const std::string &command) {
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
    if (!hasValue) {
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

int runDumpPtx(const lathe_artifact_t *art, const std::string &chip,
               const Options &opts) {
  const std::string &out = opts.require("-o", "dump-ptx");
  const char *ptx = nullptr;
  check(lathe_artifact_ptx(art, chip.c_str(), &ptx));
  FILE *f = std::fopen(out.c_str(), "wb");
  if (!f)
    fail(out + ": cannot write: " + std::strerror(errno));
  size_t n = std::strlen(ptx);
  bool ok = std::fwrite(ptx, 1, n, f) == n;
  ok = std::fclose(f) == 0 && ok;
  if (!ok)
    fail(out + ": write failed");
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
    for (size_t l = 0; l < n; ++l)
      std::printf("  %zu: %s\n", l, lathe_artifact_launch_kernel(art, e, l));
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

SessionPtr openSession(const lathe_artifact_t *art,
                       const std::string &weights) {
  lathe_session_t *raw = nullptr;
  check(lathe_session_create(art, &raw));
  SessionPtr session(raw);
  check(lathe_session_load_weights(session.get(), weights.c_str()));
  return session;
}

bool hasEntry(const lathe_artifact_t *art, const char *name) {
  for (size_t e = 0; e < lathe_artifact_entry_count(art); ++e)
    if (!std::strcmp(lathe_artifact_entry_name(art, e), name))
      return true;
  return false;
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

// Printable ASCII as is, everything else as \xNN; a backslash is doubled so
// the output stays unambiguous.
void printByte(int32_t b) {
  if (b == '\\')
    std::fputs("\\\\", stdout);
  else if (b >= 0x20 && b < 0x7f)
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

int runTrain(const lathe_artifact_t *art, const std::string &path) {
  if (!hasEntry(art, "train_step"))
    fail(path + ": this artifact was compiled for inference; it has no "
         "train_step entry");
  fail(path + ": training is not implemented in this lathe-run yet");
}

} // namespace

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
    allowed = {"--weights", "--tokens", "--logits-out"};
  else if (command == "cached-forward")
    allowed = {"--weights", "--tokens", "--prefill", "--positions",
               "--logits-out"};
  else if (command == "generate")
    allowed = {"--weights", "--prompt", "-n", "--temperature", "--top-k",
               "--seed"};
  else if (command == "dump-ptx")
    allowed = {"-o"};
  else if (command != "train")
    fail("unknown command '" + command + "' (see lathe-run --help)");
  // dump-ptx takes the chip as a positional argument.
  std::string chip;
  int firstOption = 3;
  if (command == "dump-ptx") {
    if (argc < 4 || argv[3][0] == '-')
      fail("dump-ptx needs a chip, e.g. 'dump-ptx sm_90 -o k.ptx'");
    chip = argv[3];
    firstOption = 4;
  }
  // train's options are not settled yet; whatever they are, an inference
  // artifact is refused first.
  Options opts;
  if (command != "train")
    opts = parseOptions(argc, argv, firstOption, allowed, command);

  lathe_artifact_t *raw = nullptr;
  check(lathe_artifact_load(argv[1], &raw));
  ArtifactPtr art(raw);
  if (command == "info")
    return runInfo(art.get());
  if (command == "init")
    return runInit(art.get(), opts);
  if (command == "dump-ptx")
    return runDumpPtx(art.get(), chip, opts);
  if (command == "cached-forward")
    return runCachedForward(art.get(), opts);
  if (command == "generate")
    return runGenerate(art.get(), argv[1], opts);
  if (command == "train")
    return runTrain(art.get(), argv[1]);
  return runForward(art.get(), opts);
}
