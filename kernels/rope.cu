// Rotary embedding in place on rows of `heads` vectors of width hd: pair (2i, 2i+1) at position
// p = row % seq turns by sign * p * theta^(-2i/hd). sign 1: forward; -1: backward (R^T).
// One block per row. The angle depends on (p, i) only, so each thread keeps one pair index i
// (blockDim.x is a multiple of hd/2) over its share of the heads: one sincos serves them all.

extern "C" __global__ void rope(bf16* x, int seq, int heads, int hd, float theta, float sign) {
  int half = hd / 2;
  int i = threadIdx.x % half;
  float s, c;
  sincosf(sign * (float)(blockIdx.x % seq) * powf(theta, -2.f * i / hd), &s, &c);
  bf16* pair = x + (u64)blockIdx.x * heads * hd + 2 * i;
  for (int h = threadIdx.x / half; h < heads; h += blockDim.x / half) {
    bf16* p = pair + (u64)h * hd;
    float a = bf16_to_float(p[0]), b = bf16_to_float(p[1]);
    p[0] = float_to_bf16(a * c - b * s);
    p[1] = float_to_bf16(a * s + b * c);
  }
}
