//===- LatheDialect.cpp - the lathe dialect ----------------------*- C++ -*-===//
#include "lathe/LatheDialect.h"
#include "lathe/LatheOps.h"

using namespace mlir;
using namespace mlir::lathe;

#include "lathe/Taper.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

#include "lathe/LatheOpsDialect.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "lathe/LatheAttrs.cpp.inc"

void LatheDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "lathe/LatheOps.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "lathe/LatheAttrs.cpp.inc"
      >();
}

LogicalResult TaperAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                StringRef schedule, FloatAttr max, FloatAttr min,
                                int64_t multiple, int64_t base,
                                ArrayRef<int64_t> widths) {
  TaperResult computed =
      computeTaperWidths(schedule, max.getValueAsDouble(), min.getValueAsDouble(),
                         multiple, base, static_cast<int64_t>(widths.size()));
  if (!computed.error.empty())
    return emitError() << "#lathe.taper: " << computed.error;
  if (ArrayRef<int64_t>(computed.widths) != widths) {
    InFlightDiagnostic diag = emitError();
    diag << "#lathe.taper: widths [";
    llvm::interleaveComma(widths, diag);
    diag << "] do not follow from the schedule, which gives [";
    llvm::interleaveComma(computed.widths, diag);
    return diag << "]";
  }
  return success();
}
