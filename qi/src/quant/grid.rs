//! The uniform min–max quantization grid of the GPTQ reference (IST-DASLab/gptq `quant.py`,
//! `Quantizer.find_params` with `mse=False` and the module-level `quantize`), used by both
//! [`rtn`](super::rtn) and [`gptq`](super::gptq).
//!
//! For one set of values `x` (a row, a group of a row, or the whole tensor):
//! ```text
//! xmin = min(min(x), 0)            xmax = max(max(x), 0)      // the range always contains 0
//! sym: xmax = max(|xmin|, xmax);   if xmin < 0 { xmin = -xmax }
//! if xmin == 0 && xmax == 0 { xmin = -1; xmax = +1 }
//! scale = (xmax - xmin) / maxq                                 // maxq = 2^bits - 1
//! zero  = sym ? (maxq + 1) / 2 : round(-xmin / scale)
//! q(x)  = scale * (clamp(round(x / scale) + zero, 0, maxq) - zero)
//! ```
//! `round` is `torch.round`: round half to **even**. The arithmetic is done in the element type
//! `T` in exactly this order, so with `T = f32` the results are bit-identical to the reference's
//! float32 computation.
//!
//! A quirk kept on purpose: with `sym` and a set of non-negative values, `xmin` stays 0 (only
//! `xmin < 0` is mirrored), so `scale = xmax / maxq` while `zero = (maxq + 1) / 2`; the grid then
//! spans `[-zero·scale, (maxq - zero)·scale]` and clips values above `(maxq - zero)/maxq · xmax`.
//! That is what the reference does.
use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// The float types the grid works in (f32 for RTN as the reference, f64 inside GPTQ).
pub trait Real:
    Copy
    + PartialOrd
    + Debug
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + Send
    + Sync
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    /// Round half to even (`torch.round`).
    fn round_even(self) -> Self;
    fn abs(self) -> Self;
    fn is_finite(self) -> bool;
    fn min_of(self, o: Self) -> Self {
        if o < self {
            o
        } else {
            self
        }
    }
    fn max_of(self, o: Self) -> Self {
        if o > self {
            o
        } else {
            self
        }
    }
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn round_even(self) -> Self {
        self.round_ties_even()
    }
    fn abs(self) -> Self {
        f32::abs(self)
    }
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn round_even(self) -> Self {
        self.round_ties_even()
    }
    fn abs(self) -> Self {
        f64::abs(self)
    }
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
}

/// Bit width and symmetry of a uniform grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UniformGrid {
    pub bits: u8,
    pub sym: bool,
}

/// Scale and zero point of one row / group / tensor (the reference's `scale`, `zero` entries).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridParams<T> {
    pub scale: T,
    pub zero: T,
}

impl UniformGrid {
    pub fn new(bits: u8, sym: bool) -> anyhow::Result<Self> {
        super::check_bits(bits)?;
        Ok(UniformGrid { bits, sym })
    }

    /// `2^bits - 1`, the largest integer level.
    pub fn maxq<T: Real>(&self) -> T {
        T::from_f64(((1u32 << self.bits) - 1) as f64)
    }

    /// `find_params` for one set of values (`Quantizer.find_params`, `mse=False`).
    pub fn params<T: Real>(&self, values: impl IntoIterator<Item = T>) -> GridParams<T> {
        let mut lo = T::ZERO;
        let mut hi = T::ZERO;
        for v in values {
            lo = lo.min_of(v);
            hi = hi.max_of(v);
        }
        self.params_from_range(lo, hi)
    }

    /// `find_params` given the already 0-clamped `xmin <= 0 <= xmax` of the values.
    pub fn params_from_range<T: Real>(&self, xmin: T, xmax: T) -> GridParams<T> {
        let maxq: T = self.maxq();
        let (mut xmin, mut xmax) = (xmin.min_of(T::ZERO), xmax.max_of(T::ZERO));
        if self.sym {
            xmax = xmin.abs().max_of(xmax);
            if xmin < T::ZERO {
                xmin = -xmax;
            }
        }
        if xmin == T::ZERO && xmax == T::ZERO {
            xmin = -T::ONE;
            xmax = T::ONE;
        }
        let scale = (xmax - xmin) / maxq;
        let zero = if self.sym { (maxq + T::ONE) / T::from_f64(2.0) } else { (-xmin / scale).round_even() };
        GridParams { scale, zero }
    }

    /// The integer level `clamp(round(x / scale) + zero, 0, maxq)` of `x`.
    #[inline]
    pub fn level<T: Real>(&self, x: T, p: &GridParams<T>) -> T {
        let maxq: T = self.maxq();
        ((x / p.scale).round_even() + p.zero).max_of(T::ZERO).min_of(maxq)
    }

    /// The dequantized value `scale * (level - zero)` of `x` (the reference's `quantize`).
    #[inline]
    pub fn quantize<T: Real>(&self, x: T, p: &GridParams<T>) -> T {
        p.scale * (self.level(x, p) - p.zero)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quant_grid_asym_known_values() {
        // x = [-1, 0.5, 2], 2 bits: maxq 3, xmin -1, xmax 2, scale = 3/3 = 1, zero = round(1) = 1.
        let g = UniformGrid::new(2, false).unwrap();
        let p = g.params([-1.0f32, 0.5, 2.0]);
        assert_eq!(p, GridParams { scale: 1.0, zero: 1.0 });
        // 0.5/1 = 0.5 -> round half even 0 -> level 1 -> value 0.
        assert_eq!(g.quantize(0.5f32, &p), 0.0);
        // 1.5 -> 2 (even) -> level 3 -> value 2; 2.5 -> 2 -> level 3 (clamped anyway) -> 2.
        assert_eq!(g.quantize(1.5f32, &p), 2.0);
        assert_eq!(g.quantize(-3.0f32, &p), -1.0); // clamped to level 0
    }

    #[test]
    fn quant_grid_zero_guard_and_sym_nonnegative_quirk() {
        let g = UniformGrid::new(4, true).unwrap();
        // All zero: xmin=-1, xmax=1, scale = 2/15, zero = 8.
        let p = g.params([0.0f32, 0.0]);
        assert_eq!(p.scale, 2.0f32 / 15.0);
        assert_eq!(p.zero, 8.0);
        // Non-negative row with sym: xmin stays 0 -> scale = 1.5/15 = 0.1, zero = 8; the largest
        // representable value is (15-8)*0.1 = 0.7, so 1.5 is clipped to 0.7 (reference behaviour).
        let p = g.params([0.0f32, 1.5]);
        assert_eq!(p.scale, 1.5f32 / 15.0);
        assert_eq!(g.quantize(1.5f32, &p), p.scale * 7.0);
    }
}
