//! Developer check: which layers carry a quantizer's perplexity difference. Starts from the plain
//! GPTQ twin and swaps in chosen matrices from another twin (GPTQ with act-order, RTN), then
//! measures WikiText-2 perplexity with the findings table's protocol (evaluation half, seqlen 512,
//! first N windows).
//!
//! `cargo run --example gptq_hybrid_ppl -- MODEL [windows] [targeted|layers] [bits] [samples]`
//!
//! - `targeted` (default): the hybrids that test the README's explanations (act-order helps on the
//!   layers with extreme Hessian diagonals; plain GPTQ over-fits the MLP `down` projections).
//! - `layers`: for each layer l, plain GPTQ with layer l's matrices from the act-order twin, so the
//!   act-order gain is attributed layer by layer.
//!
//! Twins come from the twin cache (`QI_CACHE`), quantized there first if missing.
use qi::quant::QuantSpec;
use qi::quantize::QuantizeOptions;
use qi::HookedTransformer;

/// A copy of `base` whose linears selected by `pick(layer, role)` take their weights from `donor`.
fn hybrid(base: &HookedTransformer, donor: &HookedTransformer, pick: &dyn Fn(usize, &str) -> bool) -> anyhow::Result<(HookedTransformer, usize)> {
    let mut h = base.clone();
    let mut swapped = 0;
    for (l, (block, donor_block)) in h.blocks.iter_mut().zip(&donor.blocks).enumerate() {
        let donors = donor_block.linears_labeled();
        for (role, lin) in block.linears_labeled_mut() {
            if pick(l, role) {
                let (_, d) = donors.iter().find(|(r, _)| *r == role).expect("same architecture");
                lin.set_weight(&d.weight())?;
                swapped += 1;
            }
        }
    }
    Ok((h, swapped))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(model_path) = args.get(1) else {
        anyhow::bail!("usage: gptq_hybrid_ppl MODEL [windows] [targeted|layers] [bits] [samples]");
    };
    let windows: usize = args.get(2).map_or(Ok(20), |s| s.parse())?;
    let mode = args.get(3).map_or("targeted", String::as_str);
    let bits: u8 = args.get(4).map_or(Ok(4), |s| s.parse())?;
    let samples: usize = args.get(5).map_or(Ok(64), |s| s.parse())?;
    let m = qi::load_model(model_path)?;
    let specs: Vec<QuantSpec> = [
        format!("gptq:bits={bits},samples={samples},seqlen=512"),
        format!("gptq:bits={bits},act_order=true,samples={samples},seqlen=512"),
        format!("rtn:bits={bits}"),
    ]
    .iter()
    .map(|s| s.parse())
    .collect::<anyhow::Result<_>>()?;
    let root = qi::twin_cache::cache_root();
    let mut twins = qi::twin_cache::twins(&m, &specs, &QuantizeOptions::default(), Some(&root))?.into_iter().map(|(_, t)| t);
    let (plain, act, rtn) = (twins.next().unwrap(), twins.next().unwrap(), twins.next().unwrap());
    // the evaluation half of WikiText-2's test tokens, as `qi perplexity` and the findings' table read it
    let ids = qi::data::wikitext2_eval_ids(&m)?;
    let opts = qi::perplexity::PerplexityOptions { seqlen: 512, max_windows: Some(windows), ..Default::default() };
    let ppl = |model: &HookedTransformer| -> anyhow::Result<f64> { Ok(qi::perplexity::perplexity(model, &ids, &opts)?.perplexity) };
    let p_plain = ppl(&plain)?;
    let p_act = ppl(&act)?;
    println!("{windows} WikiText-2 windows x 512; {bits} bits; twins: {}", specs.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" | "));
    println!("{:<58} {:>9} {:>10} {:>12}", "model", "swapped", "perplexity", "share of gain");
    let gain = p_plain - p_act;
    let row = |name: &str, n: usize, p: f64| {
        println!("{name:<58} {n:>9} {p:>10.2} {:>11.0} %", 100.0 * (p_plain - p) / gain);
    };
    row("plain GPTQ", 0, p_plain);
    row("GPTQ act-order", m.linears().len(), p_act);
    let qkv = |role: &str| matches!(role, "q" | "k" | "v" | "qkv");
    match mode {
        "targeted" => {
            // (label, base twin, donor twin, which matrices come from the donor)
            type Pick = Box<dyn Fn(usize, &str) -> bool>;
            let cases: Vec<(&str, &HookedTransformer, &HookedTransformer, Pick)> = vec![
                ("plain + act-order L11 down", &plain, &act, Box::new(|l, r| l == 11 && r == "down")),
                ("plain + act-order L1 q/k/v", &plain, &act, Box::new(move |l, r| l == 1 && qkv(r))),
                ("plain + act-order L11 down and L1 q/k/v", &plain, &act, Box::new(move |l, r| (l == 11 && r == "down") || (l == 1 && qkv(r)))),
                ("plain + act-order every down", &plain, &act, Box::new(|_, r| r == "down")),
                ("plain + act-order everything but down", &plain, &act, Box::new(|_, r| r != "down")),
                ("plain + RTN every down", &plain, &rtn, Box::new(|_, r| r == "down")),
                ("plain + RTN every down but L11", &plain, &rtn, Box::new(|l, r| r == "down" && l != 11)),
                ("RTN + plain GPTQ L11 down", &rtn, &plain, Box::new(|l, r| l == 11 && r == "down")),
            ];
            let rtn_p = ppl(&rtn)?;
            row("RTN", m.linears().len(), rtn_p);
            for (name, base, donor, pick) in cases {
                let (h, n) = hybrid(base, donor, pick.as_ref())?;
                row(name, n, ppl(&h)?);
            }
        }
        "layers" => {
            for l in 0..m.cfg.n_layers {
                let (h, n) = hybrid(&plain, &act, &|layer, _| layer == l)?;
                row(&format!("plain + act-order layer {l}"), n, ppl(&h)?);
            }
        }
        other => anyhow::bail!("mode: expected targeted or layers, got {other:?}"),
    }
    Ok(())
}
