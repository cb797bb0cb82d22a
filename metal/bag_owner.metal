// Deterministic backward, step 1: the bag and the gradient coefficient of every position.
//
// Grid (TY, B, 1); threadgroup (TY, 1, 1). Thread x owns every TY-th position of bag b (grid y): it
// strides over its positions start+x, start+x+TY, ... and write owner[i] = b
// and coef[i] = psw[i] / max(freq[row], 1) (1 without psw or frequencies).
// Only valid bags write (valid bags never overlap, so no two threads write
// one position); padding positions, poisoned bags and positions outside
// every bag keep owner = -1. Both outputs start at -1 (one init_value,
// -1.0, for the whole launch): an unwritten position has owner = -1 and
// coef = -1.0, and that coef is never read (det_partial / det_write use
// coef[e] only when srcrow[e] = owner[e] >= 0, i.e. for written positions).
// Bytes per position: index + psw + frequency read, 8 written.
//
// Inputs: indices (N) int32 or int64; offsets (NOFF) int64; meta (B) int32; psw (N) table dtype
// (flag 2); freq (V) float32 (flag 8); params int64 [N, V, D, NOFF, padding
// or -1, flags, B, 0]. Outputs: owner (N) int32; coef (N) float32.
const int64_t N = params[0], NOFF = params[3];
const int64_t pad = params[4], flags = params[5];
const uint b = thread_position_in_grid.y;
const uint TY = threads_per_threadgroup.x;
if (meta[b] >= 0) {
  const int64_t start = offsets[b];
  const int64_t end = (int64_t(b) + 1 < NOFF) ? int64_t(offsets[b + 1]) : N;
  for (int64_t i = start + thread_position_in_grid.x; i < end; i += TY) {
    const int64_t r = int64_t(indices[i]);
    if (r == pad) continue;
    float c = ((flags & 2) != 0) ? float(psw[i]) : 1.0f;
    if ((flags & 8) != 0) c = c * (1.0f / max(freq[r], 1.0f));
    owner[i] = int(b);
    coef[i] = c;
  }
}
