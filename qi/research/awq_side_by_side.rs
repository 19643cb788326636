//! Developer check: qi's AWQ beside other quantized copies of the same model (e.g. the
//! llmcompressor AWQModifier run of scripts/awq_llmcompressor.py), on the same calibration windows,
//! by WikiText-2 perplexity with the README table's protocol (seqlen 512, first N windows).
//!
//! `cargo run --example awq_side_by_side -- MODEL WINDOWS_JSON SPEC [windows] [HF_DIR...]`
//!
//! WINDOWS_JSON is a list of token-id lists (the calibration windows); SPEC an `awq:` QuantSpec.
//! Each HF_DIR is loaded as a model and evaluated with MODEL's tokenizer.
use qi::perplexity::{perplexity_on_text, PerplexityOptions};
use qi::quant::QuantSpec;
use qi::quantize::{quantize_model, QuantizeOptions};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        anyhow::bail!("usage: awq_side_by_side MODEL WINDOWS_JSON SPEC [windows] [HF_DIR...]");
    }
    let model = qi::load_model(&args[1])?;
    let windows: Vec<Vec<u32>> = serde_json::from_str(&std::fs::read_to_string(&args[2])?).map_err(|e| anyhow::anyhow!("{}: expected a JSON list of token-id lists ({e})", args[2]))?;
    let spec: QuantSpec = args[3].parse()?;
    let n_eval: usize = args.get(4).map_or(Ok(20), |s| s.parse())?;
    let text = qi::data::wikitext2_test(None)?;
    let popts = PerplexityOptions { seqlen: 512, max_windows: Some(n_eval), ..Default::default() };
    let tokens: usize = windows.iter().map(Vec::len).sum();
    eprintln!("calibration: {} windows, {tokens} tokens", windows.len());
    let opts = QuantizeOptions { calibration: Some(windows), ..Default::default() };
    let (twin, report) = quantize_model(&model, &spec, &opts)?;
    eprintln!("{spec}: {:.0} s", report.seconds);
    let base = perplexity_on_text(&model, &text, &popts)?.perplexity;
    println!("| model | perplexity | × f32 |\n|---|---|---|");
    println!("| f32 | {base:.3} | 1.000 |");
    let p = perplexity_on_text(&twin, &text, &popts)?.perplexity;
    println!("| qi {spec} | {p:.3} | {:.3} |", p / base);
    for dir in args.iter().skip(5) {
        let mut other = qi::load_model(dir)?;
        other.tokenizer = model.tokenizer.clone();
        let p = perplexity_on_text(&other, &text, &popts)?.perplexity;
        println!("| {dir} | {p:.3} | {:.3} |", p / base);
    }
    Ok(())
}
