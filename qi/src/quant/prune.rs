//! Unstructured magnitude pruning of one matrix.
use super::Matrix;
use crate::QiError;
use anyhow::Result;
use candle_core::Tensor;

/// Result of [`magnitude_prune`].
#[derive(Debug, Clone)]
pub struct PruneOutput {
    pub weight: Tensor,
    /// How many entries were set to zero (`round(sparsity · n)`).
    pub pruned: usize,
}

/// Zeroes the `round(sparsity · n)` entries of smallest `|w|` (`n` = all entries; `round` is half
/// away from zero). Ties in `|w|` are broken by flat row-major index: the earlier entry is pruned
/// first, so the result is deterministic. `sparsity` must be in [0, 1).
pub fn magnitude_prune(w: &Tensor, sparsity: f64) -> Result<PruneOutput> {
    if !(0.0..1.0).contains(&sparsity) {
        return Err(QiError::invalid("sparsity", sparsity, "expected a fraction in [0, 1)").into());
    }
    let mut m = Matrix::read(w, "weight")?;
    let n = m.data.len();
    let k = ((sparsity * n as f64).round() as usize).min(n);
    if k > 0 {
        let mut idx: Vec<u32> = (0..n as u32).collect();
        let key = |i: &u32| (m.data[*i as usize].abs().to_bits(), *i);
        // |w| of finite floats orders like its bit pattern; select the k smallest (key, index).
        idx.select_nth_unstable_by_key(k - 1, key);
        for &i in &idx[..k] {
            m.data[i as usize] = 0.0;
        }
    }
    Ok(PruneOutput { weight: m.into_tensor()?, pruned: k })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn quant_prune_smallest_with_deterministic_ties() {
        // |w| = 0.5, 0.1, 0.3, 0.1, 0.2, 0.1 ; sparsity 0.5 -> round(3) = 3 smallest: the three 0.1s
        let w = Tensor::from_slice(&[0.5f32, -0.1, 0.3, 0.1, -0.2, 0.1], (2, 3), &Device::Cpu).unwrap();
        let o = magnitude_prune(&w, 0.5).unwrap();
        assert_eq!(o.pruned, 3);
        assert_eq!(o.weight.to_vec2::<f32>().unwrap(), vec![vec![0.5, 0.0, 0.3], vec![0.0, -0.2, 0.0]]);
        // sparsity 1/3 -> 2 entries; ties among the 0.1s broken by index: entries 1 and 3 go.
        let o = magnitude_prune(&w, 1.0 / 3.0).unwrap();
        assert_eq!(o.weight.to_vec2::<f32>().unwrap(), vec![vec![0.5, 0.0, 0.3], vec![0.0, -0.2, 0.1]]);
        assert_eq!(magnitude_prune(&w, 0.0).unwrap().pruned, 0);
        assert!(magnitude_prune(&w, 1.0).unwrap_err().to_string().contains("[0, 1)"));
    }
}
