// Causal GQA attention for Hopper (sm_90a), the layouts, log-sum-exp and backward algorithm
// of attention.cu (whose helpers it uses; it is compiled after it), on Hopper's warpgroup
// tensor-core instructions. A block is two consumer warpgroups owning an item's 128 rows
// (queries, or keys for dK/dV), 64 each, and a producer warpgroup. The other side streams
// through shared memory tile by tile (pipeline()), HOPPER_STAGES buffers filled by the tensor
// memory accelerator (TMA) in wgmma's 128-byte-swizzled layout, one producer thread issuing
// every copy through the tensor maps the host encodes (ops/tensor_map.rs). The kernels are
// persistent, a block an SM taking items in turn, so that the next item's tiles land while the
// consumers finish the last (produce()). Products of two tiles (S = Q·Kᵀ, dP = dO·Vᵀ and their
// transposes) read both from shared memory; products that accumulate (O += P·V, dQ += dS·K, dV += Pᵀ·dO,
// dK += dSᵀ·Q) take the left factor from the registers it was computed in and read the right
// one transposed (MN-major).
// The wgmma_* wrappers (src/backend/cuda/ops/wgmma.rs) and the HOPPER_* tile sizes
// (attention.rs) are prepended; everything that issues Hopper instructions compiles only for sm_90a.

static_assert(HOPPER_ROWS == 128 && HOPPER_THREADS == 256, "a block's consumers are two warpgroups of 64 rows");
static_assert(HOPPER_PRODUCER_THREADS == 128, "the producer is a warpgroup, setmaxnreg's unit");
#define HOPPER_BLOCK (HOPPER_THREADS + HOPPER_PRODUCER_THREADS)
// setmaxnreg moves registers between warpgroups within what the block was launched with: a
// thread's share of the SM's 65536, in multiples of 8.
static_assert(HOPPER_THREADS * HOPPER_CONSUMER_REGISTERS + HOPPER_PRODUCER_THREADS * HOPPER_PRODUCER_REGISTERS <= HOPPER_BLOCK * ((65536 / HOPPER_BLOCK) & ~7),
              "the consumers take no more registers than the producers give");
static_assert(HOPPER_KEYS == 128, "S is one m64n128 product per warpgroup");
static_assert(HOPPER_DQ_KEYS == 64 && HOPPER_DKDV_QUERIES == 64, "the backward's S and dP (or their transposes) are m64n64 products");

// A tensor map (ops/tensor_map.rs): 128 opaque bytes, a kernel parameter.
struct alignas(64) TensorMap {
  u64 opaque[16];
};

// A wgmma shared-memory matrix descriptor: 128-byte swizzle, 8-row groups 1024 bytes apart,
// `leading` bytes between 64-column panels (read for MN-major operands only), for the matrix
// `offset` bytes past `address`. The offset is added to the low word alone, in 32 bits, so that
// the high word stays one constant: the address field counts 16 bytes and no tile reaches the
// end of shared memory, so the sum never carries out of it.
__device__ __forceinline__ u64 descriptor(unsigned address, unsigned leading, unsigned offset) {
  unsigned low = (((address & 0x3FFFF) >> 4) | (((leading & 0x3FFFF) >> 4) << 16)) + (offset >> 4);
  return (u64)((1024 >> 4) | (1u << 30)) << 32 | low;
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
#pragma unroll
  for (int kk = 0; kk < HD / 16; kk++) {
    // Columns 16kk..16kk+15: panel kk / 4, 32 bytes into its rows per step (the hardware applies
    // the swizzle on the address bits above).
    unsigned step = (kk & 3) * 32;
    wgmma_ss<N>(s, descriptor(a, 16, (kk >> 2) * a_rows * 128 + step), descriptor(b, 16, (kk >> 2) * N * 128 + step), kk > 0);
  }
}

// Issues acc (64 × HD) += p (64 × K, bf16 pairs in A-operand registers) · the tile of K rows at
// `b` (not committed).
template <int HD, int K>
__device__ __forceinline__ void issue_accumulate(float (*acc)[4], const unsigned (*p)[4], unsigned b) {
#pragma unroll
  for (int kk = 0; kk < K / 16; kk++) wgmma_rs<HD>(acc, p[kk], descriptor(b, K * 128, kk * 16 * 128));
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

// This thread's warpgroup, broadcast from the warp's first lane so that the compiler knows it is
// the same across the warp and keeps what is computed from it (descriptors) in uniform registers.
__device__ __forceinline__ int warpgroup() { return __shfl_sync(0xffffffffu, threadIdx.x >> 7, 0); }

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

template <int HD>
constexpr unsigned OWN_ROWS_BYTES = 64 * HD * 2;

// An item's own tile ([HD/64 panels][HOPPER_ROWS][64], as copy_tile lays it out) is copied a
// warpgroup's 64 rows at a time, each warpgroup's when it is done with the last item's (its
// wgmma reads only its own rows): copies warpgroup w's rows, from row0 + 64w of head `head`
// through `map` (boxes of 64 rows), into tile `tile`, with mbarrier `bar`, which the caller has
// expect OWN_ROWS_BYTES<HD> for each tensor copied so.
template <int HD>
__device__ __forceinline__ void copy_own_rows(unsigned tile, const TensorMap& map, int head, int row0, int b, int w, unsigned bar) {
  copy_tile<HD, HOPPER_ROWS>(tile + w * 64 * 128, map, head, row0 + 64 * w, b, bar);  // panels HOPPER_ROWS rows apart
}

// Tiles of HOPPER_ROWS rows in a sequence.
__device__ __forceinline__ int row_tiles(int seq) { return (seq + HOPPER_ROWS - 1) / HOPPER_ROWS; }

// The order of a kernel's items: `units` (the heads of every batch, or KV heads for dK/dV) of
// `tiles` row tiles each, `per_group` units at a time and their heaviest tiles first, so that
// the blocks running together stream the same few heads' K and V (Q and dO for dK/dV), which L2
// then holds (FlashAttention-3's head swizzle). Item i is tile rank `rank` (0: the heaviest) of
// unit `unit`.
struct ItemOrder {
  int rank, unit;
  __device__ ItemOrder(int item, int units, int tiles, int per_group) {
    int first = item / (per_group * tiles) * per_group, size = min(per_group, units - first), within = item - first * tiles;
    rank = within / size;
    unit = first + within % size;
  }
};

// How many units of `bytes` streamed bytes each HOPPER_L2_BYTES holds, at least one.
__device__ __forceinline__ int units_in_l2(u64 bytes) { return (int)max(1ull, HOPPER_L2_BYTES / bytes); }

// An item of the Hopper forward or dQ kernel (attention.cu's QueryBlock): HOPPER_ROWS queries,
// 64 a warpgroup, and K and V tiles of KEYS keys swizzled in HOPPER_STAGES buffers. Its order's
// units are the heads of every batch, grouped by whole KV heads, and rank r is the r-th query
// tile from the last.
template <int HD, int KEYS>
struct HopperQueryTile : QueryBlock<HD, HOPPER_ROWS, KEYS> {
  static constexpr unsigned TILE = KEYS * HD * 2;  // bytes of one K or V tile
  int first_row;                                    // this warpgroup's first row
  __device__ HopperQueryTile(int item, int batch, int seq, int heads, int kv_heads)
      : HopperQueryTile(ItemOrder(item, batch * heads, row_tiles(seq), units_in_l2((u64)seq * HD * 4) * (heads / kv_heads)), seq, heads, kv_heads) {}
  __device__ HopperQueryTile(ItemOrder at, int seq, int heads, int kv_heads)
      : QueryBlock<HD, HOPPER_ROWS, KEYS>(row_tiles(seq) - 1 - at.rank, at.unit, seq, heads, kv_heads), first_row(this->q0 + 64 * (threadIdx.x >> 7)) {}

  // Copies warpgroup w's rows of the item's own tile of a q-like tensor (Q or dO) to shared
  // address `tile`.
  __device__ void copy_own(unsigned tile, const TensorMap& map, int w, unsigned bar) const {
    copy_own_rows<HD>(tile, map, this->h, this->q0, this->b, w, bar);
  }

  // Where buffer `buf` of `kvs` ([HOPPER_STAGES buffers][K, V]) has its K; its V follows, TILE on.
  __device__ unsigned key_tile(unsigned kvs, int buf) const { return kvs + buf * 2 * TILE; }

  // Copies key tile i into buffer `buf`.
  __device__ void copy_kv(unsigned kvs, const TensorMap& k, const TensorMap& v, int i, int buf, unsigned bar) const {
    copy_tile<HD, KEYS>(key_tile(kvs, buf), k, this->kvh, i * KEYS, this->b, bar);
    copy_tile<HD, KEYS>(key_tile(kvs, buf) + TILE, v, this->kvh, i * KEYS, this->b, bar);
  }

  // Whether the key tile from key k0 reaches past this warpgroup's first row: only there is the
  // causal mask looked at (keys past the sequence's end are past every row that is stored).
  __device__ bool crosses_diagonal(int k0) const { return k0 + KEYS - 1 > first_row; }
};

// A block's mbarriers: per buffer one that says its tile has landed and one that its consumers
// are done reading it; per consumer warpgroup one that its rows of the item's own tiles (Q, dO;
// K, V for dK/dV) have landed and one that it is done reading them; and per buffer the item
// whose first tile it holds.
struct Ring {
  unsigned landed, read, own_landed, own_read;  // own_*: warpgroup w's at + 8w
  volatile int* item;  // [HOPPER_STAGES]
  __device__ unsigned slot(unsigned bars, int j) const { return bars + 8 * (j % HOPPER_STAGES); }
  // The parity of the j-th streamed tile's phase of its buffer's barriers.
  __device__ static unsigned phase(int j) { return (unsigned)(j / HOPPER_STAGES) & 1; }
};

// Every thread of the block meets here once, before the warpgroups part.
__device__ __forceinline__ Ring setup_ring() {
  __shared__ alignas(8) u64 barriers[2 * HOPPER_STAGES + 4];
  __shared__ int item[HOPPER_STAGES];
  unsigned at = shared_address(barriers);
  Ring ring{at, at + 8 * HOPPER_STAGES, at + 16 * HOPPER_STAGES, at + 16 * HOPPER_STAGES + 16, item};
  if (threadIdx.x == 0) {
    for (int j = 0; j < HOPPER_STAGES; j++) {
      barrier_init(ring.slot(ring.landed, j), 1);
      barrier_init(ring.slot(ring.read, j), HOPPER_THREADS);
    }
    for (int w = 0; w < 2; w++) {
      barrier_init(ring.own_landed + 8 * w, 1);
      barrier_init(ring.own_read + 8 * w, HOPPER_THREADS / 2);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");  // seen by the TMA unit
  }
  __syncthreads();
  return ring;
}

// Where a block's items come from. A persistent kernel has a block an SM, each taking the next
// item (in ItemOrder) from `counter` ([next item, blocks done]) until none is left, so that the
// blocks end together (FlashAttention-3's causal scheduler); the last block to run out puts the
// counter back to zero for the next launch. That needs a kernel's launches never to overlap:
// every launch is on the GPU's one stream (kernels.rs's launch!). Without a counter, a block
// (SPLIT of them in a cluster) has one item.
struct Items {
  unsigned* counter;
  int count;
  // The n-th item this block takes: `count` past the last.
  __device__ int next(int n, int split) const {
    if (!counter) return n == 0 ? blockIdx.x / split : count;
    int item = (int)atomicAdd(counter, 1u);
    if (item >= count) {
      __threadfence();  // this block's last take of `counter` comes before its count as done
      if (atomicAdd(counter + 1, 1u) == gridDim.x - 1) {
        atomicExch(counter, 0u);
        atomicExch(counter + 1, 0u);
      }
    }
    return min(item, count);
  }
};

// The producer warpgroup (threads from HOPPER_THREADS) gives its registers to the consumers, and
// its first thread takes the block's items in turn and issues every copy of their tiles: the
// block's j-th streamed tile goes to buffer j % STAGES once its consumers are done reading the
// buffer's last tile, and a consumer warpgroup's rows of an item's own tiles are copied after its
// first streamed tile (which need not wait), once that warpgroup is done with the previous
// item's, warpgroup 0's first (it takes the first turn, so it mostly ends first). A warpgroup
// that ends an item first thus computes the next item's first products and pointwise step while
// the other ends the last; their turns meet again after that. Each item, and then the end
// (`count`), is published in its first tile's buffer, with its 'landed' barrier. make(item) is
// the item, with its `tiles`; copy(made, i, buffer, bar) has mbarrier `bar` expect the bytes of
// the made item's tile i and issues the copies of it into the buffer; copy_own(made, w, bar) does
// so for warpgroup w's rows of the own tiles. Returns whether this thread is a producer (the
// caller's consumers go on).
template <typename Make, typename Copy, typename CopyOwn>
__device__ __forceinline__ bool produce(const Ring& ring, const Items& items, int split, Make make, Copy copy, CopyOwn copy_own) {
  if (threadIdx.x < HOPPER_THREADS) {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(HOPPER_CONSUMER_REGISTERS));
    return false;
  }
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(HOPPER_PRODUCER_REGISTERS));
  if (threadIdx.x == HOPPER_THREADS)
    for (int n = 0, j = 0;; n++) {
      int item = items.next(n, split);
      auto claim = [&] {
        if (j >= HOPPER_STAGES) barrier_wait(ring.slot(ring.read, j), Ring::phase(j) ^ 1);
      };
      auto own_free = [&](int w) {
        if (n > 0) barrier_wait(ring.own_read + 8 * w, (n - 1) & 1);
      };
      if (item == items.count) {
        claim();
        own_free(0);  // every copy has landed before the producer leaves
        own_free(1);
        ring.item[j % HOPPER_STAGES] = item;
        barrier_arrive(ring.slot(ring.landed, j));
        break;
      }
      auto t = make(item);
      for (int i = 0; i < t.tiles; i++, j++) {
        claim();
        if (i == 0) ring.item[j % HOPPER_STAGES] = item;
        copy(t, i, j % HOPPER_STAGES, ring.slot(ring.landed, j));
        if (i == 0)
          for (int w = 0; w < 2; w++) {
            own_free(w);
            copy_own(t, w, ring.own_landed + 8 * w);
          }
      }
    }
  __syncwarp();
  return true;
}

// The consumers' next item, which starts at the block's j-th streamed tile: -1 past the last.
__device__ __forceinline__ int next_item(const Ring& ring, int j, int count) {
  barrier_wait(ring.slot(ring.landed, j), Ring::phase(j));
  int item = ring.item[j % HOPPER_STAGES];
  return __shfl_sync(0xffffffffu, item < count ? item : -1, 0);  // uniform (warpgroup())
}

// The software pipeline the consumers run over an item's `tiles` streamed tiles, the block's
// j0-th on, in HOPPER_STAGES buffers: pass i issues the products of tile i + 1 (`products`, say
// S = Q·Kᵀ), then the accumulating products of tile i (`accumulate`, say O += P·V) from the
// operand registers the previous pass packed; `pointwise` (the softmax, or the backward's P and
// dS) runs on tile i + 1's products as soon as they are done, while the tensor cores still
// accumulate; once those are done too, `retire` marks their registers free and `pack` fills the
// operands from the pointwise results (and may rewrite the accumulators); `retire` also pins
// those writes before the next products are fenced. The callbacks get the tile's index i in the
// item and its buffer. The first tile's products and the last tile's accumulation are peeled off
// the loop, so that every product in it is issued unconditionally (ptxas then keeps them
// asynchronous). Without `overlap` (where two tiles' products, the accumulators and the operands
// would not fit a thread's registers together) a pass accumulates tile i, then computes tile
// i + 1's products.
// The warpgroups do not wait for each other tile by tile: each arrives at a buffer's 'read'
// barrier when done with it, and at its 'own_read' after the item's last products (the only ones
// that read the own tiles); the item's own tiles are the block's n-th (`n`, for their barriers'
// phase). They take turns issuing a pass's products (two named barriers), so that one's
// pointwise step runs under the other's products.
template <bool overlap, typename Products, typename Pointwise, typename Retire, typename Pack, typename Accumulate>
__device__ __forceinline__ void pipeline(const Ring& ring, int j0, int n, int tiles, Products products, Pointwise pointwise, Retire retire,
                                         Pack pack, Accumulate accumulate) {
  static_assert(HOPPER_STAGES >= 3, "tile i accumulates while tile i + 1's products are computed and tile i + 2 lands");
  int wg = warpgroup();
  // Broadcast, like warpgroup(): the products' descriptors are then computed in uniform registers.
  auto buffer = [&](int i) { return __shfl_sync(0xffffffffu, (j0 + i) % HOPPER_STAGES, 0); };
  auto wait_landed = [&](int i) { barrier_wait(ring.slot(ring.landed, j0 + i), Ring::phase(j0 + i)); };
  auto done_with = [&](int i) { barrier_arrive(ring.slot(ring.read, j0 + i)); };
  auto done_with_own = [&](int i) {
    if (i + 1 == tiles) barrier_arrive(ring.own_read + 8 * wg);
  };
  // Turns: warpgroup w waits on named barrier 1 + w, which the other's 128 threads arrive at.
  // Warpgroup 0 goes first; warpgroup 1 gives no turn after its last, so that every arrival is
  // waited for.
  auto my_turn = [&] { asm volatile("bar.sync %0, 256;" ::"r"(1 + wg) : "memory"); };
  auto your_turn = [&](int i) {
    if (!(wg == 1 && i + 2 == tiles)) asm volatile("bar.arrive %0, 256;" ::"r"(2 - wg) : "memory");
  };
  if (wg == 1 && tiles > 1) asm volatile("bar.arrive 1, 256;" ::: "memory");
  wait_landed(0);
  barrier_wait(ring.own_landed + 8 * wg, n & 1);
  wgmma_fence();
  products(0, buffer(0));
  wgmma_commit();
  wgmma_wait_all();
  done_with_own(0);
  pointwise(0, buffer(0));
  pack();
  for (int i = 0; i + 1 < tiles; i++) {
    wait_landed(i + 1);
    retire();  // the accumulators and operands `pack` wrote stay before the fence
    wgmma_fence();
    my_turn();
    if (overlap) {
      products(i + 1, buffer(i + 1));
      wgmma_commit();
      accumulate(i, buffer(i));
      wgmma_commit();
      your_turn(i);
      wgmma_wait_one();
      done_with_own(i + 1);
      pointwise(i + 1, buffer(i + 1));
      wgmma_wait_all();
      retire();
      done_with(i);
    } else {
      accumulate(i, buffer(i));
      wgmma_commit();
      wgmma_wait_all();
      retire();
      done_with(i);
      wgmma_fence();
      products(i + 1, buffer(i + 1));
      wgmma_commit();
      your_turn(i);
      wgmma_wait_all();
      done_with_own(i + 1);
      pointwise(i + 1, buffer(i + 1));
    }
    pack();
  }
  retire();
  wgmma_fence();
  accumulate(tiles - 1, buffer(tiles - 1));
  wgmma_commit();
  wgmma_wait_all();
  retire();
  done_with(tiles - 1);
}

// The causal forward over key tiles of HOPPER_KEYS (attention.cu's flash_forward on wgmma):
// S = Q·Kᵀ from shared Q and K, the online softmax, O += P·V with P from registers.
template <int HD>
__device__ void hopper_forward(bf16* o, float* lse, const TensorMap& q, const TensorMap& k, const TensorMap& v, int batch, int seq, int heads,
                               int kv_heads, float scale, unsigned* counter) {
  using Tile = HopperQueryTile<HD, HOPPER_KEYS>;
  unsigned qs = shared_address(aligned_shared()), kvs = qs + HOPPER_ROWS * HD * 2;  // kvs: after the Q tile
  Ring ring = setup_ring();
  Items items{counter, row_tiles(seq) * batch * heads};
  auto make = [&](int item) { return Tile(item, batch, seq, heads, kv_heads); };
  auto copy = [&](const Tile& t, int i, int buf, unsigned bar) {
    barrier_expect(bar, 2 * t.TILE);
    t.copy_kv(kvs, k, v, i, buf, bar);
  };
  auto copy_own = [&](const Tile& t, int w, unsigned bar) {
    barrier_expect(bar, OWN_ROWS_BYTES<HD>);
    t.copy_own(qs, q, w, bar);
  };
  if (produce(ring, items, 1, make, copy, copy_own)) return;
  int wg = warpgroup();
  for (int j = 0, n = 0, item; (item = next_item(ring, j, items.count)) >= 0; n++) {
    Tile t = make(item);
    float sl2 = scale * LOG2E, m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f}, correction[2], acc[HD / 8][4] = {}, s[HOPPER_KEYS / 8][4];
    unsigned p[HOPPER_KEYS / 16][4] = {};
    bool moved;  // whether the last tile's softmax moved the warp's maxima
    pipeline<true>(
        ring, j, n, t.tiles, [&](int, int buf) { issue_products<HD, HOPPER_KEYS>(s, qs + wg * 64 * 128, HOPPER_ROWS, t.key_tile(kvs, buf)); },
        [&](int i, int) {
          int k0 = i * HOPPER_KEYS;
          hold<HOPPER_KEYS>(s);
          if (t.crosses_diagonal(k0))
            moved = softmax_tile<HOPPER_KEYS>(s, m, l, correction, sl2, HOPPER_SOFTMAX_SLACK,
                                              [&](int n, int e) { return k0 + frag_col(n, e) > t.row0 + frag_row(e); });
          else
            moved = softmax_tile<HOPPER_KEYS>(s, m, l, correction, sl2, HOPPER_SOFTMAX_SLACK, [](int, int) { return false; });
        },
        [&] {
          hold<HD>(acc);
          hold_pairs<HOPPER_KEYS>(p);
        },
        [&] {
          pack_operand<HOPPER_KEYS>(p, s);
          if (moved)  // warp-uniform
#pragma unroll
            for (int n = 0; n < HD / 8; n++)
#pragma unroll
              for (int e = 0; e < 4; e++) acc[n][e] *= correction[e >> 1];
        },
        [&](int, int buf) { issue_accumulate<HD, HOPPER_KEYS>(acc, p, t.key_tile(kvs, buf) + t.TILE); });
    finish_rows<HD>(o, lse, acc, m, l, t, seq);
    j += t.tiles;
  }
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

// dQ = scale · dS·K (attention.cu's flash_backward_dq) for items of 128 query rows, streaming
// K and V tiles of HOPPER_DQ_KEYS keys: S and dP from shared Q, dO, K and V, dQ += dS·K with dS
// from registers.
template <int HD>
__device__ void hopper_backward_dq(bf16* dq, const TensorMap& d_o, const TensorMap& q, const TensorMap& k, const TensorMap& v, const float* lse,
                                   const float* delta, int batch, int seq, int heads, int kv_heads, float scale, unsigned* counter) {
  const int KN = HOPPER_DQ_KEYS;
  using Tile = HopperQueryTile<HD, KN>;
  unsigned qs = shared_address(aligned_shared()), dos = qs + HOPPER_ROWS * HD * 2, kvs = dos + HOPPER_ROWS * HD * 2;  // kvs: after Q and dO
  Ring ring = setup_ring();
  Items items{counter, row_tiles(seq) * batch * heads};
  auto make = [&](int item) { return Tile(item, batch, seq, heads, kv_heads); };
  auto copy = [&](const Tile& t, int i, int buf, unsigned bar) {
    barrier_expect(bar, 2 * t.TILE);
    t.copy_kv(kvs, k, v, i, buf, bar);
  };
  auto copy_own = [&](const Tile& t, int w, unsigned bar) {
    barrier_expect(bar, 2 * OWN_ROWS_BYTES<HD>);
    t.copy_own(qs, q, w, bar);
    t.copy_own(dos, d_o, w, bar);
  };
  if (produce(ring, items, 1, make, copy, copy_own)) return;
  int wg = warpgroup();
  for (int j = 0, n = 0, item; (item = next_item(ring, j, items.count)) >= 0; n++) {
    Tile t = make(item);
    float sl2 = scale * LOG2E, row_lse[2], row_delta[2], acc[HD / 8][4] = {}, s[KN / 8][4], dp[KN / 8][4];
    unsigned ds[KN / 16][4] = {};
    t.row_stats(row_lse, row_delta, lse, delta, seq);
    pipeline<true>(
        ring, j, n, t.tiles,
        [&](int, int buf) {
          issue_products<HD, KN>(s, qs + wg * 64 * 128, HOPPER_ROWS, t.key_tile(kvs, buf));
          issue_products<HD, KN>(dp, dos + wg * 64 * 128, HOPPER_ROWS, t.key_tile(kvs, buf) + t.TILE);
        },
        [&](int i, int) {
          int k0 = i * KN;
          probabilities_and_gradients<KN, false>(s, dp, t.row0, k0, t.crosses_diagonal(k0), seq, sl2, [&](int, int e) { return row_lse[e >> 1]; },
                                                 [&](int, int e) { return row_delta[e >> 1]; });
        },
        [&] {
          hold<HD>(acc);
          hold_pairs<KN>(ds);
        },
        [&] { pack_operand<KN>(ds, dp); }, [&](int, int buf) { issue_accumulate<HD, KN>(acc, ds, t.key_tile(kvs, buf)); });
    float mul[2] = {scale, scale};
    store_rows<HD>(dq + t.at.q, acc, mul, t.row0, seq, t.at.q_stride);
    j += t.tiles;
  }
}

// Every thread of the cluster meets here: what it wrote to shared memory before is seen by
// the cluster's threads after.
__device__ __forceinline__ void meet_cluster() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}

// With SPLIT > 1, the SPLIT blocks of a cluster (the same keys, a share each of the query heads
// of the group) sum their dK and dV accumulators into rank 0's, in rank order, so the result is
// deterministic: every other block parks its accumulators in its own shared memory (the tiles
// are done with), one float4 a consumer thread a slice, and rank 0 reads them through the
// cluster's distributed shared memory. The producers meet the cluster twice too
// (hopper_backward_dkdv).
template <int HD, int SPLIT>
__device__ void sum_over_cluster(float (*dk)[4], float (*dv)[4], float4* parked, unsigned rank) {
  static_assert(2 * HOPPER_ROWS * 4 <= (2 * HOPPER_ROWS + HOPPER_STAGES * 2 * HOPPER_DKDV_QUERIES) * 2, "dK and dV in fp32 fit the tiles' memory");
  asm volatile("bar.sync 3, 256;" ::: "memory");  // both consumer warpgroups are past their last reads of the tiles
  if (rank != 0)
#pragma unroll
    for (int n = 0; n < HD / 8; n++) {
      parked[n * HOPPER_THREADS + threadIdx.x] = make_float4(dk[n][0], dk[n][1], dk[n][2], dk[n][3]);
      parked[(HD / 8 + n) * HOPPER_THREADS + threadIdx.x] = make_float4(dv[n][0], dv[n][1], dv[n][2], dv[n][3]);
    }
  meet_cluster();
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
  meet_cluster();  // the other blocks keep their shared memory until rank 0 has read it
}

// An item of the dK/dV kernel. Its order's units are the KV heads of every batch, and rank r is
// key tile r (the first keys see the most queries); with SPLIT > 1, the block has its share of the
// group's query heads (by its rank in the cluster), and the items are in one group (the clusters
// are not persistent: the hardware's order balances them). Its streamed tiles: Q and dO of QN
// queries with their lse and delta, query head by query head, each from the diagonal.
template <int HD, int SPLIT>
struct KeyTile {
  static constexpr int QN = HOPPER_DKDV_QUERIES;
  int b, kvh, k0, first_head, per_head, tiles;
  __device__ KeyTile(int item, int batch, int seq, int heads, int kv_heads)
      : KeyTile(ItemOrder(item, batch * kv_heads, row_tiles(seq), SPLIT > 1 ? batch * kv_heads : units_in_l2((u64)(heads / kv_heads) * seq * HD * 4)),
                seq, heads, kv_heads) {}
  __device__ KeyTile(ItemOrder at, int seq, int heads, int kv_heads) {
    int share = heads / kv_heads / SPLIT;
    b = at.unit / kv_heads;
    kvh = at.unit % kv_heads;
    k0 = at.rank * HOPPER_ROWS;
    first_head = kvh * (heads / kv_heads) + (blockIdx.x % SPLIT) * share;
    per_head = (seq - k0 + QN - 1) / QN;
    tiles = share * per_head;
  }
  __device__ int head(int i) const { return first_head + i / per_head; }
  __device__ int first_query(int i) const { return k0 + (i % per_head) * QN; }
  // Where tile i's first query's lse (or delta) is in a map that starts `lead` values before it.
  __device__ int stats(int i, int lead, int heads, int seq) const { return (int)(((u64)b * heads + head(i)) * seq) + first_query(i) + lead; }
};

// dV = Pᵀ·dO and dK = scale · dSᵀ·Q (attention.cu's flash_backward_dkdv) for an item of 128
// keys, summed over the query heads that share the KV head; Q and dO tiles of
// HOPPER_DKDV_QUERIES rows stream over (query head of the group, query tile from the diagonal
// on). Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ from shared memory; Pᵀ and dSᵀ from registers into dV and dK.
// With SPLIT > 1 a cluster of SPLIT blocks shares the group's query heads (sum_over_cluster),
// an item a cluster (not persistent: the sum parks in the tiles' memory): the first key tiles,
// which see every query of every head of the group, were the backward's critical path where
// there are fewer blocks than SMs to balance them (a 70B layer's 8 KV heads at batch 1: 128
// blocks).
template <int HD, int SPLIT>
__device__ void hopper_backward_dkdv(bf16* dk, bf16* dv, const TensorMap& d_o, const TensorMap& q, const TensorMap& k, const TensorMap& v,
                                     const TensorMap& lse, const TensorMap& delta, int lse_lead, int delta_lead, int batch, int seq, int heads,
                                     int kv_heads, float scale, unsigned* counter) {
  const int QN = HOPPER_DKDV_QUERIES, RUN = HOPPER_STATS_RUN;
  static_assert(RUN >= QN + 3 && RUN % 32 == 0, "a run from the multiple of 4 at or below a tile's first query holds its QN; TMA writes 128-byte aligned");
  using Tile = KeyTile<HD, SPLIT>;
  const unsigned TK = HOPPER_ROWS * HD * 2, TQ = QN * HD * 2;
  char* base = aligned_shared();
  unsigned ks = shared_address(base), vs = ks + TK, qdos = vs + TK;                   // qdos: [HOPPER_STAGES buffers][Q, dO]
  float* rows_s = reinterpret_cast<float*>(base + 2 * TK + HOPPER_STAGES * 2 * TQ);  // [HOPPER_STAGES buffers][lse, delta runs]
  Ring ring = setup_ring();
  Items items{counter, row_tiles(seq) * batch * kv_heads};
  auto query_tile = [&](int buf) { return qdos + buf * 2 * TQ; };
  auto query_rows = [&](int buf) { return rows_s + buf * 2 * RUN; };
  // lse and delta are flat [batch, heads, seq] fp32, their maps starting lse_lead and delta_lead
  // values before them (ops/tensor_map.rs's floats()). A TMA box starts 16-byte aligned in
  // global memory and 128-byte aligned in shared memory, so a tile's QN values are copied in a
  // run of RUN from the multiple of 4 at or below them (& ~3), `shift` values in.
  auto shift = [](int at) { return at & 3; };
  auto make = [&](int item) { return Tile(item, batch, seq, heads, kv_heads); };
  auto copy = [&](const Tile& t, int i, int buf, unsigned bar) {
    int h = t.head(i), q0 = t.first_query(i);
    barrier_expect(bar, 2 * TQ + 2 * RUN * 4);
    copy_tile<HD, QN>(query_tile(buf), q, h, q0, t.b, bar);
    copy_tile<HD, QN>(query_tile(buf) + TQ, d_o, h, q0, t.b, bar);
    copy_run(shared_address(query_rows(buf)), lse, t.stats(i, lse_lead, heads, seq) & ~3, bar);
    copy_run(shared_address(query_rows(buf) + RUN), delta, t.stats(i, delta_lead, heads, seq) & ~3, bar);
  };
  auto copy_own = [&](const Tile& t, int w, unsigned bar) {
    barrier_expect(bar, 2 * OWN_ROWS_BYTES<HD>);
    copy_own_rows<HD>(ks, k, t.kvh, t.k0, t.b, w, bar);
    copy_own_rows<HD>(vs, v, t.kvh, t.k0, t.b, w, bar);
  };
  if (produce(ring, items, SPLIT, make, copy, copy_own)) {
    if (SPLIT > 1) {
      meet_cluster();
      meet_cluster();
    }
    return;
  }
  int wg = warpgroup(), warp = (threadIdx.x >> 5) & 3;
  for (int j = 0, n = 0, item; (item = next_item(ring, j, items.count)) >= 0; n++) {
    Tile t = make(item);
    int first_key = t.k0 + 64 * wg, key0 = first_key + 16 * warp;
    // Transposed tiles: rows are keys, columns the QN queries. A query past the sequence's end
    // has zero Q and dO, so it adds nothing; its lse and delta (the next head's) are masked, so
    // that no exp of them overflows into NaN.
    float sl2 = scale * LOG2E, dk_acc[HD / 8][4] = {}, dv_acc[HD / 8][4] = {}, pt[QN / 8][4], dst[QN / 8][4];
    unsigned pa[QN / 16][4] = {}, dsa[QN / 16][4] = {};
    // Serial: overlapped, two tiles' Sᵀ and dPᵀ beside dK and dV spilled 136 bytes a thread and
    // measured 2 % slower.
    pipeline<false>(
        ring, j, n, t.tiles,
        [&](int, int buf) {
          issue_products<HD, QN>(pt, ks + wg * 64 * 128, HOPPER_ROWS, query_tile(buf));
          issue_products<HD, QN>(dst, vs + wg * 64 * 128, HOPPER_ROWS, query_tile(buf) + TQ);
        },
        [&](int i, int buf) {
          int q0 = t.first_query(i);
          const float *lse_s = query_rows(buf) + shift(t.stats(i, lse_lead, heads, seq)),
                      *delta_s = query_rows(buf) + RUN + shift(t.stats(i, delta_lead, heads, seq));
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
        [&](int, int buf) {
          issue_accumulate<HD, QN>(dv_acc, pa, query_tile(buf) + TQ);
          issue_accumulate<HD, QN>(dk_acc, dsa, query_tile(buf));
        });
    unsigned rank = blockIdx.x % SPLIT;  // in the cluster
    if (SPLIT > 1) sum_over_cluster<HD, SPLIT>(dk_acc, dv_acc, reinterpret_cast<float4*>(base), rank);
    if (rank == 0) {
      Heads kv_at(t.b, 0, t.kvh, seq, heads, kv_heads, HD);
      float ones[2] = {1.f, 1.f}, scales[2] = {scale, scale};
      store_rows<HD>(dk + kv_at.kv, dk_acc, scales, key0, seq, kv_at.kv_stride);
      store_rows<HD>(dv + kv_at.kv, dv_acc, ones, key0, seq, kv_at.kv_stride);
    }
    j += t.tiles;
  }
}
#endif

// Launched on sm_90a only (the host checks); elsewhere the body is empty of Hopper instructions
// and the split dK/dV kernel no cluster. Each persistent kernel has its own item counter
// (Items), zero when the module loads.
#define HOPPER_KERNELS(HD)                                                                                                                    \
  __device__ unsigned hopper_forward_items_##HD[2], hopper_backward_dq_items_##HD[2], hopper_backward_dkdv_items_##HD[2];                    \
  extern "C" __global__ void __launch_bounds__(HOPPER_BLOCK, 1)                                                                               \
      hopper_forward_##HD(bf16* o, float* lse, const __grid_constant__ TensorMap q, const __grid_constant__ TensorMap k,                     \
                          const __grid_constant__ TensorMap v, int batch, int seq, int heads, int kv_heads, float scale) {                    \
    HOPPER_BODY(hopper_forward<HD>(o, lse, q, k, v, batch, seq, heads, kv_heads, scale, hopper_forward_items_##HD));                        \
  }                                                                                                                                           \
  extern "C" __global__ void __launch_bounds__(HOPPER_BLOCK, 1)                                                                               \
      hopper_backward_dq_##HD(bf16* dq, const __grid_constant__ TensorMap d_o, const __grid_constant__ TensorMap q,                          \
                              const __grid_constant__ TensorMap k, const __grid_constant__ TensorMap v, const float* lse, const float* delta,   \
                              int batch, int seq, int heads, int kv_heads, float scale) {                                                    \
    HOPPER_BODY(hopper_backward_dq<HD>(dq, d_o, q, k, v, lse, delta, batch, seq, heads, kv_heads, scale, hopper_backward_dq_items_##HD));   \
  }                                                                                                                                           \
  HOPPER_DKDV(HD, backward_dkdv, 1, , hopper_backward_dkdv_items_##HD)                                                                        \
  HOPPER_DKDV(HD, backward_dkdv_split, HOPPER_DKDV_SPLIT, HOPPER_CLUSTER(HOPPER_DKDV_SPLIT), nullptr)

// dK/dV, its GQA group on `split` blocks of a cluster (`cluster`: the attribute) or on one;
// `counter`: its items' (null: an item a cluster).
#define HOPPER_DKDV(HD, name, split, cluster, counter)                                                                                        \
  extern "C" __global__ void cluster __launch_bounds__(HOPPER_BLOCK, 1)                                                                       \
      hopper_##name##_##HD(bf16* dk, bf16* dv, const __grid_constant__ TensorMap d_o, const __grid_constant__ TensorMap q,                   \
                           const __grid_constant__ TensorMap k, const __grid_constant__ TensorMap v, const __grid_constant__ TensorMap lse,   \
                           const __grid_constant__ TensorMap delta, int lse_lead, int delta_lead, int batch, int seq, int heads, int kv_heads, \
                           float scale) {                                                                                                     \
    HOPPER_BODY(hopper_backward_dkdv<HD, split>(dk, dv, d_o, q, k, v, lse, delta, lse_lead, delta_lead, batch, seq, heads, kv_heads, scale,   \
                                                counter));                                                                                    \
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
