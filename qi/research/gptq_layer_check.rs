//! Developer check: per-linear output error of RTN, GPTQ and GPTQ with act-order on a real model,
//! on the calibration inputs, on held-out C4 and on WikiText-2 (the perplexity corpus), plus where
//! each method leaves its error on the columns with the largest Hessian diagonal.
//!
//! `cargo run --example gptq_layer_check -- MODEL [samples] [seqlen] [bits] [all|L,L,..]`
//!
//! Inputs come from the reference model (layer-local: no sequential error propagation), so this
//! isolates what each quantizer does to one matrix. Default: 8 × 256 calibration tokens, 4 bits,
//! layers 0, 5, 15, 25.
use candle_core::Tensor;
use qi::quant::{gptq_quantize, rtn_quantize, GptqOptions, Granularity, HessianAccumulator};
use qi::{Batch, Padding};

/// Relative output error ‖x(W − Ŵ)ᵀ‖² / ‖xWᵀ‖².
fn rel_err(w: &Tensor, wq: &Tensor, x: &Tensor) -> anyhow::Result<f64> {
    let y = x.matmul(&w.t()?)?;
    let d = (&y - x.matmul(&wq.t()?)?)?;
    Ok(d.sqr()?.sum_all()?.to_scalar::<f32>()? as f64 / y.sqr()?.sum_all()?.to_scalar::<f32>()? as f64)
}

/// Share of the proxy loss tr(ΔW H ΔWᵀ)'s diagonal part Σ_j H_jj ‖ΔW[:, j]‖² that falls on `cols`.
fn diag_share(w: &Tensor, wq: &Tensor, hdiag: &[f32], cols: &[usize]) -> anyhow::Result<f64> {
    let col_sq: Vec<f32> = (w - wq)?.sqr()?.sum(0)?.to_vec1()?;
    let per: Vec<f64> = col_sq.iter().zip(hdiag).map(|(e, h)| (*e as f64) * (*h as f64)).collect();
    let total: f64 = per.iter().sum();
    Ok(cols.iter().map(|&j| per[j]).sum::<f64>() / total)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(model_path) = args.get(1) else {
        anyhow::bail!("usage: gptq_layer_check MODEL [samples] [seqlen] [bits] [all|L,L,..]");
    };
    let m = qi::load_model(model_path)?;
    let arg = |i: usize, default: usize, what: &str| -> anyhow::Result<usize> {
        args.get(i).map_or(Ok(default), |s| s.parse().map_err(|_| anyhow::anyhow!("{what}: expected a number, got {s:?}")))
    };
    let n = arg(2, 8, "samples")?;
    let len = arg(3, 256, "seqlen")?;
    let bits = arg(4, 4, "bits")? as u8;
    let layers: Vec<usize> = match args.get(5).map(String::as_str) {
        None => vec![0, 5, 15, 25].into_iter().filter(|&l| l < m.cfg.n_layers).collect(),
        Some("all") => (0..m.cfg.n_layers).collect(),
        Some(list) => list.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()?,
    };
    let train = qi::data::calibration_windows(&m, qi::data::Corpus::C4, n, len, 0)?;
    let test = qi::data::calibration_windows(&m, qi::data::Corpus::C4, 4, len, 123)?;
    let wiki = qi::data::calibration_windows(&m, qi::data::Corpus::Wikitext2, 4, len, 7)?;
    let sets = [("calib", &train), ("c4", &test), ("wiki", &wiki)];
    println!("relative output error ×1e3 (rtn / gptq / gptq act-order) per input set; top1%: share of Σ H_jj‖ΔW_j‖² on the 1 % columns of largest H_jj; hmax: max/median H_jj");
    println!("{:<10} {:>8} | {:^23} | {:^23} | {:^23} | {:^20}", "linear", "hmax", "calib", "c4 held-out", "wiki", "top1% rtn/gptq/ao");
    let mut worse = [[0usize; 2]; 3];
    let mut total = 0usize;
    for &layer in &layers {
        let roles: Vec<&str> = m.blocks[layer].linears_labeled().into_iter().map(|(r, _)| r).collect();
        let hooks: Vec<String> = roles.iter().map(|r| qi::models::linear_input_hook(r, layer)).collect();
        // One forward per input set up to this layer, caching every linear input of the layer.
        let caches = sets
            .iter()
            .map(|(_, w)| {
                let b = Batch::from_rows(w, Padding::Right, 0)?;
                m.run_with_cache_until(&b, qi::hooks::HookFilter::new(&hooks), layer)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (role, hook) in roles.into_iter().zip(hooks.iter()) {
            let xs: Vec<Tensor> = caches
                .iter()
                .map(|c| -> anyhow::Result<Tensor> {
                    let t = c.get(hook)?;
                    let d = t.dims().to_vec();
                    Ok(t.reshape((d[0] * d[1], d[2..].iter().product::<usize>()))?)
                })
                .collect::<anyhow::Result<_>>()?;
            let lin = m.blocks[layer].linears_labeled().into_iter().find(|(r, _)| *r == role).unwrap().1;
            let w = lin.weight().contiguous()?;
            let mut acc = HessianAccumulator::new(w.dim(1)?);
            acc.add_batch(&xs[0])?;
            let h = acc.hessian()?;
            let hdiag: Vec<f32> = h.to_vec2::<f32>()?.iter().enumerate().map(|(i, row)| row[i]).collect();
            let mut order: Vec<usize> = (0..hdiag.len()).collect();
            order.sort_by(|&a, &b| hdiag[b].total_cmp(&hdiag[a]));
            let top = &order[..(hdiag.len() / 100).max(1)];
            let mut sorted = hdiag.clone();
            sorted.sort_by(f32::total_cmp);
            let hmax = sorted[sorted.len() - 1] / sorted[sorted.len() / 2].max(f32::MIN_POSITIVE);
            let r = rtn_quantize(&w, bits, Granularity::Row, false)?.weight;
            let g = gptq_quantize(&w, &h, &GptqOptions::new(bits), &lin.name)?.weight;
            let a = gptq_quantize(&w, &h, &GptqOptions { act_order: true, ..GptqOptions::new(bits) }, &lin.name)?.weight;
            let mut cells = Vec::new();
            for (si, x) in xs.iter().enumerate() {
                let (er, eg, ea) = (rel_err(&w, &r, x)?, rel_err(&w, &g, x)?, rel_err(&w, &a, x)?);
                worse[si][0] += (eg > er) as usize;
                worse[si][1] += (ea > er) as usize;
                cells.push(format!("{:>7.2} {:>7.2} {:>7.2}", er * 1e3, eg * 1e3, ea * 1e3));
            }
            total += 1;
            let shares = [diag_share(&w, &r, &hdiag, top)?, diag_share(&w, &g, &hdiag, top)?, diag_share(&w, &a, &hdiag, top)?];
            println!(
                "L{layer:<2} {role:<6} {hmax:>8.1} | {} | {} | {} | {:>6.3} {:>6.3} {:>6.3}",
                cells[0], cells[1], cells[2], shares[0], shares[1], shares[2]
            );
        }
    }
    for (si, (name, _)) in sets.iter().enumerate() {
        println!("{name}: GPTQ worse than RTN on {}/{total} linears, GPTQ act-order on {}/{total}", worse[si][0], worse[si][1]);
    }
    Ok(())
}
