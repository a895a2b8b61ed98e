//===- SpecImporter.h - YAML model spec to the lathe dialect -----*- C++ -*-===//
#ifndef LATHE_SPECIMPORTER_H
#define LATHE_SPECIMPORTER_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

namespace mlir::lathe {

/// What `lathec --train` compiles besides inference: the training window and
/// the optimizer's fixed hyperparameters (the learning rate and its schedule
/// are the runtime's, per step).
struct TrainOptions {
  int64_t seq = 0; // the training window; 0 means max_seq
  // Sequences per grad/accumulate_grad pass, packed as rows (--train-batch):
  // the products then have batch * seq rows.
  int64_t batch = 1;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weightDecay = 0.1;
  double clip = 1.0; // max global gradient norm
  // "adamw", or "muon": Muon for the 2-D matrices of the blocks (names
  // `layers.*`), AdamW for the rest.
  std::string optimizer = "adamw";
  double muonMomentum = 0.95;
  double muonLrScale = 20.0; // Muon's lr = the scheduled AdamW lr * this
};

/// How the inference entries run a model, not what the model is.
struct ExecutionOptions {
  // SNLP (ARCHITECTURES.md §4.4): the forward entry takes this many
  // identity-Newton iterations over all layers at once instead of running
  // them one after another; exact once it reaches the layer count. 0: off.
  int64_t layerParallel = 0;
};

/// Reads a YAML model spec and builds its `lathe` module: parameters and the
/// `forward`, `prefill*` and `decode` entries. With `train`, also:
/// - `grad`: the mean cross-entropy of one window against its targets,
///   returning the loss and every parameter's gradient;
/// - `accumulate_grad`: the same loss, its gradients added into the states
///   `grad.<param>`;
/// - `optimizer_step(lr, step, scale)`: global-norm clipping and AdamW on
///   every parameter, in place, with moments in `adam.m.<param>` and
///   `adam.v.<param>` (with Muon: its matrices' momentum in
///   `muon.b.<param>`); returns the gradient norm.
/// The first two are marked for lathe-differentiate. Errors go to `errs` as
/// one line each, `FILE:LINE:COL: error: MESSAGE`; on error the result is
/// null.
OwningOpRef<ModuleOp> importSpec(llvm::MemoryBufferRef spec, MLIRContext &ctx,
                                 llvm::raw_ostream &errs,
                                 const TrainOptions *train = nullptr,
                                 const ExecutionOptions *execution = nullptr);

} // namespace mlir::lathe

#endif // LATHE_SPECIMPORTER_H
