// AdamW on fp32 master weights (decoupled weight decay), refreshing the bf16 working copy, one
// element per thread or (adamw_x4) four, with 16-byte fp32 and 8-byte bf16 accesses; and the
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

// fp32 pointers 16-byte aligned, the bf16 one 8-byte aligned (the launcher checks); the last
// n % 4 elements one per thread.
extern "C" __global__ void adamw_x4(float* params, bf16* params_bf16, const float* grads, float* m, float* v, u64 n, ADAM_PARAMS) {
  Adam a = ADAM_OF_PARAMS;
  u64 quads = n / 4;
  GRID_STRIDE(q, quads) {
    float4 p = reinterpret_cast<const float4*>(params)[q], g = reinterpret_cast<const float4*>(grads)[q];
    float4 mq = reinterpret_cast<const float4*>(m)[q], vq = reinterpret_cast<const float4*>(v)[q];
    p.x = adam_step(a, p.x, g.x, mq.x, vq.x);
    p.y = adam_step(a, p.y, g.y, mq.y, vq.y);
    p.z = adam_step(a, p.z, g.z, mq.z, vq.z);
    p.w = adam_step(a, p.w, g.w, mq.w, vq.w);
    reinterpret_cast<float4*>(params)[q] = p;
    reinterpret_cast<float4*>(m)[q] = mq;
    reinterpret_cast<float4*>(v)[q] = vq;
    unsigned int lo = (unsigned int)float_to_bf16(p.x) | ((unsigned int)float_to_bf16(p.y) << 16);
    unsigned int hi = (unsigned int)float_to_bf16(p.z) | ((unsigned int)float_to_bf16(p.w) << 16);
    reinterpret_cast<uint2*>(params_bf16)[q] = make_uint2(lo, hi);
  }
  u64 tail = blockIdx.x * (u64)blockDim.x + threadIdx.x;
  if (tail < n - 4 * quads) adam_element(a, params, params_bf16, grads, m, v, 4 * quads + tail);
}

// *total += sum of x^2 (double accumulation across blocks).
extern "C" __global__ void sum_squares(double* total, const float* x, u64 n) {
  float s = 0.f;
  GRID_STRIDE(i, n) s += x[i] * x[i];
  s = block_sum(s);
  if (threadIdx.x == 0) atomicAdd(total, (double)s);
}
