//===- MergeGpuModules.cpp - one gpu.module for all kernels ------*- C++ -*-===//
#include "Passes.h"

#include "mlir/IR/SymbolTable.h"

namespace mlir::lathe {
#define GEN_PASS_DEF_MERGEGPUMODULES
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {
struct MergeGpuModules : lathe::impl::MergeGpuModulesBase<MergeGpuModules> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<gpu::GPUModuleOp> sources(module.getOps<gpu::GPUModuleOp>());
    if (sources.empty())
      return;
    OpBuilder b(module.getContext());
    b.setInsertionPoint(sources.front());
    auto merged =
        gpu::GPUModuleOp::create(b, module.getLoc(), "lathe_kernels");
    SymbolTable mergedSymbols(merged);
    // Old (module, func) -> new func name.
    DenseMap<std::pair<StringAttr, StringAttr>, StringAttr> renamed;
    for (gpu::GPUModuleOp source : sources) {
      for (auto fn : llvm::make_early_inc_range(source.getOps<gpu::GPUFuncOp>())) {
        StringAttr oldName = fn.getNameAttr();
        std::string name = source.getName().str();
        if (fn.getName() != source.getName())
          name += "_" + fn.getName().str();
        fn->remove();
        fn.setName(name);
        mergedSymbols.insert(fn);
        renamed[{source.getNameAttr(), oldName}] = fn.getNameAttr();
      }
    }
    WalkResult result = module.walk([&](gpu::LaunchFuncOp launch) {
      auto it = renamed.find({launch.getKernelModuleName(),
                              launch.getKernelName()});
      if (it == renamed.end()) {
        launch.emitOpError("launches a kernel lathe did not outline");
        return WalkResult::interrupt();
      }
      launch.setKernelAttr(SymbolRefAttr::get(
          merged.getNameAttr(), {FlatSymbolRefAttr::get(it->second)}));
      return WalkResult::advance();
    });
    if (result.wasInterrupted())
      return signalPassFailure();
    for (gpu::GPUModuleOp source : sources)
      source->erase();
    module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                    UnitAttr::get(module.getContext()));
  }
};
} // namespace
