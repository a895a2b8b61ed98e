//===- ArtifactWriter.cpp - pack a compiled model into flatbuffers -*- C++ -*-===//
#include "Targets.h"

#include "artifact_generated.h"
#include "artifact_checksum.h"
#include "artifact_version.h"

using namespace mlir;
using namespace mlir::lathe;
namespace fb = ::lathe::fb;

static fb::DType toFb(DType d) {
  return d == DType::i32 ? fb::DType::i32 : fb::DType::f32;
}

static_assert(int(InitRule::identity) == int(fb::InitKind::identity) &&
                  int(InitRule::dt_log_uniform) == int(fb::InitKind::MAX),
              "InitRule follows the artifact's InitKind");

std::string mlir::lathe::writeArtifact(
    const ScheduleInfo &s, Target target, const std::string &cpuLibrary,
    const std::map<std::string, std::string> &ptx,
    const std::map<std::string, std::string> &cubin) {
  flatbuffers::FlatBufferBuilder fbb(1 << 16);
  std::vector<flatbuffers::Offset<fb::Param>> params;
  for (const ParamInfo &p : s.params) {
    auto init = static_cast<fb::InitKind>(p.init);
    params.push_back(fb::CreateParamDirect(fbb, p.name.c_str(), &p.shape,
                                           fb::DType::f32, init, p.std,
                                           p.value));
  }
  std::vector<flatbuffers::Offset<fb::State>> states;
  for (const StateInfo &st : s.states)
    states.push_back(
        fb::CreateStateDirect(fbb, st.name.c_str(), &st.shape, fb::DType::f32));
  std::vector<flatbuffers::Offset<fb::Buffer>> buffers;
  for (const BufferInfo &b : s.buffers) {
    bool param = b.kind == BufferInfo::Kind::param;
    bool state = b.kind == BufferInfo::Kind::state;
    buffers.push_back(fb::CreateBufferDirect(
        fbb,
        param   ? fb::BufferKind::param
        : state ? fb::BufferKind::state
                : fb::BufferKind::arena,
        param ? b.index : 0, state ? b.index : 0, b.offset, &b.shape,
        toFb(b.dtype)));
  }
  std::vector<flatbuffers::Offset<fb::Entry>> entries;
  uint64_t arenaBytes = 0;
  for (const EntryInfo &e : s.entries) {
    auto pack = [&](const std::vector<LaunchInfo> &list) {
      std::vector<flatbuffers::Offset<fb::Launch>> out;
      for (const LaunchInfo &l : list) {
        flatbuffers::Offset<fb::Gemm> gemm;
        if (const std::optional<GemmInfo> &g = l.gemm)
          gemm = fb::CreateGemm(
              fbb, g->m, g->n, g->k, g->transA, g->transB, g->lda, g->ldb,
              g->ldd, g->batch, g->strideA, g->strideB, g->strideD, g->hasC,
              g->hasBias, g->hasAux, fb::GemmEpilogue(int(g->epilogue)),
              fb::GemmPrecision(int(g->precision)));
        out.push_back(fb::CreateLaunchDirect(
            fbb, l.kernel.c_str(), &l.args,
            l.grid.empty() ? nullptr : &l.grid,
            l.block.empty() ? nullptr : &l.block, l.flops,
            int32_t(l.exitStatus), l.exitTo, gemm));
      }
      return out;
    };
    auto launches =
        pack(target == Target::cuda ? e.gpuLaunches : e.launches);
    entries.push_back(fb::CreateEntryDirect(fbb, e.name.c_str(), &e.inputs,
                                            &e.outputs, &launches,
                                            /*causal=*/true));
    arenaBytes = std::max(arenaBytes, e.arenaBytes);
  }
  std::vector<flatbuffers::Offset<fb::PtxModule>> modules;
  for (const auto &[chip, text] : ptx) {
    auto found = cubin.find(chip);
    std::vector<uint8_t> bytes;
    if (found != cubin.end())
      bytes.assign(found->second.begin(), found->second.end());
    modules.push_back(fb::CreatePtxModuleDirect(
        fbb, chip.c_str(), text.c_str(), bytes.empty() ? nullptr : &bytes));
  }
  std::vector<uint8_t> library(cpuLibrary.begin(), cpuLibrary.end());
  // cuBLASLt's heuristic picks among kernels that fit the workspace it is
  // offered; 32 MiB is what its documentation recommends for Hopper.
  uint64_t gemmWorkspace = 0;
  for (const EntryInfo &e : s.entries)
    for (const LaunchInfo &l : e.gpuLaunches)
      if (l.gemm)
        gemmWorkspace = 32u << 20;
  auto artifact = fb::CreateArtifactDirect(
      fbb, LATHE_ARTIFACT_VERSION, s.model.c_str(),
      target == Target::cpu ? fb::Target::cpu : fb::Target::cuda, s.vocab,
      s.maxSeq, &params, states.empty() ? nullptr : &states, &buffers,
      arenaBytes, &entries,
      library.empty() ? nullptr : &library,
      modules.empty() ? nullptr : &modules, s.sampledIterationsMean,
      s.sampledIterationsMax, s.shortcutIterations, s.supervisionSteps,
      s.supervisedSteps, gemmWorkspace, s.trainBatch);
  fb::FinishArtifactBuffer(fbb, artifact);
  std::string file(reinterpret_cast<const char *>(fbb.GetBufferPointer()),
                   fbb.GetSize());
  uint8_t trailer[LATHE_ARTIFACT_TRAILER_BYTES];
  lathe_artifact_trailer(fbb.GetBufferPointer(), fbb.GetSize(), trailer);
  file.append(reinterpret_cast<const char *>(trailer), sizeof(trailer));
  return file;
}
