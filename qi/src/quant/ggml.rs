//! GGML / llama.cpp block quantization through candle's quantized tensors: quantize with
//! [`QTensor::quantize`] then dequantize, i.e. exactly the codes candle (and so a GGUF written by
//! it) would store. Blocks run along the last dimension (the input features), so `in_features`
//! must be a multiple of the type's block size (32 for the legacy types, 256 for k-quants).
//! candle's k-quant scale search is llama.cpp's older `make_qkx1`, not the weighted `make_qkx2`
//! that `llama-quantize` runs today: the block layout is llama.cpp's, the chosen codes may differ.
//!
//! A tensor whose rows a k-quant cannot hold is an error by default. With `fallback=true` it gets
//! the type llama.cpp's quantizer substitutes (`llama_tensor_get_type`): Q4_K → Q5_0,
//! Q5_K → Q5_1, Q6_K → Q8_0, and f16 when the substitute cannot hold the row either. For Q2_K and
//! Q3_K llama.cpp substitutes IQ4_NL, which candle does not implement, so those stay errors.
use super::Matrix;
use crate::QiError;
use anyhow::{Context, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// The GGML types offered as quantizers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlKind {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

impl GgmlKind {
    pub const ALL: [GgmlKind; 10] = [
        GgmlKind::Q4_0,
        GgmlKind::Q4_1,
        GgmlKind::Q5_0,
        GgmlKind::Q5_1,
        GgmlKind::Q8_0,
        GgmlKind::Q2K,
        GgmlKind::Q3K,
        GgmlKind::Q4K,
        GgmlKind::Q5K,
        GgmlKind::Q6K,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GgmlKind::Q4_0 => "q4_0",
            GgmlKind::Q4_1 => "q4_1",
            GgmlKind::Q5_0 => "q5_0",
            GgmlKind::Q5_1 => "q5_1",
            GgmlKind::Q8_0 => "q8_0",
            GgmlKind::Q2K => "q2_k",
            GgmlKind::Q3K => "q3_k",
            GgmlKind::Q4K => "q4_k",
            GgmlKind::Q5K => "q5_k",
            GgmlKind::Q6K => "q6_k",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn dtype(self) -> GgmlDType {
        match self {
            GgmlKind::Q4_0 => GgmlDType::Q4_0,
            GgmlKind::Q4_1 => GgmlDType::Q4_1,
            GgmlKind::Q5_0 => GgmlDType::Q5_0,
            GgmlKind::Q5_1 => GgmlDType::Q5_1,
            GgmlKind::Q8_0 => GgmlDType::Q8_0,
            GgmlKind::Q2K => GgmlDType::Q2K,
            GgmlKind::Q3K => GgmlDType::Q3K,
            GgmlKind::Q4K => GgmlDType::Q4K,
            GgmlKind::Q5K => GgmlDType::Q5K,
            GgmlKind::Q6K => GgmlDType::Q6K,
        }
    }

    /// Weights per block (32 or 256).
    pub fn block_size(self) -> usize {
        self.dtype().block_size()
    }

    /// Storage bits per weight including the block scales (bytes per block · 8 / block size).
    pub fn bits_per_weight(self) -> f32 {
        (self.dtype().type_size() * 8) as f32 / self.block_size() as f32
    }

    /// Whether this is a k-quant (super-blocks of 256 rather than blocks of 32).
    pub fn is_k_quant(self) -> bool {
        self.block_size() == 256
    }

    /// The type llama.cpp substitutes when this k-quant cannot hold a row. `None` for the legacy
    /// types (llama.cpp has no substitute for them) and for Q2_K/Q3_K (its substitute, IQ4_NL, is
    /// not in candle).
    pub fn llama_cpp_fallback(self) -> Option<GgmlKind> {
        match self {
            GgmlKind::Q4K => Some(GgmlKind::Q5_0),
            GgmlKind::Q5K => Some(GgmlKind::Q5_1),
            GgmlKind::Q6K => Some(GgmlKind::Q8_0),
            _ => None,
        }
    }
}

/// A GGML type as a quantizer: the type, and whether tensors it cannot hold fall back to
/// llama.cpp's substitute (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlSpec {
    pub kind: GgmlKind,
    pub fallback: bool,
}

impl From<GgmlKind> for GgmlSpec {
    fn from(kind: GgmlKind) -> Self {
        GgmlSpec { kind, fallback: false }
    }
}

/// How one tensor is stored under a [`GgmlSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlStorage {
    Ggml(GgmlKind),
    F16,
}

impl GgmlStorage {
    pub fn name(self) -> &'static str {
        match self {
            GgmlStorage::Ggml(k) => k.name(),
            GgmlStorage::F16 => "f16",
        }
    }

    pub fn bits_per_weight(self) -> f32 {
        match self {
            GgmlStorage::Ggml(k) => k.bits_per_weight(),
            GgmlStorage::F16 => 16.0,
        }
    }
}

impl GgmlSpec {
    /// The storage of a `[rows, cols]` tensor (blocks run along `cols`); an error naming `name`
    /// when the type cannot hold its rows and no fallback applies.
    pub fn storage_for(&self, rows: usize, cols: usize, name: &str) -> Result<GgmlStorage> {
        let kind = self.kind;
        let bs = kind.block_size();
        if cols % bs == 0 {
            return Ok(GgmlStorage::Ggml(kind));
        }
        let shape = format!("shape [{rows}, {cols}]");
        let needs = format!("{} needs in_features (the last dim) divisible by its block size {bs}", kind.name());
        if !self.fallback {
            let hint = match kind.llama_cpp_fallback() {
                Some(f) => format!("; {}:fallback=true stores such tensors as {} as llama.cpp does", kind.name(), f.name()),
                None => String::new(),
            };
            return Err(QiError::invalid(name, shape, format!("{needs}{hint}")).into());
        }
        match kind.llama_cpp_fallback() {
            Some(f) if cols % f.block_size() == 0 => Ok(GgmlStorage::Ggml(f)),
            Some(_) => Ok(GgmlStorage::F16),
            None => Err(QiError::invalid(
                name,
                shape,
                format!("{needs}, and has no fallback here (llama.cpp substitutes IQ4_NL, which candle does not implement)"),
            )
            .into()),
        }
    }
}

/// Quantizes `w` `[out, in]` by `spec` and back: to its GGML type, or to the fallback
/// [`GgmlSpec::storage_for`] picks. `name` names the tensor in errors.
pub fn ggml_quantize(w: &Tensor, spec: impl Into<GgmlSpec>, name: &str) -> Result<Tensor> {
    let m = Matrix::read(w, name)?;
    let kind = match spec.into().storage_for(m.rows, m.cols, name)? {
        GgmlStorage::Ggml(k) => k,
        GgmlStorage::F16 => return super::fp16_round_trip(w),
    };
    let device = m.device.clone();
    let cpu = Tensor::from_vec(m.data, (m.rows, m.cols), &Device::Cpu)?;
    let q = QTensor::quantize(&cpu, kind.dtype()).with_context(|| format!("{}: quantizing to {}", name, kind.name()))?;
    let d = q.dequantize(&Device::Cpu).with_context(|| format!("{name}: dequantizing {}", kind.name()))?;
    Ok(d.to_device(&device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn randn(rows: usize, cols: usize, seed: u64) -> Tensor {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn quant_ggml_q8_0_round_trip_tiny_error() {
        let w = randn(8, 64, 1);
        let q = ggml_quantize(&w, GgmlKind::Q8_0, "w").unwrap();
        assert_eq!(q.dims(), w.dims());
        // per block of 32: d = absmax/127 <= 0.1/127; the error is at most d/2 (+ f16 rounding of d)
        let e = max_abs_diff(&w, &q);
        assert!(e > 0.0 && e < 0.1 / 127.0 * 0.51 + 1e-4, "{e}");
    }

    #[test]
    fn quant_ggml_all_kinds_on_256_columns() {
        let w = randn(4, 512, 2);
        let rms = |t: &Tensor| t.sqr().unwrap().mean_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
        let mut rel_by_bits: Vec<(u32, f32, &str)> = Vec::new();
        for k in GgmlKind::ALL {
            let q = ggml_quantize(&w, k, "w").unwrap();
            // Values in [-0.1, 0.1]: a b-bit grid over a block's range has step 0.2 / (2^b − 1);
            // rounding errs by at most half a step, and quantized block scales add a little, so
            // one step bounds the error. An all-zero dequantizer errs by ~0.1, above every bound.
            let b: u32 = k.name()[1..2].parse().unwrap();
            let step = 0.2 / ((1u32 << b) - 1) as f32;
            let e = max_abs_diff(&w, &q);
            let rel = rms(&(&w - &q).unwrap()) / rms(&w);
            eprintln!("{}: max error {e:.5} (step {step:.5}), relative RMS error {rel:.5}", k.name());
            assert!(e > 0.0 && e < step, "{}: max error {e}, step {step}", k.name());
            // uniform rounding error has RMS step/√12 against rms(w) = 0.1/√3, i.e. rel ≈ 5·step
            assert!(rel < 8.0 * step, "{}: relative RMS error {rel}", k.name());
            rel_by_bits.push((b, rel, k.name()));
        }
        // more bits, less error: every kind beats every kind of fewer bits
        for (b1, r1, n1) in &rel_by_bits {
            for (b2, r2, n2) in &rel_by_bits {
                assert!(!(b2 > b1) || r2 < r1, "{n2} ({r2}) not below {n1} ({r1})");
            }
        }
        assert_eq!(GgmlKind::Q4K.bits_per_weight(), 4.5);
        assert_eq!(GgmlKind::Q8_0.bits_per_weight(), 8.5);
    }

    #[test]
    fn quant_ggml_bad_shape_names_tensor_and_block() {
        let w = randn(4, 100, 3);
        let e = ggml_quantize(&w, GgmlKind::Q4_0, "layers.0.mlp.up").unwrap_err().to_string();
        assert!(e.contains("layers.0.mlp.up") && e.contains("block size 32") && e.contains("[4, 100]"), "{e}");
        let w = randn(4, 128, 3);
        let e = ggml_quantize(&w, GgmlKind::Q4K, "attn.q").unwrap_err().to_string();
        assert!(e.contains("attn.q") && e.contains("block size 256") && e.contains("q4_k:fallback=true"), "{e}");
    }

    #[test]
    fn quant_ggml_fallback_follows_llama_cpp() {
        let spec = |kind| GgmlSpec { kind, fallback: true };
        // SmolLM2's widths: 576 (q/k/v/o, gate/up inputs) is 18 blocks of 32 but not a multiple
        // of 256; 1536 (down's input) is 6 super-blocks of 256.
        let s = |kind, cols| spec(kind).storage_for(8, cols, "w").map(GgmlStorage::name).map_err(|e| e.to_string());
        assert_eq!(s(GgmlKind::Q4K, 576), Ok("q5_0"));
        assert_eq!(s(GgmlKind::Q4K, 1536), Ok("q4_k"));
        assert_eq!(s(GgmlKind::Q5K, 576), Ok("q5_1"));
        assert_eq!(s(GgmlKind::Q6K, 576), Ok("q8_0"));
        // the substitute cannot hold 48 columns either: f16, as llama.cpp
        assert_eq!(s(GgmlKind::Q4K, 48), Ok("f16"));
        let e = s(GgmlKind::Q3K, 576).unwrap_err();
        assert!(e.contains("IQ4_NL") && e.contains("[8, 576]"), "{e}");
        // the fallback's values are exactly that type's round trip
        let w = randn(4, 96, 4);
        let a = ggml_quantize(&w, spec(GgmlKind::Q4K), "w").unwrap();
        let b = ggml_quantize(&w, GgmlKind::Q5_0, "w").unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0);
        let w = randn(4, 48, 5);
        let a = ggml_quantize(&w, spec(GgmlKind::Q4K), "w").unwrap();
        assert_eq!(max_abs_diff(&a, &super::super::fp16_round_trip(&w).unwrap()), 0.0);
    }
}
