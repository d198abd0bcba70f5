// Causal GQA attention for Hopper (sm_90a), the layouts, log-sum-exp and backward algorithm
// of attention.cu (whose helpers it uses; it is compiled after it), on Hopper's warpgroup
// tensor-core instructions. A block is two warpgroups owning 128 rows (queries, or keys for
// dK/dV), 64 each; the other side streams through shared memory tile by tile, HOPPER_STAGES
// buffers filled by the tensor memory accelerator (TMA) in wgmma's 128-byte-swizzled layout
// (pipeline()), one thread issuing every copy through the tensor maps the host encodes
// (ops/tensor_map.rs). Products of two tiles (S = Q·Kᵀ, dP = dO·Vᵀ and their transposes) read
// both from shared memory; products that accumulate (O += P·V, dQ += dS·K, dV += Pᵀ·dO,
// dK += dSᵀ·Q) take the left factor from the registers it was computed in and read the right
// one transposed (MN-major).
// The wgmma_* wrappers (src/backend/cuda/ops/wgmma.rs) and the HOPPER_* tile sizes
// (attention.rs) are prepended; everything that issues Hopper instructions compiles only for sm_90a.

static_assert(HOPPER_ROWS == 128 && HOPPER_THREADS == 256, "a block is two warpgroups of 64 rows");
static_assert(HOPPER_KEYS == 128, "S is one m64n128 product per warpgroup");
static_assert(HOPPER_DQ_KEYS == 64 && HOPPER_DKDV_QUERIES == 64, "the backward's S and dP (or their transposes) are m64n64 products");

// A tensor map (ops/tensor_map.rs): 128 opaque bytes, a kernel parameter.
struct alignas(64) TensorMap {
  u64 opaque[16];
};

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

// Issues s (64 × N) = A·Bᵀ, K = HD: A this warpgroup's 64 rows at `a` of a tile of `a_rows`
// rows, B the tile of N rows at `b` (not committed: the caller may add more to the group).
template <int HD, int N>
__device__ __forceinline__ void issue_products(float (*s)[4], unsigned a, int a_rows, unsigned b) {
  u64 da = descriptor(a, 16), db = descriptor(b, 16);
#pragma unroll
  for (int kk = 0; kk < HD / 16; kk++) {
    // Columns 16kk..16kk+15: panel kk / 4, 32 bytes into its rows per step (the hardware applies
    // the swizzle on the address bits above); a descriptor's address field counts 16 bytes and
    // no tile reaches its end, so an offset is added to it directly.
    unsigned step = (kk & 3) * 32;
    wgmma_ss<N>(s, da + (((kk >> 2) * a_rows * 128 + step) >> 4), db + (((kk >> 2) * N * 128 + step) >> 4), kk > 0);
  }
}

// Issues acc (64 × HD) += p (64 × K, bf16 pairs in A-operand registers) · the tile of K rows at
// `b` (not committed).
template <int HD, int K>
__device__ __forceinline__ void issue_accumulate(float (*acc)[4], const unsigned (*p)[4], unsigned b) {
  u64 db = descriptor(b, K * 128);
#pragma unroll
  for (int kk = 0; kk < K / 16; kk++) wgmma_rs<HD>(acc, p[kk], db + ((kk * 16 * 128) >> 4));
}

// A 64 × N accumulator as the bf16 pairs of wgmma's A operand: the accumulator layout of a
// product is the A-operand layout of the next, 16 columns per k-step.
template <int N>
__device__ __forceinline__ void pack_operand(unsigned (*p)[4], float (*s)[4]) {
#pragma unroll
  for (int kk = 0; kk < N / 16; kk++) {
    p[kk][0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
    p[kk][1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
    p[kk][2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    p[kk][3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
  }
}

// The start of the block's dynamic shared memory rounded up to the swizzle's 1024 bytes.
__device__ __forceinline__ char* aligned_shared() {
  extern __shared__ uint4 shared[];
  char* base = reinterpret_cast<char*>(shared);
  return base + ((1024 - (shared_address(base) & 1023)) & 1023);
}

// mbarriers (in shared memory at address `bar`) that count the arrivals of a tile's phase.
__device__ __forceinline__ void barrier_init(unsigned bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void barrier_arrive(unsigned bar) { asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory"); }
// Arrives, and has the current phase also wait for `bytes` more of TMA copies to land.
__device__ __forceinline__ void barrier_expect(unsigned bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void barrier_wait(unsigned bar, unsigned parity) {
  unsigned done;
  do
    asm volatile("{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\tselp.u32 %0, 1, 0, p;\n\t}"
                 : "=r"(done)
                 : "r"(bar), "r"(parity)
                 : "memory");
  while (!done);
}

// TMA copies into shared address `dst`, landing on mbarrier `bar` (the issuing block's own
// shared memory: a CTA's address is valid in its cluster's window).
__device__ __forceinline__ void copy_box(unsigned dst, const TensorMap& map, int c0, int c1, int c2, int c3, unsigned bar) {
  asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];" ::"r"(dst),
               "l"(&map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
               : "memory");
}
__device__ __forceinline__ void copy_run(unsigned dst, const TensorMap& map, int c0, unsigned bar) {
  asm volatile("cp.async.bulk.tensor.1d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2}], [%3];" ::"r"(dst), "l"(&map),
               "r"(c0), "r"(bar)
               : "memory");
}

// Copies rows [row0, row0 + ROWS) of head `head` of batch `b` through `map` (ops/tensor_map.rs's
// heads(): boxes of ROWS rows and 64 columns) into the tile at shared address `tile`, kept as
// HD/64 panels of [ROWS][64], each row's 128 bytes swizzled (16-byte chunk ^ row % 8): the
// layout wgmma's 128-byte swizzle reads, the tile 1024-byte aligned. Rows past the sequence's
// end land as zeros.
template <int HD, int ROWS>
__device__ __forceinline__ void copy_tile(unsigned tile, const TensorMap& map, int head, int row0, int b, unsigned bar) {
#pragma unroll
  for (int p = 0; p < HD / 64; p++) copy_box(tile + p * ROWS * 128, map, 64 * p, head, row0, b, bar);
}

// A block of the Hopper forward or dQ kernel (attention.cu's QueryBlock): HOPPER_ROWS queries,
// 64 a warpgroup, and K and V tiles of KEYS keys swizzled in HOPPER_STAGES buffers.
template <int HD, int KEYS>
struct HopperQueryTile : QueryBlock<HD, HOPPER_ROWS, KEYS> {
  static constexpr unsigned TILE = KEYS * HD * 2;  // bytes of one K or V tile
  int first_row;                                    // this warpgroup's first row
  __device__ HopperQueryTile(int seq, int heads, int kv_heads)
      : QueryBlock<HD, HOPPER_ROWS, KEYS>(seq, heads, kv_heads), first_row(this->q0 + 64 * (threadIdx.x >> 7)) {}

  // Copies this block's own tile of a q-like tensor (Q or dO) to shared address `tile`.
  __device__ void copy_own(unsigned tile, const TensorMap& map, unsigned bar) const {
    copy_tile<HD, HOPPER_ROWS>(tile, map, this->h, this->q0, this->b, bar);
  }

  // Where key tile i's K lies in `kvs` ([HOPPER_STAGES buffers][K, V]); its V follows, TILE on.
  __device__ unsigned key_tile(unsigned kvs, int i) const { return kvs + (i % HOPPER_STAGES) * 2 * TILE; }

  __device__ void copy_kv(unsigned kvs, const TensorMap& k, const TensorMap& v, int i, unsigned bar) const {
    copy_tile<HD, KEYS>(key_tile(kvs, i), k, this->kvh, i * KEYS, this->b, bar);
    copy_tile<HD, KEYS>(key_tile(kvs, i) + TILE, v, this->kvh, i * KEYS, this->b, bar);
  }

  // Whether the key tile from key k0 reaches past this warpgroup's first row: only there is the
  // causal mask looked at (keys past the sequence's end are past every row that is stored).
  __device__ bool crosses_diagonal(int k0) const { return k0 + KEYS - 1 > first_row; }
};

// The software pipeline every Hopper kernel runs over its `tiles` streamed tiles, STAGES
// (HOPPER_STAGES) buffers of them: pass i issues the products of tile i + 1 (`products`, say
// S = Q·Kᵀ), then the accumulating products of tile i (`accumulate`, say O += P·V) from the
// operand registers the previous pass packed; `pointwise` (the softmax, or the backward's P and
// dS) runs on tile i + 1's products as soon as they are done, while the tensor cores still
// accumulate; once those are done too, `retire` marks their registers free and `pack` fills the
// operands from the pointwise results (and may rewrite the accumulators); `retire` also pins
// those writes before the next products are fenced. copy(i, bar) has mbarrier `bar` expect the
// bytes of tile i (tile 0's with the caller's own tiles), then issues their TMA copies into
// buffer i % STAGES. The first tile's products and the last tile's accumulation are peeled off
// the loop, so that every product in it is issued unconditionally (ptxas then keeps them
// asynchronous). Without `overlap` (where two tiles' products, the accumulators and the operands
// would not fit a thread's registers together) a pass accumulates tile i, then computes tile
// i + 1's products.
// The warpgroups do not wait for each other tile by tile: each buffer has an mbarrier that says
// its tile has landed, and another that every thread is done reading it. One thread issues every
// copy: the first of warpgroup 1, which takes its turn after warpgroup 0 and so is the last to be
// done with a buffer; it refills a buffer as soon as both are. The warpgroups take turns issuing
// a pass's products (two named barriers), so that one's pointwise step runs under the other's
// products.
template <bool overlap, typename Copy, typename Products, typename Pointwise, typename Retire, typename Pack, typename Accumulate>
__device__ __forceinline__ void pipeline(int tiles, Copy copy, Products products, Pointwise pointwise, Retire retire, Pack pack,
                                         Accumulate accumulate) {
  constexpr int STAGES = HOPPER_STAGES;
  static_assert(STAGES >= 3, "tile i accumulates while tile i + 1's products are computed and tile i + 2 lands");
  __shared__ alignas(8) u64 barriers[2 * STAGES];  // [landed, read] a buffer
  unsigned landed = shared_address(barriers), read = landed + 8 * STAGES;
  auto slot = [](unsigned bars, int j) { return bars + 8 * (j % STAGES); };
  auto phase = [](int j) { return (unsigned)(j / STAGES) & 1; };
  int wg = threadIdx.x >> 7;
  bool copier = threadIdx.x == HOPPER_THREADS / 2;
  if (threadIdx.x == 0) {
    for (int j = 0; j < STAGES; j++) {
      barrier_init(slot(landed, j), 1);
      barrier_init(slot(read, j), HOPPER_THREADS);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");  // seen by the TMA unit
  }
  __syncthreads();
  auto start = [&](int j) { copy(j, slot(landed, j)); };
  // After pass i, tile i's buffer takes tile i + STAGES once every thread is done with it.
  auto done_with = [&](int i) {
    barrier_arrive(slot(read, i));
    if (copier && i + STAGES < tiles) {
      barrier_wait(slot(read, i), phase(i));
      start(i + STAGES);
    }
    __syncwarp();  // the copier's warp meets again before its next warpgroup-wide instruction
  };
  auto wait_landed = [&](int j) { barrier_wait(slot(landed, j), phase(j)); };
  // Turns: warpgroup w waits on named barrier 1 + w, which the other's 128 threads arrive at.
  // Warpgroup 0 goes first; warpgroup 1 gives no turn after its last, so that every arrival is
  // waited for.
  auto my_turn = [&] { asm volatile("bar.sync %0, 256;" ::"r"(1 + wg) : "memory"); };
  auto your_turn = [&](int i) {
    if (!(wg == 1 && i + 2 == tiles)) asm volatile("bar.arrive %0, 256;" ::"r"(2 - wg) : "memory");
  };
  if (wg == 1 && tiles > 1) asm volatile("bar.arrive 1, 256;" ::: "memory");
  if (copier)
    for (int j = 0; j < STAGES && j < tiles; j++) start(j);
  __syncwarp();
  wait_landed(0);
  wgmma_fence();
  products(0);
  wgmma_commit();
  wgmma_wait_all();
  pointwise(0);
  pack();
  for (int i = 0; i + 1 < tiles; i++) {
    wait_landed(i + 1);
    retire();  // the accumulators and operands `pack` wrote stay before the fence
    wgmma_fence();
    my_turn();
    if (overlap) {
      products(i + 1);
      wgmma_commit();
      accumulate(i);
      wgmma_commit();
      your_turn(i);
      wgmma_wait_one();
      pointwise(i + 1);
      wgmma_wait_all();
      retire();
      done_with(i);
    } else {
      accumulate(i);
      wgmma_commit();
      wgmma_wait_all();
      retire();
      done_with(i);
      wgmma_fence();
      products(i + 1);
      wgmma_commit();
      your_turn(i);
      wgmma_wait_all();
      pointwise(i + 1);
    }
    pack();
  }
  retire();
  wgmma_fence();
  accumulate(tiles - 1);
  wgmma_commit();
  wgmma_wait_all();
  retire();
}

// The causal forward over key tiles of HOPPER_KEYS (attention.cu's flash_forward on wgmma):
// S = Q·Kᵀ from shared Q and K, the online softmax, O += P·V with P from registers.
template <int HD>
__device__ void hopper_forward(bf16* o, float* lse, const TensorMap& q, const TensorMap& k, const TensorMap& v, int seq, int heads, int kv_heads,
                               float scale) {
  unsigned qs = shared_address(aligned_shared()), kvs = qs + HOPPER_ROWS * HD * 2;  // kvs: after the Q tile
  int wg = threadIdx.x >> 7;
  HopperQueryTile<HD, HOPPER_KEYS> t(seq, heads, kv_heads);
  auto copy = [&](int i, unsigned bar) {
    barrier_expect(bar, 2 * t.TILE + (i == 0 ? HOPPER_ROWS * HD * 2 : 0));
    if (i == 0) t.copy_own(qs, q, bar);
    t.copy_kv(kvs, k, v, i, bar);
  };
  float sl2 = scale * LOG2E, m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f}, correction[2], acc[HD / 8][4] = {}, s[HOPPER_KEYS / 8][4];
  unsigned p[HOPPER_KEYS / 16][4] = {};
  pipeline<true>(
      t.tiles, copy, [&](int i) { issue_products<HD, HOPPER_KEYS>(s, qs + wg * 64 * 128, HOPPER_ROWS, t.key_tile(kvs, i)); },
      [&](int i) {
        int k0 = i * HOPPER_KEYS;
        hold<HOPPER_KEYS>(s);
        if (t.crosses_diagonal(k0))
          softmax_tile<HOPPER_KEYS>(s, m, l, correction, sl2, [&](int n, int e) { return k0 + frag_col(n, e) > t.row0 + frag_row(e); });
        else
          softmax_tile<HOPPER_KEYS>(s, m, l, correction, sl2, [](int, int) { return false; });
      },
      [&] {
        hold<HD>(acc);
        hold_pairs<HOPPER_KEYS>(p);
      },
      [&] {
        pack_operand<HOPPER_KEYS>(p, s);
#pragma unroll
        for (int n = 0; n < HD / 8; n++)
#pragma unroll
          for (int e = 0; e < 4; e++) acc[n][e] *= correction[e >> 1];
      },
      [&](int i) { issue_accumulate<HD, HOPPER_KEYS>(acc, p, t.key_tile(kvs, i) + t.TILE); });
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

// The backward's pointwise step on a tile of scores s and of dP (accumulator fragments, 16
// rows a warp from `row0`, columns from `col0`), in place: s becomes P = exp(scale·s − lse) and
// dp becomes dS = P ⊙ (dP − delta), zero where the causal mask (key > query) falls. With
// `rows_are_keys`, rows are keys and columns queries (the transposed tiles of dK/dV); the
// lse (in log2 units) and delta of element (n, e) come from row_lse(n, e) and row_delta(n, e).
template <int N, typename Masked, typename Lse, typename Delta>
__device__ __forceinline__ void pointwise_backward(float (*s)[4], float (*dp)[4], float sl2, Masked masked, Lse row_lse, Delta row_delta) {
#pragma unroll
  for (int n = 0; n < N / 8; n++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      float p = masked(n, e) ? 0.f : fast_exp2(fmaf(s[n][e], sl2, -row_lse(n, e)));
      s[n][e] = p;
      dp[n][e] = p * (dp[n][e] - row_delta(n, e));
    }
}

template <int N, bool rows_are_keys, typename Lse, typename Delta>
__device__ __forceinline__ void probabilities_and_gradients(float (*s)[4], float (*dp)[4], int row0, int col0, bool edge, int seq, float sl2,
                                                            Lse row_lse, Delta row_delta) {
  hold<N>(s);
  hold<N>(dp);
  // The mask is looked at only in tiles that cross the diagonal, or (with `rows_are_keys`) the
  // sequence's end (`edge`): there it also takes the queries past the end.
  auto causal = [&](int n, int e) {
    int row = row0 + frag_row(e), col = col0 + frag_col(n, e);
    return rows_are_keys ? row > col || col >= seq : col > row;
  };
  if (edge)
    pointwise_backward<N>(s, dp, sl2, causal, row_lse, row_delta);
  else
    pointwise_backward<N>(s, dp, sl2, [](int, int) { return false; }, row_lse, row_delta);
}

// dQ = scale · dS·K (attention.cu's flash_backward_dq) for a block of 128 query rows, streaming
// K and V tiles of HOPPER_DQ_KEYS keys: S and dP from shared Q, dO, K and V, dQ += dS·K with dS
// from registers.
template <int HD>
__device__ void hopper_backward_dq(bf16* dq, const TensorMap& d_o, const TensorMap& q, const TensorMap& k, const TensorMap& v, const float* lse,
                                   const float* delta, int seq, int heads, int kv_heads, float scale) {
  const int KN = HOPPER_DQ_KEYS;
  HopperQueryTile<HD, KN> t(seq, heads, kv_heads);
  unsigned qs = shared_address(aligned_shared()), dos = qs + HOPPER_ROWS * HD * 2, kvs = dos + HOPPER_ROWS * HD * 2;  // kvs: after Q and dO
  int wg = threadIdx.x >> 7;
  auto copy = [&](int i, unsigned bar) {
    barrier_expect(bar, 2 * t.TILE + (i == 0 ? 2 * HOPPER_ROWS * HD * 2 : 0));
    if (i == 0) {
      t.copy_own(qs, q, bar);
      t.copy_own(dos, d_o, bar);
    }
    t.copy_kv(kvs, k, v, i, bar);
  };
  float sl2 = scale * LOG2E, row_lse[2], row_delta[2], acc[HD / 8][4] = {}, s[KN / 8][4], dp[KN / 8][4];
  unsigned ds[KN / 16][4] = {};
  t.row_stats(row_lse, row_delta, lse, delta, seq);
  pipeline<true>(
      t.tiles, copy,
      [&](int i) {
        issue_products<HD, KN>(s, qs + wg * 64 * 128, HOPPER_ROWS, t.key_tile(kvs, i));
        issue_products<HD, KN>(dp, dos + wg * 64 * 128, HOPPER_ROWS, t.key_tile(kvs, i) + t.TILE);
      },
      [&](int i) {
        int k0 = i * KN;
        probabilities_and_gradients<KN, false>(s, dp, t.row0, k0, t.crosses_diagonal(k0), seq, sl2, [&](int, int e) { return row_lse[e >> 1]; },
                                               [&](int, int e) { return row_delta[e >> 1]; });
      },
      [&] {
        hold<HD>(acc);
        hold_pairs<KN>(ds);
      },
      [&] { pack_operand<KN>(ds, dp); },
      [&](int i) { issue_accumulate<HD, KN>(acc, ds, t.key_tile(kvs, i)); });
  float mul[2] = {scale, scale};
  store_rows<HD>(dq + t.at.q, acc, mul, t.row0, seq, t.at.q_stride);
}

// With SPLIT > 1, the SPLIT blocks of a cluster (the same keys, a share each of the query heads
// of the group) sum their dK and dV accumulators into rank 0's, in rank order, so the result is
// deterministic: every other block parks its accumulators in its own shared memory (the tiles
// are done with), one float4 a thread a slice, and rank 0 reads them through the cluster's
// distributed shared memory.
template <int HD, int SPLIT>
__device__ void sum_over_cluster(float (*dk)[4], float (*dv)[4], float4* parked, unsigned rank) {
  static_assert(2 * HOPPER_ROWS * 4 <= (2 * HOPPER_ROWS + HOPPER_STAGES * 2 * HOPPER_DKDV_QUERIES) * 2, "dK and dV in fp32 fit the tiles' memory");
  __syncthreads();  // both warpgroups are past their last reads of the tiles
  if (rank != 0)
#pragma unroll
    for (int n = 0; n < HD / 8; n++) {
      parked[n * HOPPER_THREADS + threadIdx.x] = make_float4(dk[n][0], dk[n][1], dk[n][2], dk[n][3]);
      parked[(HD / 8 + n) * HOPPER_THREADS + threadIdx.x] = make_float4(dv[n][0], dv[n][1], dv[n][2], dv[n][3]);
    }
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
  if (rank == 0)
    for (unsigned r = 1; r < SPLIT; r++) {
      unsigned remote;
      asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(shared_address(parked)), "r"(r));
      auto add = [&](float* acc, int slice) {
        float x[4];
        asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];"
                     : "=f"(x[0]), "=f"(x[1]), "=f"(x[2]), "=f"(x[3])
                     : "r"(remote + (unsigned)(slice * HOPPER_THREADS + threadIdx.x) * 16)
                     : "memory");
#pragma unroll
        for (int e = 0; e < 4; e++) acc[e] += x[e];
      };
#pragma unroll
      for (int n = 0; n < HD / 8; n++) {
        add(dk[n], n);
        add(dv[n], HD / 8 + n);
      }
    }
  // The other blocks keep their shared memory until rank 0 has read it.
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}

// dV = Pᵀ·dO and dK = scale · dSᵀ·Q (attention.cu's flash_backward_dkdv) for a block of 128
// keys, summed over the query heads that share the KV head; Q and dO tiles of
// HOPPER_DKDV_QUERIES rows stream over (query head of the group, query tile from the diagonal
// on). Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ from shared memory; Pᵀ and dSᵀ from registers into dV and dK.
// Grid (SPLIT × batch × kv_heads, key tiles), the key tiles with the most queries first; with
// SPLIT > 1 a cluster of SPLIT blocks shares the group's query heads (sum_over_cluster): the
// first key tiles, which see every query of every head of the group, were the backward's
// critical path where there are fewer blocks than SMs to balance them (a 70B layer's 8 KV
// heads at batch 1: 128 blocks).
template <int HD, int SPLIT>
__device__ void hopper_backward_dkdv(bf16* dk, bf16* dv, const TensorMap& d_o, const TensorMap& q, const TensorMap& k, const TensorMap& v,
                                     const TensorMap& lse, const TensorMap& delta, int lse_lead, int delta_lead, int seq, int heads, int kv_heads, float scale) {
  const int QN = HOPPER_DKDV_QUERIES, RUN = HOPPER_STATS_RUN;
  static_assert(RUN >= QN + 3 && RUN % 32 == 0, "a run from the multiple of 4 at or below a tile's first query holds its QN; TMA writes 128-byte aligned");
  const unsigned TK = HOPPER_ROWS * HD * 2, TQ = QN * HD * 2;
  char* base = aligned_shared();
  unsigned ks = shared_address(base), vs = ks + TK, qdos = vs + TK;                   // qdos: [HOPPER_STAGES buffers][Q, dO]
  float* rows_s = reinterpret_cast<float*>(base + 2 * TK + HOPPER_STAGES * 2 * TQ);  // [HOPPER_STAGES buffers][lse, delta runs]
  int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, bkv = blockIdx.x / SPLIT, b = bkv / kv_heads, kvh = bkv % kv_heads;
  unsigned rank = blockIdx.x % SPLIT;  // in the cluster
  int share = heads / kv_heads / SPLIT, first_head = kvh * (heads / kv_heads) + rank * share;
  int k0 = blockIdx.y * HOPPER_ROWS, first_key = k0 + 64 * wg, key0 = first_key + 16 * warp;
  int per_head = (seq - k0 + QN - 1) / QN, tiles = share * per_head;
  Heads kv_at(b, 0, kvh, seq, heads, kv_heads, HD);
  auto query_tile = [&](int i) { return qdos + (i % HOPPER_STAGES) * 2 * TQ; };
  auto query_rows = [&](int i) { return rows_s + (i % HOPPER_STAGES) * 2 * RUN; };
  auto first_query = [&](int i) { return k0 + (i % per_head) * QN; };
  // lse and delta are flat [batch, heads, seq] fp32, their maps starting lse_lead and delta_lead
  // values before them (ops/tensor_map.rs's floats()). A TMA box starts 16-byte aligned in
  // global memory and 128-byte aligned in shared memory, so a tile's QN values are copied in a
  // run of RUN from the multiple of 4 at or below them (& ~3), `shift` values in.
  auto head = [&](int i) { return first_head + i / per_head; };
  auto stats = [&](int i, int lead) { return (int)(((u64)b * heads + head(i)) * seq) + first_query(i) + lead; };
  auto shift = [](int at) { return at & 3; };
  auto copy = [&](int i, unsigned bar) {
    int h = head(i), q0 = first_query(i);
    barrier_expect(bar, 2 * TQ + 2 * RUN * 4 + (i == 0 ? 2 * TK : 0));
    if (i == 0) {
      copy_tile<HD, HOPPER_ROWS>(ks, k, kvh, k0, b, bar);
      copy_tile<HD, HOPPER_ROWS>(vs, v, kvh, k0, b, bar);
    }
    copy_tile<HD, QN>(query_tile(i), q, h, q0, b, bar);
    copy_tile<HD, QN>(query_tile(i) + TQ, d_o, h, q0, b, bar);
    copy_run(shared_address(query_rows(i)), lse, stats(i, lse_lead) & ~3, bar);
    copy_run(shared_address(query_rows(i) + RUN), delta, stats(i, delta_lead) & ~3, bar);
  };
  // Transposed tiles: rows are keys, columns the QN queries. A query past the sequence's end
  // has zero Q and dO, so it adds nothing; its lse and delta (the next head's) are masked, so
  // that no exp of them overflows into NaN.
  float sl2 = scale * LOG2E, dk_acc[HD / 8][4] = {}, dv_acc[HD / 8][4] = {}, pt[QN / 8][4], dst[QN / 8][4];
  unsigned pa[QN / 16][4] = {}, dsa[QN / 16][4] = {};
  // Serial: overlapped, two tiles' Sᵀ and dPᵀ beside dK and dV spilled 136 bytes a thread and
  // measured 2 % slower.
  pipeline<false>(
      tiles, copy,
      [&](int i) {
        issue_products<HD, QN>(pt, ks + wg * 64 * 128, HOPPER_ROWS, query_tile(i));
        issue_products<HD, QN>(dst, vs + wg * 64 * 128, HOPPER_ROWS, query_tile(i) + TQ);
      },
      [&](int i) {
        const float *lse_s = query_rows(i) + shift(stats(i, lse_lead)), *delta_s = query_rows(i) + RUN + shift(stats(i, delta_lead));
        int q0 = first_query(i);
        probabilities_and_gradients<QN, true>(
            pt, dst, key0, q0, first_key + 63 > q0 || q0 + QN > seq, seq, sl2, [&](int n, int e) { return lse_s[frag_col(n, e)] * LOG2E; },
            [&](int n, int e) { return delta_s[frag_col(n, e)]; });
      },
      [&] {
        hold<HD>(dv_acc);
        hold<HD>(dk_acc);
        hold_pairs<QN>(pa);
        hold_pairs<QN>(dsa);
      },
      [&] {
        pack_operand<QN>(pa, pt);
        pack_operand<QN>(dsa, dst);
      },
      [&](int i) {
        issue_accumulate<HD, QN>(dv_acc, pa, query_tile(i) + TQ);
        issue_accumulate<HD, QN>(dk_acc, dsa, query_tile(i));
      });
  if (SPLIT > 1) {
    sum_over_cluster<HD, SPLIT>(dk_acc, dv_acc, reinterpret_cast<float4*>(base), rank);
    if (rank != 0) return;
  }
  float ones[2] = {1.f, 1.f}, scales[2] = {scale, scale};
  store_rows<HD>(dk + kv_at.kv, dk_acc, scales, key0, seq, kv_at.kv_stride);
  store_rows<HD>(dv + kv_at.kv, dv_acc, ones, key0, seq, kv_at.kv_stride);
}
#endif

// Launched on sm_90a only (the host checks); elsewhere the body is empty of Hopper instructions
// and the split dK/dV kernel no cluster.
#define HOPPER_KERNELS(HD)                                                                                                                  \
  extern "C" __global__ void __launch_bounds__(HOPPER_THREADS)                                                                              \
      hopper_forward_##HD(bf16* o, float* lse, const __grid_constant__ TensorMap q, const __grid_constant__ TensorMap k,                   \
                          const __grid_constant__ TensorMap v, int seq, int heads, int kv_heads, float scale) {                             \
    HOPPER_BODY(hopper_forward<HD>(o, lse, q, k, v, seq, heads, kv_heads, scale));                                                        \
  }                                                                                                                                         \
  extern "C" __global__ void __launch_bounds__(HOPPER_THREADS)                                                                              \
      hopper_backward_dq_##HD(bf16* dq, const __grid_constant__ TensorMap d_o, const __grid_constant__ TensorMap q,                        \
                              const __grid_constant__ TensorMap k, const __grid_constant__ TensorMap v, const float* lse, const float* delta, \
                              int seq, int heads, int kv_heads, float scale) {                                                             \
    HOPPER_BODY(hopper_backward_dq<HD>(dq, d_o, q, k, v, lse, delta, seq, heads, kv_heads, scale));                                      \
  }                                                                                                                                         \
  HOPPER_DKDV(HD, backward_dkdv, 1, )                                                                                                       \
  HOPPER_DKDV(HD, backward_dkdv_split, HOPPER_DKDV_SPLIT, HOPPER_CLUSTER(HOPPER_DKDV_SPLIT))

// dK/dV, its GQA group on `split` blocks of a cluster (`cluster`: the attribute) or on one.
#define HOPPER_DKDV(HD, name, split, cluster)                                                                                               \
  extern "C" __global__ void cluster __launch_bounds__(HOPPER_THREADS)                                                                      \
      hopper_##name##_##HD(bf16* dk, bf16* dv, const __grid_constant__ TensorMap d_o, const __grid_constant__ TensorMap q,                 \
                           const __grid_constant__ TensorMap k, const __grid_constant__ TensorMap v, const __grid_constant__ TensorMap lse, \
                           const __grid_constant__ TensorMap delta, int lse_lead, int delta_lead, int seq, int heads, int kv_heads, float scale) {       \
    HOPPER_BODY(hopper_backward_dkdv<HD, split>(dk, dv, d_o, q, k, v, lse, delta, lse_lead, delta_lead, seq, heads, kv_heads, scale));            \
  }

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define HOPPER_BODY(...) __VA_ARGS__
#define HOPPER_CLUSTER(blocks) __cluster_dims__(blocks, 1, 1)
#else
#define HOPPER_BODY(...) __trap()
#define HOPPER_CLUSTER(blocks)
#endif

HOPPER_KERNELS(64)
HOPPER_KERNELS(128)
