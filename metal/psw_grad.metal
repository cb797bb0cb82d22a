// embedding_bag backward to per_sample_weights: one dot product per position.
//
// Grid (32, TY, B); threadgroup (32, TY, 1). SIMD-group y of bag b owns the
// positions start+y, start+y+TY, ...; its 32 lanes read consecutive columns of
// the (renormed, table-dtype-rounded) row and of the bag's output gradient,
// multiply in float32 and combine with simd_sum; lane 0 writes the result.
// Poisoned bags and padding positions keep the zero the output starts with,
// as do positions outside every bag. Bytes per output element: D * sizeof(T) read
// (plus D * 4 from the bag's gradient when D > 256), 4 written.
// Traffic per SIMD-group: each position's row is read by consecutive lanes (32 *
// sizeof(T) contiguous bytes per instruction, sectors fully used); the bag's gradient
// row once per SIMD-group into registers when D <= 256 (was once per position: the
// gradient then moved 4 bytes per column and position, as much as or more than the
// row); its index (and scale) is one uniform load; lane 0's store of the dot product is
// one 4-byte store, a sector per position (small beside the D-wide reads). Once per
// SIMD-group: 5 params slots, meta[b], offsets[b], offsets[b + 1].
//
// Inputs: cot (B, D) float32; weight (V, D) T; indices (N) int32 or int64; offsets (NOFF)
// int64; meta (B) int32; scale (N) float32 (FLAG_SCALE); params int64, slots P_N .. P_B
// (embag_common.h). Output: dpsw (N) float32.
const int64_t D = params[P_D];
const int64_t pad = params[P_PAD], flags = params[P_FLAGS];
const uint b = thread_position_in_grid.z;
const uint lane = thread_position_in_grid.x;
const uint TY = threads_per_threadgroup.y;
if (!poisoned(meta[b])) {
  const BagRange bag = bag_bounds(offsets, params, b);
  const device float* g = cot + int64_t(b) * D;
  // Up to GMAX * 32 columns, the bag's gradient row stays in registers (read once per
  // SIMD-group, not once per position); wider rows are read from memory each time.
  constexpr int GMAX = 8;
  const bool kept = D <= 32 * GMAX;
  float gk[GMAX];
  for (int k = 0; k < GMAX; ++k) {
    const int64_t c = int64_t(lane) + 32 * k;
    gk[k] = (kept && c < D) ? g[c] : 0.0f;
  }
  for (int64_t i = bag.start + thread_position_in_grid.y; i < bag.end; i += TY) {
    const int64_t r = int64_t(indices[i]);
    if (r == pad) continue;
    const float s = ((flags & FLAG_SCALE) != 0) ? scale[i] : 1.0f;
    const device T* row = weight + r * D;
    float acc = 0.0f;
    if (kept) {
      for (int k = 0; k < GMAX; ++k) {
        const int64_t c = int64_t(lane) + 32 * k;
        if (c >= D) break;
        const float v = ((flags & FLAG_SCALE) != 0) ? float(T(float(row[c]) * s)) : float(row[c]);
        acc += v * gk[k];
      }
    } else {
      for (int64_t c = lane; c < D; c += 32) {
        const float v = ((flags & FLAG_SCALE) != 0) ? float(T(float(row[c]) * s)) : float(row[c]);
        acc += v * g[c];
      }
    }
    const float dot = simd_sum(acc);
    if (lane == 0) dpsw[i] = dot;
  }
}
