// Fill and verify kernels of the collective sweeps. The arithmetic mirrors
// src/sweep/pattern.rs and src/sweep/dtype.rs exactly: every input element is a small integer
// from a hash of (seed, rank, index), stored exactly in the element type, and each output
// element is compared bit for bit with the integer the collective must produce.

typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;

#define OP_SUM 0
#define OP_PROD 1
#define OP_MIN 2
#define OP_MAX 3
#define OP_AVG 4

#define ENC_SIGNED 0
#define ENC_UNSIGNED 1
#define ENC_FLOAT 2

#define MAP_REDUCE 0
#define MAP_GATHER 1
#define MAP_ALLTOALL 2
#define MAP_COPY 3

#define MAX_MAGNITUDE 1000

// Field order and types match `PatternArgs` in src/sweep/device_nccl.rs.
struct PatternArgs {
  u64 seed;
  u64 ranks;
  i64 capacity;      // DType::exact_capacity
  u64 mask;          // DType::mask
  u32 elem_size;
  u32 encoding;
  u32 exponent_bits;
  u32 mantissa_bits;
  u32 max_power_of_two;
  u32 op;
};

__device__ __forceinline__ u64 mix(u64 seed, u64 rank, u64 index) {
  u64 x = seed ^ (rank * 0x9E3779B97F4A7C15ull) ^ (index * 0xBF58476D1CE4E5B9ull);
  u64 z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

__device__ i64 value(const PatternArgs& p, u64 rank, u64 index) {
  u64 spread = (rank + index) % p.ranks;
  if (p.op == OP_PROD) {
    u64 k_max = p.ranks < (u64)p.max_power_of_two ? p.ranks : (u64)p.max_power_of_two;
    u64 k = mix(p.seed, p.ranks, index) % (k_max + 1);
    return spread < k ? 2 : 1;
  }
  i64 n = (i64)p.ranks;
  i64 w_max = 1;
  if (n <= p.capacity) {
    w_max = p.capacity / n;
    if (w_max > MAX_MAGNITUDE) w_max = MAX_MAGNITUDE;
  } else if (spread >= (u64)p.capacity) {
    return 0;
  }
  u64 h = mix(p.seed, rank, index);
  i64 w = p.encoding == ENC_UNSIGNED ? (i64)(h % (u64)(w_max + 1))
                                     : (i64)(h % (u64)(2 * w_max + 1)) - w_max;
  if (p.op == OP_AVG && p.encoding == ENC_FLOAT) return w * n;
  return w;
}

__device__ u64 encode_int(const PatternArgs& p, i64 v) {
  if (p.encoding != ENC_FLOAT) return (u64)v & p.mask;
  if (v == 0) return 0;
  u64 sign = v < 0 ? 1 : 0;
  u64 magnitude = v < 0 ? (u64)(-v) : (u64)v;
  u32 e = 63 - __clzll(magnitude);
  u64 bias = (1ull << (p.exponent_bits - 1)) - 1;
  u64 fraction_mask = (1ull << p.mantissa_bits) - 1;
  u64 fraction = e >= p.mantissa_bits ? (magnitude >> (e - p.mantissa_bits)) & fraction_mask
                                      : (magnitude << (p.mantissa_bits - e)) & fraction_mask;
  return (sign << (p.exponent_bits + p.mantissa_bits)) | (((u64)e + bias) << p.mantissa_bits) | fraction;
}

__device__ i64 combine(u32 op, i64 a, i64 b) {
  switch (op) {
    case OP_PROD: return a * b;
    case OP_MIN: return a < b ? a : b;
    case OP_MAX: return a > b ? a : b;
    default: return a + b;  // sum, avg
  }
}

__device__ i64 expected(const PatternArgs& p, int mapping, u64 a, u64 b, u64 j) {
  switch (mapping) {
    case MAP_REDUCE: {
      u64 index = b + j;
      i64 acc = value(p, 0, index);
      for (u64 s = 1; s < p.ranks; s++) acc = combine(p.op, acc, value(p, s, index));
      return p.op == OP_AVG ? acc / (i64)p.ranks : acc;
    }
    case MAP_GATHER: return value(p, j / a, j % a);
    case MAP_ALLTOALL: return value(p, j / a, b + j % a);
    default: return value(p, b, j);
  }
}

__device__ __forceinline__ void store(unsigned char* base, u64 i, u32 size, u64 bits) {
  switch (size) {
    case 1: base[i] = (unsigned char)bits; break;
    case 2: ((unsigned short*)base)[i] = (unsigned short)bits; break;
    case 4: ((unsigned int*)base)[i] = (unsigned int)bits; break;
    default: ((u64*)base)[i] = bits; break;
  }
}

__device__ __forceinline__ u64 load(const unsigned char* base, u64 i, u32 size) {
  switch (size) {
    case 1: return base[i];
    case 2: return ((const unsigned short*)base)[i];
    case 4: return ((const unsigned int*)base)[i];
    default: return ((const u64*)base)[i];
  }
}

extern "C" __global__ void fill_pattern(unsigned char* out, u64 count, PatternArgs p, u64 rank) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < count; i += (u64)gridDim.x * blockDim.x) {
    store(out, i, p.elem_size, encode_int(p, value(p, rank, i)));
  }
}

extern "C" __global__ void count_wrong(const unsigned char* out, u64 count, PatternArgs p, int mapping,
                                       u64 a, u64 b, u64* wrong) {
  u64 mine = 0;
  for (u64 j = blockIdx.x * (u64)blockDim.x + threadIdx.x; j < count; j += (u64)gridDim.x * blockDim.x) {
    if (load(out, j, p.elem_size) != encode_int(p, expected(p, mapping, a, b, j))) mine++;
  }
  for (int offset = 16; offset > 0; offset /= 2) mine += __shfl_down_sync(0xffffffffu, mine, offset);
  if ((threadIdx.x & 31) == 0 && mine) atomicAdd(wrong, mine);
}
