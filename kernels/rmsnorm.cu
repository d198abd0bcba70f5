// RMSNorm over rows of width d: y = x / sqrt(mean(x^2) + eps) * w. Rows are read and written 8
// bf16 at a time (d a multiple of 8, rows 16-byte aligned).

extern "C" __global__ void rmsnorm_forward(bf16* y, float* inv_rms, const bf16* x, const bf16* w, int d, float eps) {
  const bf16* xr = x + (u64)blockIdx.x * d;
  bf16* yr = y + (u64)blockIdx.x * d;
  float ss = 0.f;
  for (int col = 8 * threadIdx.x; col < d; col += 8 * blockDim.x) {
    float v[8];
    load8(v, xr + col);
#pragma unroll
    for (int k = 0; k < 8; k++) ss += v[k] * v[k];
  }
  float inv = rsqrtf(block_sum(ss) / d + eps);
  if (threadIdx.x == 0) inv_rms[blockIdx.x] = inv;
  for (int col = 8 * threadIdx.x; col < d; col += 8 * blockDim.x) {
    float v[8], g[8];
    load8(v, xr + col);
    load8(g, w + col);
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] *= inv * g[k];
    store8(yr + col, v);
  }
}

// dx = inv*dy*w - inv^3 * x * mean(dy*w*x) per row; dw += sum over rows of dy*x*inv.
// Block b handles rows [b*rows_per_block, ...), each row read once into registers (RMS_CHUNKS
// chunks of 8 columns per thread: blockDim.x >= d / (8 * RMS_CHUNKS)), keeping its columns' dw
// partials in registers and adding them once: few atomics instead of one per element. The next
// row's x and dy are loaded while this one is reduced and written, so that a block's loads are
// in flight across its row reductions' barriers.
#define RMS_CHUNKS 2
extern "C" __global__ void rmsnorm_backward(bf16* dx, float* dw, const bf16* dy, const bf16* x, const bf16* w,
                                            const float* inv_rms, int d, int rows, int rows_per_block) {
  float acc[8 * RMS_CHUNKS], wv[8 * RMS_CHUNKS];
#pragma unroll
  for (int c = 0; c < RMS_CHUNKS; c++) {
    int col = 8 * (threadIdx.x + c * blockDim.x);
#pragma unroll
    for (int k = 0; k < 8; k++) acc[8 * c + k] = wv[8 * c + k] = 0.f;
    if (col < d) load8(wv + 8 * c, w + col);
  }
  int first = blockIdx.x * rows_per_block;
  int last = min(rows, first + rows_per_block);
  uint4 x_raw[RMS_CHUNKS], dy_raw[RMS_CHUNKS];  // this row's columns, as loaded (zero past d)
  float inv;
  auto load_row = [&](int row) {
    if (row >= last) return;
    inv = inv_rms[row];
#pragma unroll
    for (int c = 0; c < RMS_CHUNKS; c++) {
      int col = 8 * (threadIdx.x + c * blockDim.x);
      x_raw[c] = dy_raw[c] = make_uint4(0, 0, 0, 0);
      if (col < d) {
        x_raw[c] = *reinterpret_cast<const uint4*>(x + (u64)row * d + col);
        dy_raw[c] = *reinterpret_cast<const uint4*>(dy + (u64)row * d + col);
      }
    }
  };
  load_row(first);
  for (int row = first; row < last; row++) {
    float xv[8 * RMS_CHUNKS], dyv[8 * RMS_CHUNKS], row_inv = inv, dot = 0.f;
#pragma unroll
    for (int c = 0; c < RMS_CHUNKS; c++) {
      unpack8(xv + 8 * c, x_raw[c]);
      unpack8(dyv + 8 * c, dy_raw[c]);
#pragma unroll
      for (int k = 0; k < 8; k++) dot += dyv[8 * c + k] * wv[8 * c + k] * xv[8 * c + k];
    }
    load_row(row + 1);
    dot = block_sum(dot) / d;
#pragma unroll
    for (int c = 0; c < RMS_CHUNKS; c++) {
      int col = 8 * (threadIdx.x + c * blockDim.x);
      if (col >= d) continue;
      float out[8];
#pragma unroll
      for (int k = 0; k < 8; k++) {
        int j = 8 * c + k;
        out[k] = row_inv * dyv[j] * wv[j] - row_inv * row_inv * row_inv * xv[j] * dot;
        acc[j] += dyv[j] * xv[j] * row_inv;
      }
      store8(dx + (u64)row * d + col, out);
    }
  }
#pragma unroll
  for (int c = 0; c < RMS_CHUNKS; c++) {
    int col = 8 * (threadIdx.x + c * blockDim.x);
    if (col < d) {
#pragma unroll
      for (int k = 0; k < 8; k++) atomicAdd(&dw[col + k], acc[8 * c + k]);
    }
  }
}
