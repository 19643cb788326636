//! `qi sae train …`: trains a sparse autoencoder on a model's activations and saves it
//! (safetensors + JSON config), then prints its quality report.
use anyhow::Result;
use qi::sae::{self, TrainOptions};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum SaeCommand {
    /// Train an SAE at one hook (activations from C4 text by default) and save it to --out.
    #[command(after_long_help = train_help())]
    Train(TrainArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Model: Hub id, HF directory, .safetensors or .gguf file.
    #[arg(long)]
    pub model: String,
    /// Train on this quantized twin of the model instead (a QuantSpec, e.g. rtn:bits=4; from the
    /// twin cache, QI_CACHE).
    #[arg(long)]
    pub quant: Option<String>,
    /// Hook name (default blocks.{n_layers/2}.hook_resid_post).
    #[arg(long)]
    pub hook: Option<String>,
    /// relu | topk | gated.
    #[arg(long)]
    pub variant: Option<String>,
    /// Training option KEY=VALUE (repeat); VALUE is JSON, or a plain string.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Windows for the report, held out (the source's evaluation split, drawn with seed + 1000);
    /// the report also gives the same metrics on as many training-split windows (in-sample).
    #[arg(long, default_value_t = 8)]
    pub eval_windows: usize,
    /// Output directory (sae.safetensors, config.json, report.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Print report.json's content (with the output folder, hook and variant) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn train_help() -> String {
    let d = serde_json::to_value(TrainOptions::default()).expect("options serialize");
    let mut s = String::from("Training options (--set KEY=VALUE; defaults in brackets):\n");
    for line in TrainOptions::doc().lines() {
        let key = line.split(':').next().unwrap_or("").trim();
        s.push_str(&format!("  {line} [{}]\n", d.get(key).map(|v| v.to_string()).unwrap_or_default()));
    }
    s
}

pub fn run(cmd: SaeCommand) -> Result<()> {
    let SaeCommand::Train(a) = cmd;
    let mut json = crate::analyze::options_json(None, &a.set)?;
    if let Some(h) = &a.hook {
        json["hook"] = serde_json::json!(h);
    }
    if let Some(v) = &a.variant {
        v.parse::<sae::Variant>()?;
        json["variant"] = serde_json::json!(v);
    }
    let opts: TrainOptions = qi::analysis::options_from_json("sae train", &json)?;
    opts.validate()?;
    let spec: Option<qi::quant::QuantSpec> = a.quant.as_deref().map(|q| q.parse().map_err(|e| anyhow::anyhow!("--quant '{q}': {e}"))).transpose()?;
    let model = qi::load_model(&a.model)?;
    let model = match spec {
        None => model,
        Some(spec) => {
            let root = qi::twin_cache::cache_root();
            let mut twins = qi::twin_cache::twins(&model, &[spec], &qi::quantize::QuantizeOptions::default(), Some(&root))?;
            twins.pop().expect("one twin per spec").1
        }
    };
    let hook = opts.hook_for(&model)?;
    let (s, log) = sae::train_on_model(&model, &opts)?;
    s.save(&a.out, Some(&opts))?;
    let n_eval = a.eval_windows.max(1);
    let rows = qi::analysis::text_windows(&model, &opts.source, n_eval, opts.seq_len, opts.seed.wrapping_add(1000))?;
    let report = sae::evaluate(&s, &model, &hook, &rows, opts.forward_batch)?;
    let train_rows = qi::analysis::training_windows(&model, &opts.source, n_eval, opts.seq_len, opts.seed.wrapping_add(1000))?;
    let in_sample = sae::evaluate(&s, &model, &hook, &train_rows, opts.forward_batch)?;
    // "report" is held out (evaluation split); "report_in_sample" is on training-split text
    let out = serde_json::json!({ "report": report, "report_in_sample": in_sample, "tokens": log.tokens, "seconds": log.seconds,
        "resampled": log.resampled, "final_loss": log.losses.last().map(|l| l.total) });
    qi::io::save_text(&serde_json::to_string_pretty(&out)?, &a.out.join("report.json"))?;
    if a.json {
        let mut v = out.clone();
        v["out"] = serde_json::json!(a.out.display().to_string());
        v["hook"] = serde_json::json!(hook);
        v["variant"] = serde_json::to_value(s.cfg.variant)?;
        v["features"] = serde_json::json!(s.cfg.d_hidden);
        println!("{v}");
    }
    eprintln!(
        "wrote {} ({:?} SAE at {hook}, {} features, {} tokens in {:.0} s): held out: FVE {:.3}, L0 {:.1}, dead {:.3}, loss {:.4} → {:.4} (Δ {:+.4}); in sample: FVE {:.3}, dead {:.3}",
        a.out.display(),
        s.cfg.variant,
        s.cfg.d_hidden,
        log.tokens,
        log.seconds,
        report.fraction_variance_explained,
        report.mean_l0,
        report.dead_fraction,
        report.loss_clean,
        report.loss_spliced,
        report.delta_loss,
        in_sample.fraction_variance_explained,
        in_sample.dead_fraction
    );
    Ok(())
}
