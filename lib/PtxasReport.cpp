//===- PtxasReport.cpp - registers, spills and shared memory -----*- C++ -*-===//
//
// `lathec --target=cuda --report` assembles the PTX of each chip with
// `ptxas -v` and reports what it says of each kernel: registers, spill bytes
// and shared memory. Spills are what a GPU kernel must not have; the tests
// require zero for every example.
//
//===----------------------------------------------------------------------===//

#include "Targets.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/Regex.h"

using namespace mlir;
using namespace mlir::lathe;

std::optional<std::string> mlir::lathe::findPtxas() {
  llvm::ErrorOr<std::string> ptxas = llvm::sys::findProgramByName("ptxas");
  if (!ptxas)
    ptxas = llvm::sys::findProgramByName("ptxas", {"/usr/local/cuda/bin"});
  if (!ptxas)
    return std::nullopt;
  return *ptxas;
}

/// Runs ptxas for `chip` on `ptx` (written to a temporary file) with
/// `flags`, its output to `out`, and stdout and stderr to `log` where given:
/// the one place lathe calls ptxas.
static LogicalResult runPtxas(llvm::StringRef ptxas, llvm::StringRef chip,
                              llvm::StringRef ptx,
                              llvm::ArrayRef<llvm::StringRef> flags,
                              llvm::StringRef out, std::optional<llvm::StringRef> log,
                              llvm::raw_ostream &errs) {
  llvm::SmallString<128> in;
  int fd;
  if (llvm::sys::fs::createTemporaryFile("lathe-kernels", "ptx", fd, in)) {
    errs << "error: cannot create a temporary file for ptxas\n";
    return failure();
  }
  llvm::FileRemover inRemover(in);
  {
    llvm::raw_fd_ostream file(fd, /*shouldClose=*/true);
    file << ptx;
  }
  std::string arch = ("-arch=" + chip).str(), message;
  llvm::SmallVector<llvm::StringRef> args = {ptxas, arch};
  args.append(flags.begin(), flags.end());
  args.append({in, "-o", out});
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, log, log};
  if (llvm::sys::ExecuteAndWait(ptxas, args, std::nullopt, redirects, 0, 0,
                                &message)) {
    errs << "error: ptxas rejected the " << chip << " PTX: " << message
         << "\n";
    return failure();
  }
  return success();
}

FailureOr<std::string> mlir::lathe::assembleCubin(llvm::StringRef ptxas,
                                                  llvm::StringRef chip,
                                                  llvm::StringRef ptx,
                                                  llvm::raw_ostream &errs) {
  llvm::SmallString<128> out;
  if (llvm::sys::fs::createTemporaryFile("lathe-kernels", "cubin", out)) {
    errs << "error: cannot create a temporary file for ptxas\n";
    return failure();
  }
  llvm::FileRemover outRemover(out);
  if (failed(runPtxas(ptxas, chip, ptx, {}, out, std::nullopt, errs)))
    return failure();
  auto buffer = llvm::MemoryBuffer::getFile(out, /*IsText=*/false);
  if (!buffer) {
    errs << "error: cannot read the cubin ptxas wrote\n";
    return failure();
  }
  return (*buffer)->getBuffer().str();
}

LogicalResult mlir::lathe::printPtxasReport(
    const std::map<std::string, std::string> &ptx, llvm::raw_ostream &os,
    llvm::raw_ostream &errs) {
  std::optional<std::string> ptxas = findPtxas();
  if (!ptxas) {
    os << "ptxas: not found, no register or spill report\n";
    return success();
  }
  for (const auto &[chip, text] : ptx) {
    llvm::SmallString<128> log;
    if (llvm::sys::fs::createTemporaryFile("lathe-report", "log", log)) {
      errs << "error: cannot create a temporary file for ptxas\n";
      return failure();
    }
    llvm::FileRemover logRemover(log);
    if (failed(runPtxas(*ptxas, chip, text, {"-v"}, "/dev/null",
                        llvm::StringRef(log), errs)))
      return failure();
    auto buffer = llvm::MemoryBuffer::getFile(log);
    if (!buffer) {
      errs << "error: cannot read the ptxas log\n";
      return failure();
    }
    llvm::Regex entry("Compiling entry function '([A-Za-z0-9_]+)'");
    llvm::Regex spills("([0-9]+) bytes spill stores, ([0-9]+) bytes spill loads");
    llvm::Regex regs("Used ([0-9]+) registers(.*)");
    llvm::Regex shared("([0-9]+) bytes smem");
    std::string kernel;
    int64_t spill = 0, kernels = 0, spilling = 0, maxRegs = 0;
    llvm::SmallVector<llvm::StringRef> lines;
    (*buffer)->getBuffer().split(lines, '\n');
    for (llvm::StringRef line : lines) {
      llvm::SmallVector<llvm::StringRef> m;
      if (entry.match(line, &m)) {
        kernel = m[1].str();
        spill = 0;
      } else if (spills.match(line, &m)) {
        spill = std::stoll(m[1].str()) + std::stoll(m[2].str());
      } else if (regs.match(line, &m)) {
        int64_t r = std::stoll(m[1].str()), smem = 0;
        llvm::SmallVector<llvm::StringRef> sm;
        if (shared.match(m[2], &sm))
          smem = std::stoll(sm[1].str());
        os << "  " << chip << " " << kernel << ": " << r << " registers, "
           << spill << " spill bytes, " << smem << " shared bytes\n";
        ++kernels;
        spilling += spill != 0;
        maxRegs = std::max(maxRegs, r);
      }
    }
    os << "ptxas " << chip << ": " << kernels << " kernels, " << spilling
       << " spilling, at most " << maxRegs << " registers\n";
  }
  return success();
}
