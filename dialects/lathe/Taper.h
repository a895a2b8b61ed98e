//===- Taper.h - tapered MLP widths --------------------------*- C++ -*-===//
#ifndef LATHE_TAPER_H
#define LATHE_TAPER_H

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"

#include <optional>
#include <string>

namespace mlir::lathe {

/// Per-layer widths of the taper schedule (ARCHITECTURES.md §1.2, with
/// lathe's sigmoid profile from docs/model-and-weights.md), or an error
/// message that names the problem and, where there are some, the widths.
/// The spec importer and #lathe.taper's verifier share it.
struct TaperResult {
  llvm::SmallVector<int64_t> widths;
  std::string error; // empty on success
  std::string errorKey; // the spec key the error is about
};
TaperResult computeTaperWidths(llvm::StringRef schedule, double max, double min,
                               int64_t multiple, int64_t base, int64_t layers);

} // namespace mlir::lathe

#endif // LATHE_TAPER_H
