// embedding_bag / embedding backward to the weight, atomic variant (sum and mean).
//
// Grid (ceil(D / CPT), TY, B); threadgroup (TX, TY, TZ), the forward's layout
// (TZ > 1 packs several short bags into one threadgroup; no threadgroup memory here):
// thread (x, y) owns CPT columns of bag b, x + k * NX for k < CPT (NX = ceil(D / CPT),
// the grid's width; CPT = 4 with VEC, which the launcher sets from D = 32 on): it adds the bag's output gradient, times each position's
// coefficient, into those columns of the position's row, for positions start+y,
// start+y+TY, ... Float32 atomic adds into a zero-initialised (V, D) gradient (no
// half/bfloat atomics: the caller casts). Poisoned bags send nothing; padding positions
// send nothing.
// Bytes per gradient element written: 4 (atomic read-modify-write) per
// contribution, plus 4 read from the bag's gradient and the position's
// index / psw / frequency once per column block.
// Traffic per SIMD-group: MSL has no vector float atomics, so each position costs CPT
// atomic instructions, one float per lane each; the columns are NX apart (not CPT
// consecutive ones per thread) so that for each k the lanes of one row add into
// consecutive words: a sector per 8 columns, fully used (consecutive columns per thread
// touched 4x the sectors at 25 % use); below D = 32 one instruction holds the whole row.
// Each position also costs one sector for its index
// (one more each for psw and freq[row]) shared by the lanes of the row; the bag's
// gradient is read once per thread, coalesced the same way. mlx_embag/_cost.py counts
// this variant against the sorted one (bag_owner, det_partial, det_write).
//
// Inputs: cot (B, D) float32, already divided by the count in mean mode;
// indices (N) int32 or int64; offsets (NOFF) int64; meta (B) int32 from the forward;
// psw (N) table dtype (FLAG_PSW); freq (V) float32 occurrences per row (FLAG_FREQ);
// params int64, slots P_N .. P_B (embag_common.h).
// Output: grad (V, D) atomic float32.
constexpr int CPT = VEC ? 4 : 1;
const int64_t D = params[P_D];
const int64_t pad = params[P_PAD], flags = params[P_FLAGS];
const uint b = thread_position_in_grid.z;
const uint TY = threads_per_threadgroup.y;
const int64_t NX = (D + CPT - 1) / CPT;
const int64_t c0 = int64_t(thread_position_in_grid.x);
if (!poisoned(meta[b]) && c0 < D) {
  const BagRange bag = bag_bounds(offsets, params, b);
  float g[CPT];
  for (int k = 0; k < CPT; ++k) g[k] = (c0 + k * NX < D) ? cot[int64_t(b) * D + c0 + k * NX] : 0.0f;
  const bool has_psw = (flags & FLAG_PSW) != 0, has_freq = (flags & FLAG_FREQ) != 0;
  for (int64_t i = bag.start + thread_position_in_grid.y; i < bag.end; i += TY) {
    const int64_t r = int64_t(indices[i]);
    if (r == pad) continue;
    float coef = has_psw ? float(psw[i]) : 1.0f;
    if (has_freq) coef = coef * (1.0f / max(freq[r], 1.0f));
    for (int k = 0; k < CPT; ++k) {
      if (c0 + k * NX < D) {
        atomic_fetch_add_explicit(&grad[r * D + c0 + k * NX], g[k] * coef, memory_order_relaxed);
      }
    }
  }
}
