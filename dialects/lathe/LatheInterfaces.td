//===- LatheInterfaces.td - lathe op interfaces ---------------*- tablegen -*-===//
//
// Differentiation at the architecture level: each differentiable lathe op
// states its vector-Jacobian product in lathe ops, so the backward graph of a
// model reads like its forward graph and lowers through the same passes.
//
//===----------------------------------------------------------------------===//

#ifndef LATHE_INTERFACES_TD
#define LATHE_INTERFACES_TD

include "mlir/IR/OpBase.td"

def Lathe_VjpOpInterface : OpInterface<"VjpOpInterface"> {
  let description = [{
    An op that can be differentiated states its vector-Jacobian product:
    given the cotangents of its results (null where a result does not reach
    the loss), it builds lathe ops that compute the cotangents of its
    operands, and returns them in operand order (null for an operand that is
    not differentiable, such as token ids or a position offset, or that gets
    no gradient). `lathe-differentiate` calls it on each op in reverse order.

    ```mlir
    // y = x W^T:  dx = dy W,  dW = dy^T x
    %dx = lathe.matmul %dy, %w : tensor<8x32xf32>, tensor<32x64xf32> -> tensor<8x64xf32>
    %dw = lathe.matmul %dy, %x {transpose_lhs}
        : tensor<8x32xf32>, tensor<8x64xf32> -> tensor<32x64xf32>
    ```
  }];
  let cppNamespace = "::mlir::lathe";
  let methods = [
    InterfaceMethod<
      "Builds the operand cotangents from the result cotangents (null where "
      "a result has none); fills `operandCotangents` with one value (or "
      "null) per operand. Fails with an error on the op where the VJP is "
      "not available for this op's attributes.",
      "::llvm::LogicalResult", "buildVjp",
      (ins "::mlir::OpBuilder &":$builder,
           "::llvm::ArrayRef<::mlir::Value>":$resultCotangents,
           "::llvm::SmallVectorImpl<::mlir::Value> &":$operandCotangents)>,
  ];
}

#endif // LATHE_INTERFACES_TD
