// max_norm: the factor PyTorch's embedding_renorm_ applies to the row of each position.
//
// Grid (32, N, 1); threadgroup (32, TY, 1). One SIMD-group owns one position i
// (grid y): its 32 lanes read consecutive columns of row indices[i] (64-bit
// row address), accumulate |w|^p in float32 and combine with simd_sum
// (simd_max for p = inf); lane 0 writes max_norm / (norm + 1e-7) when the norm
// exceeds max_norm, else 1 (also 1 for an index outside [0, V), which the
// poison rule handles elsewhere). Bytes per output element: D * sizeof(T)
// read, 4 written.
//
// Inputs: weight (V, D) T; indices (N) int32 or int64; params int64 [N, V, D, ...];
// fparams float32 [max_norm, norm_type, ...]. Output: scale (N) float32.
const int64_t N = params[0], V = params[1], D = params[2];
const float max_norm = fparams[0], p = fparams[1];
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
  scale[i] = (ok && norm > max_norm) ? max_norm / (norm + 1e-7f) : 1.0f;
}
