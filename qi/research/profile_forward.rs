//! Where the forward pass spends its time (developer tool): `cargo run --example profile_forward -- MODEL`.
use candle_core::{Device, Tensor};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let Some(src) = std::env::args().nth(1) else {
        anyhow::bail!("usage: profile_forward MODEL (a .gguf, .safetensors, HF directory or Hub id)");
    };
    let m = qi::load_model(&src)?;
    let mut rng = qi::rng::Rng::new(0);
    let rows: Vec<Vec<u32>> = (0..8).map(|_| rng.tokens(128, m.cfg.d_vocab, &[])).collect();
    let b = qi::Batch::from_rows(&rows, qi::Padding::Right, 0)?;
    let time = |what: &str, f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<()> {
        f()?;
        let t = Instant::now();
        for _ in 0..3 {
            f()?;
        }
        println!("{what:40} {:8.1} ms", t.elapsed().as_secs_f64() * 1000.0 / 3.0);
        Ok(())
    };
    time("forward (no cache)", &mut || { m.forward(&b)?; Ok(()) })?;
    time("forward + cache resid_post,pattern", &mut || { m.run_with_cache(&b, "*hook_resid_post,*hook_pattern")?; Ok(()) })?;
    let x = m.embed_tokens(&b)?;
    time("one block", &mut || { m.run_block(10, &x, &b, None)?; Ok(()) })?;
    let lin = &m.blocks[0].linears()[4];
    let xx = Tensor::randn(0f32, 1., (8, 128, lin.in_features()), &Device::Cpu)?;
    time(&format!("linear {}x{}", lin.out_features(), lin.in_features()), &mut || { lin.forward(&xx)?; Ok(()) })?;
    let w = lin.weight_t().clone();
    let x2 = xx.reshape((1024, lin.in_features()))?;
    time("matmul with pre-transposed weight", &mut || { x2.matmul(&w)?; Ok(()) })?;
    let xn = m.ln_final.forward(&x)?;
    time("unembed", &mut || { m.unembed.forward(&xn)?; Ok(()) })?;
    // The pieces of one block at these shapes (the sum vs "one block" shows the glue's cost).
    let c = &m.cfg;
    let (bp, d, nh, nkv, dh) = (b.tokens.dims2()?, c.d_model, c.n_heads, c.n_kv_heads, c.d_head);
    let blk = &m.blocks[10];
    time("  ln1 (norm)", &mut || { blk.ln1.forward(&x)?; Ok(()) })?;
    for lin in blk.linears() {
        let xi = Tensor::randn(0f32, 1., (bp.0, bp.1, lin.in_features()), &Device::Cpu)?;
        time(&format!("  linear {} {}x{}", lin.name.rsplit('.').nth(1).unwrap_or(""), lin.in_features(), lin.out_features()), &mut || { lin.forward(&xi)?; Ok(()) })?;
    }
    let q = Tensor::randn(0f32, 1., (bp.0, bp.1, nh, dh), &Device::Cpu)?;
    let k = Tensor::randn(0f32, 1., (bp.0, bp.1, nkv, dh), &Device::Cpu)?;
    let cs = Tensor::randn(0f32, 1., (bp.0, bp.1, dh / 2), &Device::Cpu)?;
    time("  rope q", &mut || { qi::ops::rope(&q, &cs, &cs)?; Ok(()) })?;
    let mask = Tensor::zeros((1, 1, bp.1, bp.1), candle_core::DType::F32, &Device::Cpu)?;
    time("  attention pattern", &mut || { qi::fused::attention_pattern(&q, &k, &mask, 0.125)?; Ok(()) })?;
    let pat = qi::fused::attention_pattern(&q, &k, &mask, 0.125)?;
    time("  attention mix (z)", &mut || { qi::fused::attention_mix(&pat, &k)?; Ok(()) })?;
    let g = Tensor::randn(0f32, 1., (bp.0, bp.1, c.d_mlp), &Device::Cpu)?;
    time("  silu(gate) * up", &mut || { qi::fused::silu_mul(&g, &g)?; Ok(()) })?;
    let r = Tensor::randn(0f32, 1., (bp.0, bp.1, d), &Device::Cpu)?;
    time("  residual add", &mut || { (&r + &r)?; Ok(()) })?;
    Ok(())
}
