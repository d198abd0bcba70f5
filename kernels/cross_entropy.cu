// Softmax cross-entropy over rows of `vocab` logits, fused with its backward: each row's loss
// goes to losses[row] (0 where the label is -1, ignored) and the logits are replaced by
// (softmax - onehot) * scale (0 on ignored rows). One block per row.

extern "C" __global__ void cross_entropy(bf16* logits, float* losses, const int* labels, int vocab, float scale) {
  bf16* row = logits + (u64)blockIdx.x * vocab;
  int label = labels[blockIdx.x];
  if (label < 0) {
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) row[j] = 0;
    if (threadIdx.x == 0) losses[blockIdx.x] = 0.f;
    return;
  }
  float m = NEG_INF;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) m = fmaxf(m, bf16_to_float(row[j]));
  m = block_max(m);
  float s = 0.f;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) s += __expf(bf16_to_float(row[j]) - m);
  float log_z = m + logf(block_sum(s));
  float target = bf16_to_float(row[label]);  // read before any thread overwrites the row
  __syncthreads();
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    float p = __expf(bf16_to_float(row[j]) - log_z);
    row[j] = float_to_bf16((p - (j == label ? 1.f : 0.f)) * scale);
  }
  if (threadIdx.x == 0) losses[blockIdx.x] = log_z - target;
}
