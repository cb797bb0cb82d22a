// embedding_bag forward: sum / mean / max of the gathered rows of each bag.
//
// Grid (ceil(D / CPT), TY, B * S); threadgroup (TX, TY, TZ). TZ > 1 only when
// TX * TY < 32 (short bags, small D). Grid z = b * S + s: bag b, split s
// (S = params[P_S], 1 unless a few long bags would leave the GPU idle), the s-th
// of S contiguous chunks of the bag.
// Thread x of it owns CPT consecutive columns (CPT = 4 with VEC, a 4-element
// vector load, else 1); the TY threads along y split the chunk's positions
// (thread y takes cs+y, cs+y+TY, ...) and are combined in a fixed order through
// threadgroup memory, sized for TG_MAX threads. With S > 1 the results are float32
// partials (O = float) that bag_combine reduces in chunk order (the second reduction
// step that lets a few huge bags fill the GPU). Consecutive threads of a SIMD-group
// read consecutive columns of the same row. Bag bounds come straight from offsets
// (no offset-to-bag array); rows are addressed in 64 bits.
// Bytes per output element: about (mean bag length) * sizeof(T) read from the
// table, plus indices / scale / psw once per position per column block, and
// sizeof(O) written (plus 4 for the arg-max row in max mode).
//
// Inputs: weight (V, D) T; indices (N) int32 or int64; offsets (NOFF) int64; prevmax (B)
// int64 = max(offsets[0..b-1]); psw (N) T (FLAG_PSW); scale (N) float32 max_norm
// factors (FLAG_SCALE); params int64, slots P_N .. P_S (embag_common.h).
// Outputs: out (B * S, D) O (divided by the count with FLAG_MEAN); argmax (B * S, D)
// int32 row per column (-1: none) in max mode; meta (B * S) int32 = non-padding count,
// or POISONED when the bag is poisoned (invalid offsets or an index outside [0, V)).
// Max mode ranks NaN above every number, as max/argmax do (a NaN anywhere in
// a bag's column makes it NaN; its earliest NaN position is the arg-max):
// "v beats m" is v > m || (isnan(v) && !isnan(m)).
constexpr int CPT = VEC ? 4 : 1;
threadgroup float red_val[TG_MAX * 4];
threadgroup int red_pos[TG_MAX * 4];
threadgroup int red_cnt[TG_MAX];
threadgroup int red_bad[TG_MAX];

const int64_t N = params[P_N], V = params[P_V], D = params[P_D];
const int64_t pad = params[P_PAD], flags = params[P_FLAGS];
const uint z = thread_position_in_grid.z;
const int64_t S = params[P_S] > 1 ? params[P_S] : 1;
const uint b = uint(int64_t(z) / S);
const uint lx = thread_position_in_threadgroup.x, ly = thread_position_in_threadgroup.y;
const uint TY = threads_per_threadgroup.y;
// Several short bags may share a threadgroup along z (small D); each has its own slots.
const uint slot = (thread_position_in_threadgroup.z * TY + ly) * dispatch_threads_per_threadgroup.x + lx;
const int64_t c0 = int64_t(thread_position_in_grid.x) * CPT;

const BagRange bag = bag_bounds(offsets, params, b);
const int64_t start = bag.start, end = bag.end;
bool bad = bag_range_poisoned(offsets, bag, prevmax[b], N);

float acc[CPT];
int pos[CPT];
for (int k = 0; k < CPT; ++k) {
  acc[k] = MAXMODE ? -INFINITY : 0.0f;
  pos[k] = -1;
}
int cnt = 0;
const bool has_psw = (flags & FLAG_PSW) != 0, has_scale = (flags & FLAG_SCALE) != 0;
if (!bad) {
  const int64_t chunk = (end - start + S - 1) / S;
  const int64_t cs = start + (int64_t(z) - int64_t(b) * S) * chunk;
  const int64_t ce = (cs + chunk < end) ? cs + chunk : end;
  for (int64_t i = cs + ly; i < ce; i += TY) {
    const int64_t r = int64_t(indices[i]);
    if (r < 0 || r >= V) {
      bad = true;
      break;
    }
    if (r == pad) continue;
    ++cnt;
    if (c0 >= D) continue;
    float v[CPT];
    const device T* row = weight + r * D + c0;
    if (VEC) {
      const vec<T, 4> q = *(const device vec<T, 4>*)row;
      for (int k = 0; k < CPT; ++k) v[k] = float(q[k]);
    } else {
      v[0] = float(row[0]);
    }
    if (has_scale) {
      // PyTorch stores the renormed row in the table's dtype before using it.
      const float s = scale[i];
      for (int k = 0; k < CPT; ++k) v[k] = float(T(v[k] * s));
    }
    if (MAXMODE) {
      for (int k = 0; k < CPT; ++k) {
        if (pos[k] < 0 || v[k] > acc[k] || (isnan(v[k]) && !isnan(acc[k]))) {
          acc[k] = v[k];
          pos[k] = int(i);
        }
      }
    } else {
      const float w = has_psw ? float(psw[i]) : 1.0f;
      for (int k = 0; k < CPT; ++k) acc[k] += has_psw ? v[k] * w : v[k];
    }
  }
}

if (TY > 1) {
  for (int k = 0; k < CPT; ++k) {
    red_val[slot * 4 + k] = acc[k];
    red_pos[slot * 4 + k] = pos[k];
  }
  red_cnt[slot] = cnt;
  red_bad[slot] = bad ? 1 : 0;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (ly == 0) {
    const uint stride = dispatch_threads_per_threadgroup.x;
    for (uint y = 1; y < TY; ++y) {
      const uint o = slot + y * stride;
      cnt += red_cnt[o];
      bad = bad || red_bad[o] != 0;
      for (int k = 0; k < CPT; ++k) {
        const float ov = red_val[o * 4 + k];
        const int op = red_pos[o * 4 + k];
        if (MAXMODE) {
          // Earliest position wins ties (two NaNs tie), whichever thread found it.
          const bool beats = ov > acc[k] || (isnan(ov) && !isnan(acc[k]));
          const bool ties = ov == acc[k] || (isnan(ov) && isnan(acc[k]));
          if (op >= 0 && (pos[k] < 0 || beats || (ties && op < pos[k]))) {
            acc[k] = ov;
            pos[k] = op;
          }
        } else {
          acc[k] += ov;
        }
      }
    }
  }
}

if (ly == 0) {
  if (thread_position_in_grid.x == 0) meta[z] = bad ? int(POISONED) : cnt;
  const float div = ((flags & FLAG_MEAN) != 0) ? float(max(cnt, 1)) : 1.0f;
  for (int k = 0; k < CPT; ++k) {
    const int64_t c = c0 + k;
    if (c >= D) break;
    float res;
    int arg = -1;
    if (bad) {
      res = NAN;
    } else if (MAXMODE) {
      res = pos[k] >= 0 ? acc[k] : 0.0f;
      arg = pos[k] >= 0 ? int(indices[pos[k]]) : -1;
    } else {
      res = acc[k] / div;
    }
    // Final results are rounded to the table's dtype; split partials stay float32.
    out[int64_t(z) * D + c] = O(S > 1 ? res : float(T(res)));
    if (MAXMODE) argmax[int64_t(z) * D + c] = arg;
  }
}
