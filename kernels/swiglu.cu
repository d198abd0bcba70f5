// SwiGLU: h = silu(g) * u element-wise, and its backward.

__device__ __forceinline__ float sigmoidf(float x) { return 1.f / (1.f + __expf(-x)); }

extern "C" __global__ void swiglu_forward(bf16* h, const bf16* gate, const bf16* up, u64 n) {
  GRID_STRIDE(i, n) {
    float g = bf16_to_float(gate[i]);
    h[i] = float_to_bf16(g * sigmoidf(g) * bf16_to_float(up[i]));
  }
}

// dg = dh * u * s * (1 + g(1 - s)), du = dh * g * s, s = sigmoid(g)
extern "C" __global__ void swiglu_backward(bf16* dgate, bf16* dup, const bf16* dh, const bf16* gate, const bf16* up, u64 n) {
  GRID_STRIDE(i, n) {
    float g = bf16_to_float(gate[i]), u = bf16_to_float(up[i]), d = bf16_to_float(dh[i]);
    float s = sigmoidf(g);
    dgate[i] = float_to_bf16(d * u * s * (1.f + g * (1.f - s)));
    dup[i] = float_to_bf16(d * g * s);
  }
}
