// Shared by every kernel in this folder: MLX places it (the metal_kernel `header=`) in front of
// each generated signature. mlx_embag/_embag_common.py reads the names below from this very file,
// so Python and the kernels cannot disagree on a slot or a flag; keep one `NAME = value` per line.
//
// MLX looks for thread attributes and `<input>_shape`-like words in the kernel body only, never
// here, and the emulator runs a kernel's threads as fibers when the source names a synchronising
// call: so this file names no thread attribute, input or synchronising call, even in comments.

// Slots of the int64 `params` input of the bag kernels.
enum : int {
  P_N = 0,            // positions (flat indices)
  P_V = 1,            // rows of the table
  P_D = 2,            // columns of the table
  P_NOFF = 3,         // offsets given (B, or B + 1 with include_last_offset)
  P_PAD = 4,          // the padding row this pass skips, or -1
  P_FLAGS = 5,        // FLAG_* bits
  P_B = 6,            // bags
  P_S = 7,            // threadgroups sharing one bag in the forward (1: no second step)
};

// The same slots as the sorted-scatter kernels (det_partial, det_write) read them.
enum : int {
  P_M = P_N,          // entries to scatter
  P_R = P_V,          // rows of the gradient
  P_DV = P_D,         // columns of each entry's source row
  P_WINDOW = P_NOFF,  // sorted entries per window (one thread per window and column)
};

// Slots of row_scale's float32 `fparams` input: max_norm and 1e-7 as float pairs (hi + lo).
enum : int {
  F_MAX_NORM_HI = 0,
  F_MAX_NORM_LO = 1,
  F_EPS_HI = 2,
  F_EPS_LO = 3,
  F_NORM_TYPE = 4,
};

// Slots of sparse_update's float32 optimizer constants (built by mlx_embag/_sparse_kernels.py).
enum : int {
  O_LR = 0,           // learning rate (SparseAdam: its step size, lr * sqrt(1 - b2^t) / (1 - b1^t))
  O_EPS = 1,          // added to the root of the accumulator / second moment
  O_SHARE1 = 2,       // 1 - beta1: the new gradient's share in SparseAdam's first moment
  O_SHARE2 = 3,       // 1 - beta2: its share in the second moment
};

// sparse_update's RULE template value: the optimizer rule applied to each listed row.
enum : int {
  RULE_SGD = 0,       // SparseSGD: no state
  RULE_ADAGRAD = 1,   // SparseAdagrad: one accumulator per element
  RULE_ADAM = 2,      // SparseAdam: two moments per element
  RULE_ROWWISE = 3,   // RowWiseAdagrad: one accumulator per row (a threadgroup reduction)
};

// Bits of params[P_FLAGS]: what the call has beyond plain sums.
enum : int {
  FLAG_MEAN = 1,      // divide each bag by its non-padding count
  FLAG_PSW = 2,       // per_sample_weights multiply each position
  FLAG_SCALE = 4,     // max_norm factors (row_scale's output) rescale each position's row
  FLAG_FREQ = 8,      // divide each row's gradient by its count in the call (scale_grad_by_freq)
  FLAG_FIXED = 16,    // forward: bag b is positions [b * L, b * L + L), L = N / B (2-D input,
                      // embedding): offsets and prevmax are not read, no bag is malformed
};

enum : int {
  // Threads per threadgroup, at most: every launcher keeps to it, and bag_fwd sizes its
  // threadgroup memory by it.
  TG_MAX = 256,
  // The per-bag `meta` entry of a poisoned bag (invalid offsets or an index outside the
  // table); any other value is the bag's non-padding count.
  POISONED = -1,
};

// Bag b covers positions [start, end): it ends where bag b + 1 starts, the last one at N.
struct BagRange {
  int64_t start;
  int64_t end;
};

inline BagRange bag_bounds(const device int64_t* offsets, int64_t n, int64_t noff, uint b) {
  BagRange r;
  r.start = offsets[b];
  r.end = (int64_t(b) + 1 < noff) ? int64_t(offsets[b + 1]) : n;
  return r;
}

inline BagRange bag_bounds(const device int64_t* offsets, const device int64_t* params, uint b) {
  return bag_bounds(offsets, params[P_N], params[P_NOFF], b);
}

// The poison rule's structural half: a bag is poisoned unless its range is well formed and
// starts no earlier than any earlier offset (`earlier`, the largest of offsets[0..b-1], or of
// offsets[0..b]: the same test), so valid bags never overlap. The other half, an index
// outside [0, V), is found while reading.
inline bool bag_range_poisoned(int64_t first_offset, BagRange r, int64_t earlier, int64_t n) {
  return !(first_offset == 0 && r.start >= 0 && r.start <= r.end && r.end <= n && r.start >= earlier);
}

inline bool bag_range_poisoned(const device int64_t* offsets, BagRange r, int64_t earlier, int64_t n) {
  return bag_range_poisoned(int64_t(offsets[0]), r, earlier, n);
}

// Whether a bag's `meta` entry (bag_fwd's output) marks it poisoned: it then sends no gradient.
inline bool poisoned(int meta) {
  return meta < 0;
}
