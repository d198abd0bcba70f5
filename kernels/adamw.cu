// AdamW on fp32 master weights (decoupled weight decay), refreshing the bf16 working copy;
// the sum of squares behind the global gradient norm; bf16 adds.

extern "C" __global__ void adamw(float* params, bf16* params_bf16, const float* grads, float* m, float* v, u64 n,
                                 float lr, float beta1, float beta2, float eps, float weight_decay,
                                 float bias1, float bias2, float grad_scale) {
  GRID_STRIDE(i, n) {
    float g = grads[i] * grad_scale;
    float mi = beta1 * m[i] + (1.f - beta1) * g;
    float vi = beta2 * v[i] + (1.f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float p = params[i];
    p -= lr * ((mi / bias1) / (sqrtf(vi / bias2) + eps) + weight_decay * p);
    params[i] = p;
    params_bf16[i] = float_to_bf16(p);
  }
}

// *total += sum of x^2 (double accumulation across blocks).
extern "C" __global__ void sum_squares(double* total, const float* x, u64 n) {
  float s = 0.f;
  GRID_STRIDE(i, n) s += x[i] * x[i];
  s = block_sum(s);
  if (threadIdx.x == 0) atomicAdd(total, (double)s);
}
