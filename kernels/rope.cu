// Rotary embedding in place on rows of `heads` vectors of width hd: pair (2i, 2i+1) at position
// p = row % seq turns by sign * p * theta^(-2i/hd). sign 1: forward; -1: backward (R^T).

extern "C" __global__ void rope(bf16* x, u64 rows, int seq, int heads, int hd, float theta, float sign) {
  u64 pairs_per_row = (u64)heads * hd / 2;
  GRID_STRIDE(t, rows * pairs_per_row) {
    u64 row = t / pairs_per_row;
    int within = (int)(t % pairs_per_row);
    int i = within % (hd / 2);  // pair index inside the head
    float angle = sign * (float)(row % seq) * powf(theta, -2.f * i / hd);
    float s, c;
    sincosf(angle, &s, &c);
    bf16* p = x + row * heads * hd + 2 * (u64)within;
    float a = bf16_to_float(p[0]), b = bf16_to_float(p[1]);
    p[0] = float_to_bf16(a * c - b * s);
    p[1] = float_to_bf16(a * s + b * c);
  }
}
