// Deterministic backward, step 2: partial sums of rows that cross a window boundary.
//
// Entries (positions, or (bag, column) pairs in max mode) are sorted by
// destination row (skey, via MLX argsort) and cut into W = ceil(M / WINDOW) windows of
// WINDOW consecutive sorted entries. Grid (DV, W, 1); threadgroup (TX, TY, 1): thread
// (c, w) owns column c of window w. If the window's first run of equal keys
// started in an earlier window, the thread sums that run's entries inside this
// window, in sorted order, into part[w, c]; otherwise it writes 0. A hot row
// thus costs WINDOW entries per thread here and one add per window in step 3,
// instead of one thread walking the whole run. Bytes per entry: key, order,
// source row, coefficient and 4 bytes of the source row per column read.
// Traffic per SIMD-group: the lanes of one window share its keys (uniform loads, a
// sector each: the two at its start, then per entry of a crossing run key, order,
// srcrow and coef) and read consecutive columns of the source row; part is written
// coalesced. With DV < 32 a SIMD-group packs 32 / DV windows, each its own sectors.
//
// Inputs: skey (M) int32 or int64 sorted keys; order (M) int32 entry of each sorted slot;
// srcrow (M) int32 source row of each entry (-1: sends nothing); coef (M)
// float32; src (S, DV) float32; params int64, slots P_M, P_DV, P_WINDOW (embag_common.h).
// Output: part (W, DV) float32.
const int64_t M = params[P_M], DV = params[P_DV], WINDOW = params[P_WINDOW];
const int64_t c = int64_t(thread_position_in_grid.x);
const int64_t w = int64_t(thread_position_in_grid.y);
const int64_t j0 = w * WINDOW;
const int64_t j1 = (j0 + WINDOW < M) ? j0 + WINDOW : M;
float acc = 0.0f;
if (j0 > 0 && skey[j0 - 1] == skey[j0]) {
  const int64_t row = int64_t(skey[j0]);
  for (int64_t j = j0; j < j1 && int64_t(skey[j]) == row; ++j) {
    const int64_t e = int64_t(order[j]);
    const int s = srcrow[e];
    if (s >= 0) acc += src[int64_t(s) * DV + c] * coef[e];
  }
}
part[w * DV + c] = acc;
