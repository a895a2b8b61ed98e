//===- LatheDialect.h - the lathe dialect ------------------------*- C++ -*-===//
#ifndef LATHE_LATHEDIALECT_H
#define LATHE_LATHEDIALECT_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Dialect.h"

#include "lathe/LatheOpsDialect.h.inc"

namespace mlir::lathe {
/// Unit attribute on a `func.func` formed by `lathe-form-kernels`.
constexpr llvm::StringLiteral kKernelAttrName = "lathe.kernel";
/// On a kernel module whose kernels are GPU kernels run as CPU functions
/// (lathe-emulate-gpu): their library exports `lathe_gpu_emulation`.
constexpr llvm::StringLiteral kGpuEmulationAttrName = "lathe.gpu_emulation";
/// Arena byte offset of an entry argument, set by `lathe-plan-buffers`.
constexpr llvm::StringLiteral kOffsetAttrName = "lathe.offset";
/// Total arena bytes of an entry, set by `lathe-plan-buffers`.
constexpr llvm::StringLiteral kArenaBytesAttrName = "lathe.arena_bytes";
/// A looped block's early exit (LoopUS halting): on the structured op that
/// computes an iteration's halting status, then on the `lathe.launch` that
/// runs it, as the index of the result that holds the status.
constexpr llvm::StringLiteral kExitStatusAttrName = "lathe.exit_status";
/// On the structured op that updates the state a loop hands on, then on
/// its `lathe.launch`: an early exit continues after the last of these.
constexpr llvm::StringLiteral kLoopStateAttrName = "lathe.loop_state";
/// On an extracted kernel (`lathe-extract-kernels`): the arguments whose
/// contents nothing reads after the kernel returns (results no launch's user
/// reads and that are not written in place), so a back end may leave them
/// unwritten, as a GEMM epilogue does with the product before its bias.
constexpr llvm::StringLiteral kUnreadArgsAttrName = "lathe.unread_args";
} // namespace mlir::lathe

#endif // LATHE_LATHEDIALECT_H
