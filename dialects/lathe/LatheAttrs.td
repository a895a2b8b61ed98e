//===- LatheAttrs.td - lathe attributes ----------------------*- tablegen -*-===//
//
// Compile-time schedules that shape a model: they resolve to static shapes,
// and their verifiers hold the invariants the architecture papers rely on.
//
//===----------------------------------------------------------------------===//

#ifndef LATHE_ATTRS_TD
#define LATHE_ATTRS_TD

include "LatheDialect.td"
include "mlir/IR/AttrTypeBase.td"

def Lathe_TaperAttr : AttrDef<Lathe_Dialect, "Taper"> {
  let mnemonic = "taper";
  let summary = "MLP widths tapered across depth with an exact budget.";
  let description = [{
    The Tapered Language Models schedule (ARCHITECTURES.md §1.2): layer l of
    L gets width w_l from the profile `schedule` (cosine, linear or sigmoid,
    from `max` at the first layer to `min` at the last), normalised so that
    the widths sum to L * `base`, rounded to multiples of `multiple` by
    largest remainders (earlier layers first on ties). `widths` is the
    result; the verifier recomputes it, so a schedule whose budget cannot be
    met, or a width list that does not follow from the schedule, is
    rejected with the computed widths in the message.

    ```mlir
    module attributes {lathe.mlp_taper = #lathe.taper<"cosine", 1.5, 0.5,
        multiple 64, base 128, widths [192, 192, 64, 64]>} {}
    ```
  }];
  let parameters = (ins StringRefParameter<"profile">:$schedule,
                        "::mlir::FloatAttr":$max,
                        "::mlir::FloatAttr":$min,
                        "int64_t":$multiple,
                        "int64_t":$base,
                        ArrayRefParameter<"int64_t", "per-layer widths">:$widths);
  let assemblyFormat = [{
    `<` $schedule `,` $max `,` $min `,` `multiple` $multiple `,` `base` $base
    `,` `widths` `[` $widths `]` `>`
  }];
  let genVerifyDecl = 1;
}

#endif // LATHE_ATTRS_TD
