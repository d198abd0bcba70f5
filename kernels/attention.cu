// Causal softmax of attention scores, and its backward, one block per score row. Rows are
// (batch, head, query i) of length seq; keys j > i are masked.
//   forward:  P[j] = exp(scale*S[j] - max) / sum over j <= i, P[j > i] = 0     (S fp32, P bf16)
//   backward: dS[j] = scale * P[j] * (dP[j] - sum_k P[k] dP[k]), 0 for j > i  (dP fp32, dS bf16)

extern "C" __global__ void causal_softmax_forward(bf16* p, const float* s, int seq, float scale) {
  u64 row = blockIdx.x;
  int i = (int)(row % seq);
  const float* sr = s + row * seq;
  bf16* pr = p + row * seq;
  // One read for the maximum and the sum together (online softmax: the running sum is
  // rescaled when the maximum grows), then one to write.
  float m = NEG_INF, sum = 0.f;
  for (int j = threadIdx.x; j <= i; j += blockDim.x) {
    float x = scale * sr[j];
    if (x > m) {
      sum = sum * __expf(m - x) + 1.f;
      m = x;
    } else {
      sum += __expf(x - m);
    }
  }
  float row_max = block_max(m);
  float inv = 1.f / block_sum(sum * __expf(m - row_max));
  m = row_max;
  for (int j = threadIdx.x; j < seq; j += blockDim.x) pr[j] = float_to_bf16(j <= i ? __expf(scale * sr[j] - m) * inv : 0.f);
}

extern "C" __global__ void causal_softmax_backward(bf16* ds, const bf16* p, const float* dp, int seq, float scale) {
  u64 row = blockIdx.x;
  int i = (int)(row % seq);
  const bf16* pr = p + row * seq;
  const float* dpr = dp + row * seq;
  float d = 0.f;
  for (int j = threadIdx.x; j <= i; j += blockDim.x) d += bf16_to_float(pr[j]) * dpr[j];
  d = block_sum(d);
  for (int j = threadIdx.x; j < seq; j += blockDim.x)
    ds[row * seq + j] = float_to_bf16(j <= i ? scale * bf16_to_float(pr[j]) * (dpr[j] - d) : 0.f);
}
