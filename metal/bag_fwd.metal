// embedding_bag forward: sum / mean / max of the gathered rows of each bag.
//
// Grid (ceil(D / CPT), TY, B * S); threadgroup (TX, TY, TZ). TZ > 1 only when
// TX * TY < 32 (short bags, small D). Grid z = b * S + s: bag b, split s
// (S = params[P_S], 1 unless a few long bags would leave the GPU idle), the s-th
// of S contiguous chunks of the bag.
// Thread x of it owns CPT consecutive columns (template CPT: 8 for a 2-byte table with
// D % 8 == 0 outside max mode and splits, one 16-byte load of 8 elements; 4 for D % 4 == 0,
// a 4-element vector load; else 1); the TY threads along y split the chunk's positions
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
// (one more each for psw / scale), shared by the lanes of that row (CPT = 8 halves the
// lanes per row, so a SIMD-group spans twice the rows and bags); once per SIMD-group:
// the 8 params slots in one instruction (lane k reads slot k % 8, two sectors; each slot
// then comes from its lane by a SIMD shuffle; a SIMD-group of under 8 live lanes, at a
// threadgroup cut by the grid's edge, reads them one by one), offsets[b], offsets[b + 1]
// and offsets[0] of each of its bags in one instruction (the bag's first three lanes
// read one each, then shuffle; a bag with fewer lanes in the SIMD-group reads what it
// misses itself), prevmax[b] (one instruction; neither with FLAG_FIXED). All lanes are
// active at these shuffles (kernel start, no branch taken yet). Threads with y = 0 write
// their CPT outputs with one vector store (D is a multiple of CPT, so the block is whole
// and CPT * sizeof(O)-aligned in MLX's 16-byte aligned buffers; CPT = 8 has O = T and
// stores 16 bytes as 4 uints), the arg-max rows likewise (the row is kept beside its
// position, so indices are not read again) and meta one int per bag: each output sector
// written once, fully. With TY > 1 the reduction stores CPT values (and positions and
// rows in max mode) and one count per thread at word k * TG_MAX + slot and thread y = 0
// reads them back: 32 consecutive words per SIMD-group access, no bank conflict.
//
// Inputs: weight (V, D) T; indices (N) int32 or int64; offsets (NOFF) int64; prevmax (at
// least B) int64 = max(offsets[0..b]) (inclusive: start >= it iff start >= every earlier
// offset; not read with FLAG_FIXED); psw (N) T (FLAG_PSW); scale (N) float32 max_norm
// factors (FLAG_SCALE); params int64, slots P_N .. P_S (embag_common.h).
// Outputs: out (B * S, D) O (divided by the count with FLAG_MEAN); argmax (B * S, D)
// int32 row per column (-1: none) in max mode; meta (B * S) int32 = non-padding count,
// or POISONED when the bag is poisoned (invalid offsets or an index outside [0, V)).
// Max mode ranks NaN above every number, as max/argmax do (a NaN anywhere in
// a bag's column makes it NaN; its earliest NaN position is the arg-max):
// "v beats m" is v > m || (isnan(v) && !isnan(m)).
// Column k of a thread's block sits at k * TG_MAX + slot: a SIMD-group's lanes have
// consecutive slots, hence 32 different banks (slot * 4 + k was 4-way conflicted).
// Sized by the specialisation: 13 KB in max mode (CPT = 4), 4-11 KB otherwise.
threadgroup float red_val[TG_MAX * CPT];
threadgroup int red_pos[TG_MAX * (MAXMODE ? CPT : 1)];
threadgroup int red_row[TG_MAX * (MAXMODE ? CPT : 1)];
threadgroup int red_cnt[TG_MAX];
static_assert(CPT == 1 || CPT == 4 || (CPT == 8 && sizeof(T) == 2 && !MAXMODE), "bag_fwd: CPT is 1, 4 or 8");
// T when it is 2 bytes (the CPT = 8 path), else a stand-in that keeps the dead path compiling.
typedef conditional_t<sizeof(T) == 2, T, half> T2;
static_assert(P_N == 0 && P_S == 7, "bag_fwd reads the params slots 0 .. 7 in one instruction");

// The SIMD-group's live lanes (fewer than 32 only in the last SIMD-group of a threadgroup
// cut at the grid's edge); all are active here, before any branch.
const uint lane = thread_index_in_simdgroup;
const uint tgn = threads_per_threadgroup.x * threads_per_threadgroup.y * threads_per_threadgroup.z;
const uint sg0 = thread_index_in_threadgroup - lane;
const uint live = min(threads_per_simdgroup, tgn - sg0);
// params in one instruction: lane k reads slot k % 8 (64 bytes, two sectors), then each
// slot is taken from its lane (as two 32-bit halves); with under 8 lanes, slot by slot.
const bool spread = live >= 8;
const vec<uint, 2> pmine = as_type<vec<uint, 2>>(params[spread ? (lane & 7) : 0]);
int64_t pv[8];
for (int k = 0; k < 8; ++k) {
  const int64_t got = as_type<int64_t>(simd_shuffle(pmine, ushort(k)));
  pv[k] = spread ? got : params[k];
}
const int64_t N = pv[P_N], V = pv[P_V], D = pv[P_D], NOFF = pv[P_NOFF];
const int64_t pad = pv[P_PAD], flags = pv[P_FLAGS];
const uint z = thread_position_in_grid.z;
const int64_t S = pv[P_S] > 1 ? pv[P_S] : 1;
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
  const int64_t L = N / pv[P_B];
  bag.start = int64_t(b) * L;
  bag.end = bag.start + L;
} else {
  // The bag's first three lanes in this SIMD-group read offsets[b], offsets[b + 1] and
  // offsets[0] in one instruction (the others offsets[b] again) and pass them on; a bag
  // with fewer lanes here reads what it misses itself.
  const uint per_bag = TY * TXA, bag0 = thread_position_in_threadgroup.z * per_bag;
  const uint first = max(bag0, sg0), role = slot - first;
  const uint lanes = min(bag0 + per_bag, sg0 + live) - first;
  const bool has_next = int64_t(b) + 1 < NOFF;
  const int64_t at = role == 1 ? (has_next ? int64_t(b) + 1 : int64_t(b)) : (role == 2 ? 0 : int64_t(b));
  const vec<uint, 2> omine = as_type<vec<uint, 2>>(offsets[at]);
  const uint fl = first - sg0;
  const int64_t s_start = as_type<int64_t>(simd_shuffle(omine, ushort(fl)));
  const int64_t s_end = as_type<int64_t>(simd_shuffle(omine, ushort(min(fl + 1, live - 1))));
  const int64_t s_zero = as_type<int64_t>(simd_shuffle(omine, ushort(min(fl + 2, live - 1))));
  bag.start = s_start;
  bag.end = has_next ? (lanes >= 2 ? s_end : int64_t(offsets[b + 1])) : N;
  const int64_t first_offset = lanes >= 3 ? s_zero : int64_t(offsets[0]);
  bad = bag_range_poisoned(first_offset, bag, prevmax[b], N);
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
    if (CPT == 8) {
      // Eight 2-byte elements in one 16-byte load (the row start is 16-byte aligned: D % 8 == 0).
      const vec<uint, 4> q = *(const device vec<uint, 4>*)src;
      for (int k = 0; k < 4; ++k) {
        v[2 * k] = float(as_type<T2>(ushort(q[k] & 0xFFFFu)));
        v[2 * k + 1] = float(as_type<T2>(ushort(q[k] >> 16)));
      }
    } else if (CPT == 4) {
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
  } else if (CPT == 8) {
    // O is T here (no split with CPT = 8): eight 2-byte results in one 16-byte store.
    vec<uint, 4> q;
    for (int k = 0; k < 4; ++k) {
      q[k] = uint(as_type<ushort>(T2(res[2 * k]))) | (uint(as_type<ushort>(T2(res[2 * k + 1]))) << 16);
    }
    *(device vec<uint, 4>*)(out + e) = q;
  } else if (CPT == 4) {
    *(device vec<O, 4>*)(out + e) = vec<O, 4>(res[0], res[1], res[2], res[3]);
    if (MAXMODE) *(device vec<int, 4>*)(argmax + e) = vec<int, 4>(arg[0], arg[1], arg[2], arg[3]);
  } else {
    out[e] = res[0];
    if (MAXMODE) argmax[e] = arg[0];
  }
}
