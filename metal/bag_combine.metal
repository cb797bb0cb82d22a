// embedding_bag forward, second reduction step for bags split over S threadgroups.
//
// Grid (D, B, 1); threadgroup (TX, 1, 1), TX = min(next power of two >= D, TG_MAX).
// One thread owns one (bag, column):
// it reads the S float32 partials of bag_fwd in chunk order and sums them
// (sum / mean, then divides by the total count with FLAG_MEAN) or keeps the first
// strictly greater value (max: chunks are in position order, so the earliest
// position still wins ties; NaN beats every number, as in bag_fwd). A chunk
// that saw a poisoned bag (meta POISONED) makes the result NaN with meta POISONED.
// Bytes per output element: S * (4 + 4 + 4) read, sizeof(T) + 4 written.
// Traffic per SIMD-group: consecutive lanes own consecutive columns, so every partial,
// arg-max, output and arg-max store instruction covers consecutive elements (all
// sectors fully used, no vector store needed); per chunk s one uniform pmeta load (a
// sector), 3 params slots once. No threadgroup memory.
//
// Inputs: part (B * S, D) float32; pargmax (B * S, D) int32 (max mode);
// pmeta (B * S) int32; params int64, slots P_N .. P_S (embag_common.h).
// Outputs: out (B, D) T; argmax (B, D) int32 (max mode); meta (B) int32.
const int64_t D = params[P_D], flags = params[P_FLAGS], S = params[P_S];
const int64_t c = int64_t(thread_position_in_grid.x);
const int64_t b = int64_t(thread_position_in_grid.y);
float acc = 0.0f;
int arg = -1;
int cnt = 0;
bool bad = false;
for (int64_t s = 0; s < S; ++s) {
  const int64_t z = b * S + s;
  const int m = pmeta[z];
  if (poisoned(m)) {
    bad = true;
    continue;
  }
  cnt += m;
  const float v = part[z * D + c];
  if (MAXMODE) {
    const int r = pargmax[z * D + c];
    if (r >= 0 && (arg < 0 || v > acc || (isnan(v) && !isnan(acc)))) {
      acc = v;
      arg = r;
    }
  } else {
    acc += v;
  }
}
float res;
if (bad) {
  res = NAN;
  arg = -1;
} else if (MAXMODE) {
  res = arg >= 0 ? acc : 0.0f;
} else {
  res = ((flags & FLAG_MEAN) != 0) ? acc / float(max(cnt, 1)) : acc;
}
out[b * D + c] = T(res);
if (MAXMODE) argmax[b * D + c] = arg;
if (c == 0) meta[b] = bad ? int(POISONED) : cnt;
