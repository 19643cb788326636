//! Figures and the table of `qi analyze sae-compare` from its tidy parquet, without rerunning the
//! models: `figures/07_sae_compare.{html,svg}` and `figures/07_sae_compare_classes.{html,svg}`.
//!
//!     cargo run -p qi --example sae_compare_figures --target x86_64-unknown-linux-gnu [PARQUET]
use anyhow::Result;
use qi::analysis::sae_compare;
use qi::analysis::tidy::read_parquet;

fn main() -> Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "data/results/07_sae_compare_smollm2.parquet".into());
    let df = read_parquet(std::path::Path::new(&path))?;
    let cols: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).filter(|c| !["model", "method", "bits", "seed"].contains(&c.as_str())).collect();
    for (k, v) in [("POLARS_FMT_MAX_ROWS", "300"), ("POLARS_FMT_MAX_COLS", "20"), ("POLARS_TABLE_WIDTH", "200"), ("POLARS_FMT_STR_LEN", "30")] {
        std::env::set_var(k, v);
    }
    println!("{}", df.select(cols)?);
    for (plot, name) in [(sae_compare::similarity_figure(&df)?, "07_sae_compare"), (sae_compare::frequency_figure(&df)?, "07_sae_compare_classes")] {
        println!("saved {}", qi::save_figure(&plot, name)?.svg.display());
    }
    Ok(())
}
