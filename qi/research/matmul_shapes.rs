//! Developer check for the forward benchmark: candle CPU matmul throughput at SmolLM2's forward
//! shapes (batch 8 x 128 = 1024 rows) and the per-forward matmul total. Compare with the same
//! shapes in torch (`torch.nn.functional.linear`) to see whether the gap is in the matmuls.
use candle_core::{Device, Tensor};
use std::time::Instant;
fn main() -> anyhow::Result<()> {
    let d = Device::Cpu;
    let shapes = [("q/o", 576, 576, 60), ("k/v", 576, 192, 60), ("gate/up", 576, 1536, 60), ("down", 1536, 576, 30), ("lm_head", 576, 49152, 1)];
    let mut total = 0.0;
    for (name, k, n, count) in shapes {
        let a = Tensor::randn(0f32, 1.0, (1024, k), &d)?;
        let b = Tensor::randn(0f32, 1.0, (k, n), &d)?;
        let reps = if n > 10000 { 3 } else { 20 };
        let _ = a.matmul(&b)?;
        let t = Instant::now();
        for _ in 0..reps { let _ = a.matmul(&b)?; }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        let gf = 2.0 * 1024.0 * k as f64 * n as f64 / 1e9;
        println!("{name:8} candle {:7.2} ms ({:5.0} GF/s)", s * 1e3, gf / s);
        total += s * count as f64;
    }
    println!("per-forward matmul total: candle {total:.3} s");
    Ok(())
}
