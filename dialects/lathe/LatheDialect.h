//===- LatheDialect.h - the lathe dialect ------------------------*- C++ -*-===//
#ifndef LATHE_LATHEDIALECT_H
#define LATHE_LATHEDIALECT_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Dialect.h"

#include "lathe/LatheOpsDialect.h.inc"

namespace mlir::lathe {
/// Unit attribute on a `func.func` formed by `lathe-form-kernels`.
constexpr llvm::StringLiteral kKernelAttrName = "lathe.kernel";
/// Arena byte offset of an entry argument, set by `lathe-plan-buffers`.
constexpr llvm::StringLiteral kOffsetAttrName = "lathe.offset";
/// Total arena bytes of an entry, set by `lathe-plan-buffers`.
constexpr llvm::StringLiteral kArenaBytesAttrName = "lathe.arena_bytes";
} // namespace mlir::lathe

#endif // LATHE_LATHEDIALECT_H
