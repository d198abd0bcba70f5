// Rotary embedding in place on rows of `heads` vectors of width hd: pair (2i, 2i+1) at position
// p = row % seq turns by sign * p * theta^(-2i/hd). sign 1: forward; -1: backward (R^T).
// One block per row. The angle depends on (p, i) only, so each thread keeps four pair indices
// (8 bf16, one 16-byte access; hd a multiple of 8, blockDim.x of hd/8) over its share of the
// heads: four sincos serve them all.
extern "C" __global__ void rope(bf16* x, int seq, int heads, int hd, float theta, float sign) {
  int chunks = hd / 8;  // a head's
  int i0 = 4 * (threadIdx.x % chunks);
  float s[4], c[4];
#pragma unroll
  for (int k = 0; k < 4; k++) sincosf(sign * (float)(blockIdx.x % seq) * powf(theta, -2.f * (i0 + k) / hd), &s[k], &c[k]);
  bf16* pairs = x + (u64)blockIdx.x * heads * hd + 2 * i0;
  for (int h = threadIdx.x / chunks; h < heads; h += blockDim.x / chunks) {
    float v[8];
    load8(v, pairs + (u64)h * hd);
#pragma unroll
    for (int k = 0; k < 4; k++) {
      float a = v[2 * k], b = v[2 * k + 1];
      v[2 * k] = a * c[k] - b * s[k];
      v[2 * k + 1] = a * s[k] + b * c[k];
    }
    store8(pairs + (u64)h * hd, v);
  }
}
