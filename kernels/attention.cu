// Causal attention with grouped KV heads, flash-style (FlashAttention-2's algorithm): score
// tiles live in registers and never reach memory. The forward keeps an online softmax per query
// row and saves only its log-sum-exp; the backward recomputes each probability tile from it.
//   q, o, dq, do: [batch, seq, heads, HD]   k, v, dk, dv: [batch, seq, kv_heads, HD]
//   lse, delta:   [batch, heads, seq] fp32  (lse = log sum_j exp(scale * q_i·k_j), natural log)
// Query head h reads KV head h / (heads / kv_heads).
//
// A block is 4 warps and owns a tile of 64 rows (queries, or keys for dK/dV), 16 per warp; it
// streams the other side through shared memory tile by tile. Products are bf16 tensor-core
// mma.sync m16n8k16 with fp32 accumulators; operands come from shared memory by ldmatrix.

// FLASH_THREADS, FLASH_ROWS, FLASH_DKDV_QUERIES and FLASH_PAD come from
// src/backend/cuda/ops/attention.rs (source()), prepended to this file.
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

__device__ __forceinline__ unsigned shared_address(const void* p) {
  unsigned a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}

// Four 8x8 bf16 matrices; lanes 8m..8m+7 give the row addresses of matrix m.
__device__ __forceinline__ void ldmatrix_x4(unsigned* r, const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned* r, const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(p)));
}

// c (16x8 fp32) += a (16x16 bf16, row-major fragments) · b (16x8 bf16, column-major fragments).
__device__ __forceinline__ void mma_bf16(float* c, const unsigned* a, unsigned b0, unsigned b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as bf16 (round to nearest even), `lo` at the lower address.
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Accumulator fragments of a warp's 16 x N tile: thread (g = lane/4, t = lane%4) holds, for
// each 8-column slice n, rows g and g+8 at columns 8n+2t and 8n+2t+1: element e of slice n is
// row g + 8(e/2), column 8n + 2t + e%2.
__device__ __forceinline__ int frag_row(int e) { return ((threadIdx.x & 31) >> 2) + 8 * (e >> 1); }
__device__ __forceinline__ int frag_col(int n, int e) { return 8 * n + 2 * (threadIdx.x & 3) + (e & 1); }

// Starts copying rows [row0, row0 + rows) of a sequence whose rows are `stride` bf16 apart into
// a flash kernel's shared tile (rows HD + FLASH_PAD bf16 apart); zeros past the sequence's end:
// 16-byte cp.async that land while the block computes on the previous tile.
template <int HD>
__device__ void start_tile(bf16* tile, const bf16* src, int row0, int rows, int seq, int stride) {
  unsigned base = shared_address(tile);
  for (int i = threadIdx.x; i < rows * (HD / 8); i += FLASH_THREADS) {
    int r = i / (HD / 8), c = i % (HD / 8), inside = row0 + r < seq;
    const bf16* from = src + (u64)(inside ? row0 + r : 0) * stride + c * 8;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(base + (r * (HD + FLASH_PAD) + 8 * c) * 2), "l"(from), "r"(inside ? 16 : 0)
                 : "memory");
  }
}

// The same for `n` fp32 values of one row, zeros past the sequence's end.
template <int THREADS>
__device__ void start_floats(float* dst, const float* src, int row0, int n, int seq) {
  for (int i = threadIdx.x; i < n; i += THREADS) {
    int inside = row0 + i < seq;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(shared_address(dst + i)), "l"(src + (inside ? row0 + i : 0)),
                 "r"(inside ? 4 : 0)
                 : "memory");
  }
}

// Closes the group of copies started since the last call.
__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;" ::: "memory"); }

// Waits until at most `pending` groups of this thread's copies are in flight, then for the block.
template <int pending>
__device__ __forceinline__ void wait_copies() {
  asm volatile("cp.async.wait_group %0;" ::"n"(pending) : "memory");
  __syncthreads();
}

// Double buffering of a block's streamed tiles: tile i sits in buffer i % 2 while tile i + 1
// lands in the other. Starts tile i + 1 (`start(i + 1)`), then waits until tile i is in place.
template <typename Start>
__device__ __forceinline__ void next_tile(int i, int tiles, Start start) {
  if (i + 1 < tiles) {
    start(i + 1);
    commit_copies();
    wait_copies<1>();
  } else {
    wait_copies<0>();
  }
}

// s (16 x N) = A · Bᵀ: A the 16 rows at `a`, B the N rows at `b`, both shared tiles of HD columns.
template <int HD, int N>
__device__ void tile_scores(float (*s)[4], const bf16* a, const bf16* b) {
  int lane = threadIdx.x & 31, m = lane >> 3;
#pragma unroll
  for (int n = 0; n < N / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < HD / 16; kk++) {
    unsigned af[4];
    ldmatrix_x4(af, a + (lane & 15) * (HD + FLASH_PAD) + kk * 16 + (lane >> 4) * 8);
#pragma unroll
    for (int np = 0; np < N / 16; np++) {
      unsigned bf[4];
      ldmatrix_x4(bf, b + (np * 16 + (m >> 1) * 8 + (lane & 7)) * (HD + FLASH_PAD) + kk * 16 + (m & 1) * 8);
      mma_bf16(s[2 * np], af, bf[0], bf[1]);
      mma_bf16(s[2 * np + 1], af, bf[2], bf[3]);
    }
  }
}

// acc (16 x HD) += W · B: W a warp's 16 x N weights in accumulator fragments (rounded to bf16),
// B the N rows at `b`, a shared tile of HD columns.
template <int HD, int N>
__device__ void tile_accumulate(float (*acc)[4], float (*w)[4], const bf16* b) {
  int lane = threadIdx.x & 31, m = lane >> 3;
#pragma unroll
  for (int kk = 0; kk < N / 16; kk++) {
    unsigned af[4] = {pack_bf16(w[2 * kk][0], w[2 * kk][1]), pack_bf16(w[2 * kk][2], w[2 * kk][3]),
                      pack_bf16(w[2 * kk + 1][0], w[2 * kk + 1][1]), pack_bf16(w[2 * kk + 1][2], w[2 * kk + 1][3])};
#pragma unroll
    for (int np = 0; np < HD / 16; np++) {
      unsigned bf[4];
      ldmatrix_x4_trans(bf, b + (kk * 16 + (m & 1) * 8 + (lane & 7)) * (HD + FLASH_PAD) + np * 16 + (m >> 1) * 8);
      mma_bf16(acc[2 * np], af, bf[0], bf[1]);
      mma_bf16(acc[2 * np + 1], af, bf[2], bf[3]);
    }
  }
}

// Transposes the 4 x 4 words a quad holds a row a lane (lane c: w[i] = W[c][i]) so that lane c
// holds column c (w[i] = W[i][c]): swaps the off-diagonal 2 x 2 blocks, then within the blocks.
__device__ __forceinline__ void quad_transpose(unsigned (&w)[4]) {
  int c = threadIdx.x & 3;
#pragma unroll
  for (int b = 2; b > 0; b >>= 1)
#pragma unroll
    for (int i = 0; i < 4; i++)
      if (!(i & b)) {
        bool high = c & b;  // this lane's row is in the upper half of the pair
        unsigned other = __shfl_xor_sync(0xffffffffu, high ? w[i] : w[i | b], b);
        if (high) w[i] = other;
        else w[i | b] = other;
      }
}

// Writes a warp's 16 x HD accumulator (rows from row0, `stride` bf16 apart) times the per-row
// factors `mul` (rows g and g+8), skipping rows past the sequence's end. Where HD is a multiple
// of 32, a quad transposes each 4 slices' words so that a thread stores one slice's 16 bytes: a
// row's stores then fill whole 32-byte sectors (with the fragments' 4 bytes a thread, half).
template <int HD>
__device__ void store_rows(bf16* dst, float (*acc)[4], const float* mul, int row0, int seq, int stride) {
#pragma unroll
  for (int half = 0; half < 2; half++) {
    int row = row0 + frag_row(2 * half);
    bf16* at = dst + (u64)row * stride;
    auto word = [&](int n) { return pack_bf16(acc[n][2 * half] * mul[half], acc[n][2 * half + 1] * mul[half]); };
    if constexpr (HD % 32 == 0) {
#pragma unroll
      for (int n0 = 0; n0 < HD / 8; n0 += 4) {
        unsigned w[4] = {word(n0), word(n0 + 1), word(n0 + 2), word(n0 + 3)};
        quad_transpose(w);  // every lane of the warp, before the rows past the end drop out
        int n = n0 + (threadIdx.x & 3);
        if (row < seq) *reinterpret_cast<uint4*>(at + 8 * n) = make_uint4(w[0], w[1], w[2], w[3]);
      }
    } else if (row < seq) {
#pragma unroll
      for (int n = 0; n < HD / 8; n++) *reinterpret_cast<unsigned*>(at + frag_col(n, 0)) = word(n);
    }
  }
}

// Sum over the four threads that share a fragment row.
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

// The online softmax of one tile of N scores a row (s, accumulator fragments, raw; sl2 scales
// them to log2 units), in place: s becomes the tile's probabilities against the running maximum
// m (log2 units), l gains their sums, and `correction` gets the factor that rescales what was
// accumulated against the old maximum. masked(n, e): whether element e of slice n is masked out.
// The maximum is taken on the raw scores (sl2 > 0), so scaling and shifting are one FMA.
// The warp's rows move their maximum only where one of them has gone more than `slack` (log2
// units) past its own; returns whether they did (else every correction is 1). Probabilities
// against a maximum up to `slack` stale are at most 2^slack, which fp32 sums and bf16 keep as
// well as 1, and the output and lse divide it out (up to rounding: FlashAttention-4's lazy
// rescaling).
template <int N, typename Masked>
__device__ __forceinline__ bool softmax_tile(float (*s)[4], float* m, float* l, float* correction, float sl2, float slack, Masked masked) {
  float top[2] = {NEG_INF, NEG_INF};
#pragma unroll
  for (int n = 0; n < N / 8; n++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      if (masked(n, e)) s[n][e] = NEG_INF;
      top[e >> 1] = fmaxf(top[e >> 1], s[n][e]);
    }
  float shift[2];
#pragma unroll
  for (int r = 0; r < 2; r++) top[r] = quad_max(top[r]) * sl2;
  bool moved = __any_sync(0xffffffffu, top[0] > m[0] + slack || top[1] > m[1] + slack);
#pragma unroll
  for (int r = 0; r < 2; r++) {
    float next = moved ? fmaxf(m[r], top[r]) : m[r];
    correction[r] = fast_exp2(m[r] - next);
    m[r] = next;
    l[r] *= correction[r];
    shift[r] = -next;
  }
#pragma unroll
  for (int n = 0; n < N / 8; n++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      s[n][e] = fast_exp2(fmaf(s[n][e], sl2, shift[e >> 1]));
      l[e >> 1] += s[n][e];
    }
  return moved;
}

// Where one (batch, head) starts in q-like and k-like buffers, and their row strides.
struct Heads {
  u64 q, kv;
  int q_stride, kv_stride;
  __device__ Heads(int b, int h, int kvh, int seq, int heads, int kv_heads, int hd)
      : q(((u64)b * seq * heads + h) * hd), kv(((u64)b * seq * kv_heads + kvh) * hd), q_stride(heads * hd), kv_stride(kv_heads * hd) {}
};

// The rows a forward or dQ block works on: query tile `tile` of ROWS rows of head `bh`
// (batch * heads + head), and the key tiles of KEYS it streams, from key 0 to its last query.
// Each warp owns 16 rows from row0.
template <int HD, int ROWS, int KEYS>
struct QueryBlock {
  int b, h, kvh, q0, tiles, row0;  // kvh: the KV head h reads
  Heads at;
  u64 stats;  // where the head's rows start in lse and delta
  __device__ QueryBlock(int tile, int bh, int seq, int heads, int kv_heads)
      : b(bh / heads), h(bh % heads), kvh(h / (heads / kv_heads)), q0(tile * ROWS), tiles((min(q0 + ROWS, seq) + KEYS - 1) / KEYS),
        row0(q0 + 16 * (threadIdx.x >> 5)), at(b, h, kvh, seq, heads, kv_heads, HD), stats(((u64)b * heads + h) * seq) {}

  // This thread's two rows' lse (log2 units) and delta, zero past the sequence's end.
  __device__ void row_stats(float* row_lse, float* row_delta, const float* lse, const float* delta, int seq) const {
#pragma unroll
    for (int r = 0; r < 2; r++) {
      int row = row0 + frag_row(2 * r);
      row_lse[r] = row < seq ? lse[stats + row] * LOG2E : 0.f;
      row_delta[r] = row < seq ? delta[stats + row] : 0.f;
    }
  }
};

// The end of a forward over block t's rows: each row's lse from its running maximum m (log2
// units) and sum l (one quad's share each), and o = acc / l.
template <int HD, typename Block>
__device__ __forceinline__ void finish_rows(bf16* o, float* lse, float (*acc)[4], const float* m, float* l, const Block& t, int seq) {
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    l[r] = quad_sum(l[r]);
    inv[r] = 1.f / l[r];
    int row = t.row0 + frag_row(2 * r);
    if ((threadIdx.x & 3) == 0 && row < seq) lse[t.stats + row] = (m[r] + __log2f(l[r])) * LN2;
  }
  store_rows<HD>(o + t.at.q, acc, inv, t.row0, seq, t.at.q_stride);
}

// A flash block, grid (query tiles, batch * heads), the tiles with the most keys first:
// FLASH_ROWS queries, K and V tiles of as many keys, padded, two buffers.
template <int HD>
struct QueryTile : QueryBlock<HD, FLASH_ROWS, FLASH_ROWS> {
  __device__ QueryTile(int seq, int heads, int kv_heads)
      : QueryBlock<HD, FLASH_ROWS, FLASH_ROWS>(gridDim.x - 1 - blockIdx.x, blockIdx.y, seq, heads, kv_heads) {}

  // Starts this block's own tile of a q-like buffer (Q or dO).
  __device__ void start_own(bf16* tile, const bf16* src, int seq) const {
    start_tile<HD>(tile, src + this->at.q, this->q0, FLASH_ROWS, seq, this->at.q_stride);
  }

  // Starts K and V tile i into buffer i % 2 of `kvs` ([2 buffers][K, V]).
  __device__ void start_kv(bf16* kvs, const bf16* k, const bf16* v, int i, int seq) const {
    const int T = FLASH_ROWS * (HD + FLASH_PAD);
    start_tile<HD>(kvs + (i & 1) * 2 * T, k + this->at.kv, i * FLASH_ROWS, FLASH_ROWS, seq, this->at.kv_stride);
    start_tile<HD>(kvs + (i & 1) * 2 * T + T, v + this->at.kv, i * FLASH_ROWS, FLASH_ROWS, seq, this->at.kv_stride);
  }
};

template <int HD>
__device__ void flash_forward(bf16* o, float* lse, const bf16* q, const bf16* k, const bf16* v, int seq, int heads, int kv_heads, float scale) {
  const int T = FLASH_ROWS * (HD + FLASH_PAD);  // bf16 of one tile
  extern __shared__ uint4 shared[];
  bf16* qs = reinterpret_cast<bf16*>(shared);
  bf16* kvs = qs + T;  // [2 buffers][K, V]
  int warp = threadIdx.x >> 5;
  QueryTile<HD> t(seq, heads, kv_heads);
  auto start = [&](int i) { t.start_kv(kvs, k, v, i, seq); };
  t.start_own(qs, q, seq);
  start(0);
  commit_copies();
  // Scores in log2 units; m the running maximum and l the running sum of rows g and g+8.
  float sl2 = scale * LOG2E, m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f}, acc[HD / 8][4] = {};
  for (int i = 0; i < t.tiles; i++) {
    next_tile(i, t.tiles, start);
    const bf16* ks = kvs + (i & 1) * 2 * T;
    int k0 = i * FLASH_ROWS;
    float s[FLASH_ROWS / 8][4], correction[2];
    tile_scores<HD, FLASH_ROWS>(s, qs + 16 * warp * (HD + FLASH_PAD), ks);
    softmax_tile<FLASH_ROWS>(s, m, l, correction, sl2, 0.f, [&](int n, int e) { return k0 + frag_col(n, e) > t.row0 + frag_row(e); });
#pragma unroll
    for (int n = 0; n < HD / 8; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[n][e] *= correction[e >> 1];
    tile_accumulate<HD, FLASH_ROWS>(acc, s, ks + T);
    __syncthreads();  // this buffer is refilled next
  }
  finish_rows<HD>(o, lse, acc, m, l, t, seq);
}

// dQ = scale · dS·K with dS = P ⊙ (dP − delta), P = exp(scale·Q·Kᵀ − lse), dP = dO·Vᵀ.
template <int HD>
__device__ void flash_backward_dq(bf16* dq, const bf16* d_o, const bf16* q, const bf16* k, const bf16* v, const float* lse, const float* delta,
                                  int seq, int heads, int kv_heads, float scale) {
  const int T = FLASH_ROWS * (HD + FLASH_PAD);
  extern __shared__ uint4 shared[];
  bf16* qs = reinterpret_cast<bf16*>(shared);
  bf16* dos = qs + T;
  bf16* kvs = dos + T;  // [2 buffers][K, V]
  int warp = threadIdx.x >> 5;
  QueryTile<HD> t(seq, heads, kv_heads);
  auto start = [&](int i) { t.start_kv(kvs, k, v, i, seq); };
  t.start_own(qs, q, seq);
  t.start_own(dos, d_o, seq);
  start(0);
  commit_copies();
  float sl2 = scale * LOG2E, row_lse[2], row_delta[2], acc[HD / 8][4] = {};
  t.row_stats(row_lse, row_delta, lse, delta, seq);
  for (int i = 0; i < t.tiles; i++) {
    next_tile(i, t.tiles, start);
    const bf16* ks = kvs + (i & 1) * 2 * T;
    int k0 = i * FLASH_ROWS;
    float s[FLASH_ROWS / 8][4], dp[FLASH_ROWS / 8][4];
    tile_scores<HD, FLASH_ROWS>(s, qs + 16 * warp * (HD + FLASH_PAD), ks);
    tile_scores<HD, FLASH_ROWS>(dp, dos + 16 * warp * (HD + FLASH_PAD), ks + T);
#pragma unroll
    for (int n = 0; n < FLASH_ROWS / 8; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        int r = e >> 1;
        float p = k0 + frag_col(n, e) > t.row0 + frag_row(e) ? 0.f : fast_exp2(s[n][e] * sl2 - row_lse[r]);
        s[n][e] = p * (dp[n][e] - row_delta[r]);
      }
    tile_accumulate<HD, FLASH_ROWS>(acc, s, ks);
    __syncthreads();
  }
  float mul[2] = {scale, scale};
  store_rows<HD>(dq + t.at.q, acc, mul, t.row0, seq, t.at.q_stride);
}

// dV = Pᵀ·dO and dK = scale · dSᵀ·Q for a tile of keys, summed over the query heads that share
// the KV head (so no two blocks write the same rows). grid (key tiles, batch * kv_heads).
// Streamed tiles run over (query head of the group, query tile from the diagonal on).
template <int HD>
__device__ void flash_backward_dkdv(bf16* dk, bf16* dv, const bf16* d_o, const bf16* q, const bf16* k, const bf16* v, const float* lse,
                                    const float* delta, int seq, int heads, int kv_heads, float scale) {
  const int QN = FLASH_DKDV_QUERIES, T = FLASH_ROWS * (HD + FLASH_PAD), QT = QN * (HD + FLASH_PAD);
  extern __shared__ uint4 shared[];
  bf16* ks = reinterpret_cast<bf16*>(shared);
  bf16* vs = ks + T;
  bf16* qdos = vs + T;                                         // [2 buffers][Q, dO]
  float* rows_s = reinterpret_cast<float*>(qdos + 4 * QT);  // [2 buffers][lse, delta]
  int warp = threadIdx.x >> 5, b = blockIdx.y / kv_heads, kvh = blockIdx.y % kv_heads, group = heads / kv_heads;
  int k0 = blockIdx.x * FLASH_ROWS, key0 = k0 + 16 * warp;
  int per_head = (seq - k0 + QN - 1) / QN, tiles = group * per_head;
  Heads kv_at(b, 0, kvh, seq, heads, kv_heads, HD);
  auto start = [&](int i) {
    int h = kvh * group + i / per_head, q0 = k0 + (i % per_head) * QN;
    Heads at(b, h, kvh, seq, heads, kv_heads, HD);
    u64 head_rows = ((u64)b * heads + h) * seq;
    start_tile<HD>(qdos + (i & 1) * 2 * QT, q + at.q, q0, QN, seq, at.q_stride);
    start_tile<HD>(qdos + (i & 1) * 2 * QT + QT, d_o + at.q, q0, QN, seq, at.q_stride);
    start_floats<FLASH_THREADS>(rows_s + (i & 1) * 2 * QN, lse + head_rows, q0, QN, seq);
    start_floats<FLASH_THREADS>(rows_s + (i & 1) * 2 * QN + QN, delta + head_rows, q0, QN, seq);
  };
  start_tile<HD>(ks, k + kv_at.kv, k0, FLASH_ROWS, seq, kv_at.kv_stride);
  start_tile<HD>(vs, v + kv_at.kv, k0, FLASH_ROWS, seq, kv_at.kv_stride);
  start(0);
  commit_copies();
  float sl2 = scale * LOG2E, dk_acc[HD / 8][4] = {}, dv_acc[HD / 8][4] = {};
  for (int i = 0; i < tiles; i++) {
    next_tile(i, tiles, start);
    const bf16* qs = qdos + (i & 1) * 2 * QT;
    const bf16* dos = qs + QT;
    const float* lse_s = rows_s + (i & 1) * 2 * QN;
    const float* delta_s = lse_s + QN;
    int q0 = k0 + (i % per_head) * QN;
    // Transposed tiles: rows are this warp's 16 keys, columns the QN queries. A query past the
    // sequence's end has zero Q, dO, lse and delta, so it adds nothing.
    float pt[QN / 8][4], dst[QN / 8][4];
    tile_scores<HD, QN>(pt, ks + 16 * warp * (HD + FLASH_PAD), qs);
    tile_scores<HD, QN>(dst, vs + 16 * warp * (HD + FLASH_PAD), dos);
#pragma unroll
    for (int n = 0; n < QN / 8; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        int c = frag_col(n, e);
        float p = key0 + frag_row(e) > q0 + c ? 0.f : fast_exp2(pt[n][e] * sl2 - lse_s[c] * LOG2E);
        pt[n][e] = p;
        dst[n][e] = p * (dst[n][e] - delta_s[c]);
      }
    tile_accumulate<HD, QN>(dv_acc, pt, dos);
    tile_accumulate<HD, QN>(dk_acc, dst, qs);
    __syncthreads();
  }
  float ones[2] = {1.f, 1.f}, scales[2] = {scale, scale};
  store_rows<HD>(dk + kv_at.kv, dk_acc, scales, key0, seq, kv_at.kv_stride);
  store_rows<HD>(dv + kv_at.kv, dv_acc, ones, key0, seq, kv_at.kv_stride);
}

// One instance per supported head dimension (the host picks flash_*_<head_dim>).
#define FLASH_KERNELS(HD)                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(FLASH_THREADS) flash_forward_##HD(bf16* o, float* lse, const bf16* q, const bf16* k,       \
                                                                                 const bf16* v, int seq, int heads, int kv_heads,       \
                                                                                 float scale) {                                         \
    flash_forward<HD>(o, lse, q, k, v, seq, heads, kv_heads, scale);                                                                      \
  }                                                                                                                                       \
  extern "C" __global__ void __launch_bounds__(FLASH_THREADS)                                                                             \
      flash_backward_dq_##HD(bf16* dq, const bf16* d_o, const bf16* q, const bf16* k, const bf16* v, const float* lse, const float* delta, \
                             int seq, int heads, int kv_heads, float scale) {                                                            \
    flash_backward_dq<HD>(dq, d_o, q, k, v, lse, delta, seq, heads, kv_heads, scale);                                                     \
  }                                                                                                                                       \
  extern "C" __global__ void __launch_bounds__(FLASH_THREADS)                                                                             \
      flash_backward_dkdv_##HD(bf16* dk, bf16* dv, const bf16* d_o, const bf16* q, const bf16* k, const bf16* v, const float* lse,       \
                               const float* delta, int seq, int heads, int kv_heads, float scale) {                                      \
    flash_backward_dkdv<HD>(dk, dv, d_o, q, k, v, lse, delta, seq, heads, kv_heads, scale);                                               \
  }

FLASH_KERNELS(16)
FLASH_KERNELS(32)
FLASH_KERNELS(64)
FLASH_KERNELS(128)

// delta = rowsum(dO ⊙ O) per (batch, position, head) row of head_dim, written in [batch, heads,
// seq] order. It equals sum_j P_j dP_j, the backward's softmax correction. A row is head_dim / 8
// threads reading 16 bytes of each (head_dim a power of two from 16 to 256: the threads of a row
// are an aligned group within a warp).
extern "C" __global__ void attention_delta(float* delta, const bf16* d_o, const bf16* o, u64 rows, int seq, int heads, int head_dim) {
  int lanes = head_dim / 8;
  u64 t = blockIdx.x * (u64)blockDim.x + threadIdx.x, row = t / lanes;
  float sum = 0.f;
  if (row < rows) {
    float a[8], b[8];
    u64 at = row * head_dim + t % lanes * 8;
    load8(a, d_o + at);
    load8(b, o + at);
#pragma unroll
    for (int j = 0; j < 8; j++) sum += a[j] * b[j];
  }
  for (int off = lanes / 2; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  u64 b = row / ((u64)seq * heads), i = row / heads % seq, h = row % heads;
  if (row < rows && t % lanes == 0) delta[(b * heads + h) * seq + i] = sum;
}
