// Deterministic backward, step 3: every row's gradient, written once, in a fixed order.
//
// Grid (DV, W, 1); threadgroup (TX, TY, 1), as in step 2: thread (c, w) owns column c
// of window w; it walks the sorted entries of window w in order and sums each run of
// equal keys. A run that started in an earlier
// window is skipped (its head writes it). A run that starts here and goes past
// the window end adds part[w', c] of each following window it covers, in
// window order. The head then writes grad[row, c] (plain store: exactly one
// writer per row, so no atomics and the same bits on every run and every
// threadgroup order). Rows that no entry names keep the zero they start with.
// Bytes per entry as in step 2, plus 4 written per (row, column).
// Traffic per SIMD-group: per entry 4 uniform loads (key, order, srcrow, coef: a sector
// each, shared by the window's lanes) and the source row's 32 consecutive columns; per
// run one written row, coalesced. mlx_embag/_cost.py counts these against the atomic
// variant: about DV / 4 sectors per entry against DV / 4 for the atomics' read-modify-
// write, so the sort decides, and hot rows (one write per row) favour this variant.
//
// Inputs: skey (M) int32 or int64; order (M) int32; srcrow (M) int32; coef (M) float32;
// src (S, DV) float32; part (W, DV) float32; params int64, slots P_M, P_R, P_DV, P_WINDOW
// (embag_common.h).
// Output: grad (R, DV) float32.
const int64_t M = params[P_M], R = params[P_R], DV = params[P_DV], WINDOW = params[P_WINDOW];
const int64_t c = int64_t(thread_position_in_grid.x);
const int64_t w = int64_t(thread_position_in_grid.y);
const int64_t j0 = w * WINDOW;
const int64_t j1 = (j0 + WINDOW < M) ? j0 + WINDOW : M;
int64_t j = j0;
if (j0 > 0 && skey[j0 - 1] == skey[j0]) {
  // Continuation of an earlier window's run: skip it.
  while (j < j1 && skey[j] == skey[j0]) ++j;
}
while (j < j1) {
  const int64_t row = int64_t(skey[j]);
  float acc = 0.0f;
  for (; j < j1 && int64_t(skey[j]) == row; ++j) {
    const int64_t e = int64_t(order[j]);
    const int s = srcrow[e];
    if (s >= 0) acc += src[int64_t(s) * DV + c] * coef[e];
  }
  if (j == j1) {
    // The run may continue into the next windows: add their partial sums.
    int64_t ww = w + 1;
    while (ww * WINDOW < M && int64_t(skey[ww * WINDOW]) == row) {
      acc += part[ww * DV + c];
      ++ww;
    }
  }
  if (row >= 0 && row < R) grad[row * DV + c] = acc;
}
