//! Element types of the sweeps: NCCL's full list, with what the exact data pattern needs to
//! know about each (width, how integers encode, how large a value stays exact).

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    Int8,
    Uint8,
    Int32,
    Uint32,
    Int64,
    Uint64,
    Float16,
    Float32,
    Float64,
    Bfloat16,
    Float8e4m3,
    Float8e5m2,
}

/// How a dtype stores a value: two's-complement integer or a binary float with
/// `exponent_bits` and `mantissa_bits` (explicit bits, implicit leading one not counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Signed,
    Unsigned,
    Float { exponent_bits: u32, mantissa_bits: u32 },
}

impl DType {
    pub const ALL: [DType; 12] = [
        DType::Int8,
        DType::Uint8,
        DType::Int32,
        DType::Uint32,
        DType::Int64,
        DType::Uint64,
        DType::Float16,
        DType::Float32,
        DType::Float64,
        DType::Bfloat16,
        DType::Float8e4m3,
        DType::Float8e5m2,
    ];

    /// nccl-tests' names (as printed in its `type` column).
    pub fn name(self) -> &'static str {
        match self {
            DType::Int8 => "int8",
            DType::Uint8 => "uint8",
            DType::Int32 => "int32",
            DType::Uint32 => "uint32",
            DType::Int64 => "int64",
            DType::Uint64 => "uint64",
            DType::Float16 => "half",
            DType::Float32 => "float",
            DType::Float64 => "double",
            DType::Bfloat16 => "bfloat16",
            DType::Float8e4m3 => "f8e4m3",
            DType::Float8e5m2 => "f8e5m2",
        }
    }

    pub fn size(self) -> usize {
        match self {
            DType::Int8 | DType::Uint8 | DType::Float8e4m3 | DType::Float8e5m2 => 1,
            DType::Float16 | DType::Bfloat16 => 2,
            DType::Int32 | DType::Uint32 | DType::Float32 => 4,
            DType::Int64 | DType::Uint64 | DType::Float64 => 8,
        }
    }

    pub fn encoding(self) -> Encoding {
        let float = |exponent_bits, mantissa_bits| Encoding::Float { exponent_bits, mantissa_bits };
        match self {
            DType::Int8 | DType::Int32 | DType::Int64 => Encoding::Signed,
            DType::Uint8 | DType::Uint32 | DType::Uint64 => Encoding::Unsigned,
            DType::Float16 => float(5, 10),
            DType::Float32 => float(8, 23),
            DType::Float64 => float(11, 52),
            DType::Bfloat16 => float(8, 7),
            DType::Float8e4m3 => float(4, 3),
            DType::Float8e5m2 => float(5, 2),
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self.encoding(), Encoding::Float { .. })
    }

    /// Largest magnitude M such that every integer in [-M, M] (or [0, M] unsigned) is stored
    /// exactly and sums of such integers up to M never overflow.
    pub fn exact_capacity(self) -> i64 {
        let bits = 8 * self.size() as u32;
        match self.encoding() {
            Encoding::Signed => (1i64 << (bits.min(63) - 1)) - 1,
            Encoding::Unsigned => (1i64 << bits.min(62)) - 1,
            Encoding::Float { mantissa_bits, .. } => 1i64 << (mantissa_bits + 1).min(62),
        }
    }

    /// Largest k such that 2^k is stored exactly (finite, no overflow): bounds products.
    pub fn max_power_of_two(self) -> u32 {
        let bits = 8 * self.size() as u32;
        match self.encoding() {
            Encoding::Signed => (bits - 2).min(60),
            Encoding::Unsigned => (bits - 1).min(60),
            // e4m3 has no infinity and its top exponent holds finite values up to 448 = 1.75*2^8
            Encoding::Float { .. } if self == DType::Float8e4m3 => 8,
            Encoding::Float { exponent_bits, .. } => ((1u32 << (exponent_bits - 1)) - 1).min(60),
        }
    }

    /// Bit pattern (little-endian, low `size()` bytes) of the integer `v`, which must be
    /// exactly representable in this type.
    pub fn encode(self, v: i64) -> u64 {
        match self.encoding() {
            Encoding::Signed | Encoding::Unsigned => (v as u64) & self.mask(),
            Encoding::Float { exponent_bits, mantissa_bits } => encode_integer_as_float(v, exponent_bits, mantissa_bits),
        }
    }

    pub fn mask(self) -> u64 {
        if self.size() == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * self.size())) - 1
        }
    }
}

/// Exact float encoding of an integer whose magnitude fits the mantissa (caller's duty):
/// the same arithmetic as `encode_int` in kernels/fill_verify.cu.
pub fn encode_integer_as_float(v: i64, exponent_bits: u32, mantissa_bits: u32) -> u64 {
    if v == 0 {
        return 0;
    }
    let sign = if v < 0 { 1u64 } else { 0 };
    let magnitude = v.unsigned_abs();
    let exponent = 63 - magnitude.leading_zeros(); // floor(log2 |v|)
    let bias = (1u64 << (exponent_bits - 1)) - 1;
    let fraction = if exponent >= mantissa_bits {
        (magnitude >> (exponent - mantissa_bits)) & ((1u64 << mantissa_bits) - 1)
    } else {
        (magnitude << (mantissa_bits - exponent)) & ((1u64 << mantissa_bits) - 1)
    };
    (sign << (exponent_bits + mantissa_bits)) | ((exponent as u64 + bias) << mantissa_bits) | fraction
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = String;
    /// Accepts nccl-tests' names and NCCL's enum spellings (`float32`, `bf16`, `fp16`, ...).
    fn from_str(s: &str) -> Result<Self, String> {
        let d = match s.to_ascii_lowercase().as_str() {
            "int8" | "char" => DType::Int8,
            "uint8" => DType::Uint8,
            "int32" | "int" => DType::Int32,
            "uint32" => DType::Uint32,
            "int64" => DType::Int64,
            "uint64" => DType::Uint64,
            "half" | "float16" | "fp16" => DType::Float16,
            "float" | "float32" | "fp32" => DType::Float32,
            "double" | "float64" | "fp64" => DType::Float64,
            "bfloat16" | "bf16" => DType::Bfloat16,
            "f8e4m3" | "fp8e4m3" | "float8e4m3" => DType::Float8e4m3,
            "f8e5m2" | "fp8e5m2" | "float8e5m2" => DType::Float8e5m2,
            _ => {
                let names: Vec<_> = DType::ALL.iter().map(|d| d.name()).collect();
                return Err(format!("unknown dtype '{s}' (one of: {}, or all)", names.join(", ")));
            }
        };
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    #[test]
    fn float_encoding_matches_ieee_for_every_exact_integer() {
        let cap = DType::Float16.exact_capacity();
        for v in -cap..=cap {
            assert_eq!(DType::Float16.encode(v) as u16, f16::from_f64(v as f64).to_bits(), "{v}");
        }
        let cap = DType::Bfloat16.exact_capacity();
        for v in -cap..=cap {
            assert_eq!(DType::Bfloat16.encode(v) as u16, bf16::from_f64(v as f64).to_bits(), "{v}");
        }
        for v in [-16_777_216i64, -3, -1, 0, 1, 7, 1 << 20, 16_777_216] {
            assert_eq!(DType::Float32.encode(v) as u32, (v as f32).to_bits());
            assert_eq!(DType::Float64.encode(v), (v as f64).to_bits());
        }
        assert_eq!(DType::Float64.encode(1 << 60), ((1u64 << 60) as f64).to_bits());
    }

    #[test]
    fn fp8_encodings_match_the_ocp_tables() {
        // e4m3: 1.0 = 0x38, 16 = 0x58, 256 = 0x78, -2 = 0xC0; e5m2: 1.0 = 0x3C, 8 = 0x48, -3 = 0xC2
        assert_eq!(DType::Float8e4m3.encode(1), 0x38);
        assert_eq!(DType::Float8e4m3.encode(16), 0x58);
        assert_eq!(DType::Float8e4m3.encode(256), 0x78);
        assert_eq!(DType::Float8e4m3.encode(-2), 0xC0);
        assert_eq!(DType::Float8e5m2.encode(1), 0x3C);
        assert_eq!(DType::Float8e5m2.encode(8), 0x48);
        assert_eq!(DType::Float8e5m2.encode(-3), 0xC2);
    }

    #[test]
    fn integers_wrap_to_their_width() {
        assert_eq!(DType::Int8.encode(-1), 0xFF);
        assert_eq!(DType::Uint32.encode(5), 5);
        assert_eq!(DType::Int64.encode(-2), u64::MAX - 1);
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for d in DType::ALL {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
        }
        assert_eq!("bf16".parse::<DType>().unwrap(), DType::Bfloat16);
        assert!("float128".parse::<DType>().unwrap_err().contains("unknown dtype"));
    }

    #[test]
    fn capacities_bound_exact_integers_and_powers() {
        assert_eq!(DType::Bfloat16.exact_capacity(), 256);
        assert_eq!(DType::Float8e5m2.exact_capacity(), 8);
        assert_eq!(DType::Int8.exact_capacity(), 127);
        assert_eq!(DType::Uint8.exact_capacity(), 255);
        assert_eq!(DType::Float16.max_power_of_two(), 15);
        assert_eq!(DType::Int8.max_power_of_two(), 6);
    }
}
