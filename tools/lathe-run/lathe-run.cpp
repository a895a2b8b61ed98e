// lathe-run: inspect an artifact, initialise weights, run a forward pass.
// A thin shell over include/lathe/runtime.h; every failure is one line
// "lathe-run: <message>" on stderr and exit code 1.
#include "lathe/runtime.h"

#include <cctype>
#include <algorithm>
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
    "                 --tokens T0,T1,... [--logits-out LOGITS.npy]\n";

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

int runForward(const lathe_artifact_t *art, const Options &opts) {
  const std::string &weights = opts.require("--weights", "forward");
  std::vector<int32_t> tokens =
      parseTokens(opts.require("--tokens", "forward"));
  lathe_session_t *raw = nullptr;
  check(lathe_session_create(art, &raw));
  SessionPtr session(raw);
  check(lathe_session_load_weights(session.get(), weights.c_str()));

  int64_t vocab = lathe_artifact_vocab(art);
  // Sized for at most max_seq rows: a longer list is rejected by the runtime
  // before it writes anything, and must not cost a huge allocation first.
  size_t rows = std::min<size_t>(tokens.size(),
                                 size_t(lathe_artifact_max_seq(art)));
  std::vector<float> logits(rows * size_t(vocab));
  check(lathe_session_forward(session.get(), tokens.data(), tokens.size(),
                              logits.data()));
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
  return 0;
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
  else if (command == "dump-ptx")
    allowed = {"-o"};
  else
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
  Options opts = parseOptions(argc, argv, firstOption, allowed, command);

  lathe_artifact_t *raw = nullptr;
  check(lathe_artifact_load(argv[1], &raw));
  ArtifactPtr art(raw);
  if (command == "info")
    return runInfo(art.get());
  if (command == "init")
    return runInit(art.get(), opts);
  if (command == "dump-ptx")
    return runDumpPtx(art.get(), chip, opts);
  return runForward(art.get(), opts);
}
