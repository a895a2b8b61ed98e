//===- lathe-opt.cpp - mlir-opt with lathe's dialect and passes --*- C++ -*-===//
#include "Passes.h"
#include "lathe/Compiler.h"
#include "lathe/Pipelines.h"

#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::registerAllPasses();
  mlir::lathe::registerLathePasses();
  mlir::lathe::registerLathePipelines();
  mlir::DialectRegistry registry;
  mlir::lathe::registerCompilerDialects(registry);
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "lathe optimizer driver\n", registry));
}
