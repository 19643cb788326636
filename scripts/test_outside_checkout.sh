#!/usr/bin/env bash
# qi used as a library from a crate outside this repository, with none of qi's environment set
# (no QI_SHARED, QI_CACHE or QI_FIGURES_DIR): quantize a twin (into the user cache folder), run an
# analysis, write its table and a figure into the crate's own working directory, and touch
# nothing in the repository. Needs the notebook tooling for the figure's SVG (kaleido, found
# through QI_VENV as a user would point at their venv). Reuses the repository's build (same
# profile, flags and target dir), so only qi and the scratch crate compile.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "test_outside_checkout: $*" >&2; exit 1; }
stamp="$work/stamp"
touch "$stamp"

mkdir -p "$work/app/src"
cat > "$work/app/Cargo.toml" <<TOML
[package]
name = "qi-outside"
version = "0.0.0"
edition = "2021"

[dependencies]
qi = { path = "$ROOT/qi" }
anyhow = "1"

[workspace]
TOML
cp Cargo.lock "$work/app/Cargo.lock"   # the versions qi is tested with
cat > "$work/app/src/main.rs" <<'RS'
// Perplexity of a model and its RTN-4 twin on random tokens: a table and a figure.
fn main() -> anyhow::Result<()> {
    let model = qi::load_model(&std::env::args().nth(1).expect("model path"))?;
    let spec: qi::quant::QuantSpec = "rtn:bits=4".parse()?;
    let twins = qi::twin_cache::twins(&model, &[spec], &Default::default(), Some(&qi::twin_cache::cache_root()))?;
    let cmp = qi::analysis::Comparison::new("tiny-llama", &model, &twins)?;
    let options = qi::serde_json::json!({ "text": "random", "max_windows": 2, "seqlen": 8, "batch_size": 2 });
    let tidy = qi::analysis::run_seeds(&qi::analysis::find("perplexity")?, &cmp, &options, &[0])?;
    let df = tidy.to_frame()?;
    qi::analysis::tidy::write_parquet(&df, std::path::Path::new("perplexity.parquet"))?;
    let specs = qi::analysis::tidy::str_values(&df, "spec")?;
    let values = qi::analysis::tidy::f64_values(&df, "value")?;
    let mut plot = qi::plotly::Plot::new();
    plot.add_trace(qi::plotly::Bar::new(specs, values));
    let paths = qi::save_figure(&plot, "perplexity")?;
    println!("{} rows; figure {}", df.height(), paths.svg.display());
    Ok(())
}
RS

export CARGO_TARGET_DIR="$ROOT/target/evcxr/target" RUSTFLAGS="${QI_RUSTFLAGS:--Cprefer-dynamic}"
(cd "$work/app" && cargo --config "$ROOT/.cargo/config.toml" build -q --target "$HOST") || fail "the scratch crate does not build against qi"
bin="$CARGO_TARGET_DIR/$HOST/debug/qi-outside"
out="$(cd "$work/app" && env -u QI_SHARED -u QI_CACHE -u QI_FIGURES_DIR -u QI_MODELS XDG_CACHE_HOME="$work/cache" \
  QI_VENV="${QI_VENV:-$ROOT/target/venv}" "$bin" "$ROOT/data/fixtures/llama" 2>&1)" || { echo "$out"; fail "the scratch program failed"; }
echo "$out" | tail -2
for f in perplexity.parquet figures/perplexity.svg figures/perplexity.html figures/plotly.min.js; do
  [ -s "$work/app/$f" ] || fail "$f was not written in the program's working directory"
done
head -c 4 "$work/app/figures/perplexity.svg" | grep -q "<svg" || fail "figures/perplexity.svg is not an SVG"
[ "$(find "$work/cache/qi/twins" -name qi_manifest.json | wc -l)" = 1 ] || fail "the twin was not cached in \$XDG_CACHE_HOME/qi/twins"
# anything written inside the repository since the start (ignored files too), apart from the build
# and study results that other jobs on a developer's machine may be writing meanwhile
written="$(find "$ROOT" -newer "$stamp" -type f -not -path "$ROOT/target/*" -not -path "$ROOT/.git/*" -not -path "$ROOT/data/results/*")"
[ -z "$written" ] || { echo "$written"; fail "the program wrote into the repository"; }
echo "test_outside_checkout: ok (table, figure and twin cache outside the repository)"
