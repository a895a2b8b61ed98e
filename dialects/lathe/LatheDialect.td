//===- LatheDialect.td - the lathe dialect -------------------*- tablegen -*-===//
//
// The architecture level of lathe: model parameters and the building blocks of
// decoder models, with every static invariant held by a verifier.
//
//===----------------------------------------------------------------------===//

#ifndef LATHE_DIALECT_TD
#define LATHE_DIALECT_TD

include "mlir/IR/OpBase.td"

def Lathe_Dialect : Dialect {
  let name = "lathe";
  let summary = "Architecture-level ops for decoder language models.";
  let description = [{
    The `lathe` dialect describes a model the way a researcher thinks of it:
    named parameters with an init rule, and ops such as `lathe.rms_norm`,
    `lathe.attention` or `lathe.mlp` on static-shaped tensors. A spec importer
    produces it; `lathe-lower-to-linalg` lowers it; `lathe-form-kernels` then
    groups the result into kernels launched with `lathe.launch`.

    ```mlir
    lathe.param @"norm.weight" : tensor<64xf32> init(ones)
    func.func @forward(%x: tensor<8x64xf32>) -> tensor<8x64xf32> {
      %g = lathe.weight @"norm.weight" : tensor<64xf32>
      %y = lathe.rms_norm %x, %g {eps = 1.0e-05 : f64}
          : tensor<8x64xf32>, tensor<64xf32> -> tensor<8x64xf32>
      return %y : tensor<8x64xf32>
    }
    ```
  }];
  let cppNamespace = "::mlir::lathe";
  let dependentDialects = ["::mlir::func::FuncDialect"];
  let useDefaultAttributePrinterParser = 1;
}

class Lathe_Op<string mnemonic, list<Trait> traits = []>
    : Op<Lathe_Dialect, mnemonic, traits>;

#endif // LATHE_DIALECT_TD
