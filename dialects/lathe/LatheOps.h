//===- LatheOps.h - lathe ops ------------------------------------*- C++ -*-===//
#ifndef LATHE_LATHEOPS_H
#define LATHE_LATHEOPS_H

#include "lathe/LatheDialect.h"
#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/CallInterfaces.h"
#include "mlir/Interfaces/DestinationStyleOpInterface.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "lathe/LatheInterfaces.h.inc"
#include "lathe/LatheEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "lathe/LatheAttrs.h.inc"

#define GET_OP_CLASSES
#include "lathe/LatheOps.h.inc"

namespace mlir {
class DialectRegistry;
namespace lathe {
/// Bufferization for the kernel-level ops (lathe.fused_attention), kept out
/// of the dialect proper so that it does not depend on bufferization.
void registerBufferizableOpInterfaceExternalModels(DialectRegistry &registry);
} // namespace lathe
} // namespace mlir

#endif // LATHE_LATHEOPS_H
