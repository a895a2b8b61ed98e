//===- ExpandScatterRows.cpp - a table gradient as loops ---------*- C++ -*-===//
//
// An embedding table's gradient adds each row of the cotangent into the
// table row its token names. Parallelising over rows would race wherever a
// token repeats, so the parallel dimension is the columns: an iteration
// owns w columns of every table row and walks the T rows in order. Rows of
// the cotangent are read w columns at a time, so a CPU thread streams them
// with vector loads and a GPU thread reads w consecutive floats.
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include "mlir/Dialect/Vector/IR/VectorOps.h"

namespace mlir::lathe {
#define GEN_PASS_DEF_EXPANDSCATTERROWS
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {

static void expand(ScatterAddRowsOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  auto rowsType = cast<MemRefType>(op.getRows().getType());
  int64_t T = rowsType.getDimSize(0), D = rowsType.getDimSize(1);
  int64_t width = 8;
  while (D % width != 0)
    width /= 2;
  auto idx = [&](OpBuilder &ob, int64_t v) -> Value {
    return arith::ConstantIndexOp::create(ob, loc, v);
  };
  Value c0 = idx(b, 0), c1 = idx(b, 1);
  auto loop = scf::ParallelOp::create(b, loc, ValueRange{c0},
                                      ValueRange{idx(b, D / width)},
                                      ValueRange{c1});
  loop->setAttr(kWorkAttrName, b.getI64IntegerAttr(T * D));
  OpBuilder lb = OpBuilder::atBlockBegin(loop.getBody());
  Value col = arith::MulIOp::create(lb, loc, loop.getInductionVars()[0],
                                    idx(lb, width));
  auto vecType = VectorType::get({width}, lb.getF32Type());
  scf::ForOp::create(
      lb, loc, c0, idx(lb, T), c1, ValueRange{},
      [&](OpBuilder &fb, Location l, Value t, ValueRange) {
        Value raw = memref::LoadOp::create(fb, l, op.getIndices(), ValueRange{t});
        Value row = arith::IndexCastOp::create(fb, l, fb.getIndexType(), raw);
        if (width == 1) {
          Value a = memref::LoadOp::create(fb, l, op.getInit(), ValueRange{row, col});
          Value x = memref::LoadOp::create(fb, l, op.getRows(), ValueRange{t, col});
          memref::StoreOp::create(fb, l, arith::AddFOp::create(fb, l, a, x),
                                  op.getInit(), ValueRange{row, col});
        } else {
          Value a = vector::LoadOp::create(fb, l, vecType, op.getInit(),
                                           ValueRange{row, col});
          Value x = vector::LoadOp::create(fb, l, vecType, op.getRows(),
                                           ValueRange{t, col});
          vector::StoreOp::create(fb, l, arith::AddFOp::create(fb, l, a, x),
                                  op.getInit(), ValueRange{row, col});
        }
        scf::YieldOp::create(fb, l);
      });
  op.erase();
}

struct ExpandScatterRows
    : lathe::impl::ExpandScatterRowsBase<ExpandScatterRows> {
  void runOnOperation() override {
    FailureOr<SmallVector<ScatterAddRowsOp>> ops =
        bufferizedOps<ScatterAddRowsOp>(getOperation(), "lathe-expand-scatter-rows");
    if (failed(ops))
      return signalPassFailure();
    for (ScatterAddRowsOp op : *ops)
      expand(op);
  }
};

} // namespace
