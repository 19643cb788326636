//! Developer check: per-layer output error of GPTQ vs RTN on a real model, measured on held-out
//! calibration-style inputs. `cargo run --example gptq_layer_check -- MODEL [samples] [seqlen]`.
use qi::quant::{gptq_quantize, rtn_quantize, GptqOptions, Granularity, HessianAccumulator};
use qi::{Batch, Padding};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let m = qi::load_model(&args[1])?;
    let n: usize = args.get(2).map_or(8, |s| s.parse().unwrap());
    let len: usize = args.get(3).map_or(256, |s| s.parse().unwrap());
    let train = qi::data::calibration_windows(&m, qi::data::Corpus::C4, n, len, 0)?;
    let test = qi::data::calibration_windows(&m, qi::data::Corpus::C4, 4, len, 123)?;
    for (layer, role) in [(0usize, "q"), (5, "down"), (15, "gate"), (15, "o"), (25, "down")] {
        let hook = qi::models::linear_input_hook(role, layer);
        let collect = |w: &Vec<Vec<u32>>| -> anyhow::Result<candle_core::Tensor> {
            let b = Batch::from_rows(w, Padding::Right, 0)?;
            let c = m.run_with_cache_until(&b, hook.clone(), layer)?;
            let t = c.get(&hook)?;
            let d = t.dims().to_vec();
            Ok(t.reshape((d[0] * d[1], d[2..].iter().product::<usize>()))?)
        };
        let (xtr, xte) = (collect(&train)?, collect(&test)?);
        let lin = m.blocks[layer].linears_labeled().into_iter().find(|(r, _)| *r == role).unwrap().1;
        let w = lin.weight().contiguous()?;
        let mut acc = HessianAccumulator::new(w.dim(1)?);
        acc.add_batch(&xtr)?;
        let h = acc.hessian()?;
        let err = |wq: &candle_core::Tensor, x: &candle_core::Tensor| -> anyhow::Result<f64> {
            let d = (x.matmul(&w.t()?)? - x.matmul(&wq.t()?)?)?;
            Ok(d.sqr()?.sum_all()?.to_scalar::<f32>()? as f64 / x.matmul(&w.t()?)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64)
        };
        for bits in [4u8, 3] {
            let r = rtn_quantize(&w, bits, Granularity::Row, false)?.weight;
            let g = gptq_quantize(&w, &h, &GptqOptions::new(bits), &lin.name)?.weight;
            println!(
                "L{layer:2} {role:5} {bits}b  train: rtn {:.5} gptq {:.5}   held-out: rtn {:.5} gptq {:.5}",
                err(&r, &xtr)?, err(&g, &xtr)?, err(&r, &xte)?, err(&g, &xte)?
            );
        }
    }
    Ok(())
}
