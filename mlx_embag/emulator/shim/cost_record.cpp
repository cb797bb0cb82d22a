// cost_record.cpp: what a cost build of a kernel reports while a profile
// records, and the C interface the profiler reads (emu_cost_*). Part of the
// runtime library's translation unit (included at the end of runtime.cpp).
//
// - SanitizerCoverage's module constructors register each kernel object: its
//   block guards (numbered here, globally), the table of block addresses and
//   the control-flow table. Python reads both, computes each block's
//   immediate post-dominator and hands it back (emu_cost_set_ipdom).
// - Block callbacks and load / store callbacks append to the running lane's
//   trace; an access counts only when it falls inside a bound buffer (device
//   memory, offset from the buffer's start) or the threadgroup arena
//   (threadgroup memory, offset from the arena's 64-byte aligned start):
//   stack and private memory are not GPU memory traffic.
// - Atomics arrive through __emu_cost_atomic (SanitizerCoverage does not see
//   read-modify-writes); their addresses are also counted per launch.
#include <dlfcn.h>

namespace cost {

int g_on = 0;

struct Rec {
  uint64_t a, b;  // block: a = BLOCK | id. access: a = kind, space, size, site; b = offset
};
constexpr uint64_t BLOCK = 1ull << 63;
constexpr uint32_t NONE = 0xffffffffu;  // no block: the end of a trace, or no post-dominator
enum { LOAD = 0, STORE = 1, ATOMIC = 2 };
constexpr unsigned TG_SPACE = 63;  // the space id of threadgroup memory (device buffers are 0..62)
constexpr unsigned MAX_BUFFERS = 63;
constexpr unsigned MAX_SITES = 1u << 14;

inline unsigned rec_kind(uint64_t a) { return (unsigned)(a >> 56) & 3u; }
inline unsigned rec_space(uint64_t a) { return (unsigned)(a >> 48) & 63u; }
inline unsigned rec_size(uint64_t a) { return (unsigned)(a >> 32) & 255u; }
inline uint32_t rec_site(uint64_t a) { return (uint32_t)a; }

struct Module {
  uint32_t base, count;
  const uintptr_t* pcs;  // (block address, flags) pairs
  size_t npcs;
  const uintptr_t* cfs;  // block, successors..., 0, callees..., 0 per block
  size_t ncfs;
};

// An open-addressing count per 64-bit key (an atomic's address, or site and address).
struct CountMap {
  uint64_t* keys = nullptr;
  uint32_t* vals = nullptr;
  size_t cap = 0, n = 0;
  static size_t mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k;
  }
  bool add(uint64_t k) {
    if (2 * (n + 1) > cap && !grow()) return false;
    size_t i = mix(k) & (cap - 1);
    while (vals[i] && keys[i] != k) i = (i + 1) & (cap - 1);
    if (!vals[i]) {
      keys[i] = k;
      n++;
    }
    vals[i]++;
    return true;
  }
  bool grow() {
    size_t nc = cap ? 2 * cap : 1024;
    uint64_t* nk = (uint64_t*)malloc(nc * sizeof(uint64_t));
    uint32_t* nv = (uint32_t*)calloc(nc, sizeof(uint32_t));
    if (!nk || !nv) {
      free(nk);
      free(nv);
      return false;
    }
    for (size_t i = 0; i < cap; ++i)
      if (vals[i]) {
        size_t j = mix(keys[i]) & (nc - 1);
        while (nv[j]) j = (j + 1) & (nc - 1);
        nk[j] = keys[i];
        nv[j] = vals[i];
      }
    free(keys);
    free(vals);
    keys = nk;
    vals = nv;
    cap = nc;
    return true;
  }
  void release() {
    free(keys);
    free(vals);
    keys = nullptr;
    vals = nullptr;
    cap = n = 0;
  }
};

// Figures of one site (source instruction) in one space.
struct Stats {
  uint64_t instructions, lanes, bytes, sectors, lines, bank_max, addresses, max_per_address;
};

struct Lane {
  Vec<Rec> recs;
  uint32_t block;  // the block it is in (continues a trace after a sync point)
  int done;
};

struct State {
  uintptr_t buf[MAX_BUFFERS];
  uint64_t size[MAX_BUFFERS];
  int nbufs;
  uintptr_t arena;
  size_t arena_bytes;
  Lane* lanes;
  unsigned lane_cap, n, cur;
  unsigned sg_done[32];  // finished lanes per SIMD-group (at most 1024 threads)
  Vec<int32_t> ipdom;    // per global block id: its immediate post-dominator, or -1
  Vec<Module> modules;
  Vec<uintptr_t> site_pc;
  Vec<int> site_kind;
  Vec<Stats> stats;       // 2 per site: device, threadgroup
  uint32_t* site_hash;    // site index + 1 per slot
  size_t site_hash_cap;
  CountMap atomics[2];    // per space: address -> operations
  CountMap site_atomics;  // site, space, address -> operations
  int failed;
};
State g;

void fail_oom() { g.failed = 1; }

uint32_t site_index(uintptr_t pc, int kind) {
  if (2 * (g.site_pc.n + 1) > g.site_hash_cap) {
    size_t nc = g.site_hash_cap ? 2 * g.site_hash_cap : 1024;
    uint32_t* h = (uint32_t*)calloc(nc, sizeof(uint32_t));
    if (!h) return 0;
    for (size_t s = 0; s < g.site_pc.n; ++s) {
      size_t j = CountMap::mix(g.site_pc.p[s]) & (nc - 1);
      while (h[j]) j = (j + 1) & (nc - 1);
      h[j] = (uint32_t)s + 1;
    }
    free(g.site_hash);
    g.site_hash = h;
    g.site_hash_cap = nc;
  }
  size_t j = CountMap::mix(pc) & (g.site_hash_cap - 1);
  while (g.site_hash[j]) {
    uint32_t s = g.site_hash[j] - 1;
    if (g.site_pc.p[s] == pc) return s;
    j = (j + 1) & (g.site_hash_cap - 1);
  }
  uint32_t s = (uint32_t)g.site_pc.n;
  Stats zero;
  memset(&zero, 0, sizeof zero);
  if (!g.site_pc.push(pc) || !g.site_kind.push(kind) || !g.stats.push(zero) || !g.stats.push(zero)) {
    fail_oom();
    return 0;
  }
  g.site_hash[j] = s + 1;
  return s;
}

// The space of an address (a buffer index, TG_SPACE, or -1 for memory the GPU model ignores).
inline int classify(uintptr_t a, uint64_t* off) {
  if (a - g.arena < g.arena_bytes) {
    *off = a - g.arena;
    return (int)TG_SPACE;
  }
  for (int i = 0; i < g.nbufs; ++i)
    if (a - g.buf[i] < g.size[i]) {
      *off = a - g.buf[i];
      return i;
    }
  return -1;
}

inline void record(const void* p, unsigned size, int kind, uintptr_t pc) {
  if (!g_on || g.cur >= g.n) return;
  uint64_t off;
  int space = classify((uintptr_t)p, &off);
  if (space < 0) return;
  uint32_t site = site_index(pc, kind);
  if (kind == ATOMIC) {
    int t = space == (int)TG_SPACE;
    if (!g.atomics[t].add(off | ((uint64_t)t << 50))) fail_oom();
    if (site < MAX_SITES && !g.site_atomics.add(off | ((uint64_t)t << 44) | ((uint64_t)site << 50))) fail_oom();
  }
  Rec r = {((uint64_t)kind << 56) | ((uint64_t)space << 48) | ((uint64_t)size << 32) | site, off};
  if (!g.lanes[g.cur].recs.push(r)) fail_oom();
}

void flush_simdgroup(unsigned s);  // cost_replay.cpp

void tg_begin(unsigned n, const char* arena, size_t arena_bytes) {
  if (n > g.lane_cap) {
    Lane* l = (Lane*)realloc(g.lanes, n * sizeof(Lane));
    if (!l) {
      fail_oom();
      g.n = 0;
      return;
    }
    memset(l + g.lane_cap, 0, (n - g.lane_cap) * sizeof(Lane));
    g.lanes = l;
    g.lane_cap = n;
  }
  g.n = n;
  g.cur = NONE;
  g.arena = (uintptr_t)arena;
  g.arena_bytes = arena_bytes;
  for (unsigned i = 0; i < n; ++i) {
    g.lanes[i].recs.n = 0;
    g.lanes[i].block = NONE;
    g.lanes[i].done = 0;
  }
  memset(g.sg_done, 0, sizeof g.sg_done);
}

void set_lane(unsigned i) { g.cur = i; }

void lane_done(unsigned i) {
  if (i >= g.n || g.lanes[i].done) return;
  g.lanes[i].done = 1;
  unsigned s = i / 32, lo = s * 32, hi = lo + 32 < g.n ? lo + 32 : g.n;
  if (++g.sg_done[s] == hi - lo) flush_simdgroup(s);
}

void sync_point() {
  for (unsigned s = 0; s * 32 < g.n; ++s) flush_simdgroup(s);
}

void tg_end() {
  sync_point();
  g.cur = NONE;
}

}  // namespace cost

// ---------------------------------------------------------------- SanitizerCoverage callbacks
extern "C" {
EMU_EXPORT void __sanitizer_cov_trace_pc_guard_init(uint32_t* start, uint32_t* stop) {
  using namespace cost;
  if (start == stop || *start) return;  // called once per object (maybe more often with the same range)
  uint32_t base = (uint32_t)g.ipdom.n, count = (uint32_t)(stop - start);
  for (uint32_t i = 0; i < count; ++i) {
    start[i] = base + i + 1;
    if (!g.ipdom.push(-1)) fail_oom();
  }
  Module m = {base, count, nullptr, 0, nullptr, 0};
  if (!g.modules.push(m)) fail_oom();
}

EMU_EXPORT void __sanitizer_cov_pcs_init(const uintptr_t* beg, const uintptr_t* end) {
  using namespace cost;
  if (!g.modules.n || g.modules.p[g.modules.n - 1].pcs) return;
  g.modules.p[g.modules.n - 1].pcs = beg;
  g.modules.p[g.modules.n - 1].npcs = (size_t)(end - beg) / 2;
}

EMU_EXPORT void __sanitizer_cov_cfs_init(const uintptr_t* beg, const uintptr_t* end) {
  using namespace cost;
  if (!g.modules.n || g.modules.p[g.modules.n - 1].cfs) return;
  g.modules.p[g.modules.n - 1].cfs = beg;
  g.modules.p[g.modules.n - 1].ncfs = (size_t)(end - beg);
}

EMU_EXPORT void __sanitizer_cov_trace_pc_guard(uint32_t* guard) {
  using namespace cost;
  if (!g_on || g.cur >= g.n || !*guard) return;
  Lane& l = g.lanes[g.cur];
  l.block = *guard - 1;
  if (!l.recs.push(Rec{BLOCK | l.block, 0})) fail_oom();
}

#define EMU_COST_ACCESS(n)                                                                   \
  EMU_EXPORT void __sanitizer_cov_load##n(void* p) {                                          \
    cost::record(p, n, cost::LOAD, (uintptr_t)__builtin_return_address(0));                  \
  }                                                                                          \
  EMU_EXPORT void __sanitizer_cov_store##n(void* p) {                                         \
    cost::record(p, n, cost::STORE, (uintptr_t)__builtin_return_address(0));                 \
  }
EMU_COST_ACCESS(1)
EMU_COST_ACCESS(2)
EMU_COST_ACCESS(4)
EMU_COST_ACCESS(8)
EMU_COST_ACCESS(16)
#undef EMU_COST_ACCESS

// From the shim's atomics in cost builds; `site` is the call's line * 4096 + column
// (a source position, not an address: marked with bit 62).
EMU_EXPORT void __emu_cost_atomic(const void* p, unsigned size, unsigned site) {
  cost::record(p, size, cost::ATOMIC, ((uintptr_t)1 << 62) | site);
}

// ---------------------------------------------------------------- the profiler's interface
EMU_EXPORT int emu_cost_module_count(void) { return (int)cost::g.modules.n; }

// out: base, count, pcs address, npcs, cfs address, ncfs, load address of the object.
EMU_EXPORT int emu_cost_module(int m, uint64_t* out) {
  using namespace cost;
  if (m < 0 || (size_t)m >= g.modules.n) return 1;
  const Module& mod = g.modules.p[m];
  Dl_info info;
  memset(&info, 0, sizeof info);
  if (mod.npcs) dladdr((const void*)mod.pcs[0], &info);
  uint64_t vals[7] = {mod.base, mod.count, (uint64_t)(uintptr_t)mod.pcs, mod.npcs,
                      (uint64_t)(uintptr_t)mod.cfs, mod.ncfs, (uint64_t)(uintptr_t)info.dli_fbase};
  memcpy(out, vals, sizeof vals);
  return 0;
}

// ipdom[i]: block index (within the module) of block i's immediate post-dominator, -1 for none.
EMU_EXPORT int emu_cost_set_ipdom(int m, const int32_t* ipdom) {
  using namespace cost;
  if (m < 0 || (size_t)m >= g.modules.n) return 1;
  const Module& mod = g.modules.p[m];
  for (uint32_t i = 0; i < mod.count; ++i)
    g.ipdom.p[mod.base + i] = ipdom[i] < 0 ? -1 : (int32_t)mod.base + ipdom[i];
  return 0;
}

// Starts recording: clears the previous launch's figures. Buffers as emu_launch takes them.
EMU_EXPORT int emu_cost_begin(void** bufs, const int64_t* sizes, int nbufs) {
  using namespace cost;
  if (nbufs > (int)MAX_BUFFERS) return 1;
  g.nbufs = nbufs;
  for (int i = 0; i < nbufs; ++i) {
    g.buf[i] = (uintptr_t)bufs[i];
    g.size[i] = (uint64_t)sizes[i];
  }
  g.site_pc.n = g.site_kind.n = g.stats.n = 0;
  if (g.site_hash) memset(g.site_hash, 0, g.site_hash_cap * sizeof(uint32_t));
  for (int t = 0; t < 2; ++t) g.atomics[t].release();
  g.site_atomics.release();
  g.failed = 0;
  g.n = 0;
  g_on = 1;
  return 0;
}

// Stops recording; fills each site's atomic address counts. Returns nonzero when memory ran out.
EMU_EXPORT int emu_cost_end(void) {
  using namespace cost;
  g_on = 0;
  CountMap& m = g.site_atomics;
  for (size_t i = 0; i < m.cap; ++i)
    if (m.vals[i]) {
      uint64_t site = m.keys[i] >> 50, t = (m.keys[i] >> 44) & 1;
      Stats& st = g.stats.p[2 * site + t];
      st.addresses++;
      if (m.vals[i] > st.max_per_address) st.max_per_address = m.vals[i];
    }
  for (unsigned i = 0; i < g.lane_cap; ++i) g.lanes[i].recs.release();
  return g.failed;
}

EMU_EXPORT int emu_cost_site_count(void) { return (int)cost::g.site_pc.n; }

// out: pc (or 1 << 62 | line * 4096 + column), kind, then 8 figures for device and 8 for threadgroup.
EMU_EXPORT void emu_cost_site(int s, uint64_t* out) {
  using namespace cost;
  out[0] = g.site_pc.p[s];
  out[1] = (uint64_t)g.site_kind.p[s];
  memcpy(out + 2, &g.stats.p[2 * s], 2 * sizeof(Stats));
}

// out: operations, distinct addresses, most operations on one address; device then threadgroup.
EMU_EXPORT void emu_cost_atomics(uint64_t* out) {
  using namespace cost;
  for (int t = 0; t < 2; ++t) {
    const CountMap& m = g.atomics[t];
    uint64_t ops = 0, most = 0;
    for (size_t i = 0; i < m.cap; ++i) {
      ops += m.vals[i];
      if (m.vals[i] > most) most = m.vals[i];
    }
    out[3 * t] = ops;
    out[3 * t + 1] = m.n;
    out[3 * t + 2] = most;
  }
}
}
