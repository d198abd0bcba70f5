//! The two 8-bit float formats NCCL reduces (OCP FP8 E4M3 and E5M2), for the host path's
//! reductions: exact decoding and round-to-nearest-even encoding.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fp8 {
    /// 4 exponent bits, 3 mantissa bits, no infinity, NaN = S.1111.111, max 448.
    E4M3,
    /// 5 exponent bits, 2 mantissa bits, IEEE-style infinities and NaNs, max 57344.
    E5M2,
}

impl Fp8 {
    fn bits(self) -> (i32, i32) {
        match self {
            Fp8::E4M3 => (4, 3),
            Fp8::E5M2 => (5, 2),
        }
    }

    pub fn decode(self, code: u8) -> f64 {
        let (e_bits, m_bits) = self.bits();
        let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
        let exponent = ((code & 0x7F) >> m_bits) as i32;
        let mantissa = (code & ((1 << m_bits) - 1)) as i32;
        let bias = (1 << (e_bits - 1)) - 1;
        let max_exponent = (1 << e_bits) - 1;
        match self {
            Fp8::E4M3 if exponent == max_exponent && mantissa == (1 << m_bits) - 1 => return f64::NAN,
            Fp8::E5M2 if exponent == max_exponent => {
                return if mantissa == 0 { sign * f64::INFINITY } else { f64::NAN };
            }
            _ => {}
        }
        let scale = (1u64 << m_bits) as f64;
        if exponent == 0 {
            sign * (mantissa as f64 / scale) * 2f64.powi(1 - bias)
        } else {
            sign * (1.0 + mantissa as f64 / scale) * 2f64.powi(exponent - bias)
        }
    }

    /// Nearest code to `x`, ties to the even code; overflow gives NaN (E4M3) or infinity (E5M2).
    pub fn encode(self, x: f64) -> u8 {
        let nan = match self {
            Fp8::E4M3 => 0x7F,
            Fp8::E5M2 => 0x7E,
        };
        if x.is_nan() {
            return nan;
        }
        let sign = if x.is_sign_negative() { 0x80 } else { 0 };
        let magnitude = x.abs();
        // Positive finite codes are ordered by value: binary search, then pick the nearer.
        let finite_max = match self {
            Fp8::E4M3 => 0x7Eu8,
            Fp8::E5M2 => 0x7B,
        };
        if magnitude > self.decode(finite_max) {
            let half_step_past_max = self.decode(finite_max) + (self.decode(finite_max) - self.decode(finite_max - 1)) / 2.0;
            if magnitude < half_step_past_max {
                return sign | finite_max;
            }
            return match self {
                Fp8::E4M3 => sign | nan,
                Fp8::E5M2 => sign | 0x7C,
            };
        }
        let (mut lo, mut hi) = (0u8, finite_max);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.decode(mid) <= magnitude {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let (dlo, dhi) = (magnitude - self.decode(lo), self.decode(hi) - magnitude);
        let code = if dlo < dhi || (dlo == dhi && lo % 2 == 0) { lo } else { hi };
        sign | code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finite_code_round_trips() {
        for fmt in [Fp8::E4M3, Fp8::E5M2] {
            for code in 0..=255u8 {
                let x = fmt.decode(code);
                if x.is_finite() && code != 0x80 {
                    assert_eq!(fmt.encode(x), code, "{fmt:?} {code:#x}");
                }
            }
        }
    }

    #[test]
    fn known_values_and_rounding() {
        assert_eq!(Fp8::E4M3.decode(0x7E), 448.0);
        assert_eq!(Fp8::E5M2.decode(0x7B), 57344.0);
        assert!(Fp8::E4M3.decode(0x7F).is_nan());
        assert_eq!(Fp8::E5M2.decode(0x7C), f64::INFINITY);
        // 17 lies halfway between 16 (0x58, even) and 18 (0x59): ties to even
        assert_eq!(Fp8::E4M3.encode(17.0), 0x58);
        assert_eq!(Fp8::E4M3.encode(17.5), 0x59);
        assert_eq!(Fp8::E4M3.encode(1e6), 0x7F);
        assert_eq!(Fp8::E5M2.encode(-1e9), 0xFC);
    }
}
