// AdamW on fp32 master weights (decoupled weight decay), refreshing the bf16 working copy, one
// element per thread or (adamw_x8) eight, with 16-byte fp32 and 8-byte bf16 accesses; and the
// sum of squares behind the global gradient norm.

struct Adam {
  float lr, beta1, beta2, eps, weight_decay, bias1, bias2, grad_scale;
};

#define ADAM_PARAMS                                                                                            \
  float lr, float beta1, float beta2, float eps, float weight_decay, float bias1, float bias2, float grad_scale
#define ADAM_OF_PARAMS {lr, beta1, beta2, eps, weight_decay, bias1, bias2, grad_scale}

// One element's step: m and v updated in place, the new parameter returned.
__device__ __forceinline__ float adam_step(const Adam& a, float p, float g, float& m, float& v) {
  g *= a.grad_scale;
  m = a.beta1 * m + (1.f - a.beta1) * g;
  v = a.beta2 * v + (1.f - a.beta2) * g * g;
  return p - a.lr * ((m / a.bias1) / (sqrtf(v / a.bias2) + a.eps) + a.weight_decay * p);
}

__device__ __forceinline__ void adam_element(const Adam& a, float* params, bf16* params_bf16, const float* grads, float* m,
                                             float* v, u64 i) {
  float mi = m[i], vi = v[i];
  float p = adam_step(a, params[i], grads[i], mi, vi);
  m[i] = mi;
  v[i] = vi;
  params[i] = p;
  params_bf16[i] = float_to_bf16(p);
}

extern "C" __global__ void adamw(float* params, bf16* params_bf16, const float* grads, float* m, float* v, u64 n, ADAM_PARAMS) {
  Adam a = ADAM_OF_PARAMS;
  GRID_STRIDE(i, n) adam_element(a, params, params_bf16, grads, m, v, i);
}

// One 16-byte quad of each fp32 stream: m, v and p updated in place.
__device__ __forceinline__ void adam_quad(const Adam& a, float4& p, float4 g, float4& m, float4& v) {
  p.x = adam_step(a, p.x, g.x, m.x, v.x);
  p.y = adam_step(a, p.y, g.y, m.y, v.y);
  p.z = adam_step(a, p.z, g.z, m.z, v.z);
  p.w = adam_step(a, p.w, g.w, m.w, v.w);
}

// Stores quad q's results: fp32 streams 16 bytes, the bf16 copy 8.
__device__ __forceinline__ void store_quad(float4* params, uint2* params_bf16, float4* m, float4* v, u64 q, float4 p, float4 mq, float4 vq) {
  __stcs(params + q, p);
  __stcs(m + q, mq);
  __stcs(v + q, vq);
  unsigned int lo = (unsigned int)float_to_bf16(p.x) | ((unsigned int)float_to_bf16(p.y) << 16);
  unsigned int hi = (unsigned int)float_to_bf16(p.z) | ((unsigned int)float_to_bf16(p.w) << 16);
  __stcs(params_bf16 + q, make_uint2(lo, hi));
}

// Eight elements a thread per pass: quads q and q + the grid's width, every load issued before
// any arithmetic; streaming (evict-first) loads and stores, as each byte is touched once. fp32
// pointers 16-byte aligned, the bf16 one 8-byte aligned (the launcher checks); the last n % 4
// elements one per thread.
extern "C" __global__ void adamw_x8(float* params, bf16* params_bf16, const float* grads, float* m, float* v, u64 n, ADAM_PARAMS) {
  Adam a = ADAM_OF_PARAMS;
  float4 *p4 = reinterpret_cast<float4*>(params), *m4 = reinterpret_cast<float4*>(m), *v4 = reinterpret_cast<float4*>(v);
  const float4* g4 = reinterpret_cast<const float4*>(grads);
  uint2* b2 = reinterpret_cast<uint2*>(params_bf16);
  u64 quads = n / 4, width = (u64)gridDim.x * blockDim.x;
  for (u64 q = blockIdx.x * (u64)blockDim.x + threadIdx.x; q < quads; q += 2 * width) {
    u64 r = q + width;
    bool second = r < quads;
    float4 p0 = __ldcs(p4 + q), g0 = __ldcs(g4 + q), m0 = __ldcs(m4 + q), v0 = __ldcs(v4 + q), p1, g1, m1, v1;
    if (second) {
      p1 = __ldcs(p4 + r);
      g1 = __ldcs(g4 + r);
      m1 = __ldcs(m4 + r);
      v1 = __ldcs(v4 + r);
    }
    adam_quad(a, p0, g0, m0, v0);
    store_quad(p4, b2, m4, v4, q, p0, m0, v0);
    if (second) {
      adam_quad(a, p1, g1, m1, v1);
      store_quad(p4, b2, m4, v4, r, p1, m1, v1);
    }
  }
  u64 tail = blockIdx.x * (u64)blockDim.x + threadIdx.x;
  if (tail < n - 4 * quads) adam_element(a, params, params_bf16, grads, m, v, 4 * quads + tail);
}

__device__ __forceinline__ float squares(float4 a) { return a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w; }

// *total += sum of x^2 (double accumulation across blocks). One pass over the gradients at the
// copy's rate: 16-byte streaming loads, two a thread in flight; the elements before x's first
// 16-byte boundary (a ZeRO shard may start anywhere) and after its last whole quad one a thread.
extern "C" __global__ void sum_squares(double* total, const float* x, u64 n) {
  u64 head = min(n, (u64)((16 - (reinterpret_cast<u64>(x) & 15)) & 15) / 4), quads = (n - head) / 4;
  u64 width = (u64)gridDim.x * blockDim.x, t = blockIdx.x * (u64)blockDim.x + threadIdx.x, tail = head + 4 * quads;
  const float4* x4 = reinterpret_cast<const float4*>(x + head);
  float s = 0.f;
  for (u64 q = t; q < quads; q += 2 * width) {
    float4 a = __ldcs(x4 + q), b = q + width < quads ? __ldcs(x4 + q + width) : make_float4(0.f, 0.f, 0.f, 0.f);
    s += squares(a) + squares(b);
  }
  if (t < head) s += x[t] * x[t];
  if (t < n - tail) s += x[tail + t] * x[tail + t];
  s = block_sum(s);
  if (threadIdx.x == 0) atomicAdd(total, (double)s);
}
