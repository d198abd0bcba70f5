//! Hopper's warpgroup matrix multiply (wgmma, sm_90a) as CUDA wrappers for the Hopper attention
//! kernels: one inline-asm statement each, its N/2 fp32 accumulator operands spelled out. They
//! are generated, since 64 hand-numbered operands per statement invite a slip.

/// `wgmma_ss<N>(float (*d)[4], u64 a, u64 b, int accumulate)`: d (64 × N fp32, the
/// accumulator fragments of kernels/attention.cu's layout) = A·Bᵀ, plus d when `accumulate`;
/// A (64 × 16) and B (N × 16) bf16 in shared memory, both K-major, by descriptor.
///
/// `wgmma_rs<N>(float (*d)[4], const unsigned* a, u64 b)`: d += A·B; A (64 × 16) from
/// registers (four bf16 pairs a thread), B (16 × N) in shared memory with N contiguous (MN-major,
/// the transpose flag set).
///
/// Both are templates on N, specialised for each N in `ns`.
pub fn wrappers(ns: &[usize]) -> String {
    let mut out = "template <int N> __device__ void wgmma_ss(float (*d)[4], u64 a, u64 b, int accumulate);
                   template <int N> __device__ void wgmma_rs(float (*d)[4], const unsigned* a, u64 b);
"
    .to_string();
    for &n in ns {
        let regs = n / 2;
        let d = (0..regs).map(|i| format!("%{i}")).collect::<Vec<_>>().join(", ");
        let d_operands = (0..regs).map(|i| format!("\"+f\"(d[{}][{}])", i / 4, i % 4)).collect::<Vec<_>>().join(", ");
        out += &format!(
            "template <> __device__ __forceinline__ void wgmma_ss<{n}>(float (*d)[4], u64 a, u64 b, int accumulate) {{\n  \
             asm volatile(\"{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{acc}, 0;\\n\"\n    \
             \"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.bf16.bf16 {{{d}}}, %{a}, %{b}, p, 1, 1, 0, 0;\\n}}\\n\"\n    \
             : {d_operands}\n    : \"l\"(a), \"l\"(b), \"r\"(accumulate));\n}}\n",
            a = regs,
            b = regs + 1,
            acc = regs + 2,
        );
        out += &format!(
            "template <> __device__ __forceinline__ void wgmma_rs<{n}>(float (*d)[4], const unsigned* a, u64 b) {{\n  \
             asm volatile(\"{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{one}, 0;\\n\"\n    \
             \"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.bf16.bf16 {{{d}}}, {{%{a0}, %{a1}, %{a2}, %{a3}}}, %{b}, p, 1, 1, 1;\\n}}\\n\"\n    \
             : {d_operands}\n    : \"r\"(a[0]), \"r\"(a[1]), \"r\"(a[2]), \"r\"(a[3]), \"l\"(b), \"r\"(1));\n}}\n",
            a0 = regs,
            a1 = regs + 1,
            a2 = regs + 2,
            a3 = regs + 3,
            b = regs + 4,
            one = regs + 5,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accumulator_register_is_an_operand_once() {
        let text = wrappers(&[64]);
        assert!(text.contains("template <> __device__ __forceinline__ void wgmma_ss<64>("));
        assert!(text.contains("template <> __device__ __forceinline__ void wgmma_rs<64>("));
        assert!(text.contains("m64n64k16.f32.bf16.bf16 {%0, %1,"));
        assert!(text.contains("%31}, %32, %33, p, 1, 1, 0, 0;"), "SS: descriptors after the 32 accumulators, K-major A and B");
        assert!(text.contains("%31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;"), "RS: A in four registers, B transposed");
        assert!(text.contains("\"+f\"(d[7][3])") && !text.contains("d[8]"));
    }
}
