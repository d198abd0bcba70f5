// Causal softmax of attention scores, and its backward, one block per score row, the row held
// in registers (seq <= SOFTMAX_MAX_PER_THREAD * blockDim.x). Rows are (batch, head, query i)
// of length seq; keys j > i are masked.
//   forward:  P[j] = exp(scale*S[j] - max) / sum over j <= i, P[j > i] = 0     (S fp32, P bf16)
//   backward: dS[j] = scale * P[j] * (dP[j] - sum_k P[k] dP[k]), 0 for j > i  (dP fp32, dS bf16)

#define SOFTMAX_MAX_PER_THREAD 32

extern "C" __global__ void causal_softmax_forward(bf16* p, const float* s, int seq, float scale) {
  u64 row = blockIdx.x;
  int i = (int)(row % seq);
  const float* sr = s + row * seq;
  bf16* pr = p + row * seq;
  float v[SOFTMAX_MAX_PER_THREAD];
  float m = NEG_INF;
#pragma unroll
  for (int c = 0; c < SOFTMAX_MAX_PER_THREAD; c++) {
    int j = threadIdx.x + c * blockDim.x;
    v[c] = j <= i ? scale * sr[j] : NEG_INF;
    m = fmaxf(m, v[c]);
  }
  m = block_max(m);
  float sum = 0.f;
#pragma unroll
  for (int c = 0; c < SOFTMAX_MAX_PER_THREAD; c++) {
    v[c] = __expf(v[c] - m);  // exp(-inf) = 0 for masked keys
    sum += v[c];
  }
  float inv = 1.f / block_sum(sum);
#pragma unroll
  for (int c = 0; c < SOFTMAX_MAX_PER_THREAD; c++) {
    int j = threadIdx.x + c * blockDim.x;
    if (j < seq) pr[j] = float_to_bf16(v[c] * inv);
  }
}

extern "C" __global__ void causal_softmax_backward(bf16* ds, const bf16* p, const float* dp, int seq, float scale) {
  u64 row = blockIdx.x;
  int i = (int)(row % seq);
  const bf16* pr = p + row * seq;
  const float* dpr = dp + row * seq;
  float pv[SOFTMAX_MAX_PER_THREAD], dv[SOFTMAX_MAX_PER_THREAD];
  float d = 0.f;
#pragma unroll
  for (int c = 0; c < SOFTMAX_MAX_PER_THREAD; c++) {
    int j = threadIdx.x + c * blockDim.x;
    pv[c] = j <= i ? bf16_to_float(pr[j]) : 0.f;
    dv[c] = j <= i ? dpr[j] : 0.f;
    d += pv[c] * dv[c];
  }
  d = block_sum(d);
#pragma unroll
  for (int c = 0; c < SOFTMAX_MAX_PER_THREAD; c++) {
    int j = threadIdx.x + c * blockDim.x;
    if (j < seq) ds[row * seq + j] = float_to_bf16(scale * pv[c] * (dv[c] - d));
  }
}
