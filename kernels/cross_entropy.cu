// Softmax cross-entropy over rows of `vocab` logits, fused with its backward: each row's loss
// goes to losses[row] (0 where the label is -1, ignored) and the logits are replaced by
// (softmax - onehot) * scale (0 on ignored rows). One block per row, read 8 logits at a time
// (vocab a multiple of 8): one pass takes the maximum and the sum of exponentials together
// (each thread rescales its sum when its maximum moves), a second writes the gradient.

extern "C" __global__ void cross_entropy(bf16* logits, float* losses, const int* labels, int vocab, float scale) {
  bf16* row = logits + (u64)blockIdx.x * vocab;
  int label = labels[blockIdx.x];
  if (label < 0) {
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) row[j] = 0;
    if (threadIdx.x == 0) losses[blockIdx.x] = 0.f;
    return;
  }
  // The running maximum starts at the lowest finite float, not -inf: a thread's first rescale
  // and a thread that sees no logits then give 0, not NaN.
  float m = __int_as_float(0xff7fffff), s = 0.f;
  for (int j = 8 * threadIdx.x; j < vocab; j += 8 * blockDim.x) {
    float v[8], top = NEG_INF;
    load8(v, row + j);
#pragma unroll
    for (int k = 0; k < 8; k++) top = fmaxf(top, v[k]);
    if (top > m) {
      s *= __expf(m - top);
      m = top;
    }
#pragma unroll
    for (int k = 0; k < 8; k++) s += __expf(v[k] - m);
  }
  float row_max = block_max(m);
  float log_z = row_max + logf(block_sum(s * __expf(m - row_max)));
  float target = bf16_to_float(row[label]);  // read before any thread overwrites the row
  __syncthreads();
  for (int j = 8 * threadIdx.x; j < vocab; j += 8 * blockDim.x) {
    float v[8];
    load8(v, row + j);
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = (__expf(v[k] - log_z) - (j + k == label ? 1.f : 0.f)) * scale;
    store8(row + j, v);
  }
  if (threadIdx.x == 0) losses[blockIdx.x] = log_z - target;
}
