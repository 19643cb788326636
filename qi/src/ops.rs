//! Numerical building blocks shared by every architecture.
//!
//! candle's fused CPU kernels (softmax, layer/RMS norm, rotary) have no backward pass. When a
//! tensor takes part in autograd (`track_op()`), we fall back to the composed formulas, which
//! candle can differentiate; otherwise we take the fast path. Both compute the same function.
use candle_core::{DType, Result, Tensor, D};

/// Softmax over the last dimension.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}

/// Log-softmax over the last dimension (always differentiable; used for losses).
pub fn log_softmax_last(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::log_softmax(x, D::Minus1)
}

/// LayerNorm over the last dimension.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if x.track_op() {
        candle_nn::ops::layer_norm_slow(x, w, b, eps as f32)
    } else {
        candle_nn::ops::layer_norm(&x.contiguous()?, w, b, eps as f32)
    }
}

/// RMSNorm over the last dimension (Llama: x / sqrt(mean(x²) + eps) · w).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if x.track_op() {
        candle_nn::ops::rms_norm_slow(x, w, eps as f32)
    } else {
        candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)
    }
}

/// Rotary embedding in the "rotate half" convention used by HF Llama and GPT-NeoX, token-major.
/// `x`: [batch, pos, heads, rot_dim]; `cos`/`sin`: [batch, pos, rot_dim / 2].
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        let half = x.dim(D::Minus1)? / 2;
        let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(2)?;
        let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(2)?;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
    } else {
        candle_nn::rotary_emb::rope_thd(&x.contiguous()?, cos, sin)
    }
}

/// Whether `a` and `b` hold the same bits (same shape and dtype; −0 and +0 differ, a NaN equals
/// the same NaN), compared a block of leading-dim rows at a time: a transposed view is copied one
/// block at a time, never whole (an unembedding of a 1.5B model is 0.9 GB).
pub fn same_bits(a: &Tensor, b: &Tensor) -> Result<bool> {
    if a.shape() != b.shape() || a.dtype() != b.dtype() {
        return Ok(false);
    }
    if a.elem_count() == 0 {
        return Ok(true);
    }
    let (a, b) = (a.flatten_to(0)?, b.flatten_to(0)?); // a scalar becomes one row
    let (rows, step) = (a.dim(0)?, block_rows(&a)?);
    let mut i = 0;
    while i < rows {
        let n = step.min(rows - i);
        let (x, y) = (a.narrow(0, i, n)?, b.narrow(0, i, n)?);
        let same = if a.dtype() == DType::F64 {
            let (x, y) = (x.flatten_all()?.to_vec1::<f64>()?, y.flatten_all()?.to_vec1::<f64>()?);
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits())
        } else {
            // f16, bf16 and integers up to 2^24 widen to f32 exactly
            let (x, y) = (x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?, y.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits())
        };
        if !same {
            return Ok(false);
        }
        i += n;
    }
    Ok(true)
}

/// Rows of the leading dim per block so that a block holds about 4M elements (16 MB in f32).
fn block_rows(t: &Tensor) -> Result<usize> {
    let rows = t.dim(0)?;
    Ok(((1usize << 22) / (t.elem_count() / rows.max(1)).max(1)).clamp(1, rows.max(1)))
}

/// The flat index of the first NaN or infinity of `t`, read a block of rows at a time (no
/// full-size copy, which for a transposed view or a 0.9 GB embedding would be one more model-sized
/// buffer at load time).
pub fn first_non_finite(t: &Tensor) -> Result<Option<usize>> {
    if t.elem_count() == 0 {
        return Ok(None);
    }
    let t = t.flatten_to(0)?;
    let (rows, step) = (t.dim(0)?, block_rows(&t)?);
    let mut i = 0;
    while i < rows {
        let n = step.min(rows - i);
        let block: Vec<f32> = t.narrow(0, i, n)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        if let Some(k) = block.iter().position(|v| !v.is_finite()) {
            return Ok(Some(i * (t.elem_count() / rows) + k));
        }
        i += n;
    }
    Ok(None)
}

/// Mean over all elements as f64 (for scalar metrics).
pub fn mean_f64(x: &Tensor) -> Result<f64> {
    x.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn same_bits_checks_every_block_of_rows_and_every_bit() {
        let v: Vec<f32> = (0..130 * 3).map(|i| i as f32 * 0.5).collect();
        let a = Tensor::from_vec(v.clone(), (130, 3), &Device::Cpu).unwrap();
        assert!(same_bits(&a, &a.copy().unwrap()).unwrap());
        // a difference in the very last element must count
        let mut w = v.clone();
        *w.last_mut().unwrap() += 1.0;
        assert!(!same_bits(&a, &Tensor::from_vec(w, (130, 3), &Device::Cpu).unwrap()).unwrap());
        assert!(!same_bits(&a, &a.reshape((3, 130)).unwrap()).unwrap(), "same values, other shape");
        // bits, not values: −0 is not +0, and a NaN is itself
        let z = |x: f32| Tensor::new(&[1f32, x], &Device::Cpu).unwrap();
        assert!(!same_bits(&z(0.0), &z(-0.0)).unwrap());
        assert!(same_bits(&z(f32::NAN), &z(f32::NAN)).unwrap());
        let s = Tensor::new(2f32, &Device::Cpu).unwrap();
        assert!(same_bits(&s, &s.copy().unwrap()).unwrap() && !same_bits(&s, &Tensor::new(3f32, &Device::Cpu).unwrap()).unwrap());
        // a transposed view against its contiguous copy, in blocks of more than one row
        let big = Tensor::arange(0f32, (3000 * 2000) as f32, &Device::Cpu).unwrap().reshape((3000, 2000)).unwrap();
        let view = big.t().unwrap();
        assert!(same_bits(&view, &view.contiguous().unwrap()).unwrap());
        let mut changed: Vec<f32> = view.contiguous().unwrap().flatten_all().unwrap().to_vec1().unwrap();
        changed[1999 * 3000 + 2999] = -1.0;
        assert!(!same_bits(&view, &Tensor::from_vec(changed, (2000, 3000), &Device::Cpu).unwrap()).unwrap());
        // f64 keeps its own bits
        let d = |x: f64| Tensor::new(&[x], &Device::Cpu).unwrap();
        assert!(!same_bits(&d(1.0), &d(1.0 + f64::EPSILON)).unwrap());
    }

    #[test]
    fn first_non_finite_gives_the_flat_index_in_any_block() {
        let big = Tensor::zeros((3000, 2000), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(first_non_finite(&big).unwrap(), None);
        for (at, bad) in [(0usize, f32::NAN), (2999 * 2000 + 1999, f32::INFINITY), (2100 * 2000 + 7, f32::NEG_INFINITY)] {
            let mut v = vec![0f32; 3000 * 2000];
            v[at] = bad;
            let t = Tensor::from_vec(v, (3000, 2000), &Device::Cpu).unwrap();
            assert_eq!(first_non_finite(&t).unwrap(), Some(at));
            // the same element through a transposed view: its index in the view's own order
            let (r, c) = (at / 2000, at % 2000);
            assert_eq!(first_non_finite(&t.t().unwrap()).unwrap(), Some(c * 3000 + r));
        }
        assert_eq!(first_non_finite(&Tensor::new(f32::NAN, &Device::Cpu).unwrap()).unwrap(), Some(0));
    }

}
