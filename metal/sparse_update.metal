// Sparse optimizer step: each listed row's gradient entries summed in a fixed order, and the
// row's update (SparseSGD, SparseAdagrad, SparseAdam or RowWiseAdagrad: template RULE) computed
// in the same pass.
//
// The K entries of a RowSparseGrad are sorted by row once (skey, MLX argsort) and cut into
// W = ceil(M / WINDOW) windows of WINDOW sorted entries, as in the deterministic backward.
// Grid (TX, W, 1); threadgroup (TX, TY, 1): threadgroup row y owns window w = grid y, and
// thread x owns columns x, x + TX, ... (COLS of them, registers) of every run of equal keys
// that starts in window w. For each such run it sums the run's entries in sorted order, then
// the partial sums det_partial left for the following windows the run covers (part, in
// window order): the same additions in the same order as det_write, so the sums are the
// deterministic backward's bits whatever the threadgroup order. With the sum g of a row r it
// reads r's old state and writes, at the run's first sorted position, the increments that
// MLX's scatter-add then applies in place: the table's (T) and the state's (float32):
//   SGD      dw = -lr * g
//   ADAGRAD  ds1 = g * g;  dw = -lr * (g / (sqrt(acc[r] + ds1) + eps))
//   ADAM     ds1 = (g - m[r]) * (1 - b1);  ds2 = (g * g - v[r]) * (1 - b2);
//            dw = -step * ((m[r] + ds1) / (sqrt(v[r] + ds2) + eps))   (torch.optim.SparseAdam)
//   ROWWISE  ds1 = mean over columns of g * g (one per row);  dw = -lr * g / (sqrt(acc[r] + ds1) + eps)
// RowWiseAdagrad's mean is a fixed-order tree over threadgroup memory, so TY = 1 with it
// (every thread of a threadgroup walks the same runs and meets the same barriers). Every
// other position of the run, and every position of the run of unlisted entries (key -1,
// sorted first; a key past the R rows counts as one), gets exact zeros: each output
// element is written once, by one thread, and no output needs filling first. A run that
// started in an earlier window is that window's: here it only gets its zeros.
// Bytes per touched row (n entries, D columns, key of 4 or 8 bytes, gradient of G bytes):
// read n * (key + 4 + D * G) (keys, order, gradient), the old state once: 0 (SGD), 4 * D
// (ADAGRAD), 8 * D (ADAM), 4 (ROWWISE), plus 4 * D per further window a long run covers;
// written n * D * sizeof(T), plus n * 4 * D (ADAGRAD), n * 8 * D (ADAM) or n * 4 (ROWWISE).
// The table itself is never read: only the scatter that applies dw touches it.
//
// Inputs: skey (M) int32 or int64 sorted keys (-1: lists no row); order (M) int32 entry of
// each sorted slot; values (M, DV) gradient, any float type; part (W, DV) float32 from
// det_partial; state1 (R, DV) float32 (ADAGRAD, ADAM's m), (R) float32 (ROWWISE), unused
// otherwise; state2 (R, DV) float32 (ADAM's v); hyper float32 slots O_LR .. O_SHARE2;
// params int64, slots P_M, P_R, P_DV, P_WINDOW (embag_common.h).
// Outputs: dw (M, DV) T; dstate1 (M, DV) float32, or (M) with ROWWISE; dstate2 (M, DV)
// float32 (ADAM). Outputs a rule does not use are left unwritten.
threadgroup float red[TG_MAX];

const int64_t M = params[P_M], R = params[P_R], DV = params[P_DV], WINDOW = params[P_WINDOW];
const int64_t x = int64_t(thread_position_in_threadgroup.x);
const int64_t TX = int64_t(threads_per_threadgroup.x);
const int64_t w = int64_t(thread_position_in_grid.y);
const float lr = hyper[O_LR], eps = hyper[O_EPS];
const float share1 = hyper[O_SHARE1], share2 = hyper[O_SHARE2];
const int64_t j0 = w * WINDOW;
const int64_t j1 = (j0 + WINDOW < M) ? j0 + WINDOW : M;

int64_t j = j0;
while (j < j1) {
  const int64_t row = int64_t(skey[j]);
  int64_t end = j + 1;
  while (end < j1 && int64_t(skey[end]) == row) ++end;
  const bool owned = row >= 0 && row < R && !(j == j0 && j0 > 0 && int64_t(skey[j0 - 1]) == row);

  float g[COLS];
  float sq = 0.0f;
  for (int i = 0; i < COLS; ++i) g[i] = 0.0f;
  if (owned) {
    for (int64_t k = j; k < end; ++k) {
      const int64_t e = int64_t(order[k]);
      for (int i = 0; i < COLS; ++i) {
        const int64_t c = x + i * TX;
        if (c < DV) g[i] += float(values[e * DV + c]);
      }
    }
    if (end == j1) {
      // The run may go on into the next windows: add their partial sums, in window order.
      for (int64_t ww = w + 1; ww * WINDOW < M && int64_t(skey[ww * WINDOW]) == row; ++ww) {
        for (int i = 0; i < COLS; ++i) {
          const int64_t c = x + i * TX;
          if (c < DV) g[i] += part[ww * DV + c];
        }
      }
    }
    for (int i = 0; i < COLS; ++i) sq += g[i] * g[i];
  }

  float mean_sq = 0.0f;
  if (RULE == RULE_ROWWISE) {
    // Sum of squares over the row's columns: a fixed-order tree over the threadgroup.
    red[x] = sq;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (int64_t s = TX / 2; s > 0; s /= 2) {
      if (x < s) red[x] += red[x + s];
      threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    mean_sq = red[0] / float(DV);
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }

  for (int64_t k = j; k < end; ++k) {
    const bool upd = owned && k == j;
    if (RULE == RULE_ROWWISE && x == 0) dstate1[k] = upd ? mean_sq : 0.0f;
    for (int i = 0; i < COLS; ++i) {
      const int64_t c = x + i * TX;
      if (c >= DV) continue;
      const int64_t o = k * DV + c;
      float dwv = 0.0f, d1 = 0.0f, d2 = 0.0f;
      if (upd) {
        const float gc = g[i];
        const int64_t at = row * DV + c;
        if (RULE == RULE_SGD) {
          dwv = -lr * gc;
        } else if (RULE == RULE_ADAGRAD) {
          d1 = gc * gc;
          dwv = -lr * (gc / (sqrt(state1[at] + d1) + eps));
        } else if (RULE == RULE_ADAM) {
          const float m0 = state1[at], v0 = state2[at];
          d1 = (gc - m0) * share1;
          d2 = (gc * gc - v0) * share2;
          dwv = -lr * ((m0 + d1) / (sqrt(v0 + d2) + eps));
        } else {
          dwv = -lr * gc / (sqrt(state1[row] + mean_sq) + eps);
        }
      }
      dw[o] = T(dwv);
      if (RULE == RULE_ADAGRAD || RULE == RULE_ADAM) dstate1[o] = d1;
      if (RULE == RULE_ADAM) dstate2[o] = d2;
    }
  }
  j = end;
}
