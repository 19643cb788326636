//! Round-to-nearest (RTN) on the uniform min–max grid of [`grid`](super::grid).
//!
//! The reference's RTN baseline (`--nearest` in IST-DASLab/gptq) is per-row (`perchannel=True`)
//! and asymmetric unless `--sym` is given; [`Granularity::Row`] with `sym = false` is that
//! baseline. Per-tensor uses one grid for the whole matrix (the reference's `perchannel=False`),
//! per-group one grid for each run of `g` consecutive input columns of each row.
//! Computed in f32 exactly as the reference (bit-identical to its float32 arithmetic).
use super::grid::{GridParams, UniformGrid};
use super::spec::Granularity;
use super::Matrix;
use crate::QiError;
use anyhow::Result;
use candle_core::Tensor;

/// Result of [`rtn_quantize`].
#[derive(Debug, Clone)]
pub struct RtnOutput {
    /// Dequantized weight, same shape as the input, f32.
    pub weight: Tensor,
    /// Scales `[rows, groups]` (per-row: `[rows, 1]`; per-tensor: `[1, 1]`).
    pub scales: Tensor,
    /// Zero points (integer levels stored as f32), same shape as `scales`.
    pub zeros: Tensor,
}

/// RTN of `w` `[out, in]` with `bits` in 2..=8. `group` granularity needs `g` to divide
/// `in_features`.
pub fn rtn_quantize(w: &Tensor, bits: u8, granularity: Granularity, sym: bool) -> Result<RtnOutput> {
    let grid = UniformGrid::new(bits, sym)?;
    let m = Matrix::read(w, "weight")?;
    let (rows, cols) = (m.rows, m.cols);
    let group = match granularity {
        Granularity::Tensor => None,
        Granularity::Row => Some(cols),
        Granularity::Group(g) => {
            check_group(g, cols)?;
            Some(g)
        }
    };
    let mut out = vec![0f32; rows * cols];
    let (scales, zeros, shape) = match group {
        None => {
            let p = grid.params(m.data.iter().copied());
            for (o, &x) in out.iter_mut().zip(&m.data) {
                *o = grid.quantize(x, &p);
            }
            (vec![p.scale], vec![p.zero], (1, 1))
        }
        Some(g) => {
            let ng = cols / g;
            let mut scales = Vec::with_capacity(rows * ng);
            let mut zeros = Vec::with_capacity(rows * ng);
            for r in 0..rows {
                for k in 0..ng {
                    let span = r * cols + k * g..r * cols + (k + 1) * g;
                    let p: GridParams<f32> = grid.params(m.data[span.clone()].iter().copied());
                    for (o, &x) in out[span.clone()].iter_mut().zip(&m.data[span]) {
                        *o = grid.quantize(x, &p);
                    }
                    scales.push(p.scale);
                    zeros.push(p.zero);
                }
            }
            (scales, zeros, (rows, ng))
        }
    };
    Ok(RtnOutput {
        weight: m.tensor_like(out)?,
        scales: Tensor::from_vec(scales, shape, &m.device)?,
        zeros: Tensor::from_vec(zeros, shape, &m.device)?,
    })
}

/// Group size `g` must be >= 1 and divide `in_features`.
pub(crate) fn check_group(g: usize, in_features: usize) -> Result<()> {
    if g == 0 || in_features % g != 0 {
        return Err(QiError::invalid(
            "group",
            g,
            format!("the group size must be >= 1 and divide in_features = {in_features}"),
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn mat(rows: usize, cols: usize, v: &[f32]) -> Tensor {
        Tensor::from_slice(v, (rows, cols), &Device::Cpu).unwrap()
    }
    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2::<f32>().unwrap()
    }

    #[test]
    fn quant_rtn_sym_4bit_known_row() {
        // Row [-0.7, -0.2, 0.05, 0.3, 0.7], 4-bit sym: maxq = 15, xmax = max(|-0.7|, 0.7) = 0.7,
        // xmin = -0.7, scale = 1.4/15 = 0.09333.., zero = (15+1)/2 = 8.
        // x/scale = -7.5, -2.142857, 0.535714, 3.214286, 7.5
        // round half even: -8 (tie -> even), -2, 1, 3, 8 ; + zero -> 0, 6, 9, 11, 16 -> clamp 15
        // value = scale*(level-8): -8s, -2s, 1s, 3s, 7s.
        // (in f32, 0.7/(1.4/15) might not be exactly 7.5; the check below derives it the same way)
        let w = mat(1, 5, &[-0.7, -0.2, 0.05, 0.3, 0.7]);
        let o = rtn_quantize(&w, 4, Granularity::Row, true).unwrap();
        let s = 1.4f32 / 15.0;
        assert_eq!(o.scales.to_vec2::<f32>().unwrap()[0][0], s);
        assert_eq!(o.zeros.to_vec2::<f32>().unwrap()[0][0], 8.0);
        let levels: Vec<f32> = rows(&o.weight)[0].iter().map(|v| (v / s).round()).collect();
        let t = -0.7f32 / s; // -7.5 or within an ulp of it
        let first = if t == -7.5 { -8.0 } else { t.round() };
        assert_eq!(levels, vec![first, -2.0, 1.0, 3.0, 7.0]);
        assert_eq!(rows(&o.weight)[0][4], s * 7.0);
    }

    #[test]
    fn quant_rtn_asym_known_row_and_half_even() {
        // Row [-1, 0, 0.5, 1.5, 2], 2-bit asym: maxq 3, xmin -1, xmax 2, scale 1, zero round(1)=1.
        // x/scale = -1, 0, 0.5, 1.5, 2 -> round half even: -1, 0, 0, 2, 2 -> +1 -> 0,1,1,3,3
        // value = level - 1: -1, 0, 0, 2, 2 (0.5 -> 0 and 1.5 -> 2: ties go to even).
        let w = mat(1, 5, &[-1.0, 0.0, 0.5, 1.5, 2.0]);
        let o = rtn_quantize(&w, 2, Granularity::Row, false).unwrap();
        assert_eq!(rows(&o.weight)[0], vec![-1.0, 0.0, 0.0, 2.0, 2.0]);
        // Row [0.1, 0.3, 0.4, 1.6], 3-bit asym: xmin = 0 (clamped), xmax 1.6, scale 1.6/7,
        // zero = round(-0/scale) = 0; x/scale = 0.4375, 1.3125, 1.75, 7 -> 0, 1, 2, 7.
        let w = mat(1, 4, &[0.1, 0.3, 0.4, 1.6]);
        let o = rtn_quantize(&w, 3, Granularity::Row, false).unwrap();
        let s = 1.6f32 / 7.0;
        assert_eq!(rows(&o.weight)[0], vec![0.0, s, 2.0 * s, 7.0 * s]);
    }

    #[test]
    fn quant_rtn_groups_and_tensor() {
        // Two groups of 2: [-1, 2 | 0, 4]; 2-bit asym.
        // group 1: xmin -1, xmax 2, scale 1, zero 1 -> [-1, 2]
        // group 2: xmin 0, xmax 4, scale 4/3, zero 0 -> 0, 4/(4/3)=3 -> [0, 4]
        let w = mat(2, 4, &[-1.0, 2.0, 0.0, 4.0, 0.3, 0.3, -0.3, 0.3]);
        let o = rtn_quantize(&w, 2, Granularity::Group(2), false).unwrap();
        let r = rows(&o.weight);
        assert_eq!(&r[0][..2], &[-1.0, 2.0]);
        assert_eq!(r[0][2], 0.0);
        assert_eq!(r[0][3], 3.0 * (4.0f32 / 3.0));
        assert_eq!(o.scales.dims(), &[2, 2]);
        // Per tensor: one grid over everything: xmin -1, xmax 4, scale 5/3, zero round(0.6) = 1.
        let o = rtn_quantize(&w, 2, Granularity::Tensor, false).unwrap();
        assert_eq!(o.scales.dims(), &[1, 1]);
        let s = 5.0f32 / 3.0;
        let r = rows(&o.weight);
        // 0.3/s = 0.18 -> 0 -> value 0; 4/s = 2.4 -> 2 -> level 3 -> value 2s.
        assert_eq!(r[1][0], 0.0);
        assert_eq!(r[0][3], 2.0 * s);
        // -1/s = -0.6 -> -1 -> level 0 -> value -s.
        assert_eq!(r[0][0], -s);
    }

    #[test]
    fn quant_rtn_bad_inputs() {
        let w = mat(2, 6, &[0.1; 12]);
        let e = rtn_quantize(&w, 4, Granularity::Group(4), false).unwrap_err().to_string();
        assert!(e.contains("in_features = 6") && e.contains("'4'"), "{e}");
        let e = rtn_quantize(&w, 9, Granularity::Row, false).unwrap_err().to_string();
        assert!(e.contains("bits"), "{e}");
        let w3 = Tensor::zeros((2, 3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let e = rtn_quantize(&w3, 4, Granularity::Row, false).unwrap_err().to_string();
        assert!(e.contains("2-D"), "{e}");
        let wn = mat(1, 3, &[0.1, f32::NAN, 0.2]);
        let e = rtn_quantize(&wn, 4, Granularity::Row, false).unwrap_err().to_string();
        assert!(e.contains("non-finite") && e.contains("[0, 1]"), "{e}");
    }
}
