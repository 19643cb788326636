//! Deterministic random matrices for the quantizer tests.
use candle_core::{Device, Tensor};

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    pub fn normals(&mut self, n: usize, scale: f64) -> Vec<f32> {
        (0..n).map(|_| (self.normal() * scale) as f32).collect()
    }
}

pub fn randn(rows: usize, cols: usize, scale: f64, seed: u64) -> Tensor {
    Tensor::from_vec(Rng::new(seed).normals(rows * cols, scale), (rows, cols), &Device::Cpu).unwrap()
}

/// Correlated inputs `X = Z·A + 0.3·Z` with per-column scales, `[n, cols]`.
pub fn correlated_inputs(n: usize, cols: usize, seed: u64) -> Tensor {
    let z = randn(n, cols, 1.0, seed);
    let a = randn(cols, cols, 1.0 / (cols as f64).sqrt(), seed + 1);
    let mut r = Rng::new(seed + 2);
    let s: Vec<f32> = (0..cols).map(|_| (r.normal() * 0.7).exp() as f32).collect();
    let s = Tensor::from_vec(s, (1, cols), &Device::Cpu).unwrap();
    (z.matmul(&a).unwrap() + (&z * 0.3).unwrap()).unwrap().broadcast_mul(&s).unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// ‖(W − Ŵ) Xᵀ‖_F for inputs `x` `[n, in]`.
pub fn output_error(w: &Tensor, wq: &Tensor, x: &Tensor) -> f64 {
    let d = (w - wq).unwrap().matmul(&x.t().unwrap()).unwrap();
    d.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt() as f64
}
