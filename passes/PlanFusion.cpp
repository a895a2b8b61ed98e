//===- PlanFusion.cpp - which lathe ops run as one kernel --------*- C++ -*-===//
//
// The decision is made on architecture-level ops because that is where the
// pattern is plain: "a norm feeding projections", "RoPE after the Q/K
// projection". After lowering, the same facts are spread over fills,
// generics and reshapes. The rules only ever join an op with its producer
// or with ops reading the same value, so a group is a connected piece of the
// dataflow graph; kernel formation checks that it can be outlined in place.
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include "llvm/ADT/EquivalenceClasses.h"

namespace mlir::lathe {
#define GEN_PASS_DEF_PLANFUSION
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {

static bool isProjection(Operation *op) { return isa<LinearOp, MlpOp>(op); }

/// The projection input of a linear or MLP (not its weights or accumulator).
static Value projectionInput(Operation *op) {
  if (auto linear = dyn_cast<LinearOp>(op))
    return linear.getInput();
  return cast<MlpOp>(op).getInput();
}

struct PlanFusion : lathe::impl::PlanFusionBase<PlanFusion> {
  void runOnOperation() override {
    for (auto fn : getOperation().getOps<func::FuncOp>())
      if (!fn.isExternal() && !fn->hasAttr(kKernelAttrName))
        plan(fn);
  }

  void plan(func::FuncOp fn) {
    llvm::EquivalenceClasses<Operation *> groups;
    SmallVector<Operation *> ops;
    fn.walk([&](Operation *op) {
      if (isa<RmsNormOp, LayerNormOp, LinearOp, MlpOp, RopeOp, AttentionOp,
              CacheWriteOp, EmbeddingOp, AddOp, PhaseRotateOp, DcInjectOp,
              DepthAttentionOp, ParcaeInjectOp, SubOp, ModulatedRmsNormOp,
              GatedAddOp, SinusoidOp, SiluOp, RowSumSquaresOp, AdamwOp,
              AssignOp, SelectiveGateOp, HaltConfidenceOp, HaltIfOp,
              MatmulOp>(op)) {
        ops.push_back(op);
        groups.insert(op);
      }
    });
    for (Operation *op : ops) {
      Operation *producer = nullptr;
      if (isa<RmsNormOp, LayerNormOp, ModulatedRmsNormOp, SinusoidOp, SiluOp>(
              op)) {
        // A norm (or a feature map, or an activation) joins its users when
        // all of them only project it: its output never leaves the kernel
        // that consumes it.
        Value out = op->getResult(0);
        bool allProject = !out.use_empty() &&
                          llvm::all_of(out.getUsers(), [&](Operation *user) {
                            return isProjection(user) &&
                                   projectionInput(user) == out;
                          });
        if (allProject)
          for (Operation *user : out.getUsers())
            groups.unionSets(op, user);
      } else if (auto linear = dyn_cast<LinearOp>(op)) {
        // A routing gate's logits (Delta AttnRes's sigmoid_vector) are made
        // in the routing site's kernel, which reads the stream anyway.
        Value out = linear.getResult();
        if (out.hasOneUse())
          if (auto route = dyn_cast<DepthAttentionOp>(*out.getUsers().begin()))
            if (route.getGate() == out)
              groups.unionSets(op, route);
        // Projections of one input: Q, K and V read it once, together.
        for (Operation *sibling : linear.getInput().getUsers())
          if (sibling != op && isa<LinearOp>(sibling) &&
              cast<LinearOp>(sibling).getInput() == linear.getInput())
            groups.unionSets(op, sibling);
      } else if (auto rope = dyn_cast<RopeOp>(op)) {
        producer = rope.getInput().getDefiningOp<LinearOp>();
      } else if (isa<AddOp, GatedAddOp>(op)) {
        Operation *add = op;
        // A residual add is part of its projection's kernel: folded into the
        // GEMM when the product has no other use, else (Delta AttnRes keeps
        // each sublayer output as a routing source) an epilogue writing
        // both the product and the sum.
        // Of two projections (Kimi Block's running sum), the later one: the
        // earlier one's kernel has already been launched by then.
        for (Value operand : add->getOperands())
          if (Operation *def = operand.getDefiningOp();
              def && isProjection(def) &&
              (!producer || producer->isBeforeInBlock(def)))
            producer = def;
      } else if (auto inject = dyn_cast<ParcaeInjectOp>(op)) {
        // Parcae's injection runs where the previous iteration's state was
        // produced (the core's last MLP), or with B e on the first.
        Value from = inject.getState() ? inject.getState() : inject.getBe();
        producer = from.getDefiningOp();
        if (producer && !groups.contains(producer))
          producer = nullptr;
      } else if (auto route = dyn_cast<DepthAttentionOp>(op)) {
        // A routing site feeding only the next sublayer's norm runs in that
        // norm's (and so its projections') kernel.
        Value out = route.getResult();
        if (out.hasOneUse() &&
            isa<RmsNormOp, LayerNormOp, ModulatedRmsNormOp>(
                *out.getUsers().begin()))
          producer = *out.getUsers().begin();
        // Two sites over the same sources and stream (delta_v's value site
        // next to the attention site) read them once, together.
        if (Value base = route.getBase())
          for (Operation *user : base.getUsers())
            if (auto other = dyn_cast<DepthAttentionOp>(user);
                other && other != route && other.getBase() == base &&
                other.getSources() == route.getSources())
              groups.unionSets(op, other);
      } else if (isa<PhaseRotateOp, DcInjectOp, SubOp, RowSumSquaresOp>(op)) {
        // Elementwise rewrites of the residual stream (3PT's rotation after
        // the O projection, the horn after the embedding) run in the
        // kernel that produced the stream.
        producer = op->getOperand(0).getDefiningOp();
        if (producer && !groups.contains(producer))
          producer = nullptr;
      } else if (auto write = dyn_cast<CacheWriteOp>(op)) {
        producer = write.getRows().getDefiningOp();
        if (producer && !isa<LinearOp, RopeOp>(producer))
          producer = nullptr;
      } else if (auto halt = dyn_cast<HaltIfOp>(op)) {
        // LoopUS's step after each pass of the core: the gate, the
        // confidence head and the halting decision read the same two
        // states, so they are one kernel, whose launch is the exit point.
        producer = halt.getNext().getDefiningOp<SelectiveGateOp>();
        if (Operation *q = halt.getQ().getDefiningOp<HaltConfidenceOp>())
          groups.unionSets(op, q);
      } else if (auto assign = dyn_cast<AssignOp>(op)) {
        // The optimizer's write-back runs in the kernel that computed the
        // new value (the AdamW update, the gradient sum), in place.
        producer = assign.getValue().getDefiningOp();
        if (producer && !groups.contains(producer))
          producer = nullptr;
      }
      if (producer)
        groups.unionSets(op, producer);
    }
    // Number the groups in program order.
    DenseMap<Operation *, int64_t> number;
    auto i64 = IntegerType::get(&getContext(), 64);
    for (Operation *op : ops) {
      Operation *leader = groups.getLeaderValue(op);
      auto [it, inserted] = number.try_emplace(leader, number.size());
      op->setAttr(kFusionGroupAttrName, IntegerAttr::get(i64, it->second));
    }
  }
};

} // namespace
