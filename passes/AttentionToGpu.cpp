//===- AttentionToGpu.cpp - attention kernels that share a block --*- C++ -*-===//
//
// Two GPU forms of lathe.fused_attention, both the online softmax of
// lathe-expand-fused-attention with the block's threads working together.
//
// Decode. Decoding attends one query row per head to up to max_seq cache rows. The
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
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <cmath>
#include <limits>

namespace mlir::lathe {
#define GEN_PASS_DEF_ATTENTIONTOGPU
#include "Passes.h.inc"
} // namespace mlir::lathe

using namespace mlir;
using namespace mlir::lathe;

namespace {

/// Rows (keys, query rows) of a shared-memory tile that take `bytesPerRow`
/// each: at most `most`, halved down to 8 while the tile passes `budget`
/// bytes. Every tiled kernel here sizes its tiles this way, under the
/// 48 KiB a block may have without opting in to more.
static int64_t tileWithin(int64_t bytesPerRow, int64_t budget,
                          int64_t most = 64) {
  int64_t tile = most;
  while (tile > 8 && tile * bytesPerRow > budget)
    tile /= 2;
  return tile;
}

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

static Value indexConst(OpBuilder &b, Location l, int64_t v) {
  return arith::ConstantIndexOp::create(b, l, v);
}
static Value f32Const(OpBuilder &b, Location l, double v) {
  return arith::ConstantOp::create(b, l, b.getF32FloatAttr(v));
}

/// One key of the online softmax for one query row: score s (already
/// masked to -inf where the key is not visible), value row v. Softpick's
/// denominator counts only visible keys (`valid`), as its e^-m term would
/// otherwise count masked ones.
struct SoftmaxState {
  Value m, denom, acc;
};
static SoftmaxState softmaxStep(OpBuilder &b, Location l, bool softpick,
                                SoftmaxState st, Value s, Value v,
                                Value valid, bool maybeNoneYet = false) {
  Value mNew = arith::MaximumFOp::create(b, l, st.m, s);
  // Before a row's first visible key (a row that starts later in a block's
  // key range) the maximum is still -inf, and e^(-inf - -inf) would be NaN:
  // shift by 0 then, so that rescale and weight are both e^-inf = 0.
  Value shift = mNew;
  if (maybeNoneYet && !softpick)
    shift = arith::SelectOp::create(
        b, l,
        arith::CmpFOp::create(
            b, l, arith::CmpFPredicate::OEQ, mNew,
            f32Const(b, l, -std::numeric_limits<double>::infinity())),
        f32Const(b, l, 0.0), mNew);
  Value rescale =
      math::ExpOp::create(b, l, arith::SubFOp::create(b, l, st.m, shift));
  Value e = math::ExpOp::create(b, l, arith::SubFOp::create(b, l, s, shift));
  Value weight = e, mass = e;
  if (softpick) {
    // e^(s-m) - e^(-m): numerator relu, denominator |.|
    Value d = arith::SubFOp::create(
        b, l, e, math::ExpOp::create(b, l, arith::NegFOp::create(b, l, mNew)));
    Value zero = f32Const(b, l, 0.0);
    weight = arith::MaximumFOp::create(b, l, d, zero);
    mass = math::AbsFOp::create(b, l, d);
    if (valid)
      mass = arith::SelectOp::create(b, l, valid, mass, zero);
  }
  auto vecType = cast<VectorType>(st.acc.getType());
  Value denom = arith::AddFOp::create(
      b, l, arith::MulFOp::create(b, l, st.denom, rescale), mass);
  Value acc = vector::FMAOp::create(
      b, l, vector::BroadcastOp::create(b, l, vecType, weight), v,
      arith::MulFOp::create(b, l, st.acc,
                            vector::BroadcastOp::create(b, l, vecType, rescale)));
  return {mNew, denom, acc};
}

/// q . k over head_dim, the query already scaled by 1/sqrt(head_dim).
static Value score(OpBuilder &b, Location l, Value q, Value k) {
  auto fast = arith::FastMathFlagsAttr::get(
      b.getContext(),
      arith::FastMathFlags::reassoc | arith::FastMathFlags::contract);
  return vector::ReductionOp::create(b, l, vector::CombiningKind::ADD,
                                     arith::MulFOp::create(b, l, q, k, fast),
                                     Value(), fast.getValue());
}

/// Threads of a block stage rows first.. first + tileRows of `from`, columns
/// col.. col + width, into `to` (row-major, tileRows x width) for each
/// (from, to) pair: element e by thread e mod `threads` (consecutive
/// threads, consecutive columns), 0 for rows past `rows`, each loaded
/// value mapped by `transform` where one is given (the tf32 kernel
/// rounds).
static void stageRows(
    OpBuilder &b, Location l, Value t, int64_t threads, Value first,
    int64_t tileRows, int64_t width, int64_t rows, Value col,
    ArrayRef<std::pair<Value, Value>> copies,
    function_ref<Value(OpBuilder &, Location, Value)> transform = nullptr) {
  scf::ForOp::create(
      b, l, t, indexConst(b, l, tileRows * width), indexConst(b, l, threads),
      ValueRange{}, [&](OpBuilder &ib, Location il, Value e, ValueRange) {
        Value w = indexConst(ib, il, width);
        Value r = arith::DivUIOp::create(ib, il, e, w);
        Value c = arith::RemUIOp::create(ib, il, e, w);
        Value row = arith::AddIOp::create(ib, il, first, r);
        Value inside = arith::CmpIOp::create(ib, il, arith::CmpIPredicate::ult,
                                             row, indexConst(ib, il, rows));
        Value safe = arith::MinUIOp::create(ib, il, row,
                                            indexConst(ib, il, rows - 1));
        Value at = arith::AddIOp::create(ib, il, col, c);
        for (auto [from, to] : copies) {
          Value x = memref::LoadOp::create(ib, il, from, ValueRange{safe, at});
          if (transform)
            x = transform(ib, il, x);
          x = arith::SelectOp::create(ib, il, inside, x, f32Const(ib, il, 0.0));
          memref::StoreOp::create(ib, il, x, to, ValueRange{e});
        }
        scf::YieldOp::create(ib, il);
      });
}

/// What a (head, query row) pair starts from: the head's query columns and
/// its K/V head's columns, the query row scaled by 1/sqrt(head_dim), and
/// the online softmax's initial state (softpick's shift is clamped at 0, as
/// in lathe-expand-fused-attention, so its maximum starts there).
struct RowStart {
  Value qCol, kvCol, q;
  SoftmaxState init;
};
static RowStart rowStart(OpBuilder &b, Location l, FusedAttentionOp op,
                         Value head, Value row) {
  int64_t headDim = op.getHeadDim(),
          group = op.getHeads() / op.getKvHeads();
  auto vecType = VectorType::get({headDim}, b.getF32Type());
  auto idx = [&](int64_t v) { return indexConst(b, l, v); };
  auto cst = [&](double v) { return f32Const(b, l, v); };
  RowStart r;
  r.qCol = arith::MulIOp::create(b, l, head, idx(headDim));
  r.kvCol = arith::MulIOp::create(
      b, l, arith::DivUIOp::create(b, l, head, idx(group)), idx(headDim));
  float scale = 1.0f / std::sqrt(static_cast<float>(headDim));
  Value q = vector::LoadOp::create(b, l, vecType, op.getQuery(),
                                   ValueRange{row, r.qCol});
  r.q = arith::MulFOp::create(b, l, q,
                              vector::BroadcastOp::create(b, l, vecType,
                                                          cst(scale)));
  bool softpick = op.getNormalizer() == Normalizer::softpick;
  Value zero = cst(0.0);
  r.init = {cst(softpick ? 0.0 : -std::numeric_limits<double>::infinity()),
            zero, vector::BroadcastOp::create(b, l, vecType, zero)};
  return r;
}

static void lowerDecode(FusedAttentionOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  MLIRContext *ctx = op.getContext();
  auto kType = cast<MemRefType>(op.getKey().getType());
  int64_t keys = kType.getDimSize(0), heads = op.getHeads(),
          headDim = op.getHeadDim();
  int64_t threads = threadsFor(headDim, keys);
  bool softpick = op.getNormalizer() == Normalizer::softpick;
  Type f32 = b.getF32Type();
  auto vecType = VectorType::get({headDim}, f32);
  auto idx = [&](OpBuilder &ob, int64_t v) { return indexConst(ob, loc, v); };
  auto cst = [&](OpBuilder &ob, double v) { return f32Const(ob, loc, v); };
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
  RowStart start = rowStart(lb, loc, op, h, c0);
  Value qCol = start.qCol, kvCol = start.kvCol, q = start.q;
  Value zero = cst(lb, 0.0);
  auto keysLoop = scf::ForOp::create(
      lb, loc, t, visible, T,
      ValueRange{start.init.m, start.init.denom, start.init.acc},
      [&](OpBuilder &fb, Location l, Value j, ValueRange state) {
        Value k = vector::LoadOp::create(fb, l, vecType, op.getKey(),
                                         ValueRange{j, kvCol});
        Value v = vector::LoadOp::create(fb, l, vecType, op.getValue(),
                                         ValueRange{j, kvCol});
        SoftmaxState next =
            softmaxStep(fb, l, softpick, {state[0], state[1], state[2]},
                        score(fb, l, q, k), v, Value());
        scf::YieldOp::create(fb, l, ValueRange{next.m, next.denom, next.acc});
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

/// Rows per query tile (threads per block) and keys per K/V tile: K and V
/// tiles of 2 x keys x head_dim floats stay within 32 KiB of shared memory.
static std::pair<int64_t, int64_t> tilesFor(int64_t rows, int64_t keys,
                                            int64_t headDim) {
  return {std::min<int64_t>(64, rows),
          std::min(tileWithin(8 * headDim, 32 * 1024), keys)};
}

static void lowerTiled(FusedAttentionOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  MLIRContext *ctx = op.getContext();
  auto qType = cast<MemRefType>(op.getQuery().getType());
  auto kType = cast<MemRefType>(op.getKey().getType());
  int64_t rows = qType.getDimSize(0), keys = kType.getDimSize(0),
          heads = op.getHeads(), headDim = op.getHeadDim();
  std::pair<int64_t, int64_t> tileSizes = tilesFor(rows, keys, headDim);
  int64_t queryTile = tileSizes.first, keyTile = tileSizes.second;
  bool softpick = op.getNormalizer() == Normalizer::softpick;
  Type f32 = b.getF32Type();
  auto vecType = VectorType::get({headDim}, f32);
  auto idx = [&](OpBuilder &ob, int64_t v) { return indexConst(ob, loc, v); };
  auto cst = [&](OpBuilder &ob, double v) { return f32Const(ob, loc, v); };
  auto shared = gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup);
  auto tileType = MemRefType::get({keyTile * headDim}, f32,
                                  MemRefLayoutAttrInterface(), shared);

  Value one = idx(b, 1);
  int64_t queryTiles = (rows + queryTile - 1) / queryTile;
  auto launch = gpu::LaunchOp::create(
      b, loc, idx(b, heads), idx(b, queryTiles), one, idx(b, queryTile), one,
      one, /*dynamicSharedMemorySize=*/nullptr, /*asyncTokenType=*/nullptr,
      /*asyncDependencies=*/ValueRange{}, TypeRange{tileType, tileType});
  Block &body = launch.getBody().front();
  OpBuilder lb = OpBuilder::atBlockBegin(&body);
  Value h = launch.getBlockIds().x, tile = launch.getBlockIds().y,
        t = launch.getThreadIds().x;
  Value sK = launch.getWorkgroupAttributions()[0];
  Value sV = launch.getWorkgroupAttributions()[1];
  Value c0 = idx(lb, 0), c1 = idx(lb, 1), D = idx(lb, headDim),
        Q = idx(lb, queryTile), K = idx(lb, keyTile);

  // This thread's row (clamped into range for a last, partial tile: it
  // computes like the others but stores nothing) sees keys 0..row.
  Value first = arith::MulIOp::create(lb, loc, tile, Q);
  Value raw = arith::AddIOp::create(lb, loc, first, t);
  Value active = arith::CmpIOp::create(lb, loc, arith::CmpIPredicate::ult, raw,
                                       idx(lb, rows));
  Value row = arith::MinUIOp::create(lb, loc, raw, idx(lb, rows - 1));
  Value visible = arith::MinUIOp::create(
      lb, loc, arith::AddIOp::create(lb, loc, row, c1), idx(lb, keys));
  // The block's last row bounds the keys any of its threads sees.
  Value blockEnd = arith::MinUIOp::create(
      lb, loc,
      arith::MinUIOp::create(lb, loc, arith::AddIOp::create(lb, loc, first, Q),
                             idx(lb, rows)),
      idx(lb, keys));
  // In a batch of windows a row sees only its own sequence's keys; the
  // block starts at its first row's sequence.
  Value rowFirst = windowStart(lb, loc, row, op.getWindow());
  Value blockFirst = windowStart(lb, loc, first, op.getWindow());
  RowStart start = rowStart(lb, loc, op, h, row);
  Value qCol = start.qCol, kvCol = start.kvCol, q = start.q;
  Value negInf = cst(lb, -std::numeric_limits<double>::infinity());
  auto tiles = scf::ForOp::create(
      lb, loc, blockFirst, blockEnd, K,
      ValueRange{start.init.m, start.init.denom, start.init.acc},
      [&](OpBuilder &fb, Location l, Value k0, ValueRange state) {
        // Load K and V rows k0.. into shared memory.
        stageRows(fb, l, t, queryTile, k0, keyTile, headDim, keys, kvCol,
                  {{op.getKey(), sK}, {op.getValue(), sV}});
        gpu::BarrierOp::create(fb, l);
        auto keysOfTile = scf::ForOp::create(
            fb, l, c0, K, c1, ValueRange{state[0], state[1], state[2]},
            [&](OpBuilder &ib, Location il, Value r, ValueRange st) {
              Value at = arith::MulIOp::create(ib, il, r, D);
              Value k = vector::LoadOp::create(ib, il, vecType, sK,
                                               ValueRange{at});
              Value v = vector::LoadOp::create(ib, il, vecType, sV,
                                               ValueRange{at});
              Value key = arith::AddIOp::create(ib, il, k0, r);
              Value valid = arith::CmpIOp::create(
                  ib, il, arith::CmpIPredicate::ult, key, visible);
              if (op.getWindow())
                valid = arith::AndIOp::create(
                    ib, il, valid,
                    arith::CmpIOp::create(ib, il, arith::CmpIPredicate::uge,
                                          key, rowFirst));
              Value s = arith::SelectOp::create(ib, il, valid,
                                                score(ib, il, q, k), negInf);
              SoftmaxState next =
                  softmaxStep(ib, il, softpick, {st[0], st[1], st[2]}, s, v,
                              valid, /*maybeNoneYet=*/op.getWindow() != 0);
              scf::YieldOp::create(ib, il,
                                   ValueRange{next.m, next.denom, next.acc});
            });
        // The next tile must not overwrite this one while others read it.
        gpu::BarrierOp::create(fb, l);
        scf::YieldOp::create(fb, l, keysOfTile.getResults());
      });
  Value out = normalizedRow(lb, loc, softpick, tiles.getResult(2),
                            tiles.getResult(1));
  scf::IfOp::create(lb, loc, active, [&](OpBuilder &ib, Location il) {
    vector::StoreOp::create(ib, il, out, op.getInit(), ValueRange{row, qCol});
    scf::YieldOp::create(ib, il);
  });
  gpu::TerminatorOp::create(lb, loc);
  op.erase();
}

/// x rounded to tf32 (10 mantissa bits; to nearest, ties to even, as the
/// emulated device's reference GEMM rounds) in integer arithmetic, which
/// PTX and the emulation run alike. Attention's operands are finite, and a
/// softmax weight lies in [0, 1], so no infinity or NaN reaches it.
static Value roundTf32(OpBuilder &b, Location l, Value x) {
  Type i32 = b.getI32Type();
  auto i32Const = [&](int32_t v) {
    return arith::ConstantOp::create(b, l, b.getI32IntegerAttr(v));
  };
  Value u = arith::BitcastOp::create(b, l, i32, x);
  Value odd = arith::AndIOp::create(
      b, l, arith::ShRUIOp::create(b, l, u, i32Const(13)), i32Const(1));
  u = arith::AddIOp::create(
      b, l, arith::AddIOp::create(b, l, u, i32Const(0xfff)), odd);
  u = arith::AndIOp::create(b, l, u, i32Const(~0x1fff));
  return arith::BitcastOp::create(b, l, b.getF32Type(), u);
}

/// Query rows per warp in the tensor-core kernel: an m16n8k8 product's rows.
constexpr int64_t kWarpRows = 16;

/// The tensor-core form: a block per (head, tile of up to 64 query rows),
/// a warp per 16 rows. Per key tile (K and V in shared memory, rounded to
/// tf32 once), each warp forms its 16 x keyTile scores S = Q K^T with
/// m16n8k8 tf32 products (Q's fragments, scaled and rounded, stay in
/// registers), leaves them in shared memory, and after a barrier a thread
/// per row runs the tile's softmax step on its row: the new maximum, the
/// rescale of the running sums, the weights P (rounded to tf32, in place of
/// S) and the denominator, kept in shared memory as the row's state. After
/// another barrier each warp rescales its output fragments and adds P V,
/// again with m16n8k8 products. Only the two products run on tensor cores;
/// the softmax, masks (causal, windows) and softpick are the CUDA-core
/// kernel's, tile by tile instead of key by key.
static void lowerTensorCore(FusedAttentionOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  MLIRContext *ctx = op.getContext();
  auto qType = cast<MemRefType>(op.getQuery().getType());
  auto kType = cast<MemRefType>(op.getKey().getType());
  int64_t rows = qType.getDimSize(0), keys = kType.getDimSize(0),
          heads = op.getHeads(), headDim = op.getHeadDim(),
          group = op.getHeads() / op.getKvHeads();
  int64_t warps = (std::min<int64_t>(rows, 64) + kWarpRows - 1) / kWarpRows;
  int64_t queryTile = warps * kWarpRows, threads = warps * 32;
  // K and V tiles within 32 KiB of shared memory, whole 8-key steps.
  int64_t keyTile = std::min(tileWithin(8 * headDim, 32 * 1024, /*most=*/32),
                             (keys + 7) / 8 * 8);
  bool softpick = op.getNormalizer() == Normalizer::softpick;
  Type f32 = b.getF32Type();
  auto shared = gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup);
  auto sharedOf = [&](int64_t n) {
    return MemRefType::get({n}, f32, MemRefLayoutAttrInterface(), shared);
  };
  auto aType = VectorType::get({4, 1}, f32), bType = VectorType::get({2, 1}, f32),
       cType = VectorType::get({2, 2}, f32);

  auto idx = [&](OpBuilder &ob, int64_t v) { return indexConst(ob, loc, v); };
  auto cst = [&](OpBuilder &ob, double v) { return f32Const(ob, loc, v); };
  Value one = idx(b, 1);
  int64_t queryTiles = (rows + queryTile - 1) / queryTile;
  auto launch = gpu::LaunchOp::create(
      b, loc, idx(b, heads), idx(b, queryTiles), one, idx(b, threads), one,
      one, /*dynamicSharedMemorySize=*/nullptr, /*asyncTokenType=*/nullptr,
      /*asyncDependencies=*/ValueRange{},
      TypeRange{sharedOf(keyTile * headDim), sharedOf(keyTile * headDim),
                sharedOf(queryTile * keyTile), sharedOf(queryTile),
                sharedOf(queryTile), sharedOf(queryTile)});
  Block &body = launch.getBody().front();
  OpBuilder lb = OpBuilder::atBlockBegin(&body);
  Value h = launch.getBlockIds().x, tile = launch.getBlockIds().y,
        t = launch.getThreadIds().x;
  ValueRange attributions = launch.getWorkgroupAttributions();
  Value sK = attributions[0], sV = attributions[1], sS = attributions[2],
        sMax = attributions[3], sDenom = attributions[4],
        sRescale = attributions[5];
  Value c0 = idx(lb, 0), c1 = idx(lb, 1), D = idx(lb, headDim),
        Q = idx(lb, queryTile), K = idx(lb, keyTile);
  auto add = [&](OpBuilder &ob, Value x, Value y) -> Value {
    return arith::AddIOp::create(ob, loc, x, y);
  };
  auto addc = [&](OpBuilder &ob, Value x, int64_t y) -> Value {
    return y == 0 ? x : add(ob, x, idx(ob, y));
  };
  auto mul = [&](OpBuilder &ob, Value x, Value y) -> Value {
    return arith::MulIOp::create(ob, loc, x, y);
  };
  auto load = [&](OpBuilder &ob, Value m, Value at) -> Value {
    return memref::LoadOp::create(ob, loc, m, ValueRange{at});
  };
  auto store = [&](OpBuilder &ob, Value v, Value m, Value at) {
    memref::StoreOp::create(ob, loc, v, m, ValueRange{at});
  };
  auto mma = [&](OpBuilder &ob, Value a, Value bf, Value c) -> Value {
    return nvgpu::MmaSyncOp::create(ob, loc, a, bf, c,
                                    ArrayRef<int64_t>{16, 8, 8},
                                    /*tf32Enabled=*/true);
  };

  // This lane's place in the fragments: group g (rows g and g + 8 of its
  // warp's 16) and q (its columns within a group of 4 lanes).
  Value c32 = idx(lb, 32), c4 = idx(lb, 4);
  Value warp = arith::DivUIOp::create(lb, loc, t, c32);
  Value lane = arith::RemUIOp::create(lb, loc, t, c32);
  Value g = arith::DivUIOp::create(lb, loc, lane, c4);
  Value q = arith::RemUIOp::create(lb, loc, lane, c4);
  Value localRow[2];
  localRow[0] = add(lb, mul(lb, warp, idx(lb, kWarpRows)), g);
  localRow[1] = addc(lb, localRow[0], 8);
  Value first = mul(lb, tile, Q);
  Value fragRow[2];
  for (int i = 0; i < 2; ++i)
    fragRow[i] = arith::MinUIOp::create(lb, loc, add(lb, first, localRow[i]),
                                        idx(lb, rows - 1));
  Value qCol = mul(lb, h, D);
  Value kvCol = mul(lb, arith::DivUIOp::create(lb, loc, h, idx(lb, group)), D);

  // Q's A fragments for the head_dim / 8 steps of S's products, scaled by
  // 1/sqrt(head_dim) and rounded once.
  Value scale = cst(lb, 1.0f / std::sqrt(static_cast<float>(headDim)));
  SmallVector<Value> qFrags;
  for (int64_t kk = 0; kk < headDim / 8; ++kk) {
    SmallVector<Value, 4> elems;
    for (int reg = 0; reg < 4; ++reg) {
      Value col = addc(lb, add(lb, qCol, q), 8 * kk + 4 * (reg / 2));
      Value x = memref::LoadOp::create(lb, loc, op.getQuery(),
                                       ValueRange{fragRow[reg % 2], col});
      elems.push_back(roundTf32(lb, loc, arith::MulFOp::create(lb, loc, x, scale)));
    }
    qFrags.push_back(vector::FromElementsOp::create(lb, loc, aType, elems));
  }

  // Each row's softmax state, kept by its thread in shared memory: the
  // maximum (softpick's starts at 0, its clamp) and the denominator.
  Value negInf = cst(lb, -std::numeric_limits<double>::infinity());
  Value isRowThread =
      arith::CmpIOp::create(lb, loc, arith::CmpIPredicate::ult, t, Q);
  scf::IfOp::create(lb, loc, isRowThread, [&](OpBuilder &ib, Location) {
    store(ib, softpick ? cst(ib, 0.0) : negInf, sMax, t);
    store(ib, cst(ib, 0.0), sDenom, t);
    scf::YieldOp::create(ib, loc);
  });

  Value blockEnd = arith::MinUIOp::create(
      lb, loc,
      arith::MinUIOp::create(lb, loc, add(lb, first, Q), idx(lb, rows)),
      idx(lb, keys));
  Value blockFirst = windowStart(lb, loc, first, op.getWindow());
  Value zeroFrag = arith::ConstantOp::create(
      lb, loc, DenseElementsAttr::get(cType, lb.getF32FloatAttr(0.0)));
  SmallVector<Value> outInit(headDim / 8, zeroFrag);
  auto tiles = scf::ForOp::create(
      lb, loc, blockFirst, blockEnd, K, outInit,
      [&](OpBuilder &fb, Location l, Value k0, ValueRange outFrags) {
        // K and V rows k0.. into shared memory, rounded to tf32; element
        // e = r D + c by thread e mod threads (consecutive threads,
        // consecutive columns). The barrier after it also orders the row
        // states' first stores before any thread reads them.
        stageRows(fb, l, t, threads, k0, keyTile, headDim, keys, kvCol,
                  {{op.getKey(), sK}, {op.getValue(), sV}}, roundTf32);
        gpu::BarrierOp::create(fb, l);

        // S for the warp's 16 rows, 8 keys at a time: B[k][n] = K[n][k],
        // so lane (g, q) gives K[8n + g][8kk + q] and [8kk + q + 4].
        for (int64_t n = 0; n < keyTile / 8; ++n) {
          Value acc = zeroFrag;
          Value kRow = mul(fb, addc(fb, g, 8 * n), D);
          for (int64_t kk = 0; kk < headDim / 8; ++kk) {
            Value at = addc(fb, add(fb, kRow, q), 8 * kk);
            Value bf = vector::FromElementsOp::create(
                fb, l, bType,
                ValueRange{load(fb, sK, at), load(fb, sK, addc(fb, at, 4))});
            acc = mma(fb, qFrags[kk], bf, acc);
          }
          for (int i = 0; i < 2; ++i)
            for (int j = 0; j < 2; ++j) {
              Value at = addc(fb,
                              add(fb, mul(fb, localRow[i], K),
                                  mul(fb, q, idx(fb, 2))),
                              8 * n + j);
              store(fb,
                    vector::ExtractOp::create(fb, l, acc,
                                              ArrayRef<int64_t>{i, j}),
                    sS, at);
            }
        }
        gpu::BarrierOp::create(fb, l);

        // The tile's softmax step, a thread per row: its maximum over the
        // visible keys first, then the weights at the new maximum.
        scf::IfOp::create(fb, l, isRowThread, [&](OpBuilder &ib, Location il) {
          Value row = arith::MinUIOp::create(ib, il, add(ib, first, t),
                                             idx(ib, rows - 1));
          Value visible = arith::MinUIOp::create(ib, il, addc(ib, row, 1),
                                                 idx(ib, keys));
          Value rowFirst = windowStart(ib, il, row, op.getWindow());
          Value rowAt = mul(ib, t, K);
          // The score of key k0 + j, -inf where the row does not see it.
          auto masked = [&](OpBuilder &jb, Value j) -> std::pair<Value, Value> {
            Value key = add(jb, k0, j);
            Value valid = arith::CmpIOp::create(
                jb, il, arith::CmpIPredicate::ult, key, visible);
            if (op.getWindow())
              valid = arith::AndIOp::create(
                  jb, il, valid,
                  arith::CmpIOp::create(jb, il, arith::CmpIPredicate::uge, key,
                                        rowFirst));
            Value s = load(jb, sS, add(jb, rowAt, j));
            return {arith::SelectOp::create(jb, il, valid, s, negInf), valid};
          };
          Value mOld = load(ib, sMax, t);
          auto maxLoop = scf::ForOp::create(
              ib, il, c0, K, c1, ValueRange{mOld},
              [&](OpBuilder &jb, Location jl, Value j, ValueRange st) {
                scf::YieldOp::create(
                    jb, jl,
                    ValueRange{arith::MaximumFOp::create(
                        jb, jl, st[0], masked(jb, j).first)});
              });
          Value mNew = maxLoop.getResult(0);
          // A row that has seen no key yet (in a batch of windows, a tile
          // before its window) keeps the maximum -inf: shift by 0 then, so
          // that its rescale and weights are e^-inf = 0, not NaN.
          Value shift = mNew;
          if (!softpick)
            shift = arith::SelectOp::create(
                ib, il,
                arith::CmpFOp::create(ib, il, arith::CmpFPredicate::OEQ, mNew,
                                      negInf),
                cst(ib, 0.0), mNew);
          Value rescale = math::ExpOp::create(
              ib, il, arith::SubFOp::create(ib, il, mOld, shift));
          Value floor;
          if (softpick)
            floor = math::ExpOp::create(ib, il,
                                        arith::NegFOp::create(ib, il, mNew));
          auto sumLoop = scf::ForOp::create(
              ib, il, c0, K, c1, ValueRange{cst(ib, 0.0)},
              [&](OpBuilder &jb, Location jl, Value j, ValueRange st) {
                auto [s, valid] = masked(jb, j);
                Value e = math::ExpOp::create(
                    jb, jl, arith::SubFOp::create(jb, jl, s, shift));
                Value weight = e, mass = e;
                if (softpick) {
                  // e^(s-m) - e^(-m): numerator relu, denominator |.|
                  Value d = arith::SubFOp::create(jb, jl, e, floor);
                  weight = arith::MaximumFOp::create(jb, jl, d, cst(jb, 0.0));
                  mass = arith::SelectOp::create(
                      jb, jl, valid, math::AbsFOp::create(jb, jl, d),
                      cst(jb, 0.0));
                }
                store(jb, roundTf32(jb, jl, weight), sS, add(jb, rowAt, j));
                scf::YieldOp::create(
                    jb, jl,
                    ValueRange{arith::AddFOp::create(jb, jl, st[0], mass)});
              });
          store(ib, mNew, sMax, t);
          store(ib,
                arith::AddFOp::create(
                    ib, il,
                    arith::MulFOp::create(ib, il, load(ib, sDenom, t), rescale),
                    sumLoop.getResult(0)),
                sDenom, t);
          store(ib, rescale, sRescale, t);
          scf::YieldOp::create(ib, il);
        });
        gpu::BarrierOp::create(fb, l);

        // O = O rescaled + P V: P's A fragments from shared memory, V's B
        // fragments (B[k][n] = V[8kk + k][8n' + n]).
        Value r0 = load(fb, sRescale, localRow[0]);
        Value r1 = load(fb, sRescale, localRow[1]);
        Value rescaleFrag = vector::FromElementsOp::create(
            fb, l, cType, ValueRange{r0, r0, r1, r1});
        SmallVector<Value> next;
        for (Value frag : outFrags)
          next.push_back(arith::MulFOp::create(fb, l, frag, rescaleFrag));
        for (int64_t kk = 0; kk < keyTile / 8; ++kk) {
          SmallVector<Value, 4> elems;
          for (int reg = 0; reg < 4; ++reg)
            elems.push_back(load(
                fb, sS,
                addc(fb, add(fb, mul(fb, localRow[reg % 2], K), q),
                     8 * kk + 4 * (reg / 2))));
          Value pFrag = vector::FromElementsOp::create(fb, l, aType, elems);
          for (int64_t n = 0; n < headDim / 8; ++n) {
            Value at = addc(fb, add(fb, mul(fb, addc(fb, q, 8 * kk), D), g),
                            8 * n);
            Value bf = vector::FromElementsOp::create(
                fb, l, bType,
                ValueRange{load(fb, sV, at),
                           load(fb, sV, addc(fb, at, 4 * headDim))});
            next[n] = mma(fb, pFrag, bf, next[n]);
          }
        }
        // The next tile must not overwrite this one while others read it.
        gpu::BarrierOp::create(fb, l);
        scf::YieldOp::create(fb, l, next);
      });

  // Each lane's output: rows g and g + 8 of its warp, columns 2q and
  // 2q + 1 of each 8, over the row's denominator; rows past the end of a
  // last, partial tile store nothing.
  for (int i = 0; i < 2; ++i) {
    Value denom = load(lb, sDenom, localRow[i]);
    if (softpick)
      denom = arith::AddFOp::create(lb, loc, denom, cst(lb, 1e-8));
    Value row = add(lb, first, localRow[i]);
    Value inside =
        arith::CmpIOp::create(lb, loc, arith::CmpIPredicate::ult, row,
                              idx(lb, rows));
    scf::IfOp::create(lb, loc, inside, [&](OpBuilder &ib, Location il) {
      for (int64_t n = 0; n < headDim / 8; ++n)
        for (int j = 0; j < 2; ++j) {
          Value x = vector::ExtractOp::create(ib, il, tiles.getResult(n),
                                              ArrayRef<int64_t>{i, j});
          Value col = addc(ib, add(ib, qCol, mul(ib, q, idx(ib, 2))),
                           8 * n + j);
          memref::StoreOp::create(ib, il,
                                  arith::DivFOp::create(ib, il, x, denom),
                                  op.getInit(), ValueRange{row, col});
        }
      scf::YieldOp::create(ib, il);
    });
  }
  gpu::TerminatorOp::create(lb, loc);
  op.erase();
}

/// lathe.fused_attention_grad as two launches, each tiled like the forward
/// kernel, with no [T, T] tensor anywhere:
///
/// Rows: a block per (head, tile of up to 64 query rows), a thread per row.
/// A first loop over K tiles in shared memory takes each row's maximum
/// scaled score and normaliser online (rescaling the normaliser when the
/// maximum grows); each row leaves its shift, normaliser and rs = dO . o in
/// the stats workspace. A second loop over K and V tiles has each row
/// thread form its pairs' score gradients ds into shared memory, then, after
/// a barrier, add ds k into its dQ row.
///
/// Keys: a block per (K/V head, tile of up to 64 keys), a thread per key.
/// One loop over (query head of the group, tile of the rows that may see
/// the block's keys) stages Q, dO and those rows' stats in shared memory;
/// each key thread forms its pairs' weights p and score gradients ds into
/// shared memory, then, after a barrier, adds ds q into its dK row and p dO
/// into its dV row. The group's query heads thus add into their shared K/V
/// head in one thread, without atomics.
///
/// The barriers also bound what a thread keeps in registers: the gradient
/// rows accumulate in the op's own (global) buffers, read and written once
/// per tile, the rows that dot products need are reloaded after each
/// barrier (which LLVM may not move loads across), and a thread's pairs
/// take two loops (pairPasses), so that no phase holds more than about two
/// head_dim vectors besides the streamed ones.
static void lowerGrad(FusedAttentionGradOp op) {
  OpBuilder b(op);
  Location loc = op.getLoc();
  MLIRContext *ctx = op.getContext();
  int64_t rows = cast<MemRefType>(op.getQuery().getType()).getDimSize(0),
          heads = op.getHeads(), kvHeads = op.getKvHeads(),
          headDim = op.getHeadDim(), group = heads / kvHeads,
          window = op.getWindow();
  bool softpick = op.getNormalizer() == Normalizer::softpick;
  float scale = 1.0f / std::sqrt(static_cast<float>(headDim));
  Type f32 = b.getF32Type();
  auto vecType = VectorType::get({headDim}, f32);
  auto shared = gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup);
  auto sharedOf = [&](int64_t n) {
    return MemRefType::get({n}, f32, MemRefLayoutAttrInterface(), shared);
  };
  auto idx = [&](OpBuilder &ob, int64_t v) { return indexConst(ob, loc, v); };
  auto cst = [&](OpBuilder &ob, double v) { return f32Const(ob, loc, v); };
  auto add = [&](OpBuilder &ob, Value x, Value y) -> Value {
    return arith::AddIOp::create(ob, loc, x, y);
  };
  auto mul = [&](OpBuilder &ob, Value x, Value y) -> Value {
    return arith::MulIOp::create(ob, loc, x, y);
  };
  auto minu = [&](OpBuilder &ob, Value x, Value y) -> Value {
    return arith::MinUIOp::create(ob, loc, x, y);
  };
  auto ult = [&](OpBuilder &ob, Value x, Value y) -> Value {
    return arith::CmpIOp::create(ob, loc, arith::CmpIPredicate::ult, x, y);
  };
  auto vload = [&](OpBuilder &ob, Value m, ValueRange at) -> Value {
    return vector::LoadOp::create(ob, loc, vecType, m, at);
  };
  auto fma = [&](OpBuilder &ob, Value w, Value x, Value acc) -> Value {
    return vector::FMAOp::create(
        ob, loc, vector::BroadcastOp::create(ob, loc, vecType, w), x, acc);
  };
  auto zeros = [&](OpBuilder &ob) -> Value {
    return vector::BroadcastOp::create(ob, loc, vecType, cst(ob, 0.0));
  };
  // Under `cond`, `body` (an scf.if without results).
  auto when = [&](OpBuilder &ob, Value cond,
                  function_ref<void(OpBuilder &)> body) {
    scf::IfOp::create(ob, loc, cond, [&](OpBuilder &ib, Location il) {
      body(ib);
      scf::YieldOp::create(ib, il);
    });
  };
  // row[col..] += sum over `count` entries i of w(i) x(i), where the
  // accumulator is a gradient row in global memory (see above).
  auto accumulate = [&](OpBuilder &ob, Value into, Value row, Value col,
                        int64_t count,
                        function_ref<std::pair<Value, Value>(OpBuilder &, Value)>
                            term) {
    Value acc = vload(ob, into, {row, col});
    auto sum = scf::ForOp::create(
        ob, loc, idx(ob, 0), idx(ob, count), idx(ob, 1), ValueRange{acc},
        [&](OpBuilder &ib, Location il, Value i, ValueRange run) {
          auto [w, x] = term(ib, i);
          scf::YieldOp::create(ib, il, ValueRange{fma(ib, w, x, run[0])});
        });
    vector::StoreOp::create(ob, loc, sum.getResult(0), into,
                            ValueRange{row, col});
  };
  // A thread's pairs, `count` of them: first every dp = dO . v into
  // `scratch` (slots slot0..), then every score s = q . k, handed to
  // `finish` with its dp. The thread's own dO (or v) and q (or k) rows are
  // loaded right before the loop that needs them, so that the two are never
  // held together with the streamed rows (at head_dim 32 that kept the key
  // pass within 128 registers on sm_90).
  auto pairPasses =
      [&](OpBuilder &fb, int64_t count, Value scratch, Value slot0,
          function_ref<Value(OpBuilder &)> ownDp,
          function_ref<Value(OpBuilder &, Value)> dpOperand,
          function_ref<Value(OpBuilder &)> ownScore,
          function_ref<Value(OpBuilder &, Value)> scoreOperand,
          function_ref<void(OpBuilder &, Value, Value, Value)> finish) {
        auto each = [&](function_ref<void(OpBuilder &, Value)> body) {
          scf::ForOp::create(fb, loc, idx(fb, 0), idx(fb, count), idx(fb, 1),
                             ValueRange{},
                             [&](OpBuilder &ib, Location il, Value r,
                                 ValueRange) {
                               body(ib, r);
                               scf::YieldOp::create(ib, il);
                             });
        };
        Value mine = ownDp(fb);
        each([&](OpBuilder &ib, Value r) {
          memref::StoreOp::create(
              ib, loc, score(ib, loc, mine, dpOperand(ib, r)), scratch,
              ValueRange{add(ib, slot0, r)});
        });
        Value mineScore = ownScore(fb);
        each([&](OpBuilder &ib, Value r) {
          Value dp = memref::LoadOp::create(ib, loc, scratch,
                                            ValueRange{add(ib, slot0, r)});
          finish(ib, r, score(ib, loc, mineScore, scoreOperand(ib, r)), dp);
        });
      };
  Value one = idx(b, 1);
  // The shift at running maximum m: m, or softpick's max(m, 0).
  auto shiftOf = [&](OpBuilder &ob, Value m) -> Value {
    return softpick ? arith::MaximumFOp::create(ob, loc, m, cst(ob, 0.0))
                    : m;
  };

  // --- Rows: the stats and dQ. ---
  // Per key of a tile: its K and V rows, and each row thread's ds for it.
  int64_t rowTile = std::min<int64_t>(64, rows);
  int64_t keyTile =
      std::min(tileWithin(8 * headDim + 4 * rowTile, 40 * 1024), rows);
  auto rowLaunch = gpu::LaunchOp::create(
      b, loc, idx(b, heads), idx(b, (rows + rowTile - 1) / rowTile), one,
      idx(b, rowTile), one, one, /*dynamicSharedMemorySize=*/nullptr,
      /*asyncTokenType=*/nullptr, /*asyncDependencies=*/ValueRange{},
      TypeRange{sharedOf(keyTile * headDim), sharedOf(keyTile * headDim),
                sharedOf(rowTile * keyTile)});
  {
    OpBuilder lb = OpBuilder::atBlockBegin(&rowLaunch.getBody().front());
    Value h = rowLaunch.getBlockIds().x, tile = rowLaunch.getBlockIds().y,
          t = rowLaunch.getThreadIds().x;
    ValueRange attributions = rowLaunch.getWorkgroupAttributions();
    Value sK = attributions[0], sV = attributions[1], sDS = attributions[2];
    Value D = idx(lb, headDim), K = idx(lb, keyTile), c0 = idx(lb, 0),
          c1 = idx(lb, 1);
    Value negInf = cst(lb, -std::numeric_limits<double>::infinity());
    Value first = mul(lb, tile, idx(lb, rowTile));
    Value raw = add(lb, first, t);
    Value active = ult(lb, raw, idx(lb, rows));
    Value row = minu(lb, raw, idx(lb, rows - 1));
    Value visible = add(lb, row, c1);
    Value rowFirst = windowStart(lb, loc, row, window);
    Value blockFirst = windowStart(lb, loc, first, window);
    Value blockEnd = minu(lb, add(lb, first, idx(lb, rowTile)), idx(lb, rows));
    Value qCol = mul(lb, h, D);
    Value kvCol = mul(lb, arith::DivUIOp::create(lb, loc, h, idx(lb, group)), D);
    // K (and V) rows k0.. of this head's K/V head into shared memory, 0
    // past the last key.
    auto loadTiles = [&](OpBuilder &fb, Location l, Value k0, bool withV) {
      SmallVector<std::pair<Value, Value>> copies = {{op.getKey(), sK}};
      if (withV)
        copies.push_back({op.getValue(), sV});
      stageRows(fb, l, t, rowTile, k0, keyTile, headDim, rows, kvCol, copies);
      gpu::BarrierOp::create(fb, l);
    };
    auto validKey = [&](OpBuilder &ib, Value key) -> Value {
      Value valid = ult(ib, key, visible);
      if (window)
        valid = arith::AndIOp::create(
            ib, loc, valid,
            arith::CmpIOp::create(ib, loc, arith::CmpIPredicate::uge, key,
                                  rowFirst));
      return valid;
    };
    // The row's maximum scaled score m and normaliser d at shift S(m),
    // online: d <- d e^(S(m) - S(m')) + term(z, S(m')).
    auto stats = scf::ForOp::create(
        lb, loc, blockFirst, blockEnd, K, ValueRange{negInf, cst(lb, 0.0)},
        [&](OpBuilder &fb, Location l, Value k0, ValueRange st) {
          loadTiles(fb, l, k0, /*withV=*/false);
          Value q = vload(fb, op.getQuery(), {row, qCol});
          auto keys = scf::ForOp::create(
              fb, l, c0, K, c1, ValueRange{st[0], st[1]},
              [&](OpBuilder &ib, Location il, Value r, ValueRange run) {
                Value k = vload(ib, sK, {mul(ib, r, D)});
                Value valid = validKey(ib, add(ib, k0, r));
                Value z = arith::MulFOp::create(ib, il, score(ib, il, q, k),
                                                cst(ib, scale));
                Value m = arith::MaximumFOp::create(ib, il, run[0], z);
                Value sNew = shiftOf(ib, m);
                Value rescale = math::ExpOp::create(
                    ib, il, arith::SubFOp::create(ib, il, shiftOf(ib, run[0]),
                                                  sNew));
                Value e = math::ExpOp::create(
                    ib, il, arith::SubFOp::create(ib, il, z, sNew));
                Value term = e;
                if (softpick)
                  term = math::AbsFOp::create(
                      ib, il,
                      arith::SubFOp::create(
                          ib, il, e,
                          math::ExpOp::create(
                              ib, il, arith::NegFOp::create(ib, il, sNew))));
                Value d = arith::AddFOp::create(
                    ib, il, arith::MulFOp::create(ib, il, run[1], rescale),
                    term);
                // A key the row does not see changes nothing (and before
                // its first visible key the above is e^(-inf + inf)).
                scf::YieldOp::create(
                    ib, il,
                    ValueRange{arith::SelectOp::create(ib, il, valid, m, run[0]),
                               arith::SelectOp::create(ib, il, valid, d,
                                                       run[1])});
              });
          gpu::BarrierOp::create(fb, l);
          scf::YieldOp::create(fb, l, keys.getResults());
        });
    // Every row sees its own key, so the maximum is finite here.
    Value shift = shiftOf(lb, stats.getResult(0));
    Value norm = stats.getResult(1);
    if (softpick)
      norm = arith::AddFOp::create(
          lb, loc, norm,
          arith::MulFOp::create(
              lb, loc, cst(lb, 1e-8),
              math::ExpOp::create(lb, loc,
                                  arith::NegFOp::create(lb, loc, shift))));
    Value rs = score(lb, loc, vload(lb, op.getResultGrad(), {row, qCol}),
                     vload(lb, op.getOutput(), {row, qCol}));
    when(lb, active, [&](OpBuilder &ib) {
      Value col = mul(ib, h, idx(ib, 3));
      Value rowStats[3] = {shift, norm, rs};
      for (int64_t i = 0; i < 3; ++i)
        memref::StoreOp::create(ib, loc, rowStats[i], op.getStatsInit(),
                                ValueRange{row, add(ib, col, idx(ib, i))});
      vector::StoreOp::create(ib, loc, zeros(ib), op.getQueryGradInit(),
                              ValueRange{row, qCol});
    });
    Value dsRow = mul(lb, t, K);
    scf::ForOp::create(
        lb, loc, blockFirst, blockEnd, K, ValueRange{},
        [&](OpBuilder &fb, Location l, Value k0, ValueRange) {
          loadTiles(fb, l, k0, /*withV=*/true);
          // This row's score gradients against the tile's keys.
          pairPasses(
              fb, keyTile, sDS, dsRow,
              [&](OpBuilder &ob) {
                return vload(ob, op.getResultGrad(), {row, qCol});
              },
              [&](OpBuilder &ob, Value r) { return vload(ob, sV, {mul(ob, r, D)}); },
              [&](OpBuilder &ob) { return vload(ob, op.getQuery(), {row, qCol}); },
              [&](OpBuilder &ob, Value r) { return vload(ob, sK, {mul(ob, r, D)}); },
              [&](OpBuilder &ib, Value r, Value sc, Value dp) {
                AttentionPairGrad pg =
                    attentionPairGrad(ib, loc, softpick, scale,
                             validKey(ib, add(ib, k0, r)), sc, dp, shift, norm, rs);
                memref::StoreOp::create(ib, loc, pg.ds, sDS,
                                        ValueRange{add(ib, dsRow, r)});
              });
          gpu::BarrierOp::create(fb, l);
          when(fb, active, [&](OpBuilder &ib) {
            accumulate(ib, op.getQueryGradInit(), row, qCol, keyTile,
                       [&](OpBuilder &jb, Value r) -> std::pair<Value, Value> {
                         return {memref::LoadOp::create(
                                     jb, loc, sDS,
                                     ValueRange{add(jb, dsRow, r)}),
                                 vload(jb, sK, {mul(jb, r, D)})};
                       });
          });
          // The next tile must not overwrite this one while others read it.
          gpu::BarrierOp::create(fb, l);
          scf::YieldOp::create(fb, l);
        });
    gpu::TerminatorOp::create(lb, loc);
  }

  // --- Keys: dK and dV, over the group's query heads. ---
  // Per query row of a tile: its Q and dO rows, its 3 stats, and each key
  // thread's p and ds for it.
  int64_t keyBlock = std::min<int64_t>(64, rows);
  int64_t queryTile =
      std::min(tileWithin(8 * headDim + 12 + 8 * keyBlock, 40 * 1024), rows);
  auto keyLaunch = gpu::LaunchOp::create(
      b, loc, idx(b, kvHeads), idx(b, (rows + keyBlock - 1) / keyBlock), one,
      idx(b, keyBlock), one, one, /*dynamicSharedMemorySize=*/nullptr,
      /*asyncTokenType=*/nullptr, /*asyncDependencies=*/ValueRange{},
      TypeRange{sharedOf(queryTile * headDim), sharedOf(queryTile * headDim),
                sharedOf(queryTile * 3), sharedOf(keyBlock * queryTile),
                sharedOf(keyBlock * queryTile)});
  {
    OpBuilder lb = OpBuilder::atBlockBegin(&keyLaunch.getBody().front());
    Value a = keyLaunch.getBlockIds().x, tile = keyLaunch.getBlockIds().y,
          t = keyLaunch.getThreadIds().x;
    ValueRange attributions = keyLaunch.getWorkgroupAttributions();
    Value sQ = attributions[0], sDO = attributions[1], sStat = attributions[2],
          sP = attributions[3], sDS = attributions[4];
    Value D = idx(lb, headDim), c0 = idx(lb, 0), c1 = idx(lb, 1),
          c3 = idx(lb, 3), QT = idx(lb, queryTile);
    Value first = mul(lb, tile, idx(lb, keyBlock));
    Value raw = add(lb, first, t);
    Value active = ult(lb, raw, idx(lb, rows));
    Value key = minu(lb, raw, idx(lb, rows - 1));
    Value kvCol = mul(lb, a, D);
    // Rows that see key j: j <= row < the end of j's window. The block's
    // rows run from its first key to its last key's window end.
    auto windowEnd = [&](OpBuilder &ob, Value j) -> Value {
      if (!window)
        return idx(ob, rows);
      return minu(ob, add(ob, windowStart(ob, loc, j, window), idx(ob, window)),
                  idx(ob, rows));
    };
    Value keyEnd = windowEnd(lb, key);
    Value lastKey = arith::SubIOp::create(
        lb, loc, minu(lb, add(lb, first, idx(lb, keyBlock)), idx(lb, rows)), c1);
    Value span = arith::SubIOp::create(lb, loc, windowEnd(lb, lastKey), first);
    Value tiles = arith::CeilDivUIOp::create(lb, loc, span, QT);
    Value steps = mul(lb, tiles, idx(lb, group));
    when(lb, active, [&](OpBuilder &ib) {
      vector::StoreOp::create(ib, loc, zeros(ib), op.getKeyGradInit(),
                              ValueRange{key, kvCol});
      vector::StoreOp::create(ib, loc, zeros(ib), op.getValueGradInit(),
                              ValueRange{key, kvCol});
    });
    Value pRow = mul(lb, t, QT);
    scf::ForOp::create(
        lb, loc, c0, steps, c1, ValueRange{},
        [&](OpBuilder &fb, Location l, Value step, ValueRange) {
          // Query head a G + step / tiles, rows r0.. of tile step mod tiles.
          Value h = add(fb, mul(fb, a, idx(fb, group)),
                        arith::DivUIOp::create(fb, l, step, tiles));
          Value r0 = add(fb, first,
                         mul(fb, arith::RemUIOp::create(fb, l, step, tiles), QT));
          Value qCol = mul(fb, h, D);
          stageRows(fb, l, t, keyBlock, r0, queryTile, headDim, rows, qCol,
                    {{op.getQuery(), sQ}, {op.getResultGrad(), sDO}});
          // The rows' shift, normaliser and rs (0 past the last row, which
          // no key thread counts).
          stageRows(fb, l, t, keyBlock, r0, queryTile, 3, rows,
                    mul(fb, h, c3), {{op.getStatsInit(), sStat}});
          gpu::BarrierOp::create(fb, l);
          // This key's weights and score gradients against the tile's rows.
          pairPasses(
              fb, queryTile, sDS, pRow,
              [&](OpBuilder &ob) { return vload(ob, op.getValue(), {key, kvCol}); },
              [&](OpBuilder &ob, Value r) { return vload(ob, sDO, {mul(ob, r, D)}); },
              [&](OpBuilder &ob) { return vload(ob, op.getKey(), {key, kvCol}); },
              [&](OpBuilder &ob, Value r) { return vload(ob, sQ, {mul(ob, r, D)}); },
              [&](OpBuilder &ib, Value r, Value sc, Value dp) {
                Value qRow = add(ib, r0, r);
                Value valid = arith::AndIOp::create(
                    ib, loc,
                    arith::CmpIOp::create(ib, loc, arith::CmpIPredicate::uge,
                                          qRow, key),
                    ult(ib, qRow, keyEnd));
                Value sAt = mul(ib, r, c3);
                auto stat = [&](int64_t i) -> Value {
                  return memref::LoadOp::create(
                      ib, loc, sStat, ValueRange{add(ib, sAt, idx(ib, i))});
                };
                AttentionPairGrad pg = attentionPairGrad(ib, loc, softpick, scale, valid, sc, dp,
                                       stat(0), stat(1), stat(2));
                Value slot = add(ib, pRow, r);
                memref::StoreOp::create(ib, loc, pg.p, sP, ValueRange{slot});
                memref::StoreOp::create(ib, loc, pg.ds, sDS, ValueRange{slot});
              });
          gpu::BarrierOp::create(fb, l);
          when(fb, active, [&](OpBuilder &ib) {
            auto rowTerm = [&](Value weights, Value from) {
              return [&, weights, from](OpBuilder &jb,
                                        Value r) -> std::pair<Value, Value> {
                return {memref::LoadOp::create(jb, loc, weights,
                                               ValueRange{add(jb, pRow, r)}),
                        vload(jb, from, {mul(jb, r, D)})};
              };
            };
            accumulate(ib, op.getKeyGradInit(), key, kvCol, queryTile,
                       rowTerm(sDS, sQ));
            accumulate(ib, op.getValueGradInit(), key, kvCol, queryTile,
                       rowTerm(sP, sDO));
          });
          // The next tile must not overwrite this one while others read it.
          gpu::BarrierOp::create(fb, l);
          scf::YieldOp::create(fb, l);
        });
    gpu::TerminatorOp::create(lb, loc);
  }
  op.erase();
}

} // namespace

bool mlir::lathe::attentionUsesTensorCores(FusedAttentionOp op,
                                           StringRef precision) {
  return precision != "f32" && !op.getOffset() && op.getHeadDim() % 8 == 0;
}

namespace {
struct AttentionToGpu
    : lathe::impl::AttentionToGpuBase<AttentionToGpu> {
  using Base::Base;
  void runOnOperation() override {
    SmallVector<FusedAttentionGradOp> grads;
    getOperation().walk([&](FusedAttentionGradOp op) {
      if (isa<MemRefType>(op.getQuery().getType()))
        grads.push_back(op);
    });
    for (FusedAttentionGradOp op : grads)
      lowerGrad(op);
    SmallVector<FusedAttentionOp> decode, tiled, tensorCore;
    getOperation().walk([&](FusedAttentionOp op) {
      auto q = dyn_cast<MemRefType>(op.getQuery().getType());
      if (!q)
        return;
      if (q.getDimSize(0) == 1 && op.getOffset())
        decode.push_back(op);
      else if (attentionUsesTensorCores(op, precision))
        tensorCore.push_back(op);
      else if (!op.getOffset())
        tiled.push_back(op);
    });
    for (FusedAttentionOp op : decode)
      lowerDecode(op);
    for (FusedAttentionOp op : tiled)
      lowerTiled(op);
    for (FusedAttentionOp op : tensorCore)
      lowerTensorCore(op);
  }
};

} // namespace
