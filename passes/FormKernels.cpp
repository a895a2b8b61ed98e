//===- FormKernels.cpp - outline structured ops into kernels -----*- C++ -*-===//
//
// Kernel formation is target-independent: a kernel is a function with explicit
// inputs and outputs, so the CPU and CUDA back ends compile the same kernels
// and the host schedule is just the sequence of `lathe.launch` ops.
//
// Today a kernel is one structured op plus the fills that initialise its
// outputs; fusing producers and epilogues into that unit is the next step and
// does not change the interface.
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include "mlir/IR/IRMapping.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Transforms/RegionUtils.h"

namespace mlir::lathe {
#define GEN_PASS_DEF_FORMKERNELS
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {

/// A fill that only initialises the output of another structured op is part
/// of that op's kernel, not a kernel of its own.
static bool isInitFill(Operation *op) {
  auto fill = dyn_cast<linalg::FillOp>(op);
  if (!fill || !fill->hasOneUse())
    return false;
  OpOperand &use = *fill->getUses().begin();
  auto consumer = dyn_cast<linalg::LinalgOp>(use.getOwner());
  return consumer && consumer.isDpsInit(&use);
}

static bool isInlinedConstant(Value v) {
  Operation *def = v.getDefiningOp();
  return def && def->hasTrait<OpTrait::ConstantLike>();
}

struct FormKernels : lathe::impl::FormKernelsBase<FormKernels> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SymbolTable symbols(module);
    SmallVector<func::FuncOp> entries;
    for (auto fn : module.getOps<func::FuncOp>())
      if (!fn.isExternal() && !fn->hasAttr(kKernelAttrName))
        entries.push_back(fn);
    for (func::FuncOp entry : entries)
      if (failed(formKernels(entry, symbols)))
        return signalPassFailure();
  }

  LogicalResult formKernels(func::FuncOp entry, SymbolTable &symbols) {
    SmallVector<linalg::LinalgOp> anchors;
    entry.walk([&](linalg::LinalgOp op) {
      if (!isInitFill(op))
        anchors.push_back(op);
    });
    unsigned counter = 0;
    Operation *insertAfter = entry;
    for (linalg::LinalgOp anchor : anchors) {
      FailureOr<func::FuncOp> kernel =
          outline(entry, anchor, counter++, insertAfter, symbols);
      if (failed(kernel))
        return failure();
      insertAfter = *kernel;
    }
    // Constants now cloned into kernels are dead in the entry.
    SmallVector<Operation *> dead;
    entry.walk([&](Operation *op) {
      if (op->hasTrait<OpTrait::ConstantLike>() && op->use_empty())
        dead.push_back(op);
    });
    for (Operation *op : dead)
      op->erase();
    return success();
  }

  /// Outlines `anchor` into kernel number `index`, placed after
  /// `insertAfter` so kernels appear in launch order.
  FailureOr<func::FuncOp> outline(func::FuncOp entry, linalg::LinalgOp anchor,
                                  unsigned index, Operation *insertAfter,
                                  SymbolTable &symbols) {
    Operation *op = anchor.getOperation();
    MLIRContext *ctx = op->getContext();
    Location loc = op->getLoc();

    // Inputs: the op's own inputs, then tensors its body reads from above
    // (e.g. an embedding table or a rotated partner element).
    SetVector<Value> inputs;
    for (Value v : anchor.getDpsInputs())
      if (!isInlinedConstant(v))
        inputs.insert(v);
    SetVector<Value> captured;
    getUsedValuesDefinedAbove(op->getRegions(), captured);
    for (Value v : captured)
      if (!isInlinedConstant(v))
        inputs.insert(v);
    for (Value v : inputs)
      if (!isa<RankedTensorType>(v.getType()))
        return op->emitOpError("cannot form a kernel: input of type ")
               << v.getType() << " is not a ranked tensor";

    // Outputs: each init must be fresh (empty, or a fill of empty); the
    // kernel receives a buffer to overwrite in its place.
    SmallVector<Type> argTypes(llvm::map_range(
        inputs, [](Value v) { return v.getType(); }));
    for (OpOperand &init : anchor.getDpsInitsMutable()) {
      Operation *def = init.get().getDefiningOp();
      bool fresh = isa_and_nonnull<tensor::EmptyOp>(def) ||
                   (isa_and_nonnull<linalg::FillOp>(def) &&
                    isa_and_nonnull<tensor::EmptyOp>(
                        cast<linalg::FillOp>(def).getOutputs()[0].getDefiningOp()));
      if (!fresh)
        return op->emitOpError(
            "cannot form a kernel: an output is initialised from a live value");
      argTypes.push_back(init.get().getType());
    }
    TypeRange resultTypes = op->getResultTypes();

    OpBuilder b(ctx);
    b.setInsertionPointAfter(insertAfter);
    auto kernel = func::FuncOp::create(
        b, loc, (entry.getSymName() + "_k" + Twine(index)).str(),
        FunctionType::get(ctx, argTypes, resultTypes));
    kernel.setPrivate();
    kernel->setAttr(kKernelAttrName, UnitAttr::get(ctx));
    symbols.insert(kernel, b.getInsertionPoint());

    Block *body = kernel.addEntryBlock();
    b.setInsertionPointToStart(body);
    IRMapping map;
    for (auto [v, arg] : llvm::zip(inputs, body->getArguments()))
      map.map(v, arg);
    // Constants the op uses from above are cloned, not passed.
    auto cloneConstant = [&](Value v) {
      if (isInlinedConstant(v) && !map.contains(v))
        map.map(v, b.clone(*v.getDefiningOp())->getResult(0));
    };
    for (Value v : anchor.getDpsInputs())
      cloneConstant(v);
    for (Value v : captured)
      cloneConstant(v);
    unsigned outArg = inputs.size();
    for (OpOperand &init : anchor.getDpsInitsMutable()) {
      Value buffer = body->getArgument(outArg++);
      if (auto fill = init.get().getDefiningOp<linalg::FillOp>()) {
        Value scalar = fill.getInputs()[0];
        cloneConstant(scalar);
        Value filled = linalg::FillOp::create(b, fill.getLoc(),
                                              map.lookupOrDefault(scalar),
                                              buffer)
                           .getResult(0);
        map.map(init.get(), filled);
      } else {
        map.map(init.get(), buffer);
      }
    }
    Operation *clone = b.clone(*op, map);
    func::ReturnOp::create(b, loc, clone->getResults());

    // The entry launches the kernel in the op's place.
    OpBuilder eb(op);
    auto launch = LaunchOp::create(eb, loc, resultTypes,
                                   FlatSymbolRefAttr::get(kernel),
                                   inputs.getArrayRef(), nullptr, nullptr,
                                   nullptr);
    SmallVector<Operation *> inits;
    for (Value v : anchor.getDpsInits())
      inits.push_back(v.getDefiningOp());
    op->replaceAllUsesWith(launch->getResults());
    op->erase();
    // Drop the now-unused initialisers (fill, then its empty).
    for (Operation *init : inits) {
      SmallVector<Operation *> chain = {init};
      if (auto fill = dyn_cast<linalg::FillOp>(init)) {
        chain.push_back(fill.getOutputs()[0].getDefiningOp());
        if (isInlinedConstant(fill.getInputs()[0]))
          chain.push_back(fill.getInputs()[0].getDefiningOp());
      }
      for (Operation *dead : chain)
        if (dead && dead->use_empty())
          dead->erase();
    }
    return kernel;
  }
};

} // namespace
