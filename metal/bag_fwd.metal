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
// table, sizeof(O) written (plus 4 for the arg-max row in max mode).
// Traffic per SIMD-group (32-byte sectors, summed over its memory instructions): each
// position costs its row block (CPT * sizeof(T) per lane; a row's lanes read one
// contiguous span, so every sector touched is fully used) and one sector for its index
// (one more each for psw / scale), shared by the lanes of that row; once per SIMD-group,
// the params slots (four 16-byte loads), offsets[b], offsets[b + 1], offsets[0] and
// prevmax[b] (uniform loads, a sector each; none of these four with FLAG_FIXED). Threads with y = 0 write their CPT outputs with one vector store (VEC:
// D is a multiple of 4, so the block is whole and 4 * sizeof(O)-aligned in MLX's 16-byte
// aligned buffers), the arg-max rows likewise (the row is kept beside its position, so
// indices are not read again) and meta one int per bag: each output sector written once,
// fully. With TY > 1 the reduction stores CPT values (and positions and rows in max
// mode) and one count per thread at word k * TG_MAX + slot and thread y = 0 reads them
// back: 32 consecutive words per SIMD-group access, no bank conflict.
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
// Column k of a thread's block sits at k * TG_MAX + slot: a SIMD-group's lanes have
// consecutive slots, hence 32 different banks (slot * 4 + k was 4-way conflicted).
threadgroup float red_val[TG_MAX * 4];
threadgroup int red_pos[TG_MAX * 4];
threadgroup int red_row[TG_MAX * 4];
threadgroup int red_cnt[TG_MAX];

// The params slots in four 16-byte loads (a sector per SIMD-group each) instead of seven
// scalar ones; params is a 64-byte array of its own, so 16-byte aligned.
static_assert(P_N == 0 && P_V == 1 && P_D == 2 && P_NOFF == 3 && P_PAD == 4 && P_FLAGS == 5 && P_B == 6 &&
                  P_S == 7,
              "bag_fwd reads the params slots in pairs");
const device vec<int64_t, 2>* pairs = (const device vec<int64_t, 2>*)params;
const vec<int64_t, 2> nv = pairs[0], dn = pairs[1], pf = pairs[2], bs = pairs[3];
const int64_t N = nv.x, V = nv.y, D = dn.x, NOFF = dn.y;
const int64_t pad = pf.x, flags = pf.y;
const uint z = thread_position_in_grid.z;
const int64_t S = bs.y > 1 ? bs.y : 1;
const uint b = uint(int64_t(z) / S);
const uint lx = thread_position_in_threadgroup.x, ly = thread_position_in_threadgroup.y;
const uint TY = threads_per_threadgroup.y;
// Several short bags may share a threadgroup along z (small D); each has its own slots.
// slot is the thread's linear index in its threadgroup, whose actual width TXA is smaller
// than TX at the grid's edge: a SIMD-group's slots are then 32 consecutive words.
const uint TXA = threads_per_threadgroup.x;
const uint slot = (thread_position_in_threadgroup.z * TY + ly) * TXA + lx;
const int64_t c0 = int64_t(thread_position_in_grid.x) * CPT;

BagRange bag;
bool bad = false;
if ((flags & FLAG_FIXED) != 0) {
  // Bags of one length L (2-D input, embedding): no bounds to read or check.
  const int64_t L = N / bs.x;
  bag.start = int64_t(b) * L;
  bag.end = bag.start + L;
} else {
  bag = bag_bounds(offsets, N, NOFF, b);
  bad = bag_range_poisoned(offsets, bag, prevmax[b], N);
}
const int64_t start = bag.start, end = bag.end;

float acc[CPT];
int pos[CPT];
int row[CPT];  // max mode: the arg-max row, kept beside its position (no second read of indices)
for (int k = 0; k < CPT; ++k) {
  acc[k] = MAXMODE ? -INFINITY : 0.0f;
  pos[k] = -1;
  row[k] = -1;
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
    const device T* src = weight + r * D + c0;
    if (VEC) {
      const vec<T, 4> q = *(const device vec<T, 4>*)src;
      for (int k = 0; k < CPT; ++k) v[k] = float(q[k]);
    } else {
      v[0] = float(src[0]);
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
          row[k] = int(r);
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
    red_val[k * TG_MAX + slot] = acc[k];
    if (MAXMODE) {
      red_pos[k * TG_MAX + slot] = pos[k];
      red_row[k * TG_MAX + slot] = row[k];
    }
  }
  red_cnt[slot] = bad ? int(POISONED) : cnt;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (ly == 0) {
    for (uint y = 1; y < TY; ++y) {
      const uint o = slot + y * TXA;
      const int oc = red_cnt[o];
      bad = bad || poisoned(oc);
      cnt += oc;
      for (int k = 0; k < CPT; ++k) {
        const float ov = red_val[k * TG_MAX + o];
        if (MAXMODE) {
          // Earliest position wins ties (two NaNs tie), whichever thread found it.
          const int op = red_pos[k * TG_MAX + o];
          const bool beats = ov > acc[k] || (isnan(ov) && !isnan(acc[k]));
          const bool ties = ov == acc[k] || (isnan(ov) && isnan(acc[k]));
          if (op >= 0 && (pos[k] < 0 || beats || (ties && op < pos[k]))) {
            acc[k] = ov;
            pos[k] = op;
            row[k] = red_row[k * TG_MAX + o];
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
  O res[CPT];
  int arg[CPT];
  for (int k = 0; k < CPT; ++k) {
    float x;
    arg[k] = -1;
    if (bad) {
      x = NAN;
    } else if (MAXMODE) {
      x = pos[k] >= 0 ? acc[k] : 0.0f;
      arg[k] = row[k];
    } else {
      x = acc[k] / div;
    }
    // Final results are rounded to the table's dtype; split partials stay float32.
    res[k] = O(S > 1 ? x : float(T(x)));
  }
  // One vector store per output (and arg-max) block: D is a multiple of 4 with VEC, so
  // the block is whole and 4 * sizeof(O)-aligned in MLX's (16-byte aligned) buffers.
  const int64_t e = int64_t(z) * D + c0;
  if (c0 >= D) {
    // D = 0: the one thread along x owns no column.
  } else if (VEC) {
    *(device vec<O, 4>*)(out + e) = vec<O, 4>(res[0], res[1], res[2], res[3]);
    if (MAXMODE) *(device vec<int, 4>*)(argmax + e) = vec<int, 4>(arg[0], arg[1], arg[2], arg[3]);
  } else {
    out[e] = res[0];
    if (MAXMODE) argmax[e] = arg[0];
  }
}
