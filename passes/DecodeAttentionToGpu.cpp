//===- DecodeAttentionToGpu.cpp - decode attention across a block -*- C++ -*-===//
//
// Decoding attends one query row per head to up to max_seq cache rows. The
// generic expansion (lathe-expand-fused-attention) gives each (head, row)
// pair one GPU thread, so a decode step runs `heads` threads in all, each
// walking the whole cache. Here each head is a block whose threads split the
// visible keys: thread t runs the online softmax over keys t, t + T, ...,
// leaves its running maximum, denominator and value sum in shared memory,
// and after a barrier the threads combine the T partial states (rescaled to
// the common maximum, as the online softmax rescales its own) into the
// output, one head_dim column each.
//
//===----------------------------------------------------------------------===//

#include "Passes.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <cmath>
#include <limits>

namespace mlir::lathe {
#define GEN_PASS_DEF_DECODEATTENTIONTOGPU
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {

/// Threads per head: 128, fewer where the partial value sums (T x head_dim
/// floats) would pass 32 KiB of shared memory, and never more than the
/// cache has rows.
static int64_t threadsFor(int64_t headDim, int64_t keys) {
  int64_t threads = 128;
  while (threads > 32 && threads * headDim * 4 > 32 * 1024)
    threads /= 2;
  while (threads > 1 && threads / 2 >= keys)
    threads /= 2;
  return threads;
}

static void lower(FusedAttentionOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  MLIRContext *ctx = op.getContext();
  auto kType = cast<MemRefType>(op.getKey().getType());
  int64_t keys = kType.getDimSize(0), heads = op.getHeads(),
          group = heads / op.getKvHeads(), headDim = op.getHeadDim();
  int64_t threads = threadsFor(headDim, keys);
  bool softpick = op.getNormalizer() == Normalizer::softpick;
  Type f32 = b.getF32Type();
  auto vecType = VectorType::get({headDim}, f32);
  auto idx = [&](OpBuilder &ob, int64_t v) -> Value {
    return arith::ConstantIndexOp::create(ob, loc, v);
  };
  auto cst = [&](OpBuilder &ob, double v) -> Value {
    return arith::ConstantOp::create(ob, loc, ob.getF32FloatAttr(v));
  };
  auto shared = gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup);
  auto partial = MemRefType::get({threads}, f32, MemRefLayoutAttrInterface(),
                                 shared);
  auto partialSums = MemRefType::get({threads * headDim}, f32,
                                     MemRefLayoutAttrInterface(), shared);

  Value one = idx(b, 1);
  auto launch = gpu::LaunchOp::create(
      b, loc, idx(b, heads), one, one, idx(b, threads), one, one,
      /*dynamicSharedMemorySize=*/nullptr, /*asyncTokenType=*/nullptr,
      /*asyncDependencies=*/ValueRange{},
      TypeRange{partial, partial, partialSums});
  Block &body = launch.getBody().front();
  OpBuilder lb = OpBuilder::atBlockBegin(&body);
  Value h = launch.getBlockIds().x, t = launch.getThreadIds().x;
  Value sMax = launch.getWorkgroupAttributions()[0];
  Value sDenom = launch.getWorkgroupAttributions()[1];
  Value sAcc = launch.getWorkgroupAttributions()[2];
  Value c0 = idx(lb, 0), c1 = idx(lb, 1), T = idx(lb, threads),
        D = idx(lb, headDim);

  // Phase 1: this thread's keys t, t + T, ... up to the query's position.
  Value raw = memref::LoadOp::create(lb, loc, op.getOffset(), ValueRange{c0});
  Value position = arith::IndexCastOp::create(lb, loc, lb.getIndexType(), raw);
  Value visible = arith::MinUIOp::create(
      lb, loc, arith::AddIOp::create(lb, loc, position, c1), idx(lb, keys));
  Value qCol = arith::MulIOp::create(lb, loc, h, D);
  Value kvCol = arith::MulIOp::create(
      lb, loc, arith::DivUIOp::create(lb, loc, h, idx(lb, group)), D);
  float scale = 1.0f / std::sqrt(static_cast<float>(headDim));
  Value q = vector::LoadOp::create(lb, loc, vecType, op.getQuery(),
                                   ValueRange{c0, qCol});
  q = arith::MulFOp::create(
      lb, loc, q, vector::BroadcastOp::create(lb, loc, vecType, cst(lb, scale)));
  // Softpick's shift is clamped at 0, as in lathe-expand-fused-attention.
  Value m0 = cst(lb, softpick ? 0.0 : -std::numeric_limits<double>::infinity());
  Value zero = cst(lb, 0.0);
  Value acc0 = vector::BroadcastOp::create(lb, loc, vecType, zero);
  auto fast = arith::FastMathFlagsAttr::get(
      ctx, arith::FastMathFlags::reassoc | arith::FastMathFlags::contract);
  auto keysLoop = scf::ForOp::create(
      lb, loc, t, visible, T, ValueRange{m0, zero, acc0},
      [&](OpBuilder &fb, Location l, Value j, ValueRange state) {
        Value m = state[0], denom = state[1], acc = state[2];
        Value k = vector::LoadOp::create(fb, l, vecType, op.getKey(),
                                         ValueRange{j, kvCol});
        Value s = vector::ReductionOp::create(
            fb, l, vector::CombiningKind::ADD,
            arith::MulFOp::create(fb, l, q, k, fast), Value(), fast.getValue());
        Value mNew = arith::MaximumFOp::create(fb, l, m, s);
        Value rescale =
            math::ExpOp::create(fb, l, arith::SubFOp::create(fb, l, m, mNew));
        Value e =
            math::ExpOp::create(fb, l, arith::SubFOp::create(fb, l, s, mNew));
        Value weight = e, mass = e;
        if (softpick) {
          // e^(s-m) - e^(-m): numerator relu, denominator |.|
          Value d = arith::SubFOp::create(
              fb, l, e,
              math::ExpOp::create(fb, l, arith::NegFOp::create(fb, l, mNew)));
          weight = arith::MaximumFOp::create(fb, l, d, cst(fb, 0.0));
          mass = math::AbsFOp::create(fb, l, d);
        }
        Value denomNew = arith::AddFOp::create(
            fb, l, arith::MulFOp::create(fb, l, denom, rescale), mass);
        Value v = vector::LoadOp::create(fb, l, vecType, op.getValue(),
                                         ValueRange{j, kvCol});
        Value accNew = vector::FMAOp::create(
            fb, l, vector::BroadcastOp::create(fb, l, vecType, weight), v,
            arith::MulFOp::create(
                fb, l, acc, vector::BroadcastOp::create(fb, l, vecType, rescale)));
        scf::YieldOp::create(fb, l, ValueRange{mNew, denomNew, accNew});
      });
  memref::StoreOp::create(lb, loc, keysLoop.getResult(0), sMax, ValueRange{t});
  memref::StoreOp::create(lb, loc, keysLoop.getResult(1), sDenom,
                          ValueRange{t});
  vector::StoreOp::create(lb, loc, keysLoop.getResult(2), sAcc,
                          ValueRange{arith::MulIOp::create(lb, loc, t, D)});
  gpu::BarrierOp::create(lb, loc);

  // Phase 2: the common maximum M and denominator sum_u e^(m_u - M) l_u,
  // then column d of the output: sum_u e^(m_u - M) acc_u[d] / denominator.
  // A thread without keys holds m = -inf (softmax; e^-inf = 0) or m = 0
  // with nothing summed (softpick), so it adds nothing.
  auto maxLoop = scf::ForOp::create(
      lb, loc, c0, T, c1,
      ValueRange{cst(lb, -std::numeric_limits<double>::infinity())},
      [&](OpBuilder &fb, Location l, Value u, ValueRange state) {
        Value m = memref::LoadOp::create(fb, l, sMax, ValueRange{u});
        scf::YieldOp::create(
            fb, l, ValueRange{arith::MaximumFOp::create(fb, l, state[0], m)});
      });
  Value M = maxLoop.getResult(0);
  auto factor = [&](OpBuilder &fb, Location l, Value u) -> Value {
    Value m = memref::LoadOp::create(fb, l, sMax, ValueRange{u});
    return math::ExpOp::create(fb, l, arith::SubFOp::create(fb, l, m, M));
  };
  auto denomLoop = scf::ForOp::create(
      lb, loc, c0, T, c1, ValueRange{zero},
      [&](OpBuilder &fb, Location l, Value u, ValueRange state) {
        Value part = arith::MulFOp::create(
            fb, l, factor(fb, l, u),
            memref::LoadOp::create(fb, l, sDenom, ValueRange{u}));
        scf::YieldOp::create(
            fb, l, ValueRange{arith::AddFOp::create(fb, l, state[0], part)});
      });
  Value denom = denomLoop.getResult(0);
  if (softpick)
    denom = arith::AddFOp::create(lb, loc, denom, cst(lb, 1e-8));
  scf::ForOp::create(
      lb, loc, t, D, T, ValueRange{},
      [&](OpBuilder &fb, Location l, Value d, ValueRange) {
        auto sum = scf::ForOp::create(
            fb, l, c0, T, c1, ValueRange{zero},
            [&](OpBuilder &ib, Location il, Value u, ValueRange state) {
              Value at = arith::AddIOp::create(
                  ib, il, arith::MulIOp::create(ib, il, u, D), d);
              Value part = arith::MulFOp::create(
                  ib, il, factor(ib, il, u),
                  memref::LoadOp::create(ib, il, sAcc, ValueRange{at}));
              scf::YieldOp::create(
                  ib, il,
                  ValueRange{arith::AddFOp::create(ib, il, state[0], part)});
            });
        Value out = arith::DivFOp::create(fb, l, sum.getResult(0), denom);
        memref::StoreOp::create(
            fb, l, out, op.getInit(),
            ValueRange{c0, arith::AddIOp::create(fb, l, qCol, d)});
        scf::YieldOp::create(fb, l);
      });
  gpu::TerminatorOp::create(lb, loc);
  op.erase();
}

struct DecodeAttentionToGpu
    : lathe::impl::DecodeAttentionToGpuBase<DecodeAttentionToGpu> {
  void runOnOperation() override {
    SmallVector<FusedAttentionOp> ops;
    getOperation().walk([&](FusedAttentionOp op) {
      auto q = dyn_cast<MemRefType>(op.getQuery().getType());
      if (q && q.getDimSize(0) == 1 && op.getOffset())
        ops.push_back(op);
    });
    for (FusedAttentionOp op : ops)
      lower(op);
  }
};

} // namespace
