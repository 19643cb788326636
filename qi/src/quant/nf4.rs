//! bitsandbytes 4-bit quantization (NF4 and FP4), with optional double quantization of the absmax
//! statistics (`compress_statistics`), following bitsandbytes' CUDA kernels (`kQuantizeBlockwise`,
//! `dQuantizeNF4`, `dQuantizeFP4`, `dQuantize`) and `functional.quantize_4bit`:
//!
//! 1. The tensor is flattened (row-major) and cut into blocks of `block` values (64 by default; the
//!    last block may be shorter). Each block keeps `absmax = max |x|` (f32).
//! 2. Each value is normalized as `x · (1/absmax)` (f32 reciprocal, then multiply, as the kernel)
//!    and mapped to a 4-bit code by bitsandbytes' decision tree: `x > threshold` goes to the upper
//!    code, so a value exactly on a threshold takes the lower code. The thresholds are the kernel's
//!    f32 literals (midpoints between neighbouring code values).
//! 3. Dequantization is `table[code] · absmax` (f32).
//! 4. Double quantization: `offset = mean(absmax)`; `absmax - offset` is quantized with
//!    bitsandbytes' 8-bit blockwise quantizer (blocks of 256, the signed dynamic map of
//!    [`create_dynamic_map`], nearest code by the kernel's binary search) and dequantized as
//!    `code[q] · absmax2 + offset`; step 3 then uses these approximate absmax values.
//!
//! An all-zero block dequantizes to zeros (bitsandbytes gets ±0 there too). Weights are read as
//! f32; bitsandbytes usually receives f16/bf16 weights and returns that dtype, which adds that
//! type's rounding to the dequantized values (compose with [`fp16_round_trip`](super::fp16_round_trip)
//! to model it).
use super::spec::BNB4_BLOCKS;
use super::Matrix;
use crate::QiError;
use anyhow::Result;
use candle_core::Tensor;

/// The NF4 code book (bitsandbytes `get_4bit_type("nf4")`, code index = position).
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823029,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
];

/// `dQuantizeNF4` decision thresholds, ascending: the code is the number of thresholds `< x`.
const NF4_THRESHOLDS: [f32; 15] = [
    -0.8480964004993439,
    -0.6106329262256622,
    -0.4599952697753906,
    -0.33967943489551544,
    -0.23460740596055984,
    -0.13791173323988914,
    -0.045525018125772476,
    0.03979014977812767,
    0.1202552504837513,
    0.2035212516784668,
    0.2920137718319893,
    0.3893125355243683,
    0.5016634166240692,
    0.6427869200706482,
    0.8614784181118011,
];

/// bitsandbytes' FP4 (1 sign, 2 exponent, 1 mantissa bit, bias 2 in its convention) dequantization
/// table for the 3 magnitude bits, normalized by the format's max 12: the raw values are
/// `0b000 = 0, 0b001 = 0.0625, 0b010 = 8, 0b011 = 12, 0b100 = 4, 0b101 = 6, 0b110 = 2, 0b111 = 3`,
/// divided by 12 (the kernel's f32 literals). Bit 3 is the sign.
pub const FP4_DEQUANT: [f32; 8] = [0.0, 0.005208333333, 0.66666667, 1.0, 0.33333333, 0.5, 0.16666667, 0.25];

/// `dQuantizeFP4` magnitude thresholds, ascending, and the code of each interval.
const FP4_THRESHOLDS: [f32; 7] = [0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333];
const FP4_CODES_BY_MAGNITUDE: [u8; 8] = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011];

/// Which 4-bit type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bnb4Type {
    Nf4,
    Fp4,
}

impl Bnb4Type {
    /// Code of a normalized value (bitsandbytes' tree; ties go to the lower code).
    pub fn encode(self, x: f32) -> u8 {
        match self {
            Bnb4Type::Nf4 => NF4_THRESHOLDS.iter().filter(|&&t| x > t).count() as u8,
            Bnb4Type::Fp4 => {
                let sign = if x < 0.0 { 0b1000 } else { 0 };
                let a = x.abs();
                FP4_CODES_BY_MAGNITUDE[FP4_THRESHOLDS.iter().filter(|&&t| a > t).count()] + sign
            }
        }
    }

    /// Normalized value of a code.
    pub fn decode(self, code: u8) -> f32 {
        match self {
            Bnb4Type::Nf4 => NF4_CODE[(code & 0x0f) as usize],
            Bnb4Type::Fp4 => {
                let sign = 1.0 - 2.0 * ((code & 0b1000) >> 3) as f32;
                FP4_DEQUANT[(code & 0b111) as usize] * sign
            }
        }
    }
}

/// Result of [`bnb4_quantize`].
#[derive(Debug, Clone)]
pub struct Bnb4Output {
    /// Dequantized weight, same shape, f32.
    pub weight: Tensor,
    /// 4-bit codes, one per weight (unpacked), row-major.
    pub codes: Vec<u8>,
    /// The absmax of each block as used for dequantization (after double quantization if on).
    pub absmax: Vec<f32>,
    /// The exact absmax of each block.
    pub absmax_exact: Vec<f32>,
}

/// NF4/FP4 of `w` with absmax blocks of `block` values over the flattened tensor.
pub fn bnb4_quantize(w: &Tensor, ty: Bnb4Type, block: usize, double_quant: bool) -> Result<Bnb4Output> {
    if !BNB4_BLOCKS.contains(&block) {
        return Err(QiError::invalid("block", block, format!("bitsandbytes 4-bit block sizes: {BNB4_BLOCKS:?}")).into());
    }
    let mut m = Matrix::read(w, "weight")?;
    let absmax_exact: Vec<f32> = m.data.chunks(block).map(|b| b.iter().fold(0f32, |a, &v| a.max(v.abs()))).collect();
    let mut codes = Vec::with_capacity(m.data.len());
    for (b, &am) in m.data.chunks(block).zip(&absmax_exact) {
        let inv = 1.0f32 / am;
        for &x in b {
            codes.push(if am == 0.0 { ty.encode(0.0) } else { ty.encode(x * inv) });
        }
    }
    let absmax = if double_quant { double_quantize(&absmax_exact) } else { absmax_exact.clone() };
    for ((b, c), &am) in m.data.chunks_mut(block).zip(codes.chunks(block)).zip(&absmax) {
        for (x, &c) in b.iter_mut().zip(c) {
            *x = ty.decode(c) * am;
        }
    }
    // An all-zero block must give zeros even when its absmax came back slightly non-zero.
    for (b, &am) in m.data.chunks_mut(block).zip(&absmax_exact) {
        if am == 0.0 {
            b.fill(0.0);
        }
    }
    Ok(Bnb4Output { weight: m.into_tensor()?, codes, absmax, absmax_exact })
}

/// `compress_statistics`: absmax values through the 8-bit dynamic blockwise quantizer (blocks of
/// 256) after subtracting their mean, and back.
fn double_quantize(absmax: &[f32]) -> Vec<f32> {
    // torch's f32 mean; summing in f64 can differ from it by an ulp, which is added back anyway.
    let offset = (absmax.iter().map(|&v| v as f64).sum::<f64>() / absmax.len() as f64) as f32;
    let centered: Vec<f32> = absmax.iter().map(|&v| v - offset).collect();
    let code = create_dynamic_map();
    let (q, am2) = dynamic_quantize_blockwise(&centered, &code, 256);
    let mut out = dynamic_dequantize_blockwise(&q, &am2, &code, 256);
    for v in &mut out {
        *v += offset;
    }
    out
}

/// bitsandbytes' `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`: 256 sorted
/// values in [-1, 1], as f32 bit patterns produced by torch (`scripts/bnb_dynamic_map.py`). The map
/// is built with torch's f32 `linspace`, whose vectorized CPU kernel makes some entries differ by
/// an ulp or two from the plain formula ([`dynamic_map_from_formula`]) — and can differ between CPUs with
/// different vector widths; this table is torch's output on an AVX-512 x86-64 machine.
const DYNAMIC_MAP_BITS: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
    0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
    0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
    0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
    0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
    0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
    0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
    0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
    0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
    0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
    0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
    0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
    0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
    0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
    0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
    0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
    0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
    0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
    0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
    0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
    0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
    0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
];

/// bitsandbytes' signed 8-bit dynamic map (see [`DYNAMIC_MAP_BITS`]): for exponent `i` in 0..7 the
/// fraction part has `2^i` values, the midpoints of `linspace(0.1, 1, 2^i + 1)`, scaled by
/// `10^(i-6)`, with their negatives; plus 0 and 1; sorted.
pub fn create_dynamic_map() -> [f32; 256] {
    DYNAMIC_MAP_BITS.map(f32::from_bits)
}

/// The dynamic map computed from its definition with scalar f32 arithmetic (torch's scalar
/// linspace formula); within 1e-6 (relative) of [`create_dynamic_map`].
pub fn dynamic_map_from_formula() -> [f32; 256] {
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for i in 0..7i32 {
        let n = (1usize << i) + 1;
        let b = torch_linspace_f32(0.1, 1.0, n);
        let scale = 10f64.powi(i - 6) as f32;
        for k in 0..n - 1 {
            let mean = (b[k] + b[k + 1]) / 2.0;
            data.push(scale * mean);
            data.push(-(scale * mean));
        }
    }
    data.push(0.0);
    data.push(1.0);
    debug_assert_eq!(data.len(), 256);
    data.sort_by(|a, b| a.total_cmp(b));
    let mut out = [0f32; 256];
    out.copy_from_slice(&data);
    out
}

/// torch's CPU `linspace` in f32: `start + step·i` for the first half, `end - step·(n-1-i)` after.
fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (s, e) = (start as f32, end as f32);
    if n == 1 {
        return vec![s];
    }
    let step = (e - s) / (n - 1) as f32;
    let half = n / 2;
    (0..n).map(|i| if i < half { s + step * i as f32 } else { e - step * (n - 1 - i) as f32 }).collect()
}

/// bitsandbytes' `dQuantize<0>`: binary search in the sorted 256-entry `code` for the nearest
/// value (the kernel's exact comparisons, midpoint ties included).
fn dynamic_encode(code: &[f32; 256], x: f32) -> u8 {
    let mut pivot: usize = 127;
    let mut upper_pivot: usize = 255;
    let mut lower_pivot: usize = 0;
    let mut lower = -1.0f32;
    let mut upper = 1.0f32;
    let mut val = code[pivot];
    let mut i = 64;
    while i > 0 {
        if x > val {
            lower_pivot = pivot;
            lower = val;
            pivot += i;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= i;
        }
        val = code[pivot];
        i >>= 1;
    }
    if upper_pivot == 255 {
        upper = code[upper_pivot];
    }
    if lower_pivot == 0 {
        lower = code[lower_pivot];
    }
    let r = if x > val {
        if x > (upper + val) * 0.5 {
            upper_pivot
        } else {
            pivot
        }
    } else if x < (lower + val) * 0.5 {
        lower_pivot
    } else {
        pivot
    };
    r as u8
}

/// bitsandbytes' 8-bit blockwise quantization with a code map: per block absmax, values
/// normalized by `x · (1/absmax)`, [`dQuantize`](dynamic_encode) per value. Returns codes and absmax.
pub fn dynamic_quantize_blockwise(x: &[f32], code: &[f32; 256], block: usize) -> (Vec<u8>, Vec<f32>) {
    let mut q = Vec::with_capacity(x.len());
    let mut am = Vec::with_capacity(x.len().div_ceil(block));
    for b in x.chunks(block) {
        let a = b.iter().fold(0f32, |a, &v| a.max(v.abs()));
        am.push(a);
        let inv = 1.0f32 / a;
        for &v in b {
            // an all-zero block: the kernel computes 0·inf = NaN, which its search sends to code 0;
            // the dequantized value is code[0]·0 = 0 either way.
            q.push(if a == 0.0 { 0 } else { dynamic_encode(code, v * inv) });
        }
    }
    (q, am)
}

/// Inverse of [`dynamic_quantize_blockwise`]: `code[q] · absmax`.
pub fn dynamic_dequantize_blockwise(q: &[u8], absmax: &[f32], code: &[f32; 256], block: usize) -> Vec<f32> {
    q.chunks(block).zip(absmax).flat_map(|(b, &a)| b.iter().map(move |&c| code[c as usize] * a)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn quant_nf4_codes_and_ties() {
        let t = Bnb4Type::Nf4;
        for (i, &c) in NF4_CODE.iter().enumerate() {
            assert_eq!(t.encode(c) as usize, i, "code value {c} maps to itself");
            assert_eq!(t.decode(i as u8), c);
        }
        // newer bitsandbytes prints -0.18477343022823334; same f32
        assert_eq!(NF4_CODE[5], -0.18477343022823334f32);
        // a value exactly on a threshold takes the lower code (x > t goes up)
        assert_eq!(t.encode(0.03979014977812767), 7);
        assert_eq!(t.encode(f32::from_bits(0.03979014977812767f32.to_bits() + 1)), 8);
        assert_eq!(t.encode(-0.8480964004993439), 0);
        // thresholds are the midpoints of neighbouring codes (to f32 precision)
        for k in 0..15 {
            let mid = (NF4_CODE[k] as f64 + NF4_CODE[k + 1] as f64) / 2.0;
            assert!((NF4_THRESHOLDS[k] as f64 - mid).abs() < 1e-7, "{k}");
        }
        // 0.5 lies between codes 12 (0.4407) and 13 (0.5626), below their midpoint 0.50166
        assert_eq!(t.encode(0.5), 12);
        assert_eq!(t.encode(0.51), 13);
        assert_eq!(t.encode(0.49), 12);
    }

    #[test]
    fn quant_fp4_table() {
        let t = Bnb4Type::Fp4;
        // magnitudes in value order and their codes
        let by_value = [(0.0, 0b000), (0.0625 / 12.0, 0b001), (2.0 / 12.0, 0b110), (3.0 / 12.0, 0b111), (4.0 / 12.0, 0b100), (6.0 / 12.0, 0b101), (8.0 / 12.0, 0b010), (1.0, 0b011)];
        for (v, c) in by_value {
            assert_eq!(t.encode(v as f32), c, "{v}");
            assert!((t.decode(c) as f64 - v).abs() < 1e-7);
            if v > 0.0 {
                assert_eq!(t.encode(-v as f32), c | 0b1000);
                assert_eq!(t.decode(c | 0b1000), -t.decode(c));
            }
        }
        assert_eq!(t.encode(0.29166667), 0b111); // on the threshold: lower
        assert_eq!(t.encode(0.3), 0b100);
    }

    #[test]
    fn quant_nf4_blocks_known_values() {
        // Two blocks of 32 (block = 32): block 1 absmax 2 (values normalized by 1/2), block 2 all zero.
        let mut v = vec![0.0f32; 64];
        v[0] = 2.0;
        v[1] = -2.0;
        v[2] = 1.0; // normalized 0.5 -> code 12 (0.4407)
        v[3] = 0.07958029955625534 * 2.0; // exactly code 8
        let w = Tensor::from_vec(v, (2, 32), &Device::Cpu).unwrap();
        let o = bnb4_quantize(&w, Bnb4Type::Nf4, 32, false).unwrap();
        assert_eq!(o.absmax, vec![2.0, 0.0]);
        assert_eq!(&o.codes[..5], &[15, 0, 12, 8, 7]);
        let r = o.weight.to_vec2::<f32>().unwrap();
        assert_eq!(&r[0][..5], &[2.0, -2.0, NF4_CODE[12] * 2.0, NF4_CODE[8] * 2.0, 0.0]);
        assert_eq!(r[1], vec![0.0; 32]);
        // The flattened tensor is blocked, not the rows: 3 rows of 48 with block 64.
        let w = Tensor::from_vec((0..144).map(|i| i as f32).collect::<Vec<_>>(), (3, 48), &Device::Cpu).unwrap();
        let o = bnb4_quantize(&w, Bnb4Type::Nf4, 64, false).unwrap();
        assert_eq!(o.absmax, vec![63.0, 127.0, 143.0]); // last block is partial (16 values)
        assert!(bnb4_quantize(&w, Bnb4Type::Nf4, 100, false).unwrap_err().to_string().contains("4096"));
    }

    #[test]
    fn quant_dynamic_map_and_double_quant() {
        let code = create_dynamic_map();
        // bit for bit what torch's float32 arithmetic gives (scripts/bnb_dynamic_map.py)
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/fixtures/bnb/dynamic_map.safetensors");
        let f = candle_core::safetensors::load(p, &Device::Cpu).unwrap();
        let want = f["code"].to_vec1::<f32>().unwrap();
        assert_eq!(code.to_vec(), want);
        for (a, b) in dynamic_map_from_formula().iter().zip(&code) {
            assert!((a - b).abs() <= 1e-6 * b.abs(), "{a} vs {b}");
        }
        // the outermost fraction midpoint (1 + (1 - 0.9/64)) / 2 = 0.99296875, and 1.0
        assert!((code[0] + 0.99296875).abs() < 1e-7);
        assert_eq!(code[255], 1.0);
        assert!(code.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(code.iter().filter(|&&c| c == 0.0).count(), 1);
        // every code value encodes to itself
        for (i, &c) in code.iter().enumerate() {
            assert_eq!(dynamic_encode(&code, c) as usize, i, "{c}");
        }
        // double quantization error on absmax values is small relative to them
        let w: Vec<f32> = (0..64 * 1000).map(|i| ((i as f32 * 0.7548).sin() * 0.05) * (1.0 + (i / 64) as f32 * 0.001)).collect();
        let w = Tensor::from_vec(w, (1000, 64), &Device::Cpu).unwrap();
        let a = bnb4_quantize(&w, Bnb4Type::Nf4, 64, false).unwrap();
        let b = bnb4_quantize(&w, Bnb4Type::Nf4, 64, true).unwrap();
        let rel = b.absmax.iter().zip(&a.absmax).map(|(x, y)| ((x - y) / y).abs()).fold(0f32, f32::max);
        assert!(rel > 0.0 && rel < 0.01, "double-quant absmax relative error {rel}");
        assert_eq!(a.codes, b.codes, "codes do not depend on double quantization");
    }
}
