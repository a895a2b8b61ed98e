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

FailureOr<std::string> mlir::lathe::assembleCubin(llvm::StringRef ptxas,
                                                  llvm::StringRef chip,
                                                  llvm::StringRef ptx,
                                                  llvm::raw_ostream &errs) {
  llvm::SmallString<128> in, out;
  int fd;
  if (llvm::sys::fs::createTemporaryFile("lathe-kernels", "ptx", fd, in) ||
      llvm::sys::fs::createTemporaryFile("lathe-kernels", "cubin", out)) {
    errs << "error: cannot create temporary files for ptxas\n";
    return failure();
  }
  llvm::FileRemover inRemover(in), outRemover(out);
  {
    llvm::raw_fd_ostream file(fd, /*shouldClose=*/true);
    file << ptx;
  }
  std::string arch = ("-arch=" + chip).str(), message;
  llvm::StringRef args[] = {ptxas, arch, in, "-o", out};
  if (llvm::sys::ExecuteAndWait(ptxas, args, std::nullopt, {}, 0, 0,
                                &message)) {
    errs << "error: ptxas rejected the " << chip << " PTX: " << message
         << "\n";
    return failure();
  }
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
    llvm::SmallString<128> in, log;
    int fd;
    if (llvm::sys::fs::createTemporaryFile("lathe-report", "ptx", fd, in) ||
        llvm::sys::fs::createTemporaryFile("lathe-report", "log", log)) {
      errs << "error: cannot create temporary files for ptxas\n";
      return failure();
    }
    llvm::FileRemover inRemover(in), logRemover(log);
    {
      llvm::raw_fd_ostream file(fd, /*shouldClose=*/true);
      file << text;
    }
    std::string arch = "-arch=" + chip, message;
    llvm::StringRef args[] = {*ptxas, arch, "-v", in, "-o", "/dev/null"};
    std::optional<llvm::StringRef> redirects[] = {std::nullopt, llvm::StringRef(log),
                                                  llvm::StringRef(log)};
    if (llvm::sys::ExecuteAndWait(*ptxas, args, std::nullopt, redirects, 0, 0,
                                  &message)) {
      errs << "error: ptxas rejected the " << chip << " PTX: " << message << "\n";
      return failure();
    }
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
