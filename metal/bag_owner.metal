// Deterministic backward, step 1: the bag and the gradient coefficient of every position.
//
// Grid (TX, B, 1); threadgroup (TX, 1, 1). Thread x owns every TX-th position of bag b (grid y): it
// strides over its positions start+x, start+x+TX, ... and writes owner[i] = b
// and coef[i] = psw[i] / max(freq[row], 1) (1 without psw or frequencies).
// Only valid bags write (valid bags never overlap, so no two threads write
// one position); padding positions, poisoned bags and positions outside
// every bag keep owner = -1. Both outputs start at -1 (one init_value,
// -1.0, for the whole launch): an unwritten position has owner = -1 and
// coef = -1.0, and that coef is never read (det_partial / det_write use
// coef[e] only when srcrow[e] = owner[e] >= 0, i.e. for written positions).
// Bytes per position: index + psw + frequency read, 8 written.
// Traffic per SIMD-group: 32 consecutive positions per instruction, so indices, psw,
// owner and coef move in whole sectors; freq[row] is a gather (a sector per position
// with FLAG_FREQ); once per SIMD-group meta[b], offsets[b], offsets[b + 1] and 4 params
// slots. MLX fills both outputs with -1 first (init_value): 8 more bytes per position.
//
// Inputs: indices (N) int32 or int64; offsets (NOFF) int64; meta (B) int32; psw (N) table dtype
// (FLAG_PSW); freq (V) float32 (FLAG_FREQ); params int64, slots P_N .. P_B (embag_common.h).
// Outputs: owner (N) int32; coef (N) float32.
const int64_t pad = params[P_PAD], flags = params[P_FLAGS];
const uint b = thread_position_in_grid.y;
const uint TX = threads_per_threadgroup.x;
if (!poisoned(meta[b])) {
  const BagRange bag = bag_bounds(offsets, params, b);
  for (int64_t i = bag.start + thread_position_in_grid.x; i < bag.end; i += TX) {
    const int64_t r = int64_t(indices[i]);
    if (r == pad) continue;
    float c = ((flags & FLAG_PSW) != 0) ? float(psw[i]) : 1.0f;
    if ((flags & FLAG_FREQ) != 0) c = c * (1.0f / max(freq[r], 1.0f));
    owner[i] = int(b);
    coef[i] = c;
  }
}
