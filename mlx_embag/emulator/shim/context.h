// context.h: the emulator's fiber context switch, the only platform-specific
// part of the runtime. x86-64 ELF uses a few instructions of assembly that
// save the callee-saved registers and the FP control words (ucontext's
// swapcontext also makes a sigprocmask system call per switch, which
// dominates barrier-heavy kernels); other platforms, or EMU_FORCE_UCONTEXT
// (to test that path on x86-64), use ucontext.
#ifndef MLX_EMBAG_EMU_CONTEXT_H
#define MLX_EMBAG_EMU_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__ELF__) && !defined(EMU_FORCE_UCONTEXT)
#define EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

typedef void (*EmuContextFn)(void* arg);

#if defined(EMU_ASM_SWITCH)
struct EmuContext {
  void* sp;
};

extern "C" void emu_swap(void** save_sp, void* new_sp);
extern "C" void emu_ctx_trampoline();
__asm__(
    ".text\n"
    ".p2align 4\n"
    ".hidden emu_swap\n"
    ".globl emu_swap\n"
    ".type emu_swap,@function\n"
    "emu_swap:\n"
    "  pushq %rbp\n"
    "  pushq %rbx\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  subq $8, %rsp\n"
    "  stmxcsr (%rsp)\n"
    "  fnstcw 4(%rsp)\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  ldmxcsr (%rsp)\n"
    "  fldcw 4(%rsp)\n"
    "  addq $8, %rsp\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbx\n"
    "  popq %rbp\n"
    "  ret\n"
    ".size emu_swap, .-emu_swap\n"
    ".p2align 4\n"
    ".hidden emu_ctx_trampoline\n"
    ".globl emu_ctx_trampoline\n"
    ".type emu_ctx_trampoline,@function\n"
    "emu_ctx_trampoline:\n"
    "  movq %r12, %rdi\n"
    "  callq *%r13\n"
    "  ud2\n"
    ".size emu_ctx_trampoline, .-emu_ctx_trampoline\n");

// A new context "returns" from emu_swap into the trampoline, which calls
// fn(arg) with a 16-byte aligned stack. fn must never return.
static inline void emu_ctx_prepare(EmuContext* c, char* stack, size_t size, EmuContextFn fn, void* arg) {
  uintptr_t top = ((uintptr_t)stack + size) & ~(uintptr_t)15;
  uint64_t* sp = (uint64_t*)(top - 80);
  uint32_t csr[2];
  __asm__ volatile("stmxcsr %0" : "=m"(csr[0]));
  __asm__ volatile("fnstcw %0" : "=m"(csr[1]));
  sp[0] = (uint64_t)csr[0] | ((uint64_t)(csr[1] & 0xffff) << 32);
  sp[1] = 0;              // r15
  sp[2] = 0;              // r14
  sp[3] = (uint64_t)fn;   // r13: function
  sp[4] = (uint64_t)arg;  // r12: argument
  sp[5] = 0;              // rbx
  sp[6] = 0;              // rbp
  sp[7] = (uint64_t)&emu_ctx_trampoline;
  c->sp = sp;
}

static inline void emu_ctx_switch(EmuContext* from, EmuContext* to) { emu_swap(&from->sp, to->sp); }

#else
struct EmuContext {
  ucontext_t uc;
};

// makecontext passes int arguments only: the function and its argument
// travel as 32-bit halves.
static void emu_ctx_start(unsigned fn_lo, unsigned fn_hi, unsigned arg_lo, unsigned arg_hi) {
  EmuContextFn fn = (EmuContextFn)(((uintptr_t)fn_hi << 32) | (uintptr_t)fn_lo);
  fn((void*)(((uintptr_t)arg_hi << 32) | (uintptr_t)arg_lo));
}

static inline void emu_ctx_prepare(EmuContext* c, char* stack, size_t size, EmuContextFn fn, void* arg) {
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = stack;
  c->uc.uc_stack.ss_size = size;
  c->uc.uc_link = nullptr;
  uintptr_t f = (uintptr_t)fn, a = (uintptr_t)arg;
  makecontext(&c->uc, (void (*)())emu_ctx_start, 4, (unsigned)(f & 0xffffffffu), (unsigned)(f >> 32),
              (unsigned)(a & 0xffffffffu), (unsigned)(a >> 32));
}

static inline void emu_ctx_switch(EmuContext* from, EmuContext* to) { swapcontext(&from->uc, &to->uc); }
#endif

#endif
