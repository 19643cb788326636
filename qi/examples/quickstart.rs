//! The README's quick start: SmolLM2-135M's induction heads under 4- and 3-bit RTN, in a few
//! lines of the library. `./dev` sets the environment; run it with
//! `cargo run --example quickstart [MODEL]` (default: the SmolLM2 GGUF of the shared folder).
use qi::analysis::{self, tidy, Comparison};

fn main() -> anyhow::Result<()> {
    let shared = std::env::var("QI_SHARED").unwrap_or_else(|_| "../shared".into());
    let src = std::env::args().nth(1).unwrap_or(format!("{shared}/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let model = qi::load_model(&src)?;
    let specs = ["rtn:bits=4".parse()?, "rtn:bits=3".parse()?];
    let twins = qi::twin_cache::twins(&model, &specs, &Default::default(), None)?;
    let cmp = Comparison::new("SmolLM2-135M", &model, &twins)?;
    let rows = analysis::run_seeds(&analysis::find("induction")?, &cmp, &serde_json::json!({}), &[0])?;
    let survival = tidy::filter_eq(&rows.to_frame()?, "metric", "survival")?;
    println!("{}", tidy::filter_eq(&survival, "score", "stripe")?.select(["spec", "rule", "value", "n"])?);
    Ok(())
}
