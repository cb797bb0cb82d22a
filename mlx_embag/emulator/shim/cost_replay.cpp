// cost_replay.cpp: the lanes' traces regrouped into SIMD-group instructions,
// and each instruction's figures. Part of the runtime library's translation
// unit (after cost_record.cpp).
//
// The model of a SIMD-group (a model of Apple GPUs, not a documented fact):
// the 32 lanes run one block at a time with a mask of active lanes; when the
// active lanes leave a block for different successors, each group of them
// runs on its own until it reaches the block's immediate post-dominator,
// where they run together again (a reconvergence stack, as in GPGPU-Sim).
// The k-th access of a block is one instruction for the lanes that run that
// block together. Data-dependent loops and divergent branches group as on a
// SIMT machine: lanes that leave a loop early wait at its exit, the others
// keep running the loop together.
namespace cost {

struct Entry {
  uint32_t rpc;   // reconvergence block: lanes reaching it wait
  uint32_t mask;  // lanes of this entry
};

struct Access {
  unsigned space, size;
  uint64_t off;
};

// Distinct units of 2^shift bytes touched by the sorted accesses of one space.
uint64_t distinct_units(const Access* a, int n, unsigned shift) {
  uint64_t count = 0, last = 0;
  bool any = false;
  for (int i = 0; i < n; ++i) {
    uint64_t lo = a[i].off >> shift, hi = (a[i].off + a[i].size - 1) >> shift;
    if (any && lo <= last) lo = last + 1;
    if (lo <= hi) {
      count += hi - lo + 1;
      last = hi;
      any = true;
    }
  }
  return count;
}

// Worst bank conflict of a threadgroup access: 32 banks of 4 bytes; lanes reading
// the same word share it (broadcast); degree = passes the banks need over the
// fewest passes that many distinct words could need.
uint64_t bank_degree(const Access* a, int n) {
  unsigned per_bank[32];
  memset(per_bank, 0, sizeof per_bank);
  uint64_t words = 0, last = 0;
  bool any = false;
  for (int i = 0; i < n; ++i) {
    uint64_t lo = a[i].off >> 2, hi = (a[i].off + a[i].size - 1) >> 2;
    if (any && lo <= last) lo = last + 1;
    for (uint64_t w = lo; w <= hi; ++w) {
      per_bank[w & 31]++;
      words++;
      last = w;
      any = true;
    }
  }
  unsigned most = 0;
  for (int b = 0; b < 32; ++b) most = per_bank[b] > most ? per_bank[b] : most;
  uint64_t least = (words + 31) / 32;
  return least ? (most + least - 1) / least : 0;
}

// One instruction: the accesses of the lanes that executed it together.
void count_instruction(uint32_t site, Access* a, int n) {
  // Insertion sort by (space, offset): at most 32 entries.
  for (int i = 1; i < n; ++i) {
    Access x = a[i];
    int j = i - 1;
    while (j >= 0 && (a[j].space > x.space || (a[j].space == x.space && a[j].off > x.off))) {
      a[j + 1] = a[j];
      --j;
    }
    a[j + 1] = x;
  }
  bool in_space[2] = {false, false};
  int i = 0;
  while (i < n) {
    int j = i;
    while (j < n && a[j].space == a[i].space) ++j;
    int t = a[i].space == TG_SPACE;
    Stats& st = g.stats.p[2 * site + t];
    if (!in_space[t]) st.instructions++;
    in_space[t] = true;
    st.lanes += (uint64_t)(j - i);
    st.bytes += distinct_units(a + i, j - i, 0);
    st.sectors += distinct_units(a + i, j - i, 5);
    st.lines += distinct_units(a + i, j - i, 7);
    if (t) {
      uint64_t d = bank_degree(a + i, j - i);
      if (d > st.bank_max) st.bank_max = d;
    }
    i = j;
  }
}

struct Replay {
  Lane* lanes;
  size_t pos[32], end[32];

  uint32_t next_block(unsigned l) const {
    return pos[l] < end[l] ? (uint32_t)(lanes[l].recs.p[pos[l]].a & 0xffffffffu) : NONE;
  }

  // Runs the block every active lane is at: its k-th accesses form one instruction
  // (per site, should lanes disagree).
  void execute(uint32_t active) {
    size_t first[32], stop[32];
    for (unsigned l = 0; l < 32; ++l) {
      if (!(active >> l & 1)) continue;
      const Rec* r = lanes[l].recs.p;
      size_t e = pos[l] + 1;
      while (e < end[l] && !(r[e].a & BLOCK)) ++e;
      first[l] = pos[l] + 1;
      stop[l] = e;
    }
    for (size_t k = 0;; ++k) {
      uint32_t left = 0;
      for (unsigned l = 0; l < 32; ++l)
        if ((active >> l & 1) && first[l] + k < stop[l]) left |= 1u << l;
      if (!left) break;
      while (left) {
        unsigned l0 = (unsigned)__builtin_ctz(left);
        uint32_t site = rec_site(lanes[l0].recs.p[first[l0] + k].a);
        Access acc[32];
        int n = 0;
        for (unsigned l = l0; l < 32; ++l) {
          if (!(left >> l & 1)) continue;
          const Rec& r = lanes[l].recs.p[first[l] + k];
          if (rec_site(r.a) != site) continue;
          acc[n++] = Access{rec_space(r.a), rec_size(r.a), r.b};
          left &= ~(1u << l);
        }
        count_instruction(site, acc, n);
      }
    }
    for (unsigned l = 0; l < 32; ++l)
      if (active >> l & 1) pos[l] = stop[l];
  }

  // Pushes one entry per distinct next block of `lanes_mask` (other than the
  // blocks in `skip`), all reconverging at `rpc`.
  void split(Vec<Entry>& st, uint32_t lanes_mask, uint32_t rpc, uint32_t skip0, uint32_t skip1) {
    while (lanes_mask) {
      unsigned l0 = (unsigned)__builtin_ctz(lanes_mask);
      uint32_t b = next_block(l0), group = 0;
      for (unsigned l = l0; l < 32; ++l)
        if ((lanes_mask >> l & 1) && next_block(l) == b) group |= 1u << l;
      lanes_mask &= ~group;
      if (b == NONE || b == skip0 || b == skip1) continue;
      if (!st.push(Entry{rpc, group})) fail_oom();
    }
  }

  void run(uint32_t all) {
    static Vec<Entry> st;
    st.n = 0;
    st.push(Entry{NONE, all});
    while (st.n) {
      Entry top = st.p[st.n - 1];
      uint32_t active = 0, b = NONE;
      bool mixed = false;
      for (unsigned l = 0; l < 32; ++l) {
        if (!(top.mask >> l & 1)) continue;
        uint32_t nb = next_block(l);
        if (nb == NONE || nb == top.rpc) continue;
        active |= 1u << l;
        if (b == NONE) b = nb;
        else if (nb != b) mixed = true;
      }
      if (!active) {
        st.n--;
        continue;
      }
      if (mixed) {  // lanes resumed in different blocks: each group on its own
        st.n--;
        split(st, active, top.rpc, NONE, NONE);
        continue;
      }
      execute(active);
      uint32_t first = NONE;
      bool diverged = false;
      for (unsigned l = 0; l < 32; ++l) {
        if (!(active >> l & 1)) continue;
        uint32_t nb = next_block(l);
        if (nb == NONE || nb == top.rpc) continue;
        if (first == NONE) first = nb;
        else if (nb != first) diverged = true;
      }
      if (!diverged) continue;
      int32_t pd = g.ipdom.p[b];
      uint32_t r = pd < 0 ? NONE : (uint32_t)pd;
      // Entries reconverging where the top one does replace it: its other lanes
      // already wait there, and the stack stays as deep as the branches nest.
      if (r == top.rpc) st.n--;
      split(st, active, r, top.rpc, r);
    }
  }
};

void flush_simdgroup(unsigned s) {
  unsigned lo = s * 32, hi = lo + 32 < g.n ? lo + 32 : g.n;
  Replay rp;
  rp.lanes = g.lanes + lo;
  uint32_t all = 0;
  for (unsigned l = 0; l < 32; ++l) {
    rp.pos[l] = rp.end[l] = 0;
    if (lo + l < hi) {
      rp.end[l] = g.lanes[lo + l].recs.n;
      if (rp.end[l]) all |= 1u << l;
    }
  }
  if (all) rp.run(all);
  // A lane stopped at a barrier goes on in the same block: its next trace starts there.
  for (unsigned i = lo; i < hi; ++i) {
    Lane& l = g.lanes[i];
    l.recs.n = 0;
    if (!l.done && l.block != NONE && !l.recs.push(Rec{BLOCK | l.block, 0})) fail_oom();
  }
}

}  // namespace cost
