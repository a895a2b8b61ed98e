//===- SpecImporter.h - YAML model spec to the lathe dialect -----*- C++ -*-===//
#ifndef LATHE_SPECIMPORTER_H
#define LATHE_SPECIMPORTER_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

namespace mlir::lathe {

/// Reads a YAML model spec and builds its `lathe` module: parameters and the
/// `forward`, `prefill*` and `decode` entries; with `train`, also `grad`: the
/// mean cross-entropy of a max_seq window against its targets, marked for
/// lathe-differentiate. Errors go to `errs` as one line each,
/// `FILE:LINE:COL: error: MESSAGE`; on error the result is null.
OwningOpRef<ModuleOp> importSpec(llvm::MemoryBufferRef spec, MLIRContext &ctx,
                                 llvm::raw_ostream &errs, bool train = false);

} // namespace mlir::lathe

#endif // LATHE_SPECIMPORTER_H
