//! The thin layer notebooks stand on, so a cell says what it means: [`Models::load`] loads a model
//! and its twins (through the twin cache) in one call, and [`show`] saves a figure (HTML + SVG)
//! and displays it, rendering the static image once. The reshapes of tidy results that notebooks
//! read live with the table ([`crate::analysis::Tidy::per_head`], [`crate::analysis::Tidy::per_layer`]).
use crate::analysis::Comparison;
use crate::display::Figure;
use crate::quant::QuantSpec;
use crate::quantize::QuantizeOptions;
use crate::HookedTransformer;
use anyhow::{Context, Result};

/// A reference model and its quantized twins.
pub struct Models {
    /// Display name (the file stem of a local model, the Hub id otherwise): the `model` column.
    pub name: String,
    pub reference: HookedTransformer,
    pub specs: Vec<QuantSpec>,
    pub twins: Vec<(QuantSpec, HookedTransformer)>,
}

impl Models {
    /// Loads `model_path` (Hub id, HF folder, .safetensors or .gguf) and its twins under `methods`
    /// (a `;`-separated QuantSpec list; empty = none) through the twin cache
    /// ([`crate::twin_cache::cache_root`]), and prints one line saying what was loaded.
    pub fn load(model_path: &str, methods: &str) -> Result<Models> {
        let t0 = std::time::Instant::now();
        let reference = crate::load_model(model_path).with_context(|| format!("cannot load the model {model_path}"))?;
        let specs = QuantSpec::parse_list(methods).with_context(|| format!("methods '{methods}'"))?;
        let twins = crate::twin_cache::twins(&reference, &specs, &QuantizeOptions::default(), Some(&crate::twin_cache::cache_root()))?;
        let name = crate::loader::display_name(model_path);
        let c = &reference.cfg;
        let twin_list = if specs.is_empty() { "none".to_string() } else { specs.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ") };
        println!("{name}: {} layers × {} heads; twins: {twin_list}; loaded in {:.1?}", c.n_layers, c.n_heads, t0.elapsed());
        Ok(Models { name, reference, specs, twins })
    }

    /// The reference and every twin, for an analysis.
    pub fn comparison(&self) -> Result<Comparison<'_>> {
        Comparison::new(self.name.clone(), &self.reference, &self.twins)
    }

    /// The twins' spec strings, as the `spec` column writes them.
    pub fn spec_names(&self) -> Vec<String> {
        self.specs.iter().map(|s| s.to_string()).collect()
    }
}

/// The results of an analysis: read from the tidy parquet at `saved` when it is not empty (the
/// committed table, so figures are drawn from exactly the data the findings print), else computed
/// by `compute`; with the seconds the computation took (0 for a saved table) and a line saying
/// which it was.
pub fn saved_or_run(saved: &str, compute: impl FnOnce() -> Result<crate::analysis::Tidy>) -> Result<(crate::analysis::Tidy, f64)> {
    if !saved.is_empty() {
        let path = std::path::Path::new(saved);
        let df = crate::analysis::tidy::read_parquet(path)?;
        let t = crate::analysis::Tidy::from_frame(&df).with_context(|| format!("{saved}: not a tidy results table"))?;
        println!("results: {} rows read from {saved}", t.rows.len());
        return Ok((t, 0.0));
    }
    let t0 = std::time::Instant::now();
    let t = compute()?;
    let secs = t0.elapsed().as_secs_f64();
    println!("results: {} rows computed in {secs:.1} s", t.rows.len());
    Ok((t, secs))
}

/// Saves `plot` as `NAME.html` and `NAME.svg` in the figures folder ([`crate::figures::figures_dir`]),
/// prints where, and returns it for display (the last expression of a cell); the SVG is rendered
/// once for both.
pub fn show(plot: &plotly::Plot, name: &str) -> Result<Figure> {
    show_in(plot, name, &crate::figures::figures_dir())
}

/// [`show`] into a given folder.
pub fn show_in(plot: &plotly::Plot, name: &str, dir: &std::path::Path) -> Result<Figure> {
    crate::figures::check_figure_name(name)?;
    let fig = crate::display::figure(plot);
    let svg = crate::figures::render_svg_json(fig.json()).with_context(|| format!("cannot render figure `{name}`"))?;
    let paths = crate::figures::write_figure_files(fig.json(), &svg, name, dir)?;
    println!("saved {}", paths.svg.display());
    Ok(fig.with_svg(svg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_results_are_read_and_not_computed() {
        let q: QuantSpec = "rtn:bits=4".parse().unwrap();
        let mut t = crate::analysis::Tidy::new("m");
        t.push(crate::analysis::Row::new(&q, "cosine", 0.75).layer(2));
        let dir = crate::testing::scratch("notebook-saved");
        let f = dir.join("t.parquet");
        crate::analysis::tidy::write_parquet(&t.to_frame().unwrap(), &f).unwrap();
        let (read, secs) = saved_or_run(f.to_str().unwrap(), || panic!("a saved table must not be computed")).unwrap();
        assert_eq!((read.rows.len(), read.rows[0].value, read.rows[0].layer, secs), (1, 0.75, Some(2), 0.0));
        let (made, _) = saved_or_run("", || Ok(t.clone())).unwrap();
        assert_eq!(made.rows[0].metric, "cosine");
        let e = format!("{:#}", saved_or_run(dir.join("none.parquet").to_str().unwrap(), || Ok(t.clone())).unwrap_err());
        assert!(e.contains("none.parquet"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_figure_with_its_image_is_displayed_without_rendering_again() {
        let mut plot = plotly::Plot::new();
        plot.add_trace(plotly::Scatter::new(vec![1, 2], vec![3, 4]));
        // an image no renderer would make: the display must show exactly it
        let fig = crate::display::figure(&plot).with_svg("<svg>given</svg>".into());
        let html = fig.bundle().into_iter().find(|(m, _)| *m == "text/html").unwrap().1;
        assert_eq!(html, crate::display::svg_img_html("<svg>given</svg>", "untitled"));
        let e = show_in(&plot, "../up", &std::env::temp_dir()).err().unwrap().to_string();
        assert!(e.contains("plain file stem"), "{e}");
    }

    /// Needs kaleido (./dev setup-notebooks); skipped with a message otherwise.
    #[test]
    fn show_writes_the_image_it_displays() {
        if let Err(e) = crate::figures::render_svg_json("{}") {
            eprintln!("skipping: {e}");
            return;
        }
        let dir = std::env::temp_dir().join(format!("qi-notebook-show-{}", std::process::id()));
        let mut plot = plotly::Plot::new();
        plot.add_trace(plotly::HeatMap::new_z(vec![vec![1.0, 2.0], vec![3.0, 4.0]]));
        let fig = show_in(&plot, "heat", &dir).unwrap();
        let svg = std::fs::read_to_string(dir.join("heat.svg")).unwrap();
        let html = fig.bundle().into_iter().find(|(m, _)| *m == "text/html").unwrap().1;
        assert!(svg.starts_with("<svg") && html == crate::display::svg_img_html(&svg, "untitled"));
        assert!(std::fs::read_to_string(dir.join("heat.html")).unwrap().contains("\"heatmap\""));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
