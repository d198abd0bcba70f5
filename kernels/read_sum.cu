// verify's HBM read probe: the sum of 32-bit words, read 16 bytes at a time through the
// read-only path, four loads in flight per thread. Integer sums are exact in any order, so the
// result equals the CPU's (backend/cuda/read_sum.rs) to the bit.

extern "C" __global__ void read_sum(const uint4* __restrict__ data, unsigned long long n16, unsigned long long* __restrict__ out) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned long long sum = 0;
    for (; i + 3 * stride < n16; i += 4 * stride) {
        const uint4 a = __ldg(data + i), b = __ldg(data + i + stride), c = __ldg(data + i + 2 * stride), d = __ldg(data + i + 3 * stride);
        sum += (unsigned long long)a.x + a.y + a.z + a.w;
        sum += (unsigned long long)b.x + b.y + b.z + b.w;
        sum += (unsigned long long)c.x + c.y + c.z + c.w;
        sum += (unsigned long long)d.x + d.y + d.z + d.w;
    }
    for (; i < n16; i += stride) {
        const uint4 a = __ldg(data + i);
        sum += (unsigned long long)a.x + a.y + a.z + a.w;
    }
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    __shared__ unsigned long long warp_sums[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) warp_sums[warp] = sum;
    __syncthreads();
    if (warp == 0) {
        sum = lane < (int)(blockDim.x / 32) ? warp_sums[lane] : 0;
        for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, offset);
        if (lane == 0) atomicAdd(out, sum);
    }
}
