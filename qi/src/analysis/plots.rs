//! Figure builders shared by the analyses. Each takes a tidy DataFrame (see [`super::tidy`]),
//! already filtered to what it should show, and returns a plotly figure; analyses wrap them with
//! their own titles.
use super::tidy::{f64_values, str_values};
use anyhow::{bail, Result};
use plotly::common::{ColorBar, ColorScale, ColorScalePalette, ErrorData, ErrorType, Mode, Title};
use plotly::layout::{Axis, AxisType, GridPattern, LayoutGrid};
use plotly::{Bar, HeatMap, Layout, Plot, Scatter};
use polars::prelude::DataFrame;

/// Axis titles and figure title, and the metric's range when it has one.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    pub title: String,
    pub x: String,
    pub y: String,
    /// The metric's range (e.g. `(0, 1)` for a share): confidence intervals are clamped to it.
    pub range: Option<(f64, f64)>,
}

impl Labels {
    pub fn new(title: impl Into<String>, x: impl Into<String>, y: impl Into<String>) -> Self {
        Labels { title: title.into(), x: x.into(), y: y.into(), range: None }
    }

    /// A metric that lives in `[lo, hi]` (a share, a probability): its intervals are clamped.
    pub fn within(mut self, lo: f64, hi: f64) -> Self {
        self.range = Some((lo, hi));
        self
    }

    /// Title, axis titles and size.
    fn layout(&self, width: usize, height: usize) -> Layout {
        self.layout_with(width, height, (false, false), None)
    }

    /// [`Labels::layout`] with a logarithmic x axis and/or a fixed y range.
    fn layout_with(&self, width: usize, height: usize, (log_x, log_y): (bool, bool), y_range: Option<(f64, f64)>) -> Layout {
        let mut x = Axis::new().title(Title::with_text(&self.x));
        if log_x {
            x = x.type_(AxisType::Log);
        }
        let mut y = Axis::new().title(Title::with_text(&self.y));
        if log_y {
            y = y.type_(AxisType::Log);
        }
        if let Some((lo, hi)) = y_range {
            y = y.range(vec![lo, hi]);
        }
        Layout::new().title(Title::with_text(&self.title)).x_axis(x).y_axis(y).width(width).height(height)
    }

    /// An empty table is an error naming the figure, not an empty figure.
    fn require_rows(&self, df: &DataFrame) -> Result<()> {
        if df.height() == 0 {
            bail!("nothing to plot: the table has no rows for '{}'", self.title);
        }
        Ok(())
    }
}

/// Error bars from `ci_low`/`ci_high`, clamped to `range` (a share's interval ends at 0 and 1).
fn ci_error(df: &DataFrame, idx: &[usize], value: &[f64], range: Option<(f64, f64)>) -> Result<Option<ErrorData>> {
    if super::tidy::column(df, "ci_low").is_err() {
        return Ok(None);
    }
    let (lo, hi) = (f64_values(df, "ci_low")?, f64_values(df, "ci_high")?);
    let (rlo, rhi) = range.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
    let plus: Vec<f64> = idx.iter().map(|&i| if hi[i].is_nan() { 0.0 } else { (hi[i].min(rhi) - value[i]).max(0.0) }).collect();
    let minus: Vec<f64> = idx.iter().map(|&i| if lo[i].is_nan() { 0.0 } else { (value[i] - lo[i].max(rlo)).max(0.0) }).collect();
    Ok(Some(ErrorData::new(ErrorType::Data).array(plus).array_minus(minus).symmetric(false)))
}

/// One line per distinct value of `series` (e.g. `spec`), `value` against numeric column `x`,
/// with CI error bars when the frame has `ci_low`/`ci_high`.
pub fn lines(df: &DataFrame, x: &str, series: &str, labels: &Labels) -> Result<Plot> {
    lines_with(df, x, series, labels, (false, false), None)
}

/// [`lines`] on a logarithmic x axis (e.g. model size), with an optional fixed y range.
pub fn lines_log_x(df: &DataFrame, x: &str, series: &str, labels: &Labels, y_range: Option<(f64, f64)>) -> Result<Plot> {
    lines_with(df, x, series, labels, (true, false), y_range)
}

/// [`lines`] on logarithmic x and y axes (e.g. time against model size: a slope of one is cost
/// proportional to size).
pub fn lines_log_log(df: &DataFrame, x: &str, series: &str, labels: &Labels) -> Result<Plot> {
    lines_with(df, x, series, labels, (true, true), None)
}

fn lines_with(df: &DataFrame, x: &str, series: &str, labels: &Labels, log: (bool, bool), y_range: Option<(f64, f64)>) -> Result<Plot> {
    labels.require_rows(df)?;
    let xs = f64_values(df, x)?;
    let ys = f64_values(df, "value")?;
    let ss = str_values(df, series)?;
    let mut plot = Plot::new();
    for s in distinct_str_any(&ss) {
        let mut idx: Vec<usize> = (0..ss.len()).filter(|&i| ss[i] == s).collect();
        idx.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
        let mut tr = Scatter::new(idx.iter().map(|&i| xs[i]).collect(), idx.iter().map(|&i| ys[i]).collect())
            .mode(Mode::LinesMarkers)
            .name(&s);
        if let Some(e) = ci_error(df, &idx, &ys, labels.range)? {
            tr = tr.error_y(e);
        }
        plot.add_trace(tr);
    }
    plot.set_layout(labels.layout_with(800, 480, log, y_range));
    Ok(plot)
}

/// Grouped bars: x = distinct values of `category`, one bar group per distinct `series`.
pub fn bars(df: &DataFrame, category: &str, series: &str, labels: &Labels) -> Result<Plot> {
    labels.require_rows(df)?;
    let cs = str_values(df, category)?;
    let ys = f64_values(df, "value")?;
    let ss = str_values(df, series)?;
    let mut plot = Plot::new();
    for s in distinct_str_any(&ss) {
        let idx: Vec<usize> = (0..ss.len()).filter(|&i| ss[i] == s).collect();
        let mut tr = Bar::new(idx.iter().map(|&i| cs[i].clone()).collect(), idx.iter().map(|&i| ys[i]).collect()).name(&s);
        if let Some(e) = ci_error(df, &idx, &ys, labels.range)? {
            tr = tr.error_y(e);
        }
        plot.add_trace(tr);
    }
    plot.set_layout(labels.layout(800, 480));
    Ok(plot)
}

/// A `[layer][head]` grid of `value` from a frame with `layer` and `head` columns (missing cells
/// are NaN, drawn empty).
pub fn layer_head_grid(df: &DataFrame, n_layers: usize, n_heads: usize) -> Result<Vec<Vec<f64>>> {
    let (ls, hs, vs) = (f64_values(df, "layer")?, f64_values(df, "head")?, f64_values(df, "value")?);
    let mut z = vec![vec![f64::NAN; n_heads]; n_layers];
    for i in 0..vs.len() {
        let (l, h) = (ls[i], hs[i]);
        if l.is_finite() && h.is_finite() && (l as usize) < n_layers && (h as usize) < n_heads {
            z[l as usize][h as usize] = vs[i];
        }
    }
    Ok(z)
}

/// Layer × head heatmaps side by side, one per `(panel title, grid)`; `diverging` uses a
/// red–blue scale centred on zero (for differences). Panels of one kind share one colour scale
/// (the same zmin/zmax, so equal colours mean equal values across specs) and one colour bar at the
/// right edge, titled `zlabel`; each panel has its title above it and its own axis titles.
pub fn heatmap_panels(panels: &[(String, Vec<Vec<f64>>, bool)], title: &str, zlabel: &str) -> Result<Plot> {
    if panels.is_empty() {
        bail!("no heatmap panels for '{title}'");
    }
    if panels.len() > 6 {
        bail!("at most 6 heatmap panels per figure, got {} for '{title}'", panels.len());
    }
    let finite = |diverging: bool| panels.iter().filter(move |p| p.2 == diverging).flat_map(|p| p.1.iter().flatten().copied()).filter(|v| v.is_finite());
    // one range per kind, over all its panels
    let (lo, hi) = finite(false).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo.is_finite() { (lo, if hi > lo { hi } else { lo + 1e-12 }) } else { (0.0, 1.0) };
    let m = finite(true).fold(0f64, |a, v| a.max(v.abs())).max(1e-12);
    let last_of = |diverging: bool| panels.iter().rposition(|p| p.2 == diverging);
    let both_kinds = last_of(true).is_some() && last_of(false).is_some();
    let mut plot = Plot::new();
    let n = panels.len();
    let mut layout = Layout::new()
        .title(Title::with_text(title))
        .grid(LayoutGrid::new().rows(1).columns(n).pattern(GridPattern::Independent))
        .width((300 * n + 160).min(1000))
        .height(520);
    let mut annotations = Vec::new();
    for (i, (name, z, diverging)) in panels.iter().enumerate() {
        let (xa, ya) = if i == 0 { ("x".to_string(), "y".to_string()) } else { (format!("x{}", i + 1), format!("y{}", i + 1)) };
        let n_heads = z.first().map(|r| r.len()).unwrap_or(0);
        let mut hm = HeatMap::new((0..n_heads).collect::<Vec<_>>(), (0..z.len()).collect::<Vec<_>>(), z.clone())
            .name(name)
            .x_axis(&xa)
            .y_axis(&ya)
            .hover_template(format!("{name}<br>layer %{{y}}, head %{{x}}<br>{zlabel} %{{z:.4f}}<extra></extra>"));
        hm = if *diverging {
            hm.color_scale(ColorScale::Palette(ColorScalePalette::RdBu)).zmid(0.0).zmin(-m).zmax(m).reverse_scale(true)
        } else {
            hm.color_scale(ColorScale::Palette(ColorScalePalette::Viridis)).zmin(lo).zmax(hi)
        };
        // one colour bar per kind, right of the last panel (two kinds: the second one further out)
        if last_of(*diverging) == Some(i) {
            let x = if both_kinds && *diverging { 1.16 } else { 1.02 };
            let bar_title = if *diverging { format!("{zlabel} (difference)") } else { zlabel.to_string() };
            hm = hm.show_scale(true).color_bar(ColorBar::new().x(x).thickness(12).title(Title::with_text(bar_title)));
        } else {
            hm = hm.show_scale(false);
        }
        plot.add_trace(hm);
        let axis_ref = if i == 0 { String::new() } else { (i + 1).to_string() };
        annotations.push(
            plotly::layout::Annotation::new()
                .text(name)
                .x_ref(format!("x{axis_ref} domain"))
                .y_ref(format!("y{axis_ref} domain"))
                .x(0.5)
                .y(1.06)
                .show_arrow(false),
        );
        let xaxis = Axis::new().title(Title::with_text("head"));
        let yaxis = Axis::new().title(Title::with_text("layer"));
        layout = match i {
            0 => layout.x_axis(xaxis).y_axis(yaxis),
            1 => layout.x_axis2(xaxis).y_axis2(yaxis),
            2 => layout.x_axis3(xaxis).y_axis3(yaxis),
            3 => layout.x_axis4(xaxis).y_axis4(yaxis),
            4 => layout.x_axis5(xaxis).y_axis5(yaxis),
            _ => layout.x_axis6(xaxis).y_axis6(yaxis),
        };
    }
    plot.set_layout(layout.annotations(annotations));
    Ok(plot)
}

/// Scatter of paired values (reference on x, quantized on y) with the y = x diagonal; one trace
/// per series, hover text per point.
pub fn paired_scatter(series: &[(String, Vec<f64>, Vec<f64>, Vec<String>)], labels: &Labels) -> Result<Plot> {
    let mut plot = Plot::new();
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (name, x, y, text) in series {
        for v in x.iter().chain(y) {
            if v.is_finite() {
                lo = lo.min(*v);
                hi = hi.max(*v);
            }
        }
        plot.add_trace(Scatter::new(x.clone(), y.clone()).mode(Mode::Markers).name(name).text_array(text.clone()));
    }
    if lo.is_finite() {
        plot.add_trace(
            Scatter::new(vec![lo, hi], vec![lo, hi])
                .mode(Mode::Lines)
                .name("y = x")
                .line(plotly::common::Line::new().dash(plotly::common::DashType::Dash).color("gray")),
        );
    }
    plot.set_layout(labels.layout(700, 600));
    Ok(plot)
}

fn distinct_str_any(v: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in v {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{Row, Tidy};
    use crate::quant::QuantSpec;

    #[test]
    fn line_and_heatmap_figures_serialize() {
        let rtn: QuantSpec = "rtn:bits=4".parse().unwrap();
        let mut t = Tidy::new("m");
        for l in 0..3 {
            t.push(Row::new(&rtn, "cosine", 1.0 - l as f64 * 0.1).layer(l).head(l % 2).ci(0.5, 1.0));
        }
        let df = t.to_frame().unwrap();
        let p = lines(&df, "layer", "spec", &Labels::new("t", "layer", "cosine")).unwrap();
        let json = p.to_json();
        assert!(json.contains("\"error_y\"") || json.contains("\"error_y\":"), "{json}");
        // log x axis and fixed y range are in the layout; the plain figure has neither
        let v: serde_json::Value = serde_json::from_str(&lines_log_x(&df, "layer", "spec", &Labels::new("t", "size", "share"), Some((-0.05, 1.05))).unwrap().to_json()).unwrap();
        assert_eq!(v["layout"]["xaxis"]["type"], "log");
        assert_eq!(v["layout"]["xaxis"]["title"]["text"], "size");
        assert_eq!(v["layout"]["yaxis"]["range"], serde_json::json!([-0.05, 1.05]));
        let plain: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(plain["layout"]["xaxis"].get("type").is_none() && plain["layout"]["yaxis"].get("range").is_none());
        let z = layer_head_grid(&df, 3, 2).unwrap();
        assert_eq!(z[1][1], 0.9);
        assert!(z[1][0].is_nan());
        let h = heatmap_panels(&[("ref".into(), z.clone(), false), ("diff".into(), z, true)], "t", "v").unwrap();
        assert!(h.to_json().contains("\"xaxis\":\"x2\""));
        assert!(json.contains("\"width\":800") && json.contains("\"text\":\"cosine\""), "{json}");
        let err = bars(&df.head(Some(0)), "layer", "spec", &Labels::new("empty bars", "", "")).err().expect("an empty table is an error");
        assert!(err.to_string().contains("'empty bars'"), "{err}");
        assert!(lines(&df.head(Some(0)), "layer", "spec", &Labels::default()).is_err());
    }

    fn json(p: &Plot) -> serde_json::Value {
        serde_json::from_str(&p.to_json()).unwrap()
    }

    #[test]
    fn every_builder_titles_its_figure_and_axes_and_clamps_intervals_to_the_metrics_range() {
        let rtn: QuantSpec = "rtn:bits=4".parse().unwrap();
        let mut t = Tidy::new("m");
        // a share whose interval runs past 1 (0.9 ± 0.5)
        t.push(Row::new(&rtn, "survival", 0.9).layer(0).ci(0.4, 1.4));
        t.push(Row::new(&rtn, "survival", 0.1).layer(1).ci(-0.3, 0.5));
        let df = t.to_frame().unwrap();
        let share = Labels::new("Survival", "layer", "share").within(0.0, 1.0);
        for (name, fig) in [("lines", lines(&df, "layer", "spec", &share).unwrap()), ("bars", bars(&df, "layer", "spec", &share).unwrap())] {
            let v = json(&fig);
            assert_eq!(v["layout"]["title"]["text"], "Survival", "{name}");
            assert_eq!((v["layout"]["xaxis"]["title"]["text"].as_str(), v["layout"]["yaxis"]["title"]["text"].as_str()), (Some("layer"), Some("share")), "{name}");
            let e = &v["data"][0]["error_y"];
            // clamped: up to 1 and down to 0, not to 1.4 and -0.3
            let (plus, minus): (Vec<f64>, Vec<f64>) = (serde_json::from_value(e["array"].clone()).unwrap(), serde_json::from_value(e["arrayminus"].clone()).unwrap());
            assert!((plus[0] - 0.1).abs() < 1e-12 && (minus[1] - 0.1).abs() < 1e-12, "{name}: {e}");
            assert!((minus[0] - 0.5).abs() < 1e-12 && (plus[1] - 0.4).abs() < 1e-12, "{name}: inside the range nothing moves: {e}");
        }
        // without a range the interval is drawn as given
        let v = json(&lines(&df, "layer", "spec", &Labels::new("t", "x", "y")).unwrap());
        assert!((v["data"][0]["error_y"]["array"][0].as_f64().unwrap() - 0.5).abs() < 1e-12);

        // heatmaps: two panels of one kind share one scale and one colour bar; each has a title
        let a = vec![vec![0.0, 1.0], vec![0.5, 0.2]];
        let b = vec![vec![0.0, 3.0], vec![1.0, 2.0]];
        let d = vec![vec![-0.5, 0.25], vec![0.0, 0.1]];
        let v = json(&heatmap_panels(&[("rtn:bits=4".into(), a, false), ("rtn:bits=3".into(), b, false), ("3 − 4".into(), d, true)], "JS divergence", "JS").unwrap());
        let tr = v["data"].as_array().unwrap();
        assert_eq!((tr[0]["zmin"].as_f64(), tr[0]["zmax"].as_f64()), (Some(0.0), Some(3.0)), "the first panel takes the shared range, not its own 0..1");
        assert_eq!((tr[1]["zmin"].as_f64(), tr[1]["zmax"].as_f64()), (Some(0.0), Some(3.0)));
        assert_eq!((tr[2]["zmin"].as_f64(), tr[2]["zmax"].as_f64()), (Some(-0.5), Some(0.5)), "a difference panel is symmetric about 0");
        let shows: Vec<bool> = tr.iter().map(|t| t["showscale"].as_bool().unwrap()).collect();
        assert_eq!(shows, [false, true, true], "one colour bar per kind");
        let bar_x: Vec<f64> = tr.iter().filter(|t| t["showscale"] == true).map(|t| t["colorbar"]["x"].as_f64().unwrap()).collect();
        assert!(bar_x.iter().all(|&x| x > 1.0), "colour bars right of the last panel, not over the next one's labels: {bar_x:?}");
        assert_eq!(tr[1]["colorbar"]["title"]["text"], "JS");
        let notes: Vec<&str> = v["layout"]["annotations"].as_array().unwrap().iter().map(|a| a["text"].as_str().unwrap()).collect();
        assert_eq!(notes, ["rtn:bits=4", "rtn:bits=3", "3 − 4"]);
        for axis in ["xaxis", "xaxis2", "xaxis3"] {
            assert_eq!(v["layout"][axis]["title"]["text"], "head", "{axis}");
        }
        for axis in ["yaxis", "yaxis2", "yaxis3"] {
            assert_eq!(v["layout"][axis]["title"]["text"], "layer", "{axis}");
        }
        assert!(v["layout"]["width"].as_u64().unwrap() <= 1000, "fits a notebook column");
        assert_eq!(v["layout"]["title"]["text"], "JS divergence");

        let v = json(&paired_scatter(&[("rtn".into(), vec![0.1, 0.5], vec![0.2, 0.4], vec!["a".into(), "b".into()])], &Labels::new("Scores", "reference", "twin")).unwrap());
        assert_eq!((v["layout"]["title"]["text"].as_str(), v["layout"]["xaxis"]["title"]["text"].as_str(), v["layout"]["yaxis"]["title"]["text"].as_str()), (Some("Scores"), Some("reference"), Some("twin")));
    }
}
