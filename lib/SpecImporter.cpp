//===- SpecImporter.cpp - YAML model spec to the lathe dialect ---*- C++ -*-===//
//
// The spec is read with LLVM's YAML I/O, which rejects unknown and missing
// keys with a location. Semantic checks (divisibility, positivity) run after,
// pointing at the offending key's value; then the module is built with every
// op located at the spec line it comes from.
//
//===----------------------------------------------------------------------===//

#include "lathe/SpecImporter.h"

#include "lathe/LatheOps.h"
#include "lathe/Taper.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/YAMLParser.h"

#include <cmath>
#include "llvm/Support/YAMLTraits.h"

#include <cmath>

using namespace mlir;
using namespace mlir::lathe;

namespace {

struct TaperSpec {
  std::string schedule = "cosine";
  double max = 1.5, min = 0.5;
  int64_t multiple = 64;
};
struct MlpSpec {
  std::string kind;
  int64_t width = 0;
  std::optional<TaperSpec> taper;
};
struct NormSpec {
  std::string kind = "rmsnorm";
  double eps = 1e-5;
};
struct AttentionSpec {
  std::string normalizer = "softmax";
};
struct RopeSpec {
  double base = 10000.0;
};
/// Three-Phase Transformer (ARCHITECTURES.md §3).
struct ThreePhaseSpec {
  int64_t phases = 3;
  bool horn = true;
};
/// Attention Residuals (ARCHITECTURES.md §2): `delta` routes additively on
/// top of the residual stream, `full` replaces the stream (Kimi Full).
struct AttnResSpec {
  std::string kind;
  double eps = 1e-6;
  std::optional<int64_t> blocks; // block and delta_block only
  // Delta AttnRes's optional pieces (§2.3), additive kinds only.
  bool nullSource = false;
  std::string gate = "none";
  bool deltaV = false;
  // §2.3's entropy bonus: training minimises CE - lambda * (the mean over
  // routing sites and tokens of the routing weights' entropy). Any kind.
  double entropyBonus = 0.0;
};
/// LoopUS's early exit (ARCHITECTURES.md §4.3).
struct HaltSpec {
  std::string mode = "threshold";
  double threshold = 0.9;
  double tolerance = 1e-2;
};
/// LoopUS's random deep supervision (ARCHITECTURES.md §4.3): per training
/// step, `supervised` distinct steps of `steps` are drawn; each is a
/// supervised step with its own optimizer update.
struct SupervisionSpec {
  std::optional<int64_t> steps, supervised; // defaults: iterations, min(5, steps)
  double beta = 1.0;
};
/// Looped blocks (ARCHITECTURES.md §4): Parcae and LoopUS split `layers`
/// into prelude + core + coda distinct blocks and run the core `iterations`
/// times; LoopFormer runs the whole stack along a trajectory.
struct LoopSpec {
  std::string kind;
  // Parcae's and LoopUS's parts (required there, refused for LoopFormer).
  std::optional<int64_t> prelude, core, coda;
  int64_t iterations = 0;
  std::optional<std::vector<double>> trajectory; // LoopFormer's step sizes
  std::optional<int64_t> rank;                   // LoopUS's gate rank
  std::optional<int64_t> backprop;               // Parcae's mu_bwd
  // Parcae's training depth: n ~ Poisson(iterations) per sequence, clamped
  // to [1, sample_max] (ARCHITECTURES.md §4.1, "poisson-truncated-full").
  std::optional<int64_t> sampleMax;
  // LoopFormer's shortcut-consistency training (ARCHITECTURES.md §4.2).
  bool shortcut = false;
  std::optional<HaltSpec> halt;                  // LoopUS's early exit
  std::optional<SupervisionSpec> supervision;    // LoopUS's training
};
struct ModelSpec {
  std::string name;
  int64_t vocab = 0, dModel = 0, layers = 0, heads = 0, kvHeads = 0,
          maxSeq = 0;
  MlpSpec mlp;
  NormSpec norm;
  RopeSpec rope;
  AttentionSpec attention;
  std::string position = "rope";
  bool bias = false;
  bool tieEmbeddings = false;
  std::optional<ThreePhaseSpec> threePhase;
  std::optional<AttnResSpec> attnRes;
  std::optional<LoopSpec> loop;
};

} // namespace

namespace llvm::yaml {
template <> struct MappingTraits<TaperSpec> {
  static void mapping(IO &io, TaperSpec &s) {
    io.mapOptional("schedule", s.schedule);
    io.mapOptional("max", s.max);
    io.mapOptional("min", s.min);
    io.mapOptional("multiple", s.multiple);
  }
};
template <> struct MappingTraits<MlpSpec> {
  static void mapping(IO &io, MlpSpec &s) {
    io.mapRequired("kind", s.kind);
    io.mapRequired("width", s.width);
    io.mapOptional("taper", s.taper);
  }
};
template <> struct MappingTraits<NormSpec> {
  static void mapping(IO &io, NormSpec &s) {
    io.mapOptional("kind", s.kind);
    io.mapOptional("eps", s.eps);
  }
};
template <> struct MappingTraits<AttentionSpec> {
  static void mapping(IO &io, AttentionSpec &s) {
    io.mapOptional("normalizer", s.normalizer);
  }
};
template <> struct MappingTraits<RopeSpec> {
  static void mapping(IO &io, RopeSpec &s) { io.mapOptional("base", s.base); }
};
template <> struct MappingTraits<ThreePhaseSpec> {
  static void mapping(IO &io, ThreePhaseSpec &s) {
    io.mapOptional("phases", s.phases);
    io.mapOptional("horn", s.horn);
  }
};
template <> struct MappingTraits<AttnResSpec> {
  static void mapping(IO &io, AttnResSpec &s) {
    io.mapRequired("kind", s.kind);
    io.mapOptional("eps", s.eps);
    io.mapOptional("blocks", s.blocks);
    io.mapOptional("null_source", s.nullSource);
    io.mapOptional("gate", s.gate);
    io.mapOptional("delta_v", s.deltaV);
    io.mapOptional("entropy_bonus", s.entropyBonus);
  }
};
template <> struct MappingTraits<LoopSpec> {
  static void mapping(IO &io, LoopSpec &s) {
    io.mapRequired("kind", s.kind);
    io.mapOptional("prelude", s.prelude);
    io.mapOptional("core", s.core);
    io.mapOptional("coda", s.coda);
    io.mapRequired("iterations", s.iterations);
    io.mapOptional("trajectory", s.trajectory);
    io.mapOptional("rank", s.rank);
    io.mapOptional("backprop", s.backprop);
    io.mapOptional("sample_max", s.sampleMax);
    io.mapOptional("shortcut", s.shortcut);
    io.mapOptional("halt", s.halt);
    io.mapOptional("supervision", s.supervision);
  }
};
template <> struct MappingTraits<SupervisionSpec> {
  static void mapping(IO &io, SupervisionSpec &s) {
    io.mapOptional("steps", s.steps);
    io.mapOptional("supervised", s.supervised);
    io.mapOptional("beta", s.beta);
  }
};
template <> struct MappingTraits<HaltSpec> {
  static void mapping(IO &io, HaltSpec &s) {
    io.mapOptional("mode", s.mode);
    io.mapOptional("threshold", s.threshold);
    io.mapOptional("tolerance", s.tolerance);
  }
};
template <> struct MappingTraits<ModelSpec> {
  static void mapping(IO &io, ModelSpec &s) {
    io.mapRequired("name", s.name);
    io.mapRequired("vocab", s.vocab);
    io.mapRequired("d_model", s.dModel);
    io.mapRequired("layers", s.layers);
    io.mapRequired("heads", s.heads);
    io.mapOptional("kv_heads", s.kvHeads, int64_t(0));
    io.mapRequired("max_seq", s.maxSeq);
    io.mapRequired("mlp", s.mlp);
    io.mapOptional("norm", s.norm);
    io.mapOptional("rope", s.rope);
    io.mapOptional("attention", s.attention);
    io.mapOptional("position", s.position);
    io.mapOptional("bias", s.bias);
    io.mapOptional("tie_embeddings", s.tieEmbeddings);
    io.mapOptional("three_phase", s.threePhase);
    io.mapOptional("attn_res", s.attnRes);
    io.mapOptional("loop", s.loop);
  }
};
} // namespace llvm::yaml

namespace {

/// Prints an LLVM diagnostic as one line: FILE:LINE:COL: error: MESSAGE.
void printOneLine(const llvm::SMDiagnostic &diag, llvm::raw_ostream &os) {
  os << diag.getFilename();
  if (diag.getLineNo() > 0)
    os << ":" << diag.getLineNo() << ":" << diag.getColumnNo() + 1;
  os << ": error: " << diag.getMessage() << "\n";
}

/// Where each key's value starts, by dotted path ("mlp.width").
void collectKeyLocations(llvm::yaml::Node *node, const std::string &prefix,
                         llvm::StringMap<llvm::SMLoc> &out) {
  auto *mapping = llvm::dyn_cast_or_null<llvm::yaml::MappingNode>(node);
  if (!mapping)
    return;
  for (llvm::yaml::KeyValueNode &kv : *mapping) {
    auto *key = llvm::dyn_cast_or_null<llvm::yaml::ScalarNode>(kv.getKey());
    if (!key)
      continue;
    llvm::SmallString<32> storage;
    std::string path = prefix + key->getValue(storage).str();
    llvm::yaml::Node *value = kv.getValue();
    out[path] = value ? value->getSourceRange().Start
                      : key->getSourceRange().Start;
    collectKeyLocations(value, path + ".", out);
  }
}

class Importer {
public:
  Importer(llvm::MemoryBufferRef buffer, MLIRContext &ctx,
           llvm::raw_ostream &errs, const TrainOptions *train,
           const ExecutionOptions *execution)
      : buffer(buffer), ctx(ctx), errs(errs), train(train),
        layerParallel(execution ? execution->layerParallel : 0) {
    sourceMgr.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBuffer(buffer),
                                 llvm::SMLoc());
  }

  OwningOpRef<ModuleOp> run() {
    if (!parse() || !validate())
      return nullptr;
    return build();
  }

private:
  bool parse() {
    auto handler = [](const llvm::SMDiagnostic &diag, void *context) {
      auto *self = static_cast<Importer *>(context);
      self->reported = true;
      printOneLine(diag, self->errs);
    };
    llvm::yaml::Input yin(buffer, nullptr, handler, this);
    yin >> spec;
    if (yin.error()) {
      // YAML I/O fails silently on a file with no document at all.
      if (!reported)
        errs << buffer.getBufferIdentifier()
             << ": error: not a model spec: the file has no YAML document\n";
      return false;
    }
    llvm::yaml::Stream stream(buffer, sourceMgr);
    for (llvm::yaml::Document &doc : stream)
      collectKeyLocations(doc.getRoot(), "", keyLocs);
    return true;
  }

  /// One-line error at the value of `key`.
  bool fail(llvm::StringRef key, const llvm::Twine &message) {
    llvm::SMLoc loc = keyLocs.lookup(key);
    printOneLine(sourceMgr.GetMessage(loc, llvm::SourceMgr::DK_Error,
                                      key + ": " + message),
                 errs);
    return false;
  }

  bool validate() {
    if (spec.kvHeads == 0)
      spec.kvHeads = spec.heads;
    struct Positive {
      const char *key;
      int64_t value;
    } positives[] = {{"vocab", spec.vocab},     {"d_model", spec.dModel},
                     {"layers", spec.layers},   {"heads", spec.heads},
                     {"kv_heads", spec.kvHeads}, {"max_seq", spec.maxSeq},
                     {"mlp.width", spec.mlp.width}};
    for (const Positive &p : positives)
      if (p.value <= 0)
        return fail(p.key, "must be positive, got " + llvm::Twine(p.value));
    if (spec.dModel % spec.heads != 0)
      return fail("heads", "heads (" + llvm::Twine(spec.heads) +
                               ") must divide d_model (" +
                               llvm::Twine(spec.dModel) + ")");
    if (spec.heads % spec.kvHeads != 0)
      return fail("kv_heads", "kv_heads (" + llvm::Twine(spec.kvHeads) +
                                  ") must divide heads (" +
                                  llvm::Twine(spec.heads) + ")");
    if (spec.position == "rope" && (spec.dModel / spec.heads) % 2 != 0)
      return fail("heads", "head_dim = d_model / heads = " +
                               llvm::Twine(spec.dModel / spec.heads) +
                               " must be even for RoPE");
    if (!symbolizeMlpKind(spec.mlp.kind))
      return fail("mlp.kind", "unknown MLP kind '" + spec.mlp.kind +
                                  "' (expected: swiglu, gelu, relu2)");
    if (spec.norm.kind != "rmsnorm" && spec.norm.kind != "layernorm")
      return fail("norm.kind", "unknown norm kind '" + spec.norm.kind +
                                   "' (expected: rmsnorm, layernorm)");
    if (!symbolizeNormalizer(spec.attention.normalizer))
      return fail("attention.normalizer",
                  "unknown normalizer '" + spec.attention.normalizer +
                      "' (expected: softmax, softpick)");
    if (spec.position != "rope" && spec.position != "learned")
      return fail("position", "unknown position encoding '" + spec.position +
                                  "' (expected: rope, learned)");
    if (!(spec.norm.eps > 0.0))
      return fail("norm.eps", "must be positive");
    if (!computeWidths())
      return false;
    if (!(spec.rope.base > 0.0))
      return fail("rope.base", "must be positive");
    return validateThreePhase() && validateAttnRes() && validateLoop() &&
           validateLayerParallel();
  }

  /// SNLP's update assumes pre-norm residual blocks, F(h) = h + g(h).
  bool validateLayerParallel() {
    if (!layerParallel)
      return true;
    for (auto [key, on] : {std::pair<const char *, bool>{"three_phase",
                                                         bool(spec.threePhase)},
                           {"attn_res", bool(spec.attnRes)},
                           {"loop", bool(spec.loop)}})
      if (on)
        return fail(key, "--layer-parallel (SNLP, ARCHITECTURES.md §4.4) "
                         "needs pre-norm residual blocks F(h) = h + g(h); " +
                             llvm::Twine(key) + " blocks are not of that form");
    return true;
  }

  bool validateLoop() {
    if (!spec.loop)
      return true;
    LoopSpec &lp = *spec.loop;
    if (lp.kind != "parcae" && lp.kind != "loopformer" && lp.kind != "loopus")
      return fail("loop.kind", "unknown loop kind '" + lp.kind +
                                   "' (expected: parcae, loopformer, loopus)");
    if (lp.backprop && lp.kind != "parcae")
      return fail("loop.backprop", "only Parcae truncates backprop through "
                                   "its iterations");
    if (lp.backprop && (*lp.backprop < 1 || *lp.backprop > lp.iterations))
      return fail("loop.backprop",
                  "must be between 1 and iterations (" +
                      llvm::Twine(lp.iterations) + "), got " +
                      llvm::Twine(*lp.backprop));
    if (lp.shortcut && lp.kind != "loopformer")
      return fail("loop.shortcut", "only LoopFormer trains a short trajectory "
                                   "against the long one");
    if (lp.shortcut && lp.iterations < 2)
      return fail("loop.shortcut", "needs iterations >= 2: the short "
                                   "trajectory has 1 to iterations - 1 steps");
    if (lp.sampleMax && lp.kind != "parcae")
      return fail("loop.sample_max", "only Parcae samples its training depth");
    if (lp.sampleMax && *lp.sampleMax < lp.iterations)
      return fail("loop.sample_max",
                  "must be at least iterations (" + llvm::Twine(lp.iterations) +
                      "), the mean of the sampled depth, got " +
                      llvm::Twine(*lp.sampleMax));
    if (lp.kind != "loopus") {
      if (lp.rank)
        return fail("loop.rank", "only LoopUS has a gate rank");
      if (lp.halt)
        return fail("loop.halt", "only LoopUS halts early");
      if (lp.supervision)
        return fail("loop.supervision",
                    "only LoopUS trains by random deep supervision");
    } else {
      if (!lp.rank)
        lp.rank = (spec.dModel + 15) / 16; // r = ceil(D / 16)
      if (*lp.rank < 1)
        return fail("loop.rank", "must be >= 1, got " + llvm::Twine(*lp.rank));
      if (!lp.halt)
        lp.halt = HaltSpec();
      const HaltSpec &h = *lp.halt;
      if (!symbolizeHaltMode(h.mode))
        return fail("loop.halt.mode",
                    "unknown halting mode '" + h.mode +
                        "' (expected: none, threshold, cdf, convergence)");
      if ((h.mode == "threshold" || h.mode == "cdf") &&
          !(h.threshold > 0.0 && h.threshold < 1.0))
        return fail("loop.halt.threshold",
                    "must be in (0, 1): it bounds a probability");
      if (!(h.tolerance > 0.0))
        return fail("loop.halt.tolerance", "must be > 0");
      if (!lp.supervision)
        lp.supervision = SupervisionSpec();
      SupervisionSpec &sup = *lp.supervision;
      if (!sup.steps)
        sup.steps = lp.iterations;
      if (*sup.steps < 1)
        return fail("loop.supervision.steps",
                    "must be >= 1, got " + llvm::Twine(*sup.steps));
      if (!sup.supervised)
        sup.supervised = std::min<int64_t>(5, *sup.steps);
      if (*sup.supervised < 1 || *sup.supervised > *sup.steps)
        return fail("loop.supervision.supervised",
                    "must be between 1 and steps (" + llvm::Twine(*sup.steps) +
                        "): the supervised steps are distinct, got " +
                        llvm::Twine(*sup.supervised));
      if (!(sup.beta >= 0.0) || !std::isfinite(sup.beta))
        return fail("loop.supervision.beta",
                    "must be a finite number >= 0");
    }
    if (lp.iterations < 1)
      return fail("loop.iterations",
                  "must be >= 1, got " + llvm::Twine(lp.iterations));
    if (lp.kind == "loopformer") {
      for (auto [key, part] : {std::pair<const char *, std::optional<int64_t>>{
                                   "loop.prelude", lp.prelude},
                               {"loop.core", lp.core},
                               {"loop.coda", lp.coda}})
        if (part)
          return fail(key, "LoopFormer loops the whole stack: drop it");
      // The trajectory: M positive step sizes that sum to 1 (uniform if
      // not given).
      if (!lp.trajectory)
        lp.trajectory = std::vector<double>(size_t(lp.iterations),
                                            1.0 / double(lp.iterations));
      const std::vector<double> &steps = *lp.trajectory;
      if (int64_t(steps.size()) != lp.iterations)
        return fail("loop.trajectory",
                    "has " + llvm::Twine(steps.size()) +
                        " step sizes for " + llvm::Twine(lp.iterations) +
                        " iterations");
      double sum = 0.0;
      for (double d : steps) {
        if (!(d > 0.0))
          return fail("loop.trajectory", "step sizes must be positive");
        sum += d;
      }
      if (std::abs(sum - 1.0) > 1e-6)
        return fail("loop.trajectory",
                    "step sizes sum to " +
                        llvm::Twine(llvm::formatv("{0:g}", sum).str()) +
                        ", not 1");
      if (spec.norm.kind != "rmsnorm")
        return fail("loop", "LoopFormer's blocks use RMSNorm modulated by "
                            "(1 + scale): needs norm.kind rmsnorm");
      lp.prelude = 0, lp.core = spec.layers, lp.coda = 0;
    } else {
      if (!lp.prelude || !lp.core || !lp.coda)
        return fail("loop", llvm::Twine(lp.kind == "loopus" ? "LoopUS" : "Parcae") +
                                " needs prelude, core and coda");
      if (lp.trajectory)
        return fail("loop.trajectory", "only LoopFormer takes a trajectory");
      if (*lp.prelude < 0)
        return fail("loop.prelude",
                    "must be >= 0, got " + llvm::Twine(*lp.prelude));
      if (*lp.coda < 0)
        return fail("loop.coda", "must be >= 0, got " + llvm::Twine(*lp.coda));
      if (*lp.core < 1)
        return fail("loop.core", "must be >= 1, got " + llvm::Twine(*lp.core));
      if (*lp.prelude + *lp.core + *lp.coda != spec.layers)
        return fail("loop", "prelude + core + coda = " +
                                llvm::Twine(*lp.prelude + *lp.core + *lp.coda) +
                                " blocks, but layers is " +
                                llvm::Twine(spec.layers));
    }
    if (spec.mlp.taper)
      return fail("loop", "a looped core shares its weights across "
                          "iterations, so its MLP widths cannot taper with "
                          "depth: drop mlp.taper");
    if (spec.attnRes || spec.threePhase)
      return fail("loop", "looped blocks are not defined together with " +
                              llvm::Twine(spec.attnRes ? "attn_res"
                                                       : "three_phase") +
                              " (ARCHITECTURES.md gives no such combination)");
    return true;
  }

  bool validateAttnRes() {
    if (!spec.attnRes)
      return true;
    const AttnResSpec &r = *spec.attnRes;
    if (r.kind != "delta" && r.kind != "full" && r.kind != "block" &&
        r.kind != "delta_block")
      return fail("attn_res.kind",
                  "unknown attention-residual kind '" + r.kind +
                      "' (expected: delta, full, block, delta_block)");
    if (!(r.eps > 0.0))
      return fail("attn_res.eps", "must be positive");
    bool blockwise = r.kind == "block" || r.kind == "delta_block";
    if (blockwise && !r.blocks)
      return fail("attn_res", "kind " + r.kind +
                                  " needs blocks: the number of layer blocks");
    if (!blockwise && r.blocks)
      return fail("attn_res.blocks",
                  "only kinds block and delta_block group layers into blocks");
    if (r.blocks && (*r.blocks < 1 || *r.blocks > spec.layers))
      return fail("attn_res.blocks", "must be between 1 and layers (" +
                                         llvm::Twine(spec.layers) + "), got " +
                                         llvm::Twine(*r.blocks));
    if (r.gate != "none" && r.gate != "sigmoid_scalar" &&
        r.gate != "sigmoid_vector" && r.gate != "learnable_alpha")
      return fail("attn_res.gate",
                  "unknown gate '" + r.gate +
                      "' (expected: none, sigmoid_scalar, sigmoid_vector, "
                      "learnable_alpha)");
    if (!(r.entropyBonus >= 0.0) || !std::isfinite(r.entropyBonus))
      return fail("attn_res.entropy_bonus",
                  "must be a finite number >= 0 (the weight lambda of the "
                  "routing entropy subtracted from the training loss)");
    bool additive = r.kind == "delta" || r.kind == "delta_block";
    for (auto [key, on] : {std::pair<const char *, bool>{"attn_res.null_source",
                                                         r.nullSource},
                           {"attn_res.gate", r.gate != "none"},
                           {"attn_res.delta_v", r.deltaV}})
      if (on && !additive)
        return fail(key, "belongs to additive routing (kind delta or "
                         "delta_block): " +
                             r.kind + " replaces the stream, so there is "
                                      "nothing to add the routed term to");
    if ((r.kind == "full" || r.kind == "block") && spec.threePhase)
      return fail("attn_res.kind",
                  r.kind + " attention residuals replace the residual stream, "
                           "so three_phase has no stream to rotate; use kind: "
                           "delta or delta_block");
    return true;
  }

  /// ARCHITECTURES.md §3.1 and §3.4: whole stripes of even width, and every
  /// head inside one stripe.
  bool validateThreePhase() {
    if (!spec.threePhase)
      return true;
    const int64_t n = spec.threePhase->phases;
    if (n <= 0)
      return fail("three_phase.phases", "must be positive, got " + llvm::Twine(n));
    if (spec.dModel % n != 0)
      return fail("three_phase.phases",
                  llvm::Twine(n) + " phases must divide d_model (" +
                      llvm::Twine(spec.dModel) + ")");
    if ((spec.dModel / n) % 2 != 0)
      return fail("three_phase.phases",
                  "the stripe width d_model / phases = " +
                      llvm::Twine(spec.dModel / n) +
                      " must be even: the phase rotation turns channel pairs");
    if (spec.heads % n != 0 || spec.kvHeads % n != 0)
      return fail("three_phase.phases",
                  llvm::Twine(n) + " phases must divide heads (" +
                      llvm::Twine(spec.heads) + ") and kv_heads (" +
                      llvm::Twine(spec.kvHeads) +
                      "), so that every head lies in one stripe");
    if (spec.norm.kind != "rmsnorm")
      return fail("three_phase",
                  "needs norm.kind rmsnorm: every norm becomes a per-phase "
                  "RMSNorm, which has no LayerNorm form");
    if (spec.position != "rope")
      return fail("three_phase", "needs position: rope (the 3PT backbone); "
                                 "the horn already encodes absolute position");
    return true;
  }

  Location locOf(llvm::StringRef key) {
    llvm::SMLoc loc = keyLocs.lookup(key);
    if (!loc.isValid())
      return FileLineColLoc::get(&ctx, buffer.getBufferIdentifier(), 0, 0);
    auto [line, col] = sourceMgr.getLineAndColumn(loc);
    return FileLineColLoc::get(&ctx, buffer.getBufferIdentifier(), line, col);
  }

  OwningOpRef<ModuleOp> build() {
    ctx.loadDialect<LatheDialect, func::FuncDialect, tensor::TensorDialect>();
    Location top = locOf("name");
    OwningOpRef<ModuleOp> module = ModuleOp::create(top);
    OpBuilder b(&ctx);
    ModuleOp m = *module;
    m->setAttr("lathe.model", b.getStringAttr(spec.name));
    m->setAttr("lathe.vocab", b.getI64IntegerAttr(spec.vocab));
    m->setAttr("lathe.max_seq", b.getI64IntegerAttr(spec.maxSeq));
    if (train && loopFormer() && spec.loop->shortcut)
      m->setAttr("lathe.shortcut_iterations",
                 b.getI64IntegerAttr(spec.loop->iterations));
    if (train && loopUS())
      m->setAttr("lathe.supervision",
                 b.getDenseI64ArrayAttr({*spec.loop->supervision->steps,
                                         *spec.loop->supervision->supervised}));
    if (train && train->batch > 1)
      m->setAttr("lathe.train_batch", b.getI64IntegerAttr(train->batch));
    if (train && spec.loop && spec.loop->sampleMax)
      m->setAttr("lathe.sampled_iterations",
                 b.getDenseI64ArrayAttr(
                     {spec.loop->iterations, *spec.loop->sampleMax}));
    // The MLP width of every layer (tapered or uniform), for --report; a
    // taper also records its schedule, whose verifier re-derives the widths.
    m->setAttr("lathe.mlp_widths", b.getDenseI64ArrayAttr(widths));
    if (const auto &t = spec.mlp.taper)
      m->setAttr("lathe.mlp_taper",
                 TaperAttr::get(&ctx, t->schedule, b.getF64FloatAttr(t->max),
                                b.getF64FloatAttr(t->min), t->multiple,
                                spec.mlp.width, widths));
    b.setInsertionPointToEnd(m.getBody());

    const int64_t T = spec.maxSeq, D = spec.dModel, V = spec.vocab,
                  H = spec.heads, K = spec.kvHeads, Dh = D / H;
    const double std = 0.02,
                 residualStd = 0.02 / std::sqrt(2.0 * spec.layers);
    auto f32 = [&](ArrayRef<int64_t> shape) {
      return RankedTensorType::get(shape, b.getF32Type());
    };
    // `s` is the std of a normal init or the value of a constant one.
    auto declare = [&](const std::string &name, RankedTensorType type,
                       InitKind init, std::optional<double> s, Location loc) {
      bool normal = init == InitKind::normal;
      // uniform takes its bound as the value, like constant.
      FloatAttr arg = s ? b.getF64FloatAttr(*s) : FloatAttr();
      ParamOp::create(b, loc, b.getStringAttr(name), TypeAttr::get(type),
                      InitKindAttr::get(&ctx, init), normal ? arg : FloatAttr(),
                      normal ? FloatAttr() : arg);
    };
    Location embLoc = locOf("vocab"), layerLoc = locOf("layers"),
             mlpLoc = locOf("mlp"), headLoc = locOf("d_model"),
             posLoc = spec.position == "learned" ? locOf("position") : embLoc;
    const bool layerNorm = spec.norm.kind == "layernorm";
    const bool learned = spec.position == "learned";
    const MlpKind mlpKind = *symbolizeMlpKind(spec.mlp.kind);
    auto declareNorm = [&](const std::string &prefix, Location loc) {
      declare(prefix + ".weight", f32({D}), InitKind::ones, {}, loc);
      if (layerNorm)
        declare(prefix + ".bias", f32({D}), InitKind::zeros, {}, loc);
    };
    auto declareLinear = [&](const std::string &prefix, int64_t out,
                             int64_t in, double s, Location loc) {
      declare(prefix + ".weight", f32({out, in}), InitKind::normal, s, loc);
      if (spec.bias)
        declare(prefix + ".bias", f32({out}), InitKind::zeros, {}, loc);
    };
    declare("embed.weight", f32({V, D}), InitKind::normal, std, embLoc);
    if (learned)
      declare("pos_embed.weight", f32({T, D}), InitKind::normal, 0.01, posLoc);
    for (int64_t l = 0; l < spec.layers; ++l) {
      std::string p = "layers." + std::to_string(l) + ".";
      // LoopFormer's block norms have no gain: (1 + scale) modulates them.
      if (!loopFormer())
        declareNorm(p + "attn_norm", layerLoc);
      declareLinear(p + "attn.wq", H * Dh, D, std, layerLoc);
      declareLinear(p + "attn.wk", K * Dh, D, std, layerLoc);
      declareLinear(p + "attn.wv", K * Dh, D, std, layerLoc);
      declareLinear(p + "attn.wo", D, H * Dh, residualStd, layerLoc);
      if (!loopFormer())
        declareNorm(p + "mlp_norm", layerLoc);
      const int64_t F = widths[l];
      if (mlpKind == MlpKind::swiglu)
        declareLinear(p + "mlp.w_gate", F, D, std, mlpLoc);
      declareLinear(p + "mlp.w_up", F, D, std, mlpLoc);
      declareLinear(p + "mlp.w_down", D, F, residualStd, mlpLoc);
    }
    if (const auto &r = spec.attnRes) {
      // A routing query and its key norm per site that has two or more
      // sources: every site but layer 0's attention (ARCHITECTURES.md §2.2,
      // §2.3); full routing also has a final site.
      Location rLoc = locOf("attn_res");
      auto site = [&](const std::string &prefix) {
        declare(prefix + ".query", f32({D}), InitKind::zeros, {}, rLoc);
        declare(prefix + ".norm", f32({D}), InitKind::ones, {}, rLoc);
        // The optional pieces of §2.3: a zero null source; gates that start
        // nearly closed (sigmoid(-2) = 0.12) or, alpha, exactly closed.
        if (r->nullSource)
          declare(prefix + ".null", f32({D}), InitKind::zeros, {}, rLoc);
        if (r->gate == "sigmoid_scalar")
          declare(prefix + ".gate", f32({1}), InitKind::constant, -2.0, rLoc);
        if (r->gate == "sigmoid_vector") {
          declare(prefix + ".gate.weight", f32({D, D}), InitKind::zeros, {}, rLoc);
          declare(prefix + ".gate.bias", f32({D}), InitKind::constant, -2.0,
                  rLoc);
        }
        if (r->gate == "learnable_alpha")
          declare(prefix + ".alpha", f32({1}), InitKind::zeros, {}, rLoc);
      };
      // Delta Block routes only once a block has completed (layer S_b on).
      int64_t first = r->kind == "delta_block" ? blockSize() : 0;
      for (int64_t l = first; l < spec.layers; ++l) {
        std::string p = "layers." + std::to_string(l) + ".attn_res.";
        if (l > 0) {
          site(p + "attn");
          // delta_v: a second site whose mixture feeds only the values.
          if (r->deltaV)
            site(p + "attn_v");
        }
        site(p + "mlp");
      }
      if (r->kind == "full" || r->kind == "block")
        site("attn_res_final");
    }
    if (loopFormer()) {
      // LoopFormer (ARCHITECTURES.md §4.2): the time and step-size
      // embedders, and per block four modulation rows, all adaLN-Zero
      // (zeros: every block starts as the identity; the released code's
      // global re-init gives the weights N(0, 0.02) instead).
      Location loopLoc = locOf("loop");
      for (const char *e : {"time_embed", "step_embed"}) {
        std::string p = e;
        declare(p + ".w1.weight", f32({D, kSinusoidFeatures}), InitKind::normal,
                std, loopLoc);
        declare(p + ".w1.bias", f32({D}), InitKind::zeros, {}, loopLoc);
        declare(p + ".w2.weight", f32({D, D}), InitKind::normal, std, loopLoc);
        declare(p + ".w2.bias", f32({D}), InitKind::zeros, {}, loopLoc);
      }
      for (int64_t l = 0; l < spec.layers; ++l)
        for (const char *m : kModulations) {
          std::string p = "layers." + std::to_string(l) + ".mod." + m;
          declare(p + ".weight", f32({D, D}), InitKind::zeros, {}, loopLoc);
          declare(p + ".bias", f32({D}), InitKind::zeros, {}, loopLoc);
        }
    } else if (loopUS()) {
      // LoopUS (ARCHITECTURES.md §4.3): the selective gate and the
      // confidence head, initialised as the released code does (nn.Linear's
      // U(+-1/sqrt(fan_in)), W_up ~ U(+-r^-1/2), A_log = ln(1..D), the bias
      // softplus^-1 of a log-uniform Delta).
      Location loopLoc = locOf("loop");
      const int64_t r = *spec.loop->rank;
      const double inD = 1.0 / std::sqrt(double(D));
      declare("gate.down.weight", f32({r, D}), InitKind::uniform, inD, loopLoc);
      declare("gate.up.weight", f32({D, r}), InitKind::uniform,
              1.0 / std::sqrt(double(r)), loopLoc);
      declare("gate.up.bias", f32({D}), InitKind::dt_log_uniform, {}, loopLoc);
      declare("gate.A_log", f32({D}), InitKind::log_index, {}, loopLoc);
      declare("confidence.norm.weight", f32({D}), InitKind::ones, {}, loopLoc);
      declare("confidence.norm.bias", f32({D}), InitKind::zeros, {}, loopLoc);
      declare("confidence.weight", f32({1, D}), InitKind::uniform, inD, loopLoc);
      declare("confidence.bias", f32({1}), InitKind::uniform, inD, loopLoc);
    } else if (spec.loop) {
      // Parcae's injection (ARCHITECTURES.md §4.1): A_log = 0 and dt_bias =
      // softplus^-1(ln 5 / 2), so Delta = 0.8047 and Abar = sqrt(1/5) per
      // channel; B = I; the coda projection starts as the identity too.
      Location loopLoc = locOf("loop");
      declareNorm("prelude_norm", loopLoc);
      declare("injection.A_log", f32({D}), InitKind::zeros, {}, loopLoc);
      declare("injection.dt_bias", f32({D}), InitKind::constant,
              std::log(std::sqrt(5.0) - 1.0), loopLoc);
      declare("injection.B", f32({D, D}), InitKind::identity, {}, loopLoc);
      declare("coda_proj.weight", f32({D, D}), InitKind::identity, {}, loopLoc);
    }
    if (const auto &tp = spec.threePhase) {
      // One angle per channel pair of a stripe, per block, starting on the
      // depth-linear schedule (l + 1) pi / (2 L) (ARCHITECTURES.md §3.3).
      Location tpLoc = locOf("three_phase");
      for (int64_t l = 0; l < spec.layers; ++l)
        declare("layers." + std::to_string(l) + ".rotation.theta",
                f32({D / tp->phases / 2}), InitKind::constant,
                (l + 1) * M_PI / (2.0 * spec.layers), tpLoc);
    }
    declareNorm("norm", headLoc);
    if (!spec.tieEmbeddings)
      declare("lm_head.weight", f32({V, D}), InitKind::normal, std, headLoc);

    // KV caches: one [max_seq, kv_heads * head_dim] tensor per layer for
    // keys and one for values, keys stored after RoPE; a looped core has one
    // pair per (iteration, layer).
    for (int64_t l = 0; l < spec.layers; ++l) {
      std::string prefix = "kv.layers." + std::to_string(l) + ".";
      SmallVector<std::string> tags = {prefix};
      if (spec.loop && l >= *spec.loop->prelude &&
          l < *spec.loop->prelude + *spec.loop->core) {
        tags.clear();
        for (int64_t t = 0; t < spec.loop->iterations; ++t)
          tags.push_back(prefix + "iter." + std::to_string(t) + ".");
      }
      for (const std::string &tag : tags)
        for (const char *kv : {"k", "v"})
          CacheOp::create(b, layerLoc, b.getStringAttr(tag + kv),
                          TypeAttr::get(f32({T, K * Dh})));
    }

    buildEntry(m, Entry::forward);
    // Prefill buckets: shapes are static, so a short prompt runs in the
    // smallest of 16, 64, 256, ... tokens that holds it instead of paying for
    // the whole window.
    for (int64_t bucket = 16; bucket < spec.maxSeq; bucket *= 4)
      buildEntry(m, Entry::prefill, bucket);
    buildEntry(m, Entry::prefill, spec.maxSeq);
    buildEntry(m, Entry::decode);
    if (train && !buildTraining(m))
      return nullptr;
    return module;
  }

  bool loopFormer() const { return spec.loop && spec.loop->kind == "loopformer"; }
  bool loopUS() const { return spec.loop && spec.loop->kind == "loopus"; }
  static constexpr int64_t kSinusoidFeatures = 256;
  static constexpr const char *kModulations[] = {"attn_gate", "mlp_gate",
                                                 "attn_scale", "mlp_scale"};

  /// Layers per block of block-wise attention residuals: ceil(L / N).
  int64_t blockSize() const {
    return (spec.layers + *spec.attnRes->blocks - 1) / *spec.attnRes->blocks;
  }

  /// Per-layer MLP widths: mlp.width everywhere, or the taper schedule of
  /// docs/model-and-weights.md (ARCHITECTURES.md §1.2), which keeps the
  /// total width, and so the MLP parameters and FLOPs, exactly.
  bool computeWidths() {
    widths.assign(spec.layers, spec.mlp.width);
    if (!spec.mlp.taper)
      return true;
    const TaperSpec &t = *spec.mlp.taper;
    TaperResult r = computeTaperWidths(t.schedule, t.max, t.min, t.multiple,
                                       spec.mlp.width, spec.layers);
    if (!r.error.empty())
      return fail(r.errorKey, r.error);
    widths = r.widths;
    return true;
  }

  /// forward: the whole window, no cache. prefill: the same, and it fills
  /// the caches. decode: one token at a given position, against the caches.
  /// grad: forward, then the mean cross-entropy against a second input, the
  /// targets; lathe-differentiate turns it into loss and gradients.
  /// LoopUS's deep supervision adds encode (tokens -> the state after the
  /// encoder layers) and advance (state -> state after one gated pass of the
  /// core); its grad and accumulate take (state, targets).
  enum class Entry { forward, prefill, decode, grad, accumulate, encode, advance };

  /// Whether the optimizer decays a parameter: not norm gains or biases, not
  /// Parcae's injection parameters (ARCHITECTURES.md §4.1).
  static bool decays(llvm::StringRef name) {
    return !name.ends_with(".bias") && !name.contains("norm") &&
           !name.starts_with("injection.");
  }

  /// The training entries (see importSpec) and the states they keep.
  bool buildTraining(ModuleOp m) {
    int64_t seq = train->seq ? train->seq : spec.maxSeq;
    if (seq < 1 || seq > spec.maxSeq)
      return fail("max_seq", llvm::formatv("the training window (--train-seq "
                                           "{0}) must be in [1, max_seq = {1}]",
                                           seq, spec.maxSeq));
    if (train->batch < 1)
      return fail("name", llvm::formatv("the sequences per training pass "
                                        "(--train-batch {0}) must be >= 1",
                                        train->batch));
    // Packing sequences as rows needs every training input to be per step,
    // not per sequence.
    if (train->batch > 1 && spec.loop &&
        (spec.loop->sampleMax || loopUS() ||
         (loopFormer() && spec.loop->shortcut)))
      return fail("loop",
                  llvm::formatv("--train-batch {0} packs sequences into one "
                                "pass, but this loop draws {1} per sequence; "
                                "compile it with --train-batch 1",
                                train->batch,
                                loopUS() ? "its supervised steps"
                                : spec.loop->sampleMax
                                    ? "its iteration count"
                                    : "its shortcut trajectory"));
    if (loopUS()) {
      buildEntry(m, Entry::encode, seq);
      buildEntry(m, Entry::advance, seq);
    }
    buildEntry(m, Entry::grad, seq);
    buildEntry(m, Entry::accumulate, seq);
    OpBuilder b(&ctx);
    b.setInsertionPointToEnd(m.getBody());
    SmallVector<ParamOp> params(m.getOps<ParamOp>());
    Location top = locOf("name");
    auto state = [&](const std::string &name, RankedTensorType type) {
      CacheOp::create(b, top, b.getStringAttr(name), TypeAttr::get(type));
    };
    // Muon takes the blocks' 2-D matrices (the hidden ones: not the
    // embeddings, the head or other matrices outside the blocks).
    auto muon = [&](ParamOp p) {
      return train->optimizer == "muon" &&
             p.getSymName().starts_with("layers.") &&
             p.getTensorType().getRank() == 2;
    };
    for (ParamOp p : params) {
      std::string name = p.getSymName().str();
      state("grad." + name, p.getTensorType());
      if (muon(p)) {
        state("muon.b." + name, p.getTensorType());
      } else {
        state("adam.m." + name, p.getTensorType());
        state("adam.v." + name, p.getTensorType());
      }
    }

    auto scalar = RankedTensorType::get({1}, b.getF32Type());
    auto fn = func::FuncOp::create(
        b, top, "optimizer_step",
        b.getFunctionType({scalar, scalar, scalar}, {scalar}));
    Block *body = fn.addEntryBlock();
    b.setInsertionPointToStart(body);
    Value lr = body->getArgument(0), step = body->getArgument(1),
          scale = body->getArgument(2);
    auto read = [&](const std::string &name, RankedTensorType type) -> Value {
      return CacheReadOp::create(b, top, type,
                                 FlatSymbolRefAttr::get(&ctx, name));
    };
    SmallVector<Value> grads;
    for (ParamOp p : params)
      grads.push_back(read("grad." + p.getSymName().str(), p.getTensorType()));
    auto norm = GlobalNormOp::create(b, top, scalar, scalar, grads, scale,
                                     b.getF64FloatAttr(train->clip));
    for (auto [p, g] : llvm::zip(params, grads)) {
      std::string name = p.getSymName().str();
      Location loc = p.getLoc();
      Value w = WeightOp::create(b, loc, p.getTensorType(),
                                 FlatSymbolRefAttr::get(&ctx, name));
      double decay = decays(name) ? train->weightDecay : 0.0;
      if (muon(p)) {
        Value buf = read("muon.b." + name, p.getTensorType());
        auto update = MuonOp::create(
            b, loc, w, g, buf, lr, scale, norm.getFactor(),
            b.getF64FloatAttr(train->muonMomentum),
            b.getF64FloatAttr(train->muonLrScale), b.getF64FloatAttr(decay));
        AssignOp::create(b, loc, w, update.getNewParam());
        AssignOp::create(b, loc, buf, update.getNewBuffer());
        continue;
      }
      Value mom = read("adam.m." + name, p.getTensorType());
      Value var = read("adam.v." + name, p.getTensorType());
      auto update = AdamwOp::create(
          b, loc, w, g, mom, var, lr, step, scale, norm.getFactor(),
          b.getF64FloatAttr(train->beta1), b.getF64FloatAttr(train->beta2),
          b.getF64FloatAttr(train->eps),
          b.getF64FloatAttr(decay));
      AssignOp::create(b, loc, w, update.getNewParam());
      AssignOp::create(b, loc, mom, update.getNewM());
      AssignOp::create(b, loc, var, update.getNewV());
    }
    func::ReturnOp::create(b, top, norm.getNorm());
    return true;
  }

  void buildEntry(ModuleOp m, Entry kind, int64_t length = 0) {
    OpBuilder b(&ctx);
    b.setInsertionPointToEnd(m.getBody());
    const int64_t D = spec.dModel, V = spec.vocab, H = spec.heads,
                  K = spec.kvHeads, Dh = D / H;
    const bool training = kind == Entry::grad || kind == Entry::accumulate;
    // Entries that start from LoopUS's carried state instead of tokens.
    const bool fromState =
        kind == Entry::advance || (training && loopUS());
    // A training entry packs `batch` windows of `length` rows: its rows are
    // T = batch * length, and row-position ops see `window` rows per
    // sequence (0: the rows are one sequence).
    const int64_t seqs = training ? train->batch : 1;
    const int64_t window = seqs > 1 ? length : 0;
    const int64_t T = kind == Entry::decode ? 1
                      : kind == Entry::prefill || training ||
                              kind == Entry::encode || kind == Entry::advance
                          ? length * seqs
                          : spec.maxSeq;
    auto windowAttr = b.getI64IntegerAttr(window);
    const bool layerNorm = spec.norm.kind == "layernorm";
    const bool learned = spec.position == "learned";
    const MlpKind mlpKind = *symbolizeMlpKind(spec.mlp.kind);
    Location top = locOf("name"), embLoc = locOf("vocab"),
             layerLoc = locOf("layers"), headLoc = locOf("d_model"),
             posLoc = learned ? locOf("position") : embLoc;
    auto f32 = [&](ArrayRef<int64_t> shape) {
      return RankedTensorType::get(shape, b.getF32Type());
    };
    auto i32 = RankedTensorType::get({T}, b.getI32Type());
    auto one = RankedTensorType::get({1}, b.getI32Type());

    std::string name = kind == Entry::forward ? "forward"
                       : kind == Entry::decode ? "decode"
                       : kind == Entry::grad   ? "grad"
                       : kind == Entry::accumulate ? "accumulate_grad"
                       : kind == Entry::encode ? "loopus_encode"
                       : kind == Entry::advance ? "loopus_advance"
                       : T == spec.maxSeq      ? "prefill"
                                               : "prefill_" + std::to_string(T);
    SmallVector<Type> inputs = {fromState ? Type(f32({T, D})) : Type(i32)};
    if (kind == Entry::decode)
      inputs.push_back(one);
    // LoopUS halts on the last real token of a padded window: its length.
    const bool windowLength =
        loopUS() && (kind == Entry::forward || kind == Entry::prefill);
    if (windowLength)
      inputs.push_back(one);
    if (training)
      inputs.push_back(i32); // the targets
    // Parcae's sampled depth: the sequence's iteration count, an input.
    const bool sampledDepth = training && spec.loop && spec.loop->sampleMax;
    if (sampledDepth)
      inputs.push_back(one);
    // LoopFormer's shortcut consistency: the short trajectory drawn for the
    // step, as its length and [start times..., step sizes...] of M - 1
    // slots each.
    const bool shortcut = training && loopFormer() && spec.loop->shortcut;
    if (shortcut) {
      inputs.push_back(one);
      inputs.push_back(f32({2 * (spec.loop->iterations - 1)}));
    }
    const bool stateOut = kind == Entry::encode || kind == Entry::advance;
    auto fn = func::FuncOp::create(
        b, top, name,
        b.getFunctionType(inputs, {training   ? f32({1})
                                   : stateOut ? f32({T, D})
                                              : f32({T, V})}));
    Block *body = fn.addEntryBlock();
    b.setInsertionPointToStart(body);
    Value tokens = body->getArgument(0);
    Value pos = kind == Entry::decode ? body->getArgument(1) : Value();

    auto weight = [&](const std::string &pname, Location loc) -> Value {
      auto param = m.lookupSymbol<ParamOp>(pname);
      if (!param)
        return nullptr;
      return WeightOp::create(b, loc, param.getTensorType(),
                              FlatSymbolRefAttr::get(&ctx, pname));
    };
    auto eps = b.getF64FloatAttr(spec.norm.eps);
    const int64_t phases = spec.threePhase ? spec.threePhase->phases : 1;
    auto norm = [&](Value x, const std::string &prefix, Location loc) -> Value {
      Value g = weight(prefix + ".weight", loc);
      if (layerNorm)
        return LayerNormOp::create(b, loc, x.getType(), x, g,
                                   weight(prefix + ".bias", loc), eps);
      return RmsNormOp::create(b, loc, x.getType(), x, g, eps,
                               b.getI64IntegerAttr(phases));
    };
    auto linear = [&](Value x, const std::string &prefix, int64_t out,
                      Location loc) -> Value {
      return LinearOp::create(b, loc, f32({T, out}), x,
                              weight(prefix + ".weight", loc),
                              weight(prefix + ".bias", loc), Value());
    };
    // The LM head on a final-normed stream, and a training window's mean
    // cross-entropy against the targets (the entry's second input).
    auto headLogits = [&](Value normed) -> Value {
      return LinearOp::create(
          b, headLoc, f32({T, V}), normed,
          weight(spec.tieEmbeddings ? "embed.weight" : "lm_head.weight",
                 headLoc),
          Value(), Value());
    };
    auto crossEntropy = [&](Value logits) -> Value {
      return CrossEntropyOp::create(b, top, f32({1}), logits,
                                    body->getArgument(1));
    };
    // Keys and values go into the cache; decode then attends to the cache.
    auto cached = [&](Value rows, const std::string &cache,
                      Location loc) -> Value {
      auto type = f32({spec.maxSeq, K * Dh});
      Value cur = CacheReadOp::create(b, loc, type,
                                      FlatSymbolRefAttr::get(&ctx, cache));
      return CacheWriteOp::create(b, loc, type, cur, rows, pos);
    };

    Value x = fromState ? tokens
                        : Value(EmbeddingOp::create(
                              b, embLoc, f32({T, D}), tokens,
                              weight("embed.weight", embLoc)));
    if (learned && !fromState) {
      // A window starts at position 0 (its first T rows); decode looks its
      // row up.
      Value table = weight("pos_embed.weight", posLoc);
      Value rows = table;
      if (kind == Entry::decode) {
        rows = EmbeddingOp::create(b, posLoc, f32({T, D}), pos, table);
      } else {
        // Each window's rows read the table's first `length` rows.
        const int64_t length = window ? window : T;
        if (length != spec.maxSeq) {
          auto offsets = b.getDenseI64ArrayAttr({0, 0});
          auto sizes = b.getDenseI64ArrayAttr({length, D});
          auto strides = b.getDenseI64ArrayAttr({1, 1});
          rows = tensor::ExtractSliceOp::create(
              b, posLoc, f32({length, D}), table, ValueRange{}, ValueRange{},
              ValueRange{}, offsets, sizes, strides);
        }
        if (window)
          rows = RepeatRowsOp::create(b, posLoc, f32({T, D}), rows);
      }
      x = AddOp::create(b, posLoc, x, rows);
    }
    if (spec.threePhase && spec.threePhase->horn && !fromState)
      x = DcInjectOp::create(b, locOf("three_phase"), x.getType(), x, pos,
                             windowAttr);
    auto base = b.getF64FloatAttr(spec.rope.base);
    auto normalizer = *symbolizeNormalizer(spec.attention.normalizer);
    // Attention Residuals: the sources are the stream's start and every
    // sublayer's raw output so far. Delta routing adds the mixture to the
    // stream x as the sublayer input; full routing replaces the stream.
    //   delta        sources h_0, o_0..o_{s-1}; input x + route; stream kept
    //   full         sources h_0, o_0..o_{s-1}; input route; no stream
    //   block        sources: completed block sums ++ [partial sum]; input
    //                route; no stream (Kimi Block, §2.2's code order)
    //   delta_block  sources h_0 and each completed block's change of the
    //                stream; input x + route once there are two (§2.4)
    const std::string resKind = spec.attnRes ? spec.attnRes->kind : "";
    const bool additive = resKind == "delta" || resKind == "delta_block";
    const bool replacing = resKind == "full" || resKind == "block";
    // Each source's per-token sum of squares, made right where the source
    // is produced (so it runs in that kernel) and reused by every site.
    DenseMap<Value, Value> sumSquares;
    // (At the source's own location: it belongs to the source's kernel.)
    auto normOf = [&](Value v) -> Value {
      Value &n = sumSquares[v];
      if (!n)
        n = RowSumSquaresOp::create(
            b, v.getLoc(), RankedTensorType::get({T}, b.getF32Type()), v);
      return n;
    };
    SmallVector<Value> sources, routingEntropies;
    Value longFinal; // LoopFormer shortcut training: the long pass's stream
    // LoopUS's supervised step: the confidence logits [T, 1] and the old
    // state's (stop-gradient) cross-entropy.
    Value supervisionLogit, supervisionOld;
    auto addSource = [&](Value v) {
      sources.push_back(v);
      normOf(v);
    };
    if (spec.attnRes && resKind != "block")
      addSource(x);
    Value partial = x, blockStart = x; // block, delta_block
    auto candidates = [&]() {
      SmallVector<Value> all(sources);
      if (resKind == "block")
        all.push_back(partial);
      return all;
    };
    // A sublayer's input: the stream, or its routing over the candidates.
    auto input = [&](const std::string &site, Location loc) -> Value {
      SmallVector<Value> from = candidates();
      if (!spec.attnRes || from.size() < 2)
        return resKind == "block" ? partial : x;
      SmallVector<Value> norms;
      for (Value v : from)
        norms.push_back(normOf(v));
      // The optional null source and gate (absent params: no operand).
      const std::string &gateKind = spec.attnRes->gate;
      Value gate = gateKind == "sigmoid_scalar"    ? weight(site + ".gate", loc)
                   : gateKind == "learnable_alpha" ? weight(site + ".alpha", loc)
                   : gateKind == "sigmoid_vector"
                       ? linear(x, site + ".gate", D, loc)
                       : Value();
      auto activation = gateKind == "sigmoid_scalar" ||
                                gateKind == "sigmoid_vector"
                            ? GateActivation::sigmoid
                            : GateActivation::identity;
      Value query = weight(site + ".query", loc),
            gain = weight(site + ".norm", loc), null = weight(site + ".null", loc);
      auto eps = b.getF64FloatAttr(spec.attnRes->eps);
      // The entropy bonus reads the same routing weights; only the loss
      // uses it, so the forward entries never build it.
      if (training && spec.attnRes->entropyBonus > 0.0)
        routingEntropies.push_back(RoutingEntropyOp::create(
            b, loc, f32({1}), from, norms, query, gain, null, eps));
      return DepthAttentionOp::create(
          b, loc, f32({T, D}), from, norms, query, gain,
          additive ? x : Value(), null, gate, eps,
          GateActivationAttr::get(&ctx, activation));
    };
    // A sublayer's output: the new stream, one more source, or (block) the
    // running sum of the open block.
    // LoopFormer's modulation rows of the block being built, by name.
    llvm::StringMap<Value> modulation;
    auto residual = [&](Value out, Location loc, StringRef gate) {
      if (resKind == "delta" || resKind == "full")
        addSource(out);
      if (resKind == "block")
        partial = partial ? AddOp::create(b, loc, partial, out) : out;
      if (Value g = modulation.lookup(gate))
        x = GatedAddOp::create(b, loc, x, out, g);
      else if (!replacing)
        x = AddOp::create(b, loc, x, out);
    };
    // A block's pre-norm: the spec's norm, or LoopFormer's gain-free RMSNorm
    // scaled by (1 + scale).
    auto blockNorm = [&](Value in, const std::string &prefix, StringRef scale,
                         Location loc) -> Value {
      if (Value s = modulation.lookup(scale))
        return ModulatedRmsNormOp::create(b, loc, in.getType(), in, s, eps);
      return norm(in, prefix, loc);
    };
    // Block boundaries, before layer l's attention routing (block) or
    // before its input (delta_block).
    auto closeBlock = [&](int64_t l, Location loc) {
      if (resKind == "delta_block" && l > 0 && l % blockSize() == 0) {
        addSource(SubOp::create(b, loc, x, blockStart));
        blockStart = x;
      }
    };
    // One pre-norm block (layer l) on the stream x, with its KV caches
    // named `kv` + "k"/"v".
    auto block = [&](int64_t l, const std::string &kv, Location loc) {
      std::string p = "layers." + std::to_string(l) + ".";
      // Layer 0's attention has one source (the embedding): no routing.
      closeBlock(l, loc);
      Value in = input(p + "attn_res.attn", loc);
      if (resKind == "block" && l % blockSize() == 0) {
        // Kimi Block closes the finished block after routing the attention.
        addSource(partial);
        partial = Value();
      }
      Value h = blockNorm(in, p + "attn_norm", "attn_scale", loc);
      Value q = linear(h, p + "attn.wq", H * Dh, loc);
      Value k = linear(h, p + "attn.wk", K * Dh, loc);
      // delta_v: the values read their own routing of the same sources.
      Value hv = h;
      if (m.lookupSymbol<ParamOp>(p + "attn_res.attn_v.query"))
        hv = blockNorm(input(p + "attn_res.attn_v", loc), p + "attn_norm",
                       "attn_scale", loc);
      Value v = linear(hv, p + "attn.wv", K * Dh, loc);
      if (!learned) {
        q = RopeOp::create(b, loc, q.getType(), q, pos, b.getI64IntegerAttr(H),
                           base, /*inverse=*/nullptr, windowAttr);
        k = RopeOp::create(b, loc, k.getType(), k, pos, b.getI64IntegerAttr(K),
                           base, /*inverse=*/nullptr, windowAttr);
      }
      Value keys = k, values = v;
      if (kind == Entry::prefill || kind == Entry::decode) {
        Value kc = cached(k, kv + "k", loc);
        Value vc = cached(v, kv + "v", loc);
        if (kind == Entry::decode)
          keys = kc, values = vc;
      }
      Value a = AttentionOp::create(
          b, loc, f32({T, H * Dh}), q, keys, values, pos,
          b.getI64IntegerAttr(H), b.getI64IntegerAttr(K),
          NormalizerAttr::get(&ctx, normalizer), b.getI64IntegerAttr(phases),
          windowAttr);
      residual(linear(a, p + "attn.wo", D, loc), loc, "attn_gate");
      if (spec.threePhase)
        x = PhaseRotateOp::create(b, loc, x.getType(), x,
                                  weight(p + "rotation.theta", loc),
                                  b.getI64IntegerAttr(phases));
      in = input(p + "attn_res.mlp", loc);
      h = blockNorm(in, p + "mlp_norm", "mlp_scale", loc);
      Value y = MlpOp::create(
          b, loc, f32({T, D}), TypeRange(), mlpKind, h, weight(p + "mlp.w_gate.weight", loc),
          weight(p + "mlp.w_gate.bias", loc), weight(p + "mlp.w_up.weight", loc),
          weight(p + "mlp.w_up.bias", loc), weight(p + "mlp.w_down.weight", loc),
          weight(p + "mlp.w_down.bias", loc), Value()).getResult();
      residual(y, loc, "mlp_gate");
    };
    auto layerLocOf = [&](int64_t l) -> Location {
      return NameLoc::get(b.getStringAttr("layers." + std::to_string(l)),
                          layerLoc);
    };
    auto kvOf = [](int64_t l) { return "kv.layers." + std::to_string(l) + "."; };
    if (loopFormer()) {
      // LoopFormer: the whole stack `iterations` times, iteration m
      // conditioned on c_m = TE(t_{m-1}) + DE(d_m) through each block's
      // modulation rows; trajectory and times are compile-time constants.
      Location loopLoc = locOf("loop");
      auto embedder = [&](const std::string &p, Value phi, Location loc) {
        Value h = LinearOp::create(b, loc, f32({1, D}), phi,
                                   weight(p + ".w1.weight", loc),
                                   weight(p + ".w1.bias", loc), Value());
        h = SiluOp::create(b, loc, h);
        return LinearOp::create(b, loc, f32({1, D}), h,
                                weight(p + ".w2.weight", loc),
                                weight(p + ".w2.bias", loc), Value());
      };
      auto sinusoid = [&](double value, Location loc) -> Value {
        return SinusoidOp::create(b, loc, f32({1, kSinusoidFeatures}), Value(),
                                  b.getF64FloatAttr(value), IntegerAttr());
      };
      // One pass of the whole stack, conditioned on c = TE(time) + DE(step).
      auto pass = [&](Value time, Value step, int64_t m) {
        Location iterLoc = NameLoc::get(
            b.getStringAttr("iteration." + std::to_string(m)), loopLoc);
        Value c = AddOp::create(b, iterLoc, embedder("time_embed", time, iterLoc),
                                embedder("step_embed", step, iterLoc));
        Value act = SiluOp::create(b, iterLoc, c);
        // Every block's rows first: they share one input, so they form one
        // small kernel ahead of the blocks.
        SmallVector<llvm::StringMap<Value>> rows(size_t(spec.layers));
        for (int64_t l = 0; l < spec.layers; ++l) {
          std::string p = "layers." + std::to_string(l) + ".mod.";
          for (const char *mod : kModulations)
            rows[size_t(l)][mod] = LinearOp::create(
                b, iterLoc, f32({1, D}), act, weight(p + mod + ".weight", iterLoc),
                weight(p + mod + ".bias", iterLoc), Value());
        }
        for (int64_t l = 0; l < spec.layers; ++l) {
          modulation = rows[size_t(l)];
          block(l, kvOf(l) + "iter." + std::to_string(m) + ".",
                NameLoc::get(b.getStringAttr("iteration." + std::to_string(m)),
                             layerLocOf(l)));
        }
      };
      const int64_t M = spec.loop->iterations;
      Value start = x;
      // Shortcut training's long pass is M equal steps (§4.2), whatever
      // trajectory inference uses.
      std::vector<double> steps = *spec.loop->trajectory;
      if (shortcut)
        steps.assign(size_t(M), 1.0 / double(M));
      double time = 0.0;
      for (int64_t m = 0; m < M; ++m) {
        Location iterLoc = NameLoc::get(
            b.getStringAttr("iteration." + std::to_string(m)), loopLoc);
        pass(sinusoid(time, iterLoc), sinusoid(steps[size_t(m)], iterLoc), m);
        time += steps[size_t(m)];
      }
      if (shortcut) {
        // The short pass: M - 1 slots read their time and step from the
        // drawn trajectory; slot j keeps its result only while j < length.
        longFinal = x;
        x = start;
        Value length = body->getArgument(2), drawn = body->getArgument(3);
        for (int64_t j = 0; j < M - 1; ++j) {
          Location iterLoc = NameLoc::get(
              b.getStringAttr("iteration." + std::to_string(M + j)), loopLoc);
          auto read = [&](int64_t index) -> Value {
            return SinusoidOp::create(b, iterLoc, f32({1, kSinusoidFeatures}),
                                      drawn, FloatAttr(),
                                      b.getI64IntegerAttr(index));
          };
          Value previous = x;
          pass(read(j), read(M - 1 + j), M + j);
          if (j > 0)
            x = LoopSelectOp::create(b, iterLoc, x.getType(), length, x,
                                     previous, b.getI64IntegerAttr(j));
        }
      }
      modulation.clear();
    } else if (!spec.loop && layerParallel && kind == Entry::forward) {
      // SNLP's identity-Newton iteration (ARCHITECTURES.md §4.4): every
      // block's branch g_l(h) = block_l(h) - h on the previous trace, then
      // a prefix sum over depth, h_l = h_0 + sum_{j<=l} g_j(h_{j-1}); from
      // h_l = h_0, the first k layers are exact after k iterations and all
      // of them after L. The branches of one iteration are independent.
      const int64_t L = spec.layers;
      SmallVector<Value> trace(size_t(L + 1), x);
      for (int64_t k = 0; k < layerParallel; ++k) {
        SmallVector<Value> branch;
        for (int64_t l = 0; l < L; ++l) {
          Location loc = NameLoc::get(
              b.getStringAttr("iteration." + std::to_string(k)), layerLocOf(l));
          x = trace[size_t(l)];
          block(l, kvOf(l), loc);
          branch.push_back(SubOp::create(b, loc, x, trace[size_t(l)]));
        }
        // The prefix sum, in place: trace[l] is already the new h_l.
        for (int64_t l = 0; l < L; ++l)
          trace[size_t(l + 1)] = AddOp::create(b, branch[size_t(l)].getLoc(),
                                               trace[size_t(l)], branch[size_t(l)]);
      }
      x = trace[size_t(L)];
    } else if (!spec.loop) {
      for (int64_t l = 0; l < spec.layers; ++l)
        block(l, kvOf(l), layerLocOf(l));
    } else if (loopUS() && (kind == Entry::encode || fromState)) {
      // LoopUS's deep supervision (ARCHITECTURES.md §4.3), one step per
      // entry call, the state carried by the runtime between calls: encode
      // runs the encoder layers; advance one gated pass of the core; grad
      // and accumulate one supervised step from a given (constant) state.
      const int64_t prelude = *spec.loop->prelude, core = *spec.loop->core;
      Location loopLoc = locOf("loop");
      Location iterLoc =
          NameLoc::get(b.getStringAttr("iteration.0"), loopLoc);
      if (kind == Entry::encode) {
        for (int64_t l = 0; l < prelude; ++l)
          block(l, kvOf(l), layerLocOf(l));
        func::ReturnOp::create(b, top, x);
        return;
      }
      Value h = x;
      for (int64_t l = prelude; l < prelude + core; ++l)
        block(l, kvOf(l),
              NameLoc::get(b.getStringAttr("iteration.0"), layerLocOf(l)));
      Value u = x;
      Value next = SelectiveGateOp::create(
          b, iterLoc, u, h, weight("gate.down.weight", iterLoc),
          weight("gate.up.weight", iterLoc), weight("gate.up.bias", iterLoc),
          weight("gate.A_log", iterLoc));
      if (kind == Entry::advance) {
        func::ReturnOp::create(b, top, next);
        return;
      }
      // The confidence head's logit, per row (the loss reads the last), and
      // the old state's cross-entropy, a constant for the gradient.
      Value delta = SubOp::create(b, iterLoc, u, h);
      Value normed = LayerNormOp::create(
          b, iterLoc, delta.getType(), delta,
          weight("confidence.norm.weight", iterLoc),
          weight("confidence.norm.bias", iterLoc), b.getF64FloatAttr(1e-5));
      supervisionLogit = LinearOp::create(
          b, iterLoc, f32({T, 1}), normed, weight("confidence.weight", iterLoc),
          weight("confidence.bias", iterLoc), Value());
      // The decoder layers on the old state, then on the new one.
      auto decoder = [&](Value from) {
        x = from;
        for (int64_t l = prelude + core; l < spec.layers; ++l)
          block(l, kvOf(l), layerLocOf(l));
      };
      decoder(h);
      Value oldLoss = crossEntropy(headLogits(norm(x, "norm", headLoc)));
      supervisionOld = StopGradientOp::create(b, top, oldLoss.getType(),
                                              oldLoss, Value(), IntegerAttr(),
                                              IntegerAttr());
      decoder(next);
    } else if (loopUS()) {
      // LoopUS (ARCHITECTURES.md §4.3): encoder layers, then the reasoning
      // core applied up to `iterations` times, each pass followed by the
      // selective gate (a convex mix with the previous iterate) and, unless
      // halting is off, the confidence head and the halting decision; then
      // the decoder layers on the state the loop kept. Unrolled like
      // Parcae, with one KV cache per (iteration, layer).
      const int64_t prelude = *spec.loop->prelude, core = *spec.loop->core;
      const HaltSpec &halt = *spec.loop->halt;
      const HaltMode mode = *symbolizeHaltMode(halt.mode);
      Location loopLoc = locOf("loop");
      for (int64_t l = 0; l < prelude; ++l)
        block(l, kvOf(l), layerLocOf(l));
      Value len = windowLength ? body->getArgument(1) : Value();
      Value h = x, status, kept;
      for (int64_t t = 0; t < spec.loop->iterations; ++t) {
        Location iterLoc = NameLoc::get(
            b.getStringAttr("iteration." + std::to_string(t)), loopLoc);
        for (int64_t l = prelude; l < prelude + core; ++l)
          block(l, kvOf(l) + "iter." + std::to_string(t) + ".",
                NameLoc::get(b.getStringAttr("iteration." + std::to_string(t)),
                             layerLocOf(l)));
        Value u = x;
        Value next = SelectiveGateOp::create(
            b, iterLoc, u, h, weight("gate.down.weight", iterLoc),
            weight("gate.up.weight", iterLoc), weight("gate.up.bias", iterLoc),
            weight("gate.A_log", iterLoc));
        if (mode != HaltMode::none) {
          Value q = HaltConfidenceOp::create(
              b, iterLoc, f32({1}), u, h, weight("confidence.norm.weight", iterLoc),
              weight("confidence.norm.bias", iterLoc),
              weight("confidence.weight", iterLoc),
              weight("confidence.bias", iterLoc), len, b.getF64FloatAttr(1e-5));
          // (Without a length, decode's one row is the last token.)
          auto decision = HaltIfOp::create(
              b, iterLoc, f32({2}), next.getType(), q, next, h, len, status,
              kept, HaltModeAttr::get(&ctx, mode),
              b.getF64FloatAttr(halt.threshold),
              b.getF64FloatAttr(halt.tolerance));
          status = decision.getNewStatus();
          kept = decision.getNewKept();
        }
        h = x = next;
      }
      if (kept)
        x = kept;
      for (int64_t l = prelude + core; l < spec.layers; ++l)
        block(l, kvOf(l), layerLocOf(l));
    } else {
      // Parcae (ARCHITECTURES.md §4.1): prelude, then the core applied
      // `iterations` times from a zero state with the stable injection of
      // the prelude's output, then the coda. The loop is unrolled into the
      // schedule; the core's kernels are identical in every iteration, so
      // lathe-dedup-kernels compiles them once, and each iteration has its
      // own KV cache.
      const int64_t prelude = *spec.loop->prelude, core = *spec.loop->core;
      Location loopLoc = locOf("loop");
      for (int64_t l = 0; l < prelude; ++l)
        block(l, kvOf(l), layerLocOf(l));
      Value e = norm(x, "prelude_norm", loopLoc);
      Value be = LinearOp::create(b, loopLoc, f32({T, D}), e,
                                  weight("injection.B", loopLoc), Value(),
                                  Value());
      Value aLog = weight("injection.A_log", loopLoc),
            dtBias = weight("injection.dt_bias", loopLoc);
      Value state;
      // A sampled depth unrolls the largest count; iteration t keeps its
      // result only while t < n, the sequence's count (an entry input).
      Value count = sampledDepth ? body->getArguments().back() : Value();
      const int64_t passes =
          sampledDepth ? *spec.loop->sampleMax : spec.loop->iterations;
      for (int64_t t = 0; t < passes; ++t) {
        Location iterLoc = NameLoc::get(
            b.getStringAttr("iteration." + std::to_string(t)), loopLoc);
        // Truncated backprop (mu_bwd): in training, the state entering the
        // last `backprop` iterations is a constant for the gradient; with a
        // sampled depth, the last min(n, backprop) of the n that run.
        if (training && state && spec.loop->backprop) {
          if (count)
            state = StopGradientOp::create(
                b, iterLoc, state.getType(), state, count,
                b.getI64IntegerAttr(t),
                b.getI64IntegerAttr(*spec.loop->backprop));
          else if (t == spec.loop->iterations - *spec.loop->backprop)
            state = StopGradientOp::create(b, iterLoc, state.getType(), state,
                                           Value(), IntegerAttr(),
                                           IntegerAttr());
        }
        x = ParcaeInjectOp::create(b, iterLoc, f32({T, D}), be, aLog, dtBias,
                                   state);
        for (int64_t l = prelude; l < prelude + core; ++l)
          block(l, kvOf(l) + "iter." + std::to_string(t) + ".",
                NameLoc::get(b.getStringAttr("iteration." + std::to_string(t)),
                             layerLocOf(l)));
        // Iteration 0 always runs (n >= 1).
        if (count && t > 0)
          x = LoopSelectOp::create(b, iterLoc, x.getType(), count, x, state,
                                   b.getI64IntegerAttr(t));
        state = x;
      }
      x = LinearOp::create(b, loopLoc, f32({T, D}), state,
                           weight("coda_proj.weight", loopLoc), Value(),
                           Value());
      for (int64_t l = prelude + core; l < spec.layers; ++l)
        block(l, kvOf(l), layerLocOf(l));
    }
    if (replacing)
      x = input("attn_res_final", headLoc);
    Value n = norm(x, "norm", headLoc);
    Value logits = headLogits(n);
    if (training) {
      Value loss = crossEntropy(logits);
      if (longFinal) {
        // §4.2: CE(long) + 0.1 CE(short) + 0.1 MSE(sg(long), short), with
        // the final-norm hidden states; x is the short pass here.
        Value nLong = norm(longFinal, "norm", headLoc);
        Value longLoss = crossEntropy(headLogits(nLong));
        Value target = StopGradientOp::create(b, top, nLong.getType(), nLong,
                                              Value(), IntegerAttr(),
                                              IntegerAttr());
        Value mse = MeanSquaredErrorOp::create(b, top, f32({1}), target, n);
        auto tenth = [&](Value v) -> Value {
          return ScaleOp::create(b, top, v, b.getF64FloatAttr(0.1));
        };
        loss = AddOp::create(b, top, longLoss,
                             AddOp::create(b, top, tenth(loss), tenth(mse)));
      }
      if (supervisionLogit) {
        // §4.3: CE_new + beta SiLU(CE_new - sg(CE_old)) + BCE(q_logit, acc),
        // acc the window's token accuracy (a constant target).
        Value accuracy = TokenAccuracyOp::create(b, top, f32({1}), logits,
                                                 body->getArgument(1));
        Value worse =
            SiluOp::create(b, top, SubOp::create(b, top, loss, supervisionOld));
        Value confidence = BinaryCrossEntropyOp::create(
            b, top, f32({1}), supervisionLogit, accuracy);
        loss = AddOp::create(
            b, top, loss,
            AddOp::create(b, top,
                          ScaleOp::create(b, top, worse,
                                          b.getF64FloatAttr(
                                              spec.loop->supervision->beta)),
                          confidence));
      }
      if (!routingEntropies.empty()) {
        // loss - lambda * mean over sites of each site's mean entropy.
        Value sum = routingEntropies.front();
        for (Value h : ArrayRef(routingEntropies).drop_front())
          sum = AddOp::create(b, top, sum, h);
        double factor = -spec.attnRes->entropyBonus /
                        static_cast<double>(routingEntropies.size());
        loss = AddOp::create(
            b, top, loss,
            ScaleOp::create(b, top, sum, b.getF64FloatAttr(factor)));
      }
      func::ReturnOp::create(b, top, loss);
      fn->setAttr("lathe.differentiate", b.getUnitAttr());
      if (kind == Entry::accumulate)
        fn->setAttr("lathe.accumulate_gradients", b.getUnitAttr());
      return;
    }
    func::ReturnOp::create(b, top, logits);
  }

  llvm::MemoryBufferRef buffer;
  MLIRContext &ctx;
  llvm::raw_ostream &errs;
  llvm::SourceMgr sourceMgr;
  ModelSpec spec;
  bool reported = false; // a YAML diagnostic was printed
  SmallVector<int64_t> widths; // per layer, after taper
  llvm::StringMap<llvm::SMLoc> keyLocs;
  const TrainOptions *train; // null: inference only
  int64_t layerParallel;     // SNLP iterations of the forward entry; 0: off
};

} // namespace

OwningOpRef<ModuleOp> mlir::lathe::importSpec(llvm::MemoryBufferRef spec,
                                              MLIRContext &ctx,
                                              llvm::raw_ostream &errs,
                                              const TrainOptions *train,
                                              const ExecutionOptions *execution) {
  return Importer(spec, ctx, errs, train, execution).run();
}
