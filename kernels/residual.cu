// y += x (bf16), the residual adds of the backward; eight at a time on aligned buffers.
extern "C" __global__ void add_bf16(bf16* y, const bf16* x, u64 n) {
  GRID_STRIDE(k, n / 8) {
    float a[8], b[8];
    load8(a, y + 8 * k);
    load8(b, x + 8 * k);
#pragma unroll
    for (int j = 0; j < 8; j++) a[j] += b[j];
    store8(y + 8 * k, a);
  }
  GRID_STRIDE(t, n % 8) {
    u64 i = n / 8 * 8 + t;
    y[i] = float_to_bf16(bf16_to_float(y[i]) + bf16_to_float(x[i]));
  }
}
