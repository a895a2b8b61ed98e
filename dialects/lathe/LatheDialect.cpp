//===- LatheDialect.cpp - the lathe dialect ----------------------*- C++ -*-===//
#include "lathe/LatheDialect.h"
#include "lathe/LatheOps.h"

using namespace mlir;
using namespace mlir::lathe;

#include "lathe/LatheOpsDialect.cpp.inc"

void LatheDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "lathe/LatheOps.cpp.inc"
      >();
}
