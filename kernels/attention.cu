// Causal softmax of attention scores, and its backward, one warp per score row (a row of a few
// thousand keys is a short loop per lane, and warp shuffles need no block-wide barriers). Rows
// are (batch, head, query i) of length seq; keys j > i are masked.
//   forward:  P[j] = exp(scale*S[j] - max) / sum over j <= i, P[j > i] = 0     (S fp32, P bf16)
//   backward: dS[j] = scale * P[j] * (dP[j] - sum_k P[k] dP[k]), 0 for j > i  (dP fp32, dS bf16)
// The attention products run per causal block of `block` queries and read a row only up to
// its block's end, so the zeros above the diagonal are written that far and no farther.

__device__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// This warp's row, or -1 past the last; its query index, and the end of the columns to write.
__device__ long long warp_row(u64 rows, int seq, int block, int* i, int* end) {
  u64 row = blockIdx.x * (u64)(blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return -1;
  *i = (int)(row % seq);
  *end = min(seq, (*i / block + 1) * block);
  return (long long)row;
}

extern "C" __global__ void causal_softmax_forward(bf16* p, const float* s, u64 rows, int seq, int block, float scale) {
  int i, end, lane = threadIdx.x & 31;
  long long row = warp_row(rows, seq, block, &i, &end);
  if (row < 0) return;
  const float* sr = s + row * seq;
  bf16* pr = p + row * seq;
  // One read for the maximum and the sum together (online softmax: the running sum is
  // rescaled when the maximum grows), then one to write (mostly from L2).
  float m = NEG_INF, sum = 0.f;
  for (int j = lane; j <= i; j += 32) {
    float x = scale * sr[j];
    if (x > m) {
      sum = sum * __expf(m - x) + 1.f;
      m = x;
    } else {
      sum += __expf(x - m);
    }
  }
  float row_max = warp_max(m);
  float inv = 1.f / warp_sum(sum * __expf(m - row_max));
  for (int j = lane; j < end; j += 32) pr[j] = float_to_bf16(j <= i ? __expf(scale * sr[j] - row_max) * inv : 0.f);
}

extern "C" __global__ void causal_softmax_backward(bf16* ds, const bf16* p, const float* dp, u64 rows, int seq, int block, float scale) {
  int i, end, lane = threadIdx.x & 31;
  long long row = warp_row(rows, seq, block, &i, &end);
  if (row < 0) return;
  const bf16* pr = p + row * seq;
  const float* dpr = dp + row * seq;
  float d = 0.f;
  for (int j = lane; j <= i; j += 32) d += bf16_to_float(pr[j]) * dpr[j];
  d = warp_sum(d);
  for (int j = lane; j < end; j += 32)
    ds[row * seq + j] = float_to_bf16(j <= i ? scale * bf16_to_float(pr[j]) * (dpr[j] - d) : 0.f);
}
