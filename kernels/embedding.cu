// Token embedding: x[t] = E[token[t]]; backward scatter-adds into an fp32 gradient table.

extern "C" __global__ void embedding_forward(bf16* x, const bf16* table, const unsigned int* tokens, u64 rows, int d) {
  GRID_STRIDE(i, rows * d) {
    u64 row = i / d;
    x[i] = table[(u64)tokens[row] * d + i % d];
  }
}

extern "C" __global__ void embedding_backward(float* dtable, const bf16* dx, const unsigned int* tokens, u64 rows, int d) {
  GRID_STRIDE(i, rows * d) {
    u64 row = i / d;
    atomicAdd(&dtable[(u64)tokens[row] * d + i % d], bf16_to_float(dx[i]));
  }
}
