// max_norm: the factor PyTorch's embedding_renorm_ applies to the row of each position.
//
// Grid (32, N, 1); threadgroup (32, TY, 1). One SIMD-group owns one position i
// (grid y): its 32 lanes read consecutive columns of row indices[i] (64-bit
// row address), accumulate |w|^p in float32 and combine with simd_sum
// (simd_max for p = inf); lane 0 writes the scale (1 for an index outside
// [0, V), which the poison rule handles elsewhere). Bytes per output element:
// D * sizeof(T) read, 4 written.
// Traffic per SIMD-group (one position): the row by consecutive lanes (sectors fully
// used), its index and 3 params + 5 fparams slots as uniform loads (a sector each),
// lane 0's 4-byte store.
//
// PyTorch reads the float norm as a double, tests norm > max_norm and computes
// max_norm / (norm + 1e-7) in double, then rounds the scale to float. Metal
// has no double: max_norm and 1e-7 arrive as float pairs (hi + lo, about 48
// bits) and the division runs in double-float arithmetic with explicit fma
// (exact residuals whatever the compiler contracts), rounded to float once.
//
// Inputs: weight (V, D) T; indices (N) int32 or int64; params int64, slots P_N, P_V, P_D;
// fparams float32, slots F_MAX_NORM_HI .. F_NORM_TYPE (embag_common.h).
// Output: scale (N) float32.
const int64_t N = params[P_N], V = params[P_V], D = params[P_D];
const float m_hi = fparams[F_MAX_NORM_HI], m_lo = fparams[F_MAX_NORM_LO];
const float e_hi = fparams[F_EPS_HI], e_lo = fparams[F_EPS_LO];
const float p = fparams[F_NORM_TYPE];
const int64_t i = int64_t(thread_position_in_grid.y);
const uint lane = thread_position_in_grid.x;
const int64_t r = i < N ? int64_t(indices[i]) : int64_t(-1);
const bool ok = r >= 0 && r < V;
float acc = 0.0f;
if (ok) {
  const device T* row = weight + r * D;
  for (int64_t c = lane; c < D; c += 32) {
    const float a = fabs(float(row[c]));
    if (isinf(p)) {
      acc = max(acc, a);
    } else if (p == 2.0f) {
      acc += a * a;
    } else if (p == 1.0f) {
      acc += a;
    } else {
      acc += pow(a, p);
    }
  }
}
float norm;
if (isinf(p)) {
  norm = simd_max(acc);
} else {
  const float total = simd_sum(acc);
  norm = p == 2.0f ? sqrt(total) : (p == 1.0f ? total : pow(total, 1.0f / p));
}
if (lane == 0 && i < N) {
  // norm > max_norm, with max_norm = m_hi + m_lo exactly as PyTorch's double.
  const bool over = norm > m_hi || (norm == m_hi && m_lo < 0.0f);
  float s = 1.0f;
  if (ok && over) {
    // d = norm + 1e-7 as (d_hi, d_lo): two-sum, then the low part of 1e-7.
    const float t = norm + e_hi;
    const float tb = t - norm;
    const float t_err = (norm - (t - tb)) + (e_hi - tb);
    const float low = t_err + e_lo;
    const float d_hi = t + low;
    const float d_lo = low - (d_hi - t);
    // q = (m_hi + m_lo) / (d_hi + d_lo): one float quotient, corrected by the residual.
    const float q1 = m_hi / d_hi;
    float r = fma(-q1, d_hi, m_hi);
    r = fma(-q1, d_lo, r + m_lo);
    s = q1 + r / d_hi;
  }
  scale[i] = s;
}
