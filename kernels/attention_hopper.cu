// Causal GQA attention forward for Hopper (sm_90a), the layouts and the log-sum-exp of
// attention.cu (whose helpers it uses; it is compiled after it): the same online softmax, on
// Hopper's warpgroup tensor-core instructions. A block is two warpgroups owning 128 query rows,
// 64 each; K and V tiles of HOPPER_KEYS keys stream through shared memory, two buffers of each
// filled by cp.async, in wgmma's 128-byte-swizzled layout. S = Q·Kᵀ reads Q and K from shared memory;
// O += P·V takes P from the registers S was computed in and reads V transposed.
// The wgmma_* wrappers (src/backend/cuda/ops/wgmma.rs) and HOPPER_ROWS, HOPPER_KEYS and
// HOPPER_THREADS (attention.rs) are prepended; everything that issues Hopper instructions compiles only for sm_90a.

static_assert(HOPPER_ROWS == 128 && HOPPER_THREADS == 256, "a block is two warpgroups of 64 query rows");
static_assert(HOPPER_KEYS == 128, "S is one m64n128 product per warpgroup");

// Byte offset of 16-byte chunk c (bf16 columns 8c..8c+7) of row r in a [rows][HD] tile kept as
// HD/64 panels of [rows][64], each row's 128 bytes swizzled (chunk ^ row % 8): the layout
// wgmma's 128-byte swizzle reads, the tile 1024-byte aligned.
__device__ __forceinline__ unsigned swizzled(int r, int c, int rows) { return (c >> 3) * rows * 128 + r * 128 + (((c & 7) ^ (r & 7)) << 4); }

// Starts copying rows [row0, row0 + rows) of a sequence (rows `stride` bf16 apart) into the
// swizzled tile at shared address `tile`; zeros past the sequence's end.
template <int HD>
__device__ void start_swizzled(unsigned tile, const bf16* src, int row0, int rows, int seq, int stride) {
  start_rows<HD, HOPPER_THREADS>(tile, src, row0, rows, seq, stride, [rows](int r, int c) { return swizzled(r, c, rows); });
}

// A wgmma shared-memory matrix descriptor: 128-byte swizzle, 8-row groups 1024 bytes apart,
// `leading` bytes between 64-column panels (read for MN-major operands only).
__device__ __forceinline__ u64 descriptor(unsigned address, unsigned leading) {
  return (u64)((address & 0x3FFFF) >> 4) | ((u64)((leading & 0x3FFFF) >> 4) << 16) | ((u64)(1024 >> 4) << 32) | (1ull << 62);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }

// Keeps the compiler from moving reads or writes of accumulator registers across the
// asynchronous matrix products that own them.
template <int N>
__device__ __forceinline__ void hold(float (*d)[4]) {
#pragma unroll
  for (int n = 0; n < N / 8; n++)
#pragma unroll
    for (int e = 0; e < 4; e++) asm volatile("" : "+f"(d[n][e])::"memory");
}

__device__ __forceinline__ void wgmma_wait_one() { asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory"); }

template <int N>
__device__ __forceinline__ void hold_pairs(unsigned (*p)[4]) {
#pragma unroll
  for (int n = 0; n < N / 16; n++)
#pragma unroll
    for (int j = 0; j < 4; j++) asm volatile("" : "+r"(p[n][j])::"memory");
}

// Issues s (64 × HOPPER_KEYS) = this warpgroup's 64 rows of Q (shared, at `q`, a tile of
// HOPPER_ROWS rows) times the K tile at `k`ᵀ, as one commit group.
template <int HD>
__device__ __forceinline__ void issue_scores(float (*s)[4], unsigned q, unsigned k) {
#pragma unroll
  for (int kk = 0; kk < HD / 16; kk++) {
    // Columns 16kk..16kk+15: panel kk / 4, 32 bytes into its rows per step (the hardware applies
    // the swizzle on the address bits above).
    unsigned step = (kk & 3) * 32;
    wgmma_ss_n128(s, descriptor(q + (kk >> 2) * HOPPER_ROWS * 128 + step, 16), descriptor(k + (kk >> 2) * HOPPER_KEYS * 128 + step, 16), kk > 0);
  }
  wgmma_commit();
}

// Issues acc (64 × HD) += p (64 × HOPPER_KEYS, bf16 pairs in A-operand registers) · the V tile
// at `v`, as one commit group.
template <int HD>
__device__ __forceinline__ void issue_accumulate(float (*acc)[4], const unsigned (*p)[4], unsigned v) {
#pragma unroll
  for (int kk = 0; kk < HOPPER_KEYS / 16; kk++) {
    static_assert(HD == 128, "O is one m64n128 product per k-step");
    wgmma_rs_n128(acc, p[kk], descriptor(v + kk * 16 * 128, HOPPER_KEYS * 128));
  }
  wgmma_commit();
}

// Probabilities as the bf16 pairs of wgmma's A operand: the accumulator layout of S is the
// A-operand layout of P, 16 keys per k-step.
__device__ __forceinline__ void pack_probabilities(unsigned (*p)[4], float (*s)[4]) {
#pragma unroll
  for (int kk = 0; kk < HOPPER_KEYS / 16; kk++) {
    p[kk][0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
    p[kk][1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
    p[kk][2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    p[kk][3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
  }
}

// Every thread's copies so far have landed and every warpgroup is past its last products, so
// buffers read before may be refilled; the copies (generic-proxy writes) are made visible to
// wgmma (which reads through the async proxy).
__device__ __forceinline__ void tiles_landed() {
  asm volatile("cp.async.wait_group 0;" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  __syncthreads();
}

// Pass i (from 1) of a block computes the scores of key tile i while the tensor cores still
// multiply tile i - 1's probabilities by its V: S_i is issued first, then P_{i-1}·V_{i-1}; the
// softmax of S_i runs once S_i is done, overlapping the other product, and only the rescaling
// of O waits for it. Tile i + 1's K and tile i's V land during the pass (two buffers of each).
// The first tile's scores and the last tile's product are peeled off the loop, so that every
// product in it is issued unconditionally (ptxas then keeps them asynchronous).
template <int HD>
__device__ void hopper_forward(bf16* o, float* lse, const bf16* q, const bf16* k, const bf16* v, int seq, int heads, int kv_heads, float scale) {
  const unsigned TQ = HOPPER_ROWS * HD * 2, TK = HOPPER_KEYS * HD * 2;  // bytes of the Q tile and of one K or V tile
  extern __shared__ uint4 shared[];
  unsigned qs = (shared_address(shared) + 1023) & ~1023u, ks = qs + TQ, vs = ks + 2 * TK;  // ks, vs: two buffers each
  int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3;
  int b = blockIdx.y / heads, h = blockIdx.y % heads, q0 = (gridDim.x - 1 - blockIdx.x) * HOPPER_ROWS;
  int tiles = (min(q0 + HOPPER_ROWS, seq) + HOPPER_KEYS - 1) / HOPPER_KEYS, first_row = q0 + 64 * wg, row0 = first_row + 16 * warp;
  Heads at(b, h, h / (heads / kv_heads), seq, heads, kv_heads, HD);
  u64 stats = ((u64)b * heads + h) * seq;
  unsigned q_rows = qs + wg * 64 * 128;  // this warpgroup's 64 rows of the Q tile
  auto start_k = [&](int i) { start_swizzled<HD>(ks + (i & 1) * TK, k + at.kv, i * HOPPER_KEYS, HOPPER_KEYS, seq, at.kv_stride); };
  auto start_v = [&](int i) { start_swizzled<HD>(vs + (i & 1) * TK, v + at.kv, i * HOPPER_KEYS, HOPPER_KEYS, seq, at.kv_stride); };
  start_swizzled<HD>(qs, q + at.q, q0, HOPPER_ROWS, seq, at.q_stride);
  start_k(0);
  commit_copies();
  float sl2 = scale * LOG2E, m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f}, correction[2], acc[HD / 8][4] = {}, s[HOPPER_KEYS / 8][4];
  unsigned p[HOPPER_KEYS / 16][4];
  // The causal mask of the key tile from k0, looked at only where the tile reaches past this
  // warpgroup's first row (keys past the sequence's end are past every row that is stored).
  auto causal = [&](int k0) {
    bool edge = k0 + HOPPER_KEYS - 1 > first_row;
    return [=](int n, int e) { return edge && k0 + frag_col(n, e) > row0 + frag_row(e); };
  };

  tiles_landed();
  if (tiles > 1) start_k(1);
  start_v(0);
  commit_copies();
  wgmma_fence();
  issue_scores<HD>(s, q_rows, ks);
  wgmma_wait_all();
  hold<HOPPER_KEYS>(s);
  softmax_tile<HOPPER_KEYS>(s, m, l, correction, sl2, causal(0));
  pack_probabilities(p, s);

  for (int i = 1; i < tiles; i++) {
    tiles_landed();
    if (i + 1 < tiles) start_k(i + 1);
    start_v(i);
    commit_copies();
    wgmma_fence();
    issue_scores<HD>(s, q_rows, ks + (i & 1) * TK);
    issue_accumulate<HD>(acc, p, vs + ((i - 1) & 1) * TK);
    wgmma_wait_one();
    hold<HOPPER_KEYS>(s);
    softmax_tile<HOPPER_KEYS>(s, m, l, correction, sl2, causal(i * HOPPER_KEYS));
    // P_{i-1}·V_{i-1} done: its registers and O may be rewritten.
    wgmma_wait_all();
    hold<HD>(acc);
    hold_pairs<HOPPER_KEYS>(p);
    pack_probabilities(p, s);
#pragma unroll
    for (int n = 0; n < HD / 8; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[n][e] *= correction[e >> 1];
  }

  tiles_landed();
  wgmma_fence();
  issue_accumulate<HD>(acc, p, vs + ((tiles - 1) & 1) * TK);
  wgmma_wait_all();
  hold<HD>(acc);
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    l[r] = quad_sum(l[r]);
    inv[r] = 1.f / l[r];
    int row = row0 + frag_row(2 * r);
    if ((threadIdx.x & 3) == 0 && row < seq) lse[stats + row] = (m[r] + __log2f(l[r])) * LN2;
  }
  store_rows<HD>(o + at.q, acc, inv, row0, seq, at.q_stride);
}
#endif

// Launched on sm_90a only (the host checks); elsewhere the body is empty of Hopper instructions.
#define HOPPER_KERNELS(HD)                                                                                                                  \
  extern "C" __global__ void __launch_bounds__(HOPPER_THREADS) hopper_forward_##HD(bf16* o, float* lse, const bf16* q, const bf16* k,     \
                                                                                   const bf16* v, int seq, int heads, int kv_heads,     \
                                                                                   float scale) {                                       \
    HOPPER_BODY(hopper_forward<HD>(o, lse, q, k, v, seq, heads, kv_heads, scale));                                                        \
  }

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define HOPPER_BODY(call) call
#else
#define HOPPER_BODY(call) __trap()
#endif

HOPPER_KERNELS(128)
