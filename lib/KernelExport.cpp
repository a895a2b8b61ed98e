//===- KernelExport.cpp - cuda kernels for other runtimes --------*- C++ -*-===//
//
// `lathec --target=cuda --emit=kernels -o DIR` writes what another runtime
// needs to run lathe's GPU kernels without lathe: the PTX per chip (and a
// cubin where ptxas is installed), manifest.json with every buffer and every
// launch (kernel, grid, block, the buffers it takes in parameter order), and
// lathe_kernels.h with the same launch tables as C data.
//
//===----------------------------------------------------------------------===//

#include "Targets.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace mlir::lathe;

static const char *dtypeName(DType d) { return d == DType::i32 ? "i32" : "f32"; }

static LogicalResult writeFile(const llvm::Twine &path, llvm::StringRef text,
                               llvm::raw_ostream &errs) {
  std::error_code ec;
  llvm::raw_fd_ostream os(path.str(), ec);
  if (ec) {
    errs << path << ": error: cannot write: " << ec.message() << "\n";
    return failure();
  }
  os << text;
  return success();
}

/// A C identifier from an entry name ("prefill_16" stays, others too).
static std::string cName(llvm::StringRef name) {
  std::string s;
  for (char c : name)
    s += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return s;
}

LogicalResult mlir::lathe::exportKernels(
    const ScheduleInfo &s, const std::map<std::string, std::string> &ptx,
    llvm::StringRef dir, llvm::raw_ostream &errs) {
  if (std::error_code ec = llvm::sys::fs::create_directories(dir)) {
    errs << dir << ": error: cannot create the directory: " << ec.message()
         << "\n";
    return failure();
  }
  std::optional<std::string> ptxas = findPtxas();

  llvm::json::Object modules;
  for (const auto &[chip, text] : ptx) {
    llvm::SmallString<128> ptxPath(dir), cubinPath(dir);
    llvm::sys::path::append(ptxPath, "kernels." + chip + ".ptx");
    llvm::sys::path::append(cubinPath, "kernels." + chip + ".cubin");
    if (failed(writeFile(ptxPath, text, errs)))
      return failure();
    llvm::json::Object module{{"ptx", llvm::sys::path::filename(ptxPath).str()}};
    if (ptxas) {
      FailureOr<std::string> bytes = assembleCubin(*ptxas, chip, text, errs);
      if (failed(bytes) || failed(writeFile(cubinPath, *bytes, errs)))
        return failure();
      module["cubin"] = llvm::sys::path::filename(cubinPath).str();
    }
    modules[chip] = std::move(module);
  }

  llvm::json::Array buffers;
  for (auto [id, b] : llvm::enumerate(s.buffers)) {
    llvm::json::Object o{{"id", int64_t(id)},
                         {"dtype", dtypeName(b.dtype)},
                         {"shape", llvm::json::Array(b.shape)}};
    switch (b.kind) {
    case BufferInfo::Kind::arena:
      o["kind"] = "arena";
      o["offset"] = int64_t(b.offset);
      break;
    case BufferInfo::Kind::param:
      o["kind"] = "param";
      o["param"] = s.params[b.index].name;
      break;
    case BufferInfo::Kind::state:
      o["kind"] = "state";
      o["state"] = s.states[b.index].name;
      break;
    }
    buffers.push_back(std::move(o));
  }
  llvm::json::Array entries;
  uint64_t arena = 0;
  for (const EntryInfo &e : s.entries) {
    llvm::json::Array launches;
    for (const LaunchInfo &l : e.gpuLaunches) {
      if (const std::optional<GemmInfo> &g = l.gemm) {
        llvm::json::Array operands{"a", "b", "d"};
        if (g->hasC)
          operands.push_back("c");
        if (g->hasBias)
          operands.push_back("bias");
        if (g->hasAux)
          operands.push_back("aux");
        launches.push_back(llvm::json::Object{
            {"kernel", l.kernel},
            {"args", llvm::json::Array(l.args)},
            {"gemm",
             llvm::json::Object{
                 {"m", g->m},
                 {"n", g->n},
                 {"k", g->k},
                 {"batch", g->batch},
                 {"trans_a", g->transA},
                 {"trans_b", g->transB},
                 {"lda", g->lda},
                 {"ldb", g->ldb},
                 {"ldd", g->ldd},
                 {"stride_a", g->strideA},
                 {"stride_b", g->strideB},
                 {"stride_d", g->strideD},
                 {"operands", std::move(operands)},
                 {"epilogue", stringifyGemmEpilogue(g->epilogue)},
                 {"precision", stringifyGemmPrecision(g->precision)}}}});
        continue;
      }
      launches.push_back(llvm::json::Object{
          {"kernel", l.kernel},
          {"grid", llvm::json::Array(l.grid)},
          {"block", llvm::json::Array(l.block)},
          {"args", llvm::json::Array(l.args)},
          {"dynamic_shared_bytes", 0}});
    }
    entries.push_back(llvm::json::Object{
        {"name", e.name},
        {"inputs", llvm::json::Array(e.inputs)},
        {"outputs", llvm::json::Array(e.outputs)},
        {"arena_bytes", int64_t(e.arenaBytes)},
        {"launches", std::move(launches)}});
    arena = std::max(arena, e.arenaBytes);
  }
  llvm::json::Array params, states;
  for (const ParamInfo &p : s.params)
    params.push_back(llvm::json::Object{{"name", p.name},
                                        {"shape", llvm::json::Array(p.shape)},
                                        {"dtype", "f32"}});
  for (const StateInfo &st : s.states)
    states.push_back(llvm::json::Object{{"name", st.name},
                                        {"shape", llvm::json::Array(st.shape)},
                                        {"dtype", "f32"}});
  bool anyGemm = false;
  for (const EntryInfo &e : s.entries)
    for (const LaunchInfo &l : e.gpuLaunches)
      anyGemm |= l.gemm.has_value();
  llvm::json::Object manifest{
      {"model", s.model},
      {"vocab", s.vocab},
      {"max_seq", s.maxSeq},
      {"arena_bytes", int64_t(arena)},
      {"abi",
       "every kernel parameter is a pointer to the buffer named by args, in "
       "order; buffers are dense row-major; arena buffers live at offset "
       "within one allocation of arena_bytes; states start zeroed"},
      {"gemm_abi",
       "a launch with \"gemm\" is a GEMM library call on row-major f32 "
       "buffers, args in the order of gemm.operands: for each batch i, D_i = "
       "epilogue(op(A_i) op(B_i) [+ C_i] [+ bias]), op(A) m x k (trans_a: A "
       "stored k x m), op(B) k x n (trans_b: B stored n x k), lda/ldb/ldd "
       "row strides and stride_a/b/d batch strides in elements, C and aux "
       "with D's layout, bias of n elements along each row, aux = the value "
       "before the epilogue; gelu is the tanh form; precision is the format "
       "products are formed in (cuBLASLt's CUBLAS_COMPUTE_32F, _FAST_TF32, "
       "_FAST_16BF, _FAST_16F), accumulated in f32. With cuBLASLt's "
       "column-major API: D^T = op(B)^T op(A)^T, B as its A"},
      {"gemm_workspace_bytes", anyGemm ? int64_t(32) << 20 : 0},
      {"modules", std::move(modules)},
      {"params", std::move(params)},
      {"states", std::move(states)},
      {"buffers", std::move(buffers)},
      {"entries", std::move(entries)}};
  llvm::SmallString<128> manifestPath(dir);
  llvm::sys::path::append(manifestPath, "manifest.json");
  std::string json;
  llvm::raw_string_ostream js(json);
  js << llvm::formatv("{0:2}", llvm::json::Value(std::move(manifest))) << "\n";
  if (failed(writeFile(manifestPath, json, errs)))
    return failure();

  // The same tables as C data, for a host program that compiles them in.
  std::string header;
  llvm::raw_string_ostream h(header);
  h << "/* lathe kernels of model '" << s.model
    << "': launch tables (generated by lathec --emit=kernels). */\n"
    << "#ifndef LATHE_KERNELS_H\n#define LATHE_KERNELS_H\n\n"
    << "#include <stdint.h>\n\n"
    << "enum lathe_buffer_kind { LATHE_ARENA, LATHE_PARAM, LATHE_STATE };\n"
    << "struct lathe_buffer { enum lathe_buffer_kind kind; uint64_t offset; "
       "int32_t index; uint64_t bytes; };\n"
    << "/* A GEMM library call (see manifest.json's gemm_abi); args are a, b,\n"
       " * d, then c, bias and aux where has_c, has_bias and has_aux say so. */\n"
    << "enum lathe_gemm_epilogue { LATHE_GEMM_NONE, LATHE_GEMM_RELU, "
       "LATHE_GEMM_GELU };\n"
    << "enum lathe_gemm_precision { LATHE_GEMM_F32, LATHE_GEMM_TF32, "
       "LATHE_GEMM_BF16, LATHE_GEMM_F16 };\n"
    << "struct lathe_gemm { int64_t m, n, k, batch; int trans_a, trans_b; "
       "int64_t lda, ldb, ldd, stride_a, stride_b, stride_d; int has_c, "
       "has_bias, has_aux; enum lathe_gemm_epilogue epilogue; enum "
       "lathe_gemm_precision precision; };\n"
    << "/* gemm is NULL for a kernel launch. */\n"
    << "struct lathe_launch { const char *kernel; uint32_t grid[3]; "
       "uint32_t block[3]; uint32_t num_args; const uint32_t *args; "
       "const struct lathe_gemm *gemm; };\n\n"
    << "#define LATHE_GEMM_WORKSPACE_BYTES " << (anyGemm ? 32u << 20 : 0)
    << "ull\n"
    << "#define LATHE_ARENA_BYTES " << arena << "ull\n"
    << "#define LATHE_VOCAB " << s.vocab << "\n"
    << "#define LATHE_MAX_SEQ " << s.maxSeq << "\n"
    << "#define LATHE_NUM_PARAMS " << s.params.size() << "\n"
    << "#define LATHE_NUM_STATES " << s.states.size() << "\n\n"
    << "static const struct lathe_buffer lathe_buffers[] = {\n";
  for (const BufferInfo &b : s.buffers) {
    int64_t n = 1;
    for (int64_t d : b.shape)
      n *= d;
    const char *kind = b.kind == BufferInfo::Kind::arena   ? "LATHE_ARENA"
                       : b.kind == BufferInfo::Kind::param ? "LATHE_PARAM"
                                                           : "LATHE_STATE";
    h << "  {" << kind << ", " << b.offset << "u, " << b.index << ", "
      << n * 4 << "u},\n";
  }
  h << "};\n\n";
  for (const EntryInfo &e : s.entries) {
    std::string id = cName(e.name);
    for (auto [i, l] : llvm::enumerate(e.gpuLaunches)) {
      h << "static const uint32_t lathe_" << id << "_args" << i << "[] = {";
      for (uint32_t a : l.args)
        h << a << ", ";
      h << "};\n";
      if (const std::optional<GemmInfo> &g = l.gemm)
        h << "static const struct lathe_gemm lathe_" << id << "_gemm" << i
          << " = {" << g->m << ", " << g->n << ", " << g->k << ", "
          << g->batch << ", " << g->transA << ", " << g->transB << ", "
          << g->lda << ", " << g->ldb << ", " << g->ldd << ", " << g->strideA
          << ", " << g->strideB << ", " << g->strideD << ", " << g->hasC
          << ", " << g->hasBias << ", " << g->hasAux << ", "
          << int(g->epilogue) << ", " << int(g->precision) << "};\n";
    }
    h << "static const struct lathe_launch lathe_" << id << "_launches[] = {\n";
    for (auto [i, l] : llvm::enumerate(e.gpuLaunches)) {
      uint32_t grid[3] = {0, 0, 0}, block[3] = {0, 0, 0};
      for (unsigned d = 0; d < 3 && d < l.grid.size(); ++d)
        grid[d] = l.grid[d], block[d] = l.block[d];
      h << "  {\"" << l.kernel << "\", {" << grid[0] << ", " << grid[1]
        << ", " << grid[2] << "}, {" << block[0] << ", " << block[1] << ", "
        << block[2] << "}, " << l.args.size() << ", lathe_" << id << "_args"
        << i << ", ";
      if (l.gemm)
        h << "&lathe_" << id << "_gemm" << i;
      else
        h << "0";
      h << "},\n";
    }
    h << "};\n#define LATHE_" << id << "_NUM_LAUNCHES " << e.gpuLaunches.size()
      << "\n";
    for (auto [i, b] : llvm::enumerate(e.inputs))
      h << "#define LATHE_" << id << "_INPUT" << i << " " << b << "\n";
    for (auto [i, b] : llvm::enumerate(e.outputs))
      h << "#define LATHE_" << id << "_OUTPUT" << i << " " << b << "\n";
    h << "\n";
  }
  h << "#endif /* LATHE_KERNELS_H */\n";
  llvm::SmallString<128> headerPath(dir);
  llvm::sys::path::append(headerPath, "lathe_kernels.h");
  return writeFile(headerPath, header, errs);
}
