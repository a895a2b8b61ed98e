//===- CpuTarget.cpp - kernels to a host shared object -----------*- C++ -*-===//
//
// The LLVM-dialect kernels are translated to LLVM IR, given uniform entry
// points `lathe_kernel_<name>(void **args)` (so the runtime needs no per-arity
// call code), optimised for the host CPU, emitted as an object and linked
// into a shared object with lld, which the runtime dlopens.
//
//===----------------------------------------------------------------------===//

#include "Targets.h"

#include "lathe/LatheDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/InstIterator.h"
#include "llvm/IR/Operator.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"
#include "llvm/TargetParser/SubtargetFeature.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"

using namespace mlir;
using namespace mlir::lathe;

/// void lathe_kernel_<name>(void **args) { <name>(args[0], args[1], ...); }
/// Integer parameters (a partitioned kernel's part and parts, see
/// lathe-partition-kernels) travel in their slot as an integer; such kernels
/// also export `lathe_partitioned_<name>`, which tells the runtime to run
/// them in parts on its threads.
static void addEntryPoints(llvm::Module &module,
                           ArrayRef<std::string> kernels) {
  llvm::LLVMContext &ctx = module.getContext();
  llvm::Type *ptr = llvm::PointerType::getUnqual(ctx);
  auto *entryType =
      llvm::FunctionType::get(llvm::Type::getVoidTy(ctx), {ptr}, false);
  for (const std::string &name : kernels) {
    llvm::Function *kernel = module.getFunction(name);
    auto *entry = llvm::Function::Create(entryType,
                                         llvm::GlobalValue::ExternalLinkage,
                                         "lathe_kernel_" + name, module);
    llvm::IRBuilder<> b(llvm::BasicBlock::Create(ctx, "entry", entry));
    SmallVector<llvm::Value *> args;
    unsigned integers = 0;
    for (unsigned i = 0; i < kernel->arg_size(); ++i) {
      llvm::Value *slot = b.CreateConstGEP1_64(ptr, entry->getArg(0), i);
      llvm::Value *value = b.CreateLoad(ptr, slot);
      llvm::Type *type = kernel->getArg(i)->getType();
      if (type->isIntegerTy()) {
        value = b.CreatePtrToInt(value, type);
        ++integers;
      }
      args.push_back(value);
    }
    if (integers == 2)
      new llvm::GlobalVariable(
          module, llvm::Type::getInt8Ty(ctx), /*isConstant=*/true,
          llvm::GlobalValue::ExternalLinkage,
          llvm::ConstantInt::get(llvm::Type::getInt8Ty(ctx), 1),
          "lathe_partitioned_" + name);
    b.CreateCall(kernel, args);
    b.CreateRetVoid();
    // The kernels themselves need not be visible outside the library.
    kernel->setLinkage(llvm::GlobalValue::InternalLinkage);
  }
}

/// Kernels call host services (lathe_host_gemm) through a pointer slot that
/// the runtime fills after loading the library, so the library needs no
/// link-time dependency on the runtime or on a BLAS.
static void addHostSlots(llvm::Module &module) {
  for (const char *name : {"lathe_host_gemm"}) {
    llvm::Function *decl = module.getFunction(name);
    if (!decl || !decl->isDeclaration())
      continue;
    llvm::Type *ptr = llvm::PointerType::getUnqual(module.getContext());
    auto *slot = new llvm::GlobalVariable(
        module, ptr, /*isConstant=*/false, llvm::GlobalValue::ExternalLinkage,
        llvm::ConstantPointerNull::get(llvm::PointerType::getUnqual(
            module.getContext())),
        std::string(name) + "_slot");
    for (llvm::User *user : llvm::make_early_inc_range(decl->users())) {
      auto *call = llvm::cast<llvm::CallInst>(user);
      llvm::IRBuilder<> b(call);
      llvm::Value *fn = b.CreateLoad(ptr, slot);
      SmallVector<llvm::Value *> args(call->args());
      llvm::CallInst *indirect =
          b.CreateCall(decl->getFunctionType(), fn, args);
      call->replaceAllUsesWith(indirect);
      call->eraseFromParent();
    }
    decl->eraseFromParent();
  }
}

/// Reassociation and contraction let LLVM vectorize the kernels' reductions
/// (sums and maxima along a row) and use FMA. No-NaN/no-Inf are not set:
/// the causal mask relies on -inf.
static void relaxFloatingPoint(llvm::Module &module) {
  for (llvm::Function &fn : module)
    for (llvm::Instruction &inst : llvm::instructions(fn))
      if (llvm::isa<llvm::FPMathOperator>(inst)) {
        inst.setHasAllowReassoc(true);
        inst.setHasAllowContract(true);
        inst.setHasNoSignedZeros(true);
      }
}

static std::unique_ptr<llvm::TargetMachine> hostMachine(std::string &error) {
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  llvm::Triple triple(llvm::sys::getProcessTriple());
  const llvm::Target *target =
      llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return nullptr;
  llvm::SubtargetFeatures features;
  for (const auto &[feature, enabled] : llvm::sys::getHostCPUFeatures())
    features.AddFeature(feature, enabled);
  llvm::TargetOptions options;
  return std::unique_ptr<llvm::TargetMachine>(target->createTargetMachine(
      triple, llvm::sys::getHostCPUName(), features.getString(), options,
      llvm::Reloc::PIC_, std::nullopt, llvm::CodeGenOptLevel::Aggressive));
}

static void optimize(llvm::Module &module, llvm::TargetMachine &machine) {
  llvm::LoopAnalysisManager lam;
  llvm::FunctionAnalysisManager fam;
  llvm::CGSCCAnalysisManager cgam;
  llvm::ModuleAnalysisManager mam;
  llvm::PassBuilder pb(&machine);
  pb.registerModuleAnalyses(mam);
  pb.registerCGSCCAnalyses(cgam);
  pb.registerFunctionAnalyses(fam);
  pb.registerLoopAnalyses(lam);
  pb.crossRegisterProxies(lam, fam, cgam, mam);
  pb.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O3)
      .run(module, mam);
}

FailureOr<std::string> mlir::lathe::buildCpuLibrary(ModuleOp kernels,
                                                    llvm::raw_ostream *llvmIR) {
  std::vector<std::string> names;
  for (auto fn : kernels.getOps<LLVM::LLVMFuncOp>())
    if (!fn.isExternal())
      names.push_back(fn.getSymName().str());

  llvm::LLVMContext llvmCtx;
  std::unique_ptr<llvm::Module> module =
      translateModuleToLLVMIR(kernels, llvmCtx, "lathe_kernels");
  if (!module)
    return kernels.emitError("cannot translate the kernels to LLVM IR");
  addEntryPoints(*module, names);
  if (kernels->hasAttr(kGpuEmulationAttrName))
    new llvm::GlobalVariable(
        *module, llvm::Type::getInt8Ty(llvmCtx), /*isConstant=*/true,
        llvm::GlobalValue::ExternalLinkage,
        llvm::ConstantInt::get(llvm::Type::getInt8Ty(llvmCtx), 1),
        "lathe_gpu_emulation");
  addHostSlots(*module);
  relaxFloatingPoint(*module);

  std::string error;
  std::unique_ptr<llvm::TargetMachine> machine = hostMachine(error);
  if (!machine)
    return kernels.emitError("no host target: ") << error;
  module->setDataLayout(machine->createDataLayout());
  module->setTargetTriple(machine->getTargetTriple());
  optimize(*module, *machine);
  if (llvmIR) {
    module->print(*llvmIR, nullptr);
    return std::string();
  }

  // Object file, then a shared object through lld.
  llvm::SmallString<128> objPath, soPath;
  int objFd;
  if (llvm::sys::fs::createTemporaryFile("lathe-kernels", "o", objFd, objPath))
    return kernels.emitError("cannot create a temporary object file");
  llvm::FileRemover objRemover(objPath);
  {
    llvm::raw_fd_ostream obj(objFd, /*shouldClose=*/true);
    llvm::legacy::PassManager pm;
    if (machine->addPassesToEmitFile(pm, obj, nullptr,
                                     llvm::CodeGenFileType::ObjectFile))
      return kernels.emitError("the host target cannot emit object files");
    pm.run(*module);
  }
  if (llvm::sys::fs::createTemporaryFile("lathe-kernels", "so", soPath))
    return kernels.emitError("cannot create a temporary library file");
  llvm::FileRemover soRemover(soPath);
  llvm::ErrorOr<std::string> lld = llvm::sys::findProgramByName("ld.lld-22");
  if (!lld)
    lld = llvm::sys::findProgramByName("ld.lld");
  if (!lld)
    return kernels.emitError("ld.lld not found on PATH (install lld-22)");
  std::string message;
  llvm::StringRef args[] = {*lld, "-shared", "--as-needed", "-o", soPath,
                            objPath};
  if (llvm::sys::ExecuteAndWait(*lld, args, std::nullopt, {}, 0, 0, &message))
    return kernels.emitError("linking the kernels failed: ") << message;
  auto so = llvm::MemoryBuffer::getFile(soPath, /*IsText=*/false);
  if (!so)
    return kernels.emitError("cannot read the linked kernels");
  return (*so)->getBuffer().str();
}
