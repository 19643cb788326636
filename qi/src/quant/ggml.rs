//! GGML / llama.cpp block quantization through candle's quantized tensors: quantize with
//! [`QTensor::quantize`] then dequantize, i.e. exactly the codes candle (and so a GGUF written by
//! it) would store. Blocks run along the last dimension (the input features), so `in_features`
//! must be a multiple of the type's block size (32 for the legacy types, 256 for k-quants).
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
}

/// Quantizes `w` `[out, in]` to `kind` and back. `name` names the tensor in errors.
pub fn ggml_quantize(w: &Tensor, kind: GgmlKind, name: &str) -> Result<Tensor> {
    let m = Matrix::read(w, name)?;
    let bs = kind.block_size();
    if m.cols % bs != 0 {
        return Err(QiError::invalid(
            name,
            format!("shape [{}, {}]", m.rows, m.cols),
            format!("{} needs in_features (the last dim) divisible by its block size {bs}", kind.name()),
        )
        .into());
    }
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
        for k in GgmlKind::ALL {
            let q = ggml_quantize(&w, k, "w").unwrap();
            let e = max_abs_diff(&w, &q);
            // values in [-0.1, 0.1]: even 2-bit k-quants stay within the range width
            assert!(e < 0.1, "{}: {e}", k.name());
            if k == GgmlKind::Q4K {
                assert!(e > 0.0 && e < 0.02, "q4_k error {e}");
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
        assert!(e.contains("attn.q") && e.contains("block size 256"), "{e}");
    }
}
