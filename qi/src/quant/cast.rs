//! fp16 / bf16 round trips (round to nearest even, as candle's `to_dtype` via `half`).
use super::Matrix;
use anyhow::Result;
use candle_core::{DType, Tensor};

fn round_trip(w: &Tensor, dtype: DType) -> Result<Tensor> {
    let m = Matrix::read(w, "weight")?;
    let t = m.into_tensor()?;
    Ok(t.to_dtype(dtype)?.to_dtype(DType::F32)?)
}

/// `w` cast to f16 and back to f32 (values beyond ±65504 become ±inf, as in a real f16 model).
pub fn fp16_round_trip(w: &Tensor) -> Result<Tensor> {
    round_trip(w, DType::F16)
}

/// `w` cast to bf16 and back to f32.
pub fn bf16_round_trip(w: &Tensor) -> Result<Tensor> {
    round_trip(w, DType::BF16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn quant_cast_round_trips() {
        let v = [1.0f32, 1.0 + 1.0 / 4096.0, 0.1, -3.0e-8];
        let w = Tensor::from_slice(&v, (1, 4), &Device::Cpu).unwrap();
        let h = fp16_round_trip(&w).unwrap().to_vec2::<f32>().unwrap();
        // 1 + 2^-12 is below half an f16 ulp at 1 (2^-11) -> ties/rounds to 1
        assert_eq!(h[0][0], 1.0);
        assert_eq!(h[0][1], 1.0);
        assert_eq!(h[0][2], 0.0999755859375); // f16(0.1)
        let b = bf16_round_trip(&w).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(b[0][2], 0.10009765625); // bf16(0.1)
        assert_ne!(b[0][2], 0.1);
    }
}
