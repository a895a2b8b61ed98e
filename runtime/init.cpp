// lathe_weights_init: deterministic weights from each Param's init rule.
//
// Each parameter draws from its own stream, seeded from (seed, name), so a
// parameter's values do not change when others are added, removed or
// reordered. Stream: xoshiro256** seeded through splitmix64; normals by
// Box-Muller, both outputs used, in double precision then rounded to f32.
#include "artifact.h"
#include "safetensors.h"
#include "status.h"

#include <algorithm>
#include <cmath>
#include <memory>

using namespace lathe;
using namespace lathe::rt;

namespace {

uint64_t splitmix64(uint64_t &state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a64(llvm::StringRef s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s)
    h = (h ^ c) * 0x100000001b3ull;
  return h;
}

class Xoshiro256 {
public:
  explicit Xoshiro256(uint64_t seed) {
    for (uint64_t &w : s_)
      w = splitmix64(seed);
  }
  uint64_t next() {
    uint64_t result = rotl(s_[1] * 5, 7) * 9;
    uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in (0, 1]: never 0, so log() in Box-Muller stays finite.
  double uniformOpenClosed() { return double((next() >> 11) + 1) * 0x1p-53; }

private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

void fillNormal(float *out, int64_t n, float stddev, Xoshiro256 &rng) {
  const double kTwoPi = 6.283185307179586476925286766559;
  for (int64_t i = 0; i < n; i += 2) {
    double r = std::sqrt(-2.0 * std::log(rng.uniformOpenClosed()));
    double theta = kTwoPi * rng.uniformOpenClosed();
    out[i] = float(stddev * r * std::cos(theta));
    if (i + 1 < n)
      out[i + 1] = float(stddev * r * std::sin(theta));
  }
}

// A parameter's own stream: seeded from (seed, name).
Xoshiro256 streamOf(uint64_t seed, llvm::StringRef name) {
  uint64_t s = seed ^ fnv1a64(name);
  return Xoshiro256(splitmix64(s));
}

} // namespace

extern "C" lathe_status_t lathe_weights_init(const lathe_artifact_t *artifact,
                                             uint64_t seed,
                                             const char *out_path) {
  if (!artifact || !out_path)
    return makeStatus("lathe_weights_init: null argument");
  const fb::Artifact &a = *artifact->root;
  size_t count = lathe_artifact_param_count(artifact);

  std::vector<std::unique_ptr<float[]>> storage;
  std::vector<TensorToWrite> tensors;
  for (size_t i = 0; i < count; ++i) {
    const fb::Param *p = a.params()->Get(i);
    std::string name = p->name()->str();
    if (p->dtype() != fb::DType::f32)
      return makeStatusF("{0}: param '{1}' has dtype {2}; init writes F32 "
                         "parameters only",
                         artifact->path, name, dtypeSafetensorsName(p->dtype()));
    int64_t n = *numElements(p->shape()); // checked at load
    auto data = std::unique_ptr<float[]>(new (std::nothrow) float[n ? n : 1]);
    if (!data)
      return makeStatusF("{0}: out of memory initialising param '{1}'",
                         artifact->path, name);
    switch (p->init()) {
    case fb::InitKind::zeros:
      std::fill(data.get(), data.get() + n, 0.0f);
      break;
    case fb::InitKind::ones:
      std::fill(data.get(), data.get() + n, 1.0f);
      break;
    case fb::InitKind::identity: {
      // Checked square at load.
      int64_t rows = p->shape()->Get(0);
      std::fill(data.get(), data.get() + n, 0.0f);
      for (int64_t i = 0; i < rows; ++i)
        data[i * rows + i] = 1.0f;
      break;
    }
    case fb::InitKind::constant:
      std::fill(data.get(), data.get() + n, p->value());
      break;
    case fb::InitKind::normal: {
      Xoshiro256 rng = streamOf(seed, name);
      fillNormal(data.get(), n, p->std(), rng);
      break;
    }
    case fb::InitKind::uniform: {
      Xoshiro256 rng = streamOf(seed, name);
      double bound = p->value();
      for (int64_t i = 0; i < n; ++i)
        data[i] = float(bound * (2.0 * rng.uniformOpenClosed() - 1.0));
      break;
    }
    case fb::InitKind::log_index:
      // S4D-real: A_j = -(j + 1), stored as A_log = ln(j + 1).
      for (int64_t i = 0; i < n; ++i)
        data[i] = float(std::log(double(i + 1)));
      break;
    case fb::InitKind::dt_log_uniform: {
      // Delta log-uniform in [1e-3, 0.1], clamped >= 1e-4, stored through
      // softplus^-1(Delta) = Delta + log(-expm1(-Delta)) (ARCHITECTURES.md
      // §4.3, the LoopUS gate's bias).
      Xoshiro256 rng = streamOf(seed, name);
      const double lo = std::log(1e-3), hi = std::log(0.1);
      for (int64_t i = 0; i < n; ++i) {
        double delta = std::max(
            1e-4, std::exp(lo + (hi - lo) * rng.uniformOpenClosed()));
        data[i] = float(delta + std::log(-std::expm1(-delta)));
      }
      break;
    }
    }
    tensors.push_back({name, "F32", shapeOf(p->shape()), data.get(),
                       size_t(n) * sizeof(float)});
    storage.push_back(std::move(data));
  }
  std::map<std::string, std::string> meta{
      {"format", "pt"},
      {"lathe.model", artifact->model},
      {"lathe.seed", std::to_string(seed)}};
  return writeSafetensors(out_path, tensors, meta);
}
