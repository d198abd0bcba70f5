// SwiGLU: h = silu(g) * u element-wise, and its backward. Eight elements per step (16-byte
// accesses on 16-byte aligned buffers), then the n % 8 left one at a time.

__device__ __forceinline__ float sigmoidf(float x) { return 1.f / (1.f + __expf(-x)); }

__device__ __forceinline__ float swiglu(float g, float u) { return g * sigmoidf(g) * u; }

// dg = dh * u * s * (1 + g(1 - s)), du = dh * g * s, s = sigmoid(g)
__device__ __forceinline__ void swiglu_grads(float d, float g, float u, float* dg, float* du) {
  float s = sigmoidf(g);
  *dg = d * u * s * (1.f + g * (1.f - s));
  *du = d * g * s;
}

extern "C" __global__ void swiglu_forward(bf16* h, const bf16* gate, const bf16* up, u64 n) {
  GRID_STRIDE(k, n / 8) {
    float g[8], u[8], out[8];
    load8(g, gate + 8 * k);
    load8(u, up + 8 * k);
#pragma unroll
    for (int j = 0; j < 8; j++) out[j] = swiglu(g[j], u[j]);
    store8(h + 8 * k, out);
  }
  GRID_STRIDE(t, n % 8) {
    u64 i = n / 8 * 8 + t;
    h[i] = float_to_bf16(swiglu(bf16_to_float(gate[i]), bf16_to_float(up[i])));
  }
}

extern "C" __global__ void swiglu_backward(bf16* dgate, bf16* dup, const bf16* dh, const bf16* gate, const bf16* up, u64 n) {
  GRID_STRIDE(k, n / 8) {
    float d[8], g[8], u[8], dg[8], du[8];
    load8(d, dh + 8 * k);
    load8(g, gate + 8 * k);
    load8(u, up + 8 * k);
#pragma unroll
    for (int j = 0; j < 8; j++) swiglu_grads(d[j], g[j], u[j], &dg[j], &du[j]);
    store8(dgate + 8 * k, dg);
    store8(dup + 8 * k, du);
  }
  GRID_STRIDE(t, n % 8) {
    u64 i = n / 8 * 8 + t;
    float dg, du;
    swiglu_grads(bf16_to_float(dh[i]), bf16_to_float(gate[i]), bf16_to_float(up[i]), &dg, &du);
    dgate[i] = float_to_bf16(dg);
    dup[i] = float_to_bf16(du);
  }
}
