//===- DedupKernels.cpp - one copy of identical kernels ----------*- C++ -*-===//
//
// Two kernels are the same code when their printed forms agree once the name
// is set aside: printing is the structural comparison MLIR already has for
// whole functions, with attributes and types included.
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/StringMap.h"

namespace mlir::lathe {
#define GEN_PASS_DEF_DEDUPKERNELS
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {
struct DedupKernels : lathe::impl::DedupKernelsBase<DedupKernels> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    llvm::StringMap<func::FuncOp> first;
    DenseMap<StringAttr, FlatSymbolRefAttr> replacement;
    SmallVector<func::FuncOp> dead;
    OpPrintingFlags flags;
    flags.printGenericOpForm().useLocalScope();
    for (auto fn : module.getOps<func::FuncOp>()) {
      if (!fn->hasAttr(kKernelAttrName) || fn.isExternal())
        continue;
      std::string key;
      llvm::raw_string_ostream os(key);
      os << fn.getFunctionType();
      for (Block &block : fn.getBody())
        for (Operation &op : block)
          op.print(os, flags);
      auto [it, inserted] = first.try_emplace(key, fn);
      if (inserted)
        continue;
      replacement[fn.getSymNameAttr()] =
          FlatSymbolRefAttr::get(it->second.getSymNameAttr());
      dead.push_back(fn);
    }
    if (replacement.empty())
      return;
    module.walk([&](LaunchOp launch) {
      auto it = replacement.find(launch.getCalleeAttr().getAttr());
      if (it != replacement.end())
        launch.setCalleeAttr(it->second);
    });
    for (func::FuncOp fn : dead)
      fn.erase();
  }
};
} // namespace
