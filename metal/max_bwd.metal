// embedding_bag backward to the weight in max mode, atomic variant.
//
// Grid (D, B, 1); threadgroup (TX, 1, 1), TX = min(next power of two >= D, TG_MAX).
// One thread owns one (bag, column):
// it adds that output gradient to the arg-max row the forward recorded for
// it (-1: empty, all-padding or poisoned bag, nothing sent). Float32 atomic
// adds into a zero-initialised (V, D) gradient. Bytes per output-gradient
// element: 4 (gradient) + 4 (arg-max) read, one 4-byte atomic add.
// Traffic per SIMD-group: the gradient and arg-max reads are coalesced (consecutive
// columns); the atomic instruction's lanes hit the arg-max rows of 32 columns, one
// sector each when those rows differ, 4 per 32 columns when they are one row (a bag of
// one position). mlx_embag/_cost.py counts it against the sorted variant.
//
// Inputs: cot (B, D) float32; argmax (B, D) int32; params int64, slot P_D (embag_common.h).
// Output: grad (V, D) atomic float32.
const int64_t D = params[P_D];
const int64_t c = int64_t(thread_position_in_grid.x);
const int64_t e = int64_t(thread_position_in_grid.y) * D + c;
const int64_t r = int64_t(argmax[e]);
if (r >= 0) {
  atomic_fetch_add_explicit(&grad[r * D + c], cot[e], memory_order_relaxed);
}
