// RMSNorm over rows of width d: y = x / sqrt(mean(x^2) + eps) * w. One block per row.

extern "C" __global__ void rmsnorm_forward(bf16* y, float* inv_rms, const bf16* x, const bf16* w, int d, float eps) {
  const bf16* xr = x + (u64)blockIdx.x * d;
  bf16* yr = y + (u64)blockIdx.x * d;
  float ss = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float v = bf16_to_float(xr[i]);
    ss += v * v;
  }
  float inv = rsqrtf(block_sum(ss) / d + eps);
  if (threadIdx.x == 0) inv_rms[blockIdx.x] = inv;
  for (int i = threadIdx.x; i < d; i += blockDim.x) yr[i] = float_to_bf16(bf16_to_float(xr[i]) * inv * bf16_to_float(w[i]));
}

// dx = inv*dy*w - inv^3 * x * mean(dy*w*x) per row; dw += sum over rows of dy*x*inv.
// Block b handles rows [b*rows_per_block, ...), each row read once into registers, keeping its
// columns' dw partials in registers (d <= RMS_MAX_COLS_PER_THREAD * blockDim.x) and adding them
// once: few atomics instead of one per element.
#define RMS_MAX_COLS_PER_THREAD 32
extern "C" __global__ void rmsnorm_backward(bf16* dx, float* dw, const bf16* dy, const bf16* x, const bf16* w,
                                            const float* inv_rms, int d, int rows, int rows_per_block) {
  float acc[RMS_MAX_COLS_PER_THREAD], xv[RMS_MAX_COLS_PER_THREAD], gv[RMS_MAX_COLS_PER_THREAD];
#pragma unroll
  for (int c = 0; c < RMS_MAX_COLS_PER_THREAD; c++) acc[c] = 0.f;
  int first = blockIdx.x * rows_per_block;
  int last = min(rows, first + rows_per_block);
  for (int row = first; row < last; row++) {
    const bf16* xr = x + (u64)row * d;
    const bf16* dyr = dy + (u64)row * d;
    float inv = inv_rms[row];
    float dot = 0.f;
#pragma unroll
    for (int c = 0; c < RMS_MAX_COLS_PER_THREAD; c++) {
      int i = threadIdx.x + c * blockDim.x;
      xv[c] = i < d ? bf16_to_float(xr[i]) : 0.f;
      gv[c] = i < d ? bf16_to_float(dyr[i]) * bf16_to_float(w[i]) : 0.f;  // dy * w
      dot += gv[c] * xv[c];
    }
    dot = block_sum(dot) / d;
#pragma unroll
    for (int c = 0; c < RMS_MAX_COLS_PER_THREAD; c++) {
      int i = threadIdx.x + c * blockDim.x;
      if (i < d) {
        dx[(u64)row * d + i] = float_to_bf16(inv * gv[c] - inv * inv * inv * xv[c] * dot);
        acc[c] += bf16_to_float(dyr[i]) * xv[c] * inv;
      }
    }
  }
#pragma unroll
  for (int c = 0; c < RMS_MAX_COLS_PER_THREAD; c++) {
    int i = threadIdx.x + c * blockDim.x;
    if (i < d) atomicAdd(&dw[i], acc[c]);
  }
}
