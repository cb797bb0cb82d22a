// runtime.cpp: runs a compiled Metal kernel's grid on the CPU with the
// semantics of dispatchThreads.
//
// - Threadgroups are spread over OS worker threads (real concurrency, so
//   device atomics must be real atomics), optionally in a seeded random order.
// - The threads of one threadgroup run as fibers on one worker: a fiber runs
//   until it reaches threadgroup_barrier / simdgroup_barrier / a SIMD-group
//   function, and the scheduler releases a barrier only when every live
//   thread (SIMD function: every live lane of the SIMD-group) waits at the
//   same call site. Anything else is reported as an error, never a hang.
// - Kernels that use none of those run their threads as plain calls.
// - Threadgroup variables come from a per-worker arena, re-poisoned
//   (all bits set) for each threadgroup; under AddressSanitizer the arena
//   has poisoned red zones, and device buffers are copied into exact-size
//   heap blocks so out-of-bounds accesses are caught.
// - A crash inside kernel code (wild pointer, stack overflow, integer division
//   by zero) and a kernel running past its time limit end the launch with an
//   error instead of killing or hanging the Python process.
// No C++ library is used, so the runtime links against libc only.
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "emu_abi.h"
#include "cost.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#endif

#ifdef EMU_ASAN
extern "C" {
void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old, size_t* size_old);
void __asan_poison_memory_region(void const volatile* addr, size_t size);
void __asan_unpoison_memory_region(void const volatile* addr, size_t size);
}
#endif

#include "context.h"

#define EMU_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

enum FiberState { RUNNABLE = 0, WAIT_TG = 1, WAIT_SIMD = 2, DONE = 3 };

struct Fiber {
  EmuContext ctx;
  char* stack_lo;
  size_t stack_size;
  int state;
  int returned;  // left through an explicit `return`
  uintptr_t site;
  unsigned index;
  const void* xbase;
  unsigned xmask;
  void* asan_fake;
  EmuAttrs attrs;
};

struct SimdGroup {
  unsigned char buf[2][EMU_SIMD_WIDTH * EMU_SIMD_SLOT_BYTES] __attribute__((aligned(16)));
  int phase;
};

struct Launch {
  EmuEntry entry;
  void** bufs;
  unsigned grid[3], tg[3], ntg[3];
  uint64_t total;
  int perm_bits;       // seeded order: a bijection on [0, 2^perm_bits), cycle-walked
  uint64_t perm_keys[4];
  uint64_t next;
  int failed;
  int use_fibers;
  long long seed;
  size_t stack_size;
  pthread_mutex_t lock;
  pthread_mutex_t live_lock;  // guards Worker::running, for the watchdog's signals
  char err[2048];
};

struct Worker {
  Launch* L;
  EmuContext sched_ctx;
  Fiber* fibers;
  unsigned fiber_cap;
  char* stacks;
  size_t stacks_bytes;
  SimdGroup* sgs;
  unsigned sg_cap;
  Fiber* cur;
  unsigned n;  // threads in the current threadgroup
  char* arena;
  size_t arena_used;
  size_t tg_bytes;
  void* slots[EMU_MAX_TG_VARS];
  unsigned tgpos[3];
  uint64_t rng;
  unsigned* perm;
  const void* sched_bottom;
  size_t sched_size;
  int aborted;  // current threadgroup aborted by an error
  volatile int in_kernel;  // a fault now is the kernel's fault
  pthread_t self;
  int running;             // between the start and the end of worker_main
  sigjmp_buf fault_jmp;
};

__thread Worker* tls_worker;

uint64_t splitmix(uint64_t* s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The k-th threadgroup to run under a seed: a 4-round Feistel network is a
// bijection on [0, 2^bits); walking the cycle until the value falls below
// `total` keeps it one on [0, total), with no per-threadgroup memory.
uint64_t permute(const Launch* L, uint64_t k) {
  int half = L->perm_bits / 2;
  uint64_t mask = (1ull << half) - 1;
  do {
    uint64_t left = k >> half, right = k & mask;
    for (int r = 0; r < 4; ++r) {
      uint64_t mix = right ^ L->perm_keys[r];
      uint64_t f = splitmix(&mix) & mask;
      uint64_t next = left ^ f;
      left = right;
      right = next;
    }
    k = (left << half) | right;
  } while (k >= L->total);
  return k;
}

void set_error(Launch* L, const char* msg) {
  pthread_mutex_lock(&L->lock);
  if (!L->failed) {
    snprintf(L->err, sizeof L->err, "%s", msg);
    __atomic_store_n(&L->failed, 1, __ATOMIC_SEQ_CST);
  }
  pthread_mutex_unlock(&L->lock);
}

// ---------------------------------------------------------------- fibers
void fiber_main(Fiber* f);

void fiber_entry(void* f) { fiber_main((Fiber*)f); }

void fiber_prepare(Fiber* f) { emu_ctx_prepare(&f->ctx, f->stack_lo, f->stack_size, fiber_entry, f); }

// Scheduler -> fiber.
void resume(Worker* w, Fiber* f) {
  w->cur = f;
  EMU_COST_HOOK(set_lane(f->index));
#ifdef EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f->stack_lo, f->stack_size);
#endif
  emu_ctx_switch(&w->sched_ctx, &f->ctx);
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  w->cur = nullptr;
}

// Fiber -> scheduler. `dying` fibers never come back.
void yield_to_scheduler(Worker* w, Fiber* f, bool dying) {
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(dying ? nullptr : &f->asan_fake, w->sched_bottom, w->sched_size);
#endif
  emu_ctx_switch(&f->ctx, &w->sched_ctx);
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(f->asan_fake, &w->sched_bottom, &w->sched_size);
#endif
}

void fiber_main(Fiber* f) {
  Worker* w = tls_worker;
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &w->sched_bottom, &w->sched_size);
#endif
  w->L->entry(w->L->bufs, &f->attrs);
  EMU_COST_HOOK(lane_done(f->index));
  f->state = DONE;
  yield_to_scheduler(w, f, true);
  abort();  // unreachable: a finished fiber is never resumed
}

// ---------------------------------------------------------------- worker storage
bool ensure_capacity(Worker* w, unsigned n) {
  Launch* L = w->L;
  if (n > w->fiber_cap) {
    free(w->fibers);
    free(w->sgs);
    free(w->perm);
    w->fibers = (Fiber*)calloc(n, sizeof(Fiber));
    w->sgs = (SimdGroup*)calloc((n + EMU_SIMD_WIDTH - 1) / EMU_SIMD_WIDTH, sizeof(SimdGroup));
    w->perm = (unsigned*)calloc(n, sizeof(unsigned));
    if (!w->fibers || !w->sgs || !w->perm) return false;
    w->fiber_cap = n;
  }
  if (L->use_fibers) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t per = L->stack_size + page;  // one guard page below each stack
    size_t need = per * n;
    if (need > w->stacks_bytes) {
      if (w->stacks) munmap(w->stacks, w->stacks_bytes);
      void* mem = mmap(nullptr, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (mem == MAP_FAILED) {
        w->stacks = nullptr;
        w->stacks_bytes = 0;
        return false;
      }
      w->stacks = (char*)mem;
      w->stacks_bytes = need;
      for (unsigned i = 0; i < n; ++i) mprotect(w->stacks + i * per, page, PROT_NONE);
    }
    for (unsigned i = 0; i < n; ++i) {
      w->fibers[i].stack_lo = w->stacks + i * per + page;
      w->fibers[i].stack_size = L->stack_size;
    }
  }
  return true;
}

void arena_reset(Worker* w) {
  w->arena_used = 0;
  w->tg_bytes = 0;
  memset(w->slots, 0, sizeof w->slots);
#ifdef EMU_ASAN
  __asan_poison_memory_region(w->arena, 2 * EMU_MAX_TG_MEMORY + 64 * EMU_MAX_TG_VARS);
#endif
}

// ---------------------------------------------------------------- one threadgroup
void fill_attrs(Worker* w, Launch* L, unsigned i, const unsigned act[3], EmuAttrs* a) {
  unsigned tx = i % act[0], ty = (i / act[0]) % act[1], tz = i / (act[0] * act[1]);
  unsigned n = act[0] * act[1] * act[2];
  unsigned dispatched = L->tg[0] * L->tg[1] * L->tg[2];
  unsigned tid[3] = {tx, ty, tz};
  for (int d = 0; d < 3; ++d) {
    a->thread_position_in_threadgroup[d] = tid[d];
    a->threadgroup_position_in_grid[d] = w->tgpos[d];
    a->thread_position_in_grid[d] = w->tgpos[d] * L->tg[d] + tid[d];
    a->threads_per_threadgroup[d] = act[d];
    a->dispatch_threads_per_threadgroup[d] = L->tg[d];
    a->threadgroups_per_grid[d] = L->ntg[d];
    a->threads_per_grid[d] = L->grid[d];
    a->grid_origin[d] = 0;
  }
  a->thread_index_in_threadgroup = i;
  a->thread_index_in_simdgroup = i % EMU_SIMD_WIDTH;
  a->simdgroup_index_in_threadgroup = i / EMU_SIMD_WIDTH;
  a->simdgroups_per_threadgroup = (n + EMU_SIMD_WIDTH - 1) / EMU_SIMD_WIDTH;
  a->dispatch_simdgroups_per_threadgroup = (dispatched + EMU_SIMD_WIDTH - 1) / EMU_SIMD_WIDTH;
  a->thread_index_in_quadgroup = i % EMU_QUAD_WIDTH;
  a->quadgroup_index_in_threadgroup = i / EMU_QUAD_WIDTH;
  a->quadgroups_per_threadgroup = (n + EMU_QUAD_WIDTH - 1) / EMU_QUAD_WIDTH;
  a->dispatch_quadgroups_per_threadgroup = (dispatched + EMU_QUAD_WIDTH - 1) / EMU_QUAD_WIDTH;
  a->threads_per_simdgroup = EMU_SIMD_WIDTH;
  a->thread_execution_width = EMU_SIMD_WIDTH;
}

void shuffle(Worker* w, unsigned* p, unsigned n) {
  for (unsigned i = 0; i < n; ++i) p[i] = i;
  if (w->L->seed < 0) return;
  for (unsigned i = n; i > 1; --i) {
    unsigned j = (unsigned)(splitmix(&w->rng) % i);
    unsigned t = p[i - 1];
    p[i - 1] = p[j];
    p[j] = t;
  }
}

void describe_tg(Worker* w, char* out, size_t len) {
  snprintf(out, len, "threadgroup (%u, %u, %u)", w->tgpos[0], w->tgpos[1], w->tgpos[2]);
}

unsigned long site_line(uintptr_t site) { return (unsigned long)((site >> 1) / 4096); }

// Returns false (with the launch's error set) when the threadgroup cannot
// proceed: a barrier or SIMD function that not every live thread reaches.
bool resolve(Worker* w) {
  unsigned n = w->n;
  Fiber* F = w->fibers;
  bool progressed = false;
  char where[96], msg[1024];
  describe_tg(w, where, sizeof where);
  unsigned nsg = (n + EMU_SIMD_WIDTH - 1) / EMU_SIMD_WIDTH;
  for (unsigned s = 0; s < nsg; ++s) {
    unsigned lo = s * EMU_SIMD_WIDTH, hi = lo + EMU_SIMD_WIDTH < n ? lo + EMU_SIMD_WIDTH : n;
    unsigned live = 0, waiting = 0, at_tg = 0, fell_off = 0;
    uintptr_t site = 0, other_site = 0;
    bool same = true;
    for (unsigned i = lo; i < hi; ++i) {
      if (F[i].state == DONE) {
        if (!F[i].returned) fell_off++;
        continue;
      }
      live |= 1u << (i - lo);
      if (F[i].state == WAIT_SIMD) {
        if (waiting && F[i].site != site) {
          same = false;
          other_site = F[i].site;
        } else {
          site = F[i].site;
        }
        waiting |= 1u << (i - lo);
      } else if (F[i].state == WAIT_TG) {
        at_tg++;
      }
    }
    if (!waiting) continue;
    if (waiting != live) {
      snprintf(msg, sizeof msg,
               "%s, SIMD-group %u: %d live lanes wait at a SIMD-group function or simdgroup_barrier "
               "(line %lu) while %u others wait at a threadgroup_barrier (divergent control flow; undefined "
               "on a GPU)",
               where, s, __builtin_popcount(waiting), site_line(site), at_tg);
      set_error(w->L, msg);
      return false;
    }
    if (fell_off) {
      snprintf(msg, sizeof msg,
               "%s, SIMD-group %u: %d lanes wait at a SIMD-group function or simdgroup_barrier (source "
               "line %lu) that %u other lanes skipped (they ran to the end of the kernel without `return`); "
               "SIMD functions need every live lane: make lanes that must not take part `return` first",
               where, s, __builtin_popcount(waiting), site_line(site), fell_off);
      set_error(w->L, msg);
      return false;
    }
    if (!same) {
      snprintf(msg, sizeof msg,
               "%s, SIMD-group %u: lanes reached different SIMD-group functions or simdgroup_barriers "
               "(lines %lu and %lu; divergent control flow, undefined on a GPU)",
               where, s, site_line(site), site_line(other_site));
      set_error(w->L, msg);
      return false;
    }
    for (unsigned i = lo; i < hi; ++i)
      if (F[i].state == WAIT_SIMD) {
        F[i].state = RUNNABLE;
        F[i].xmask = live;
      }
    w->sgs[s].phase ^= 1;
    progressed = true;
  }
  if (progressed) return true;
  unsigned done = 0, at_tg = 0;
  uintptr_t site = 0, other_site = 0;
  bool same = true;
  for (unsigned i = 0; i < n; ++i) {
    if (F[i].state == DONE) done++;
    else if (F[i].state == WAIT_TG) {
      if (at_tg && F[i].site != site) {
        same = false;
        other_site = F[i].site;
      } else {
        site = F[i].site;
      }
      at_tg++;
    }
  }
  if (done) {
    snprintf(msg, sizeof msg,
             "%s: %u of %u threads wait at threadgroup_barrier (line %lu) but %u returned without reaching "
             "it (undefined on a GPU: every thread of a threadgroup must reach each barrier)",
             where, at_tg, n, site_line(site), done);
    set_error(w->L, msg);
    return false;
  }
  if (!same) {
    snprintf(msg, sizeof msg,
             "%s: threads wait at different threadgroup_barrier calls (lines %lu and %lu; divergent "
             "control flow, undefined on a GPU)",
             where, site_line(site), site_line(other_site));
    set_error(w->L, msg);
    return false;
  }
  for (unsigned i = 0; i < n; ++i) F[i].state = RUNNABLE;
  return true;
}

void run_threads(Worker* w, unsigned n, const unsigned act[3]);

void run_threadgroup(Worker* w, uint64_t linear) {
  Launch* L = w->L;
  w->tgpos[0] = (unsigned)(linear % L->ntg[0]);
  w->tgpos[1] = (unsigned)((linear / L->ntg[0]) % L->ntg[1]);
  w->tgpos[2] = (unsigned)(linear / ((uint64_t)L->ntg[0] * L->ntg[1]));
  unsigned act[3];
  for (int d = 0; d < 3; ++d) {
    unsigned start = w->tgpos[d] * L->tg[d];
    act[d] = L->grid[d] - start < L->tg[d] ? L->grid[d] - start : L->tg[d];
  }
  unsigned n = act[0] * act[1] * act[2];
  w->n = n;
  arena_reset(w);
  w->aborted = 0;
  shuffle(w, w->perm, n);
  EMU_COST_HOOK(tg_begin(n, w->arena, 2 * EMU_MAX_TG_MEMORY + 64 * EMU_MAX_TG_VARS));
  run_threads(w, n, act);
  EMU_COST_HOOK(tg_end());
}

void run_threads(Worker* w, unsigned n, const unsigned act[3]) {
  Launch* L = w->L;
  if (!L->use_fibers) {
    EmuAttrs a;
    for (unsigned k = 0; k < n && !w->aborted; ++k) {
      fill_attrs(w, L, w->perm[k], act, &a);
      EMU_COST_HOOK(set_lane(w->perm[k]));
      L->entry(L->bufs, &a);
      EMU_COST_HOOK(lane_done(w->perm[k]));
    }
    return;
  }
  for (unsigned i = 0; i < n; ++i) {
    Fiber* f = &w->fibers[i];
    f->state = RUNNABLE;
    f->returned = 0;
    f->index = i;
    f->site = 0;
    f->asan_fake = nullptr;
    fill_attrs(w, L, i, act, &f->attrs);
    fiber_prepare(f);
  }
  for (unsigned s = 0; s < (n + EMU_SIMD_WIDTH - 1) / EMU_SIMD_WIDTH; ++s) w->sgs[s].phase = 0;
  for (;;) {
    unsigned done = 0;
    for (unsigned k = 0; k < n; ++k) {
      Fiber* f = &w->fibers[w->perm[k]];
      if (f->state == RUNNABLE) resume(w, f);
      if (w->aborted) return;
      if (f->state == DONE) done++;
    }
    if (done == n) return;
    EMU_COST_HOOK(sync_point());
    if (!resolve(w)) return;
    if (w->L->seed >= 0) shuffle(w, w->perm, n);
  }
}

// ---------------------------------------------------------------- faults
// A wild access (far outside any buffer), a fiber stack overflow or an integer
// division by zero would kill the Python process. While a worker runs kernel
// code, SIGSEGV/SIGBUS/SIGFPE jump back to the worker (on an alternate signal
// stack, since the faulting stack may be the exhausted one) and fail the
// launch; other faults go to the handler that was installed before. (ASan
// builds leave faults to ASan.)
#ifndef EMU_ASAN
struct sigaction g_prev_segv, g_prev_bus, g_prev_fpe, g_prev_usr2;
pthread_mutex_t g_sig_lock = PTHREAD_MUTEX_INITIALIZER;

void fault_handler(int sig, siginfo_t* info, void* uctx) {
  Worker* w = tls_worker;
  if (sig == SIGUSR2) {
    // The watchdog's stop request (its error message is already set).
    if (w && w->in_kernel) {
      w->in_kernel = 0;
      siglongjmp(w->fault_jmp, 1);
    }
    if (g_prev_usr2.sa_flags & SA_SIGINFO) {
      if (g_prev_usr2.sa_sigaction) g_prev_usr2.sa_sigaction(sig, info, uctx);
    } else if (g_prev_usr2.sa_handler != SIG_DFL && g_prev_usr2.sa_handler != SIG_IGN) {
      g_prev_usr2.sa_handler(sig);
    }
    return;
  }
  if (w && w->in_kernel) {
    char msg[512];
    char* addr = info ? (char*)info->si_addr : nullptr;
    if (sig == SIGFPE)
      snprintf(msg, sizeof msg,
               "integer division by zero (or INT_MIN / -1) in the kernel: undefined on a GPU, a trap on "
               "this CPU");
    else if (w->stacks && addr >= w->stacks && addr < w->stacks + w->stacks_bytes)
      snprintf(msg, sizeof msg,
               "a GPU thread overflowed its %zu KB stack (recursion, which Metal does not allow, or large "
               "private arrays; MLX_EMBAG_EMULATOR_STACK_KB raises the size)",
               w->L->stack_size / 1024);
    else
      snprintf(msg, sizeof msg,
               "%s at address %p while running the kernel: an access far outside every buffer, or a "
               "stack overflow. Rerun with sanitize=True to locate it.",
               sig == SIGBUS ? "bus error" : "segmentation fault", (void*)addr);
    set_error(w->L, msg);
    w->in_kernel = 0;
    siglongjmp(w->fault_jmp, 1);
  }
  struct sigaction* prev = sig == SIGBUS ? &g_prev_bus : sig == SIGFPE ? &g_prev_fpe : &g_prev_segv;
  if (prev->sa_flags & SA_SIGINFO) {
    if (prev->sa_sigaction) {
      prev->sa_sigaction(sig, info, uctx);
      return;
    }
  } else if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
    prev->sa_handler(sig);
    return;
  }
  // Default action: restore it and let the fault happen again.
  signal(sig, SIG_DFL);
}

void install_fault_handler() {
  pthread_mutex_lock(&g_sig_lock);
  struct sigaction cur;
  sigaction(SIGSEGV, nullptr, &cur);
  if (!((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == fault_handler)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_prev_segv);
    sigaction(SIGBUS, &sa, &g_prev_bus);
    sigaction(SIGFPE, &sa, &g_prev_fpe);
    sigaction(SIGUSR2, &sa, &g_prev_usr2);
  }
  pthread_mutex_unlock(&g_sig_lock);
}
#endif

// Stops a launch that runs longer than its time limit (a GPU's watchdog
// would): sets the error, then signals every running worker, whose handler
// jumps out of the kernel.
struct Watchdog {
  Launch* L;
  Worker* W;
  int n;
  double timeout_s;
  pthread_mutex_t m;
  pthread_cond_t c;
  int done;
};

void* watchdog_main(void* arg) {
  Watchdog* d = (Watchdog*)arg;
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  long long ns = (long long)(d->timeout_s * 1e9);
  deadline.tv_sec += (time_t)(ns / 1000000000LL);
  deadline.tv_nsec += (long)(ns % 1000000000LL);
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec += 1;
    deadline.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&d->m);
  int rc = 0;
  while (!d->done && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&d->c, &d->m, &deadline);
  bool fire = !d->done;
  pthread_mutex_unlock(&d->m);
  if (!fire) return nullptr;
  char msg[512];
  snprintf(msg, sizeof msg,
           "the kernel was still running after %g s and was stopped: an endless loop, or threads "
           "spinning on each other (which can deadlock a GPU too); MLX_EMBAG_EMULATOR_TIMEOUT sets "
           "the limit in seconds",
           d->timeout_s);
  set_error(d->L, msg);
#ifdef EMU_ASAN
  // Sanitizer builds run in a throw-away child process and install no
  // signal handlers (ASan owns them): end the process, the parent reports.
  fprintf(stderr, "\nEMU_TIMEOUT: %s\n", msg);
  fflush(stderr);
  _exit(87);
#else
  pthread_mutex_lock(&d->L->live_lock);
  for (int i = 0; i < d->n; ++i)
    if (d->W[i].running) pthread_kill(d->W[i].self, SIGUSR2);
  pthread_mutex_unlock(&d->L->live_lock);
#endif
  return nullptr;
}

void* worker_main(void* arg) {
  Worker* w = (Worker*)arg;
  tls_worker = w;
  Launch* L = w->L;
  pthread_mutex_lock(&L->live_lock);
  w->self = pthread_self();
  w->running = 1;
  pthread_mutex_unlock(&L->live_lock);
#ifndef EMU_ASAN
  const size_t alt_size = 256 * 1024;
  stack_t alt, old_alt;
  alt.ss_sp = malloc(alt_size);
  alt.ss_size = alt_size;
  alt.ss_flags = 0;
  bool have_alt = alt.ss_sp && sigaltstack(&alt, &old_alt) == 0;
  if (sigsetjmp(w->fault_jmp, 1) == 0)
#endif
  {
    for (;;) {
      if (__atomic_load_n(&L->failed, __ATOMIC_RELAXED)) break;
      uint64_t k = __atomic_fetch_add(&L->next, 1, __ATOMIC_RELAXED);
      if (k >= L->total) break;
      w->in_kernel = 1;
      run_threadgroup(w, L->perm_bits ? permute(L, k) : k);
      w->in_kernel = 0;
    }
  }
  pthread_mutex_lock(&L->live_lock);
  w->in_kernel = 0;
  w->running = 0;
  pthread_mutex_unlock(&L->live_lock);
#ifndef EMU_ASAN
  if (have_alt) sigaltstack(&old_alt, nullptr);
  free(alt.ss_sp);
#endif
  tls_worker = nullptr;
  return nullptr;
}

Fiber* current_fiber(const char* what) {
  Worker* w = tls_worker;
  if (!w || !w->cur) {
    // Only reachable if the Python side ran a kernel that synchronises
    // without fibers: a bug of the emulator, reported rather than hidden.
    if (w) {
      char msg[256];
      snprintf(msg, sizeof msg, "internal emulator error: %s called outside a fiber", what);
      set_error(w->L, msg);
      w->aborted = 1;
    }
    return nullptr;
  }
  return w->cur;
}

}  // namespace

// ---------------------------------------------------------------- services for kernels
EMU_EXPORT void __emu_barrier(int kind, unsigned site) {
  Fiber* f = current_fiber(kind ? "simdgroup_barrier" : "threadgroup_barrier");
  if (!f) return;
  Worker* w = tls_worker;
  f->state = kind ? WAIT_SIMD : WAIT_TG;
  f->site = ((uintptr_t)site << 1) | 1u;
  yield_to_scheduler(w, f, false);
}

EMU_EXPORT const void* __emu_simd_exchange(const void* value, unsigned size, unsigned* mask, unsigned* lane,
                                           int group_width, unsigned site) {
  (void)group_width;
  static unsigned char zeros[EMU_SIMD_WIDTH * EMU_SIMD_SLOT_BYTES];
  Fiber* f = current_fiber("a SIMD-group function");
  if (!f) {
    *mask = 0;
    *lane = 0;
    return zeros;
  }
  Worker* w = tls_worker;
  SimdGroup* g = &w->sgs[f->index / EMU_SIMD_WIDTH];
  unsigned char* base = g->buf[g->phase];
  memcpy(base + (f->index % EMU_SIMD_WIDTH) * EMU_SIMD_SLOT_BYTES, value, size);
  f->state = WAIT_SIMD;
  f->site = (uintptr_t)site << 1;
  f->xbase = base;
  yield_to_scheduler(w, f, false);
  *mask = f->xmask;
  *lane = f->index % EMU_SIMD_WIDTH;
  return f->xbase;
}

EMU_EXPORT void __emu_return(void) {
  Worker* w = tls_worker;
  if (w && w->cur) w->cur->returned = 1;
}

EMU_EXPORT void* __emu_tg_alloc(unsigned id, unsigned size, unsigned align) {
  Worker* w = tls_worker;
  if (id >= EMU_MAX_TG_VARS) {
    set_error(w->L, "too many threadgroup variables");
    w->aborted = 1;
    return w->arena;
  }
  if (w->slots[id]) return w->slots[id];
  if (align < 16) align = 16;
  size_t off = (w->arena_used + align - 1) & ~(size_t)(align - 1);
#ifdef EMU_ASAN
  size_t redzone = 64;
#else
  size_t redzone = 0;
#endif
  w->tg_bytes += size;
  if (w->tg_bytes > EMU_MAX_TG_MEMORY || off + size + redzone > 2 * EMU_MAX_TG_MEMORY + 64 * EMU_MAX_TG_VARS) {
    char msg[256];
    snprintf(msg, sizeof msg,
             "threadgroup memory exceeds the 32 KB an Apple GPU threadgroup may use (%zu bytes declared)",
             w->tg_bytes);
    set_error(w->L, msg);
    w->aborted = 1;
    return w->arena;
  }
  void* p = w->arena + off;
#ifdef EMU_ASAN
  __asan_unpoison_memory_region(p, size);
#endif
  memset(p, 0xff, size);  // garbage: NaN for floats, -1 for integers
  w->arena_used = off + size + redzone;
  w->slots[id] = p;
  return p;
}

EMU_EXPORT void __emu_fail(const char* message) {
  Worker* w = tls_worker;
  if (!w) abort();
  set_error(w->L, message);
  w->aborted = 1;
  if (w->cur) {
    Fiber* f = w->cur;
    yield_to_scheduler(w, f, true);
  }
  // Without fibers the kernel simply continues; the error is reported when
  // the launch returns.
}

// Runs the grid. Returns 0, or 1 with `err` set. `seed` < 0 keeps the natural
// threadgroup order; workers <= 0 means one per CPU.
EMU_EXPORT int emu_launch(EmuEntry entry, void** bufs, const int64_t* sizes, int nbufs, const unsigned* grid,
                          const unsigned* tg, long long seed, int use_fibers, int workers, long long stack_size,
                          double timeout_s, char* err, int errlen) {
  Launch L;
  memset(&L, 0, sizeof L);
  pthread_mutex_init(&L.lock, nullptr);
  pthread_mutex_init(&L.live_lock, nullptr);
  L.entry = entry;
  L.use_fibers = use_fibers;
  L.seed = seed;
  L.stack_size = (size_t)stack_size;
  for (int d = 0; d < 3; ++d) {
    L.grid[d] = grid[d];
    L.tg[d] = tg[d] < grid[d] ? tg[d] : grid[d];
    if (L.tg[d] == 0) L.tg[d] = 1;
    L.ntg[d] = (grid[d] + L.tg[d] - 1) / L.tg[d];
  }
  L.total = (uint64_t)L.ntg[0] * L.ntg[1] * L.ntg[2];
  if (L.total == 0) return 0;

  void** run_bufs = bufs;
#ifdef EMU_ASAN
  // Exact-size heap copies: ASan's red zones sit right after each buffer.
  run_bufs = (void**)calloc(nbufs > 0 ? nbufs : 1, sizeof(void*));
  for (int i = 0; i < nbufs; ++i) {
    run_bufs[i] = malloc(sizes[i] > 0 ? (size_t)sizes[i] : 1);
    if (sizes[i] > 0) memcpy(run_bufs[i], bufs[i], (size_t)sizes[i]);
    else __asan_poison_memory_region(run_bufs[i], 1);
  }
#else
  (void)sizes;
  (void)nbufs;
#endif
  L.bufs = run_bufs;

  if (seed >= 0) {
    uint64_t st = (uint64_t)seed;
    for (int r = 0; r < 4; ++r) L.perm_keys[r] = splitmix(&st);
    int bits = 2;
    while (bits < 64 && (1ull << bits) < L.total) bits += 2;  // even: two equal Feistel halves
    L.perm_bits = bits;
  }
#ifndef EMU_ASAN
  install_fault_handler();
#endif
  if (workers <= 0) workers = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (workers < 1) workers = 1;
  if ((uint64_t)workers > L.total) workers = (int)L.total;

  unsigned nthreads = L.tg[0] * L.tg[1] * L.tg[2];
  Worker* W = (Worker*)calloc(workers, sizeof(Worker));
  int ok = 1;
  for (int i = 0; i < workers; ++i) {
    W[i].L = &L;
    W[i].rng = (uint64_t)(seed >= 0 ? seed : 0) * 1000003ull + (uint64_t)i + 1;
    W[i].arena = (char*)aligned_alloc(64, 2 * EMU_MAX_TG_MEMORY + 64 * EMU_MAX_TG_VARS);
    if (!W[i].arena || !ensure_capacity(&W[i], nthreads)) ok = 0;
  }
  if (!ok) {
    set_error(&L, "out of memory allocating fiber stacks");
  } else {
    pthread_t* th = (pthread_t*)calloc(workers, sizeof(pthread_t));
    Watchdog dog;
    memset(&dog, 0, sizeof dog);
    dog.L = &L;
    dog.W = W;
    dog.n = workers;
    dog.timeout_s = timeout_s;
    pthread_mutex_init(&dog.m, nullptr);
    pthread_cond_init(&dog.c, nullptr);
    pthread_t dog_thread;
    bool have_dog = timeout_s > 0 && pthread_create(&dog_thread, nullptr, watchdog_main, &dog) == 0;
    for (int i = 1; i < workers; ++i)
      if (pthread_create(&th[i], nullptr, worker_main, &W[i]) != 0) W[i].L = nullptr;  // W[0] does its share
    worker_main(&W[0]);
    for (int i = 1; i < workers; ++i)
      if (W[i].L) pthread_join(th[i], nullptr);
    if (have_dog) {
      pthread_mutex_lock(&dog.m);
      dog.done = 1;
      pthread_cond_signal(&dog.c);
      pthread_mutex_unlock(&dog.m);
      pthread_join(dog_thread, nullptr);
    }
    pthread_cond_destroy(&dog.c);
    pthread_mutex_destroy(&dog.m);
    free(th);
  }
  for (int i = 0; i < workers; ++i) {
#ifdef EMU_ASAN
    if (W[i].arena) __asan_unpoison_memory_region(W[i].arena, 2 * EMU_MAX_TG_MEMORY + 64 * EMU_MAX_TG_VARS);
#endif
    free(W[i].arena);
    free(W[i].fibers);
    free(W[i].sgs);
    free(W[i].perm);
    if (W[i].stacks) munmap(W[i].stacks, W[i].stacks_bytes);
  }
  free(W);
#ifdef EMU_ASAN
  for (int i = 0; i < nbufs; ++i) {
    if (sizes[i] > 0) memcpy(bufs[i], run_bufs[i], (size_t)sizes[i]);
    else __asan_unpoison_memory_region(run_bufs[i], 1);
    free(run_bufs[i]);
  }
  free(run_bufs);
#endif
  pthread_mutex_destroy(&L.lock);
  pthread_mutex_destroy(&L.live_lock);
  if (L.failed) {
    snprintf(err, (size_t)errlen, "%s", L.err);
    return 1;
  }
  return 0;
}

EMU_EXPORT int emu_abi_version() { return EMU_ABI_VERSION; }

// The profiler's recording and replay (cost.h): one library, one translation unit.
#ifndef EMU_ASAN
#include "cost_record.cpp"
#include "cost_replay.cpp"
#else
namespace cost {
int g_on = 0;
void tg_begin(unsigned, const char*, size_t) {}
void set_lane(unsigned) {}
void lane_done(unsigned) {}
void sync_point() {}
void tg_end() {}
}  // namespace cost
#endif
