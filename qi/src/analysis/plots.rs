//! Figure builders shared by the analyses. Each takes a tidy DataFrame (see [`super::tidy`]),
//! already filtered to what it should show, and returns a plotly figure; analyses wrap them with
//! their own titles.
use super::tidy::{f64_values, str_values};
use anyhow::{bail, Result};
use plotly::common::{ColorBar, ColorScale, ColorScalePalette, ErrorData, ErrorType, Mode, Title};
use plotly::layout::{Axis, AxisType, GridPattern, LayoutGrid};
use plotly::{Bar, HeatMap, Layout, Plot, Scatter};
use polars::prelude::DataFrame;

/// Axis titles and figure title.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    pub title: String,
    pub x: String,
    pub y: String,
}

impl Labels {
    pub fn new(title: impl Into<String>, x: impl Into<String>, y: impl Into<String>) -> Self {
        Labels { title: title.into(), x: x.into(), y: y.into() }
    }

    /// Title, axis titles and size.
    fn layout(&self, width: usize, height: usize) -> Layout {
        self.layout_with(width, height, false, None)
    }

    /// [`Labels::layout`] with a logarithmic x axis and/or a fixed y range.
    fn layout_with(&self, width: usize, height: usize, log_x: bool, y_range: Option<(f64, f64)>) -> Layout {
        let mut x = Axis::new().title(Title::with_text(&self.x));
        if log_x {
            x = x.type_(AxisType::Log);
        }
        let mut y = Axis::new().title(Title::with_text(&self.y));
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

fn ci_error(df: &DataFrame, idx: &[usize], value: &[f64]) -> Result<Option<ErrorData>> {
    if super::tidy::column(df, "ci_low").is_err() {
        return Ok(None);
    }
    let (lo, hi) = (f64_values(df, "ci_low")?, f64_values(df, "ci_high")?);
    let plus: Vec<f64> = idx.iter().map(|&i| if hi[i].is_nan() { 0.0 } else { hi[i] - value[i] }).collect();
    let minus: Vec<f64> = idx.iter().map(|&i| if lo[i].is_nan() { 0.0 } else { value[i] - lo[i] }).collect();
    Ok(Some(ErrorData::new(ErrorType::Data).array(plus).array_minus(minus).symmetric(false)))
}

/// One line per distinct value of `series` (e.g. `spec`), `value` against numeric column `x`,
/// with CI error bars when the frame has `ci_low`/`ci_high`.
pub fn lines(df: &DataFrame, x: &str, series: &str, labels: &Labels) -> Result<Plot> {
    lines_with(df, x, series, labels, false, None)
}

/// [`lines`] on a logarithmic x axis (e.g. model size), with an optional fixed y range.
pub fn lines_log_x(df: &DataFrame, x: &str, series: &str, labels: &Labels, y_range: Option<(f64, f64)>) -> Result<Plot> {
    lines_with(df, x, series, labels, true, y_range)
}

fn lines_with(df: &DataFrame, x: &str, series: &str, labels: &Labels, log_x: bool, y_range: Option<(f64, f64)>) -> Result<Plot> {
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
        if let Some(e) = ci_error(df, &idx, &ys)? {
            tr = tr.error_y(e);
        }
        plot.add_trace(tr);
    }
    plot.set_layout(labels.layout_with(800, 480, log_x, y_range));
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
        if let Some(e) = ci_error(df, &idx, &ys)? {
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
/// red–blue scale centred on zero (for differences).
pub fn heatmap_panels(panels: &[(String, Vec<Vec<f64>>, bool)], title: &str, zlabel: &str) -> Result<Plot> {
    if panels.is_empty() {
        bail!("no heatmap panels for '{title}'");
    }
    let mut plot = Plot::new();
    let n = panels.len();
    let mut layout = Layout::new()
        .title(Title::with_text(title))
        .grid(LayoutGrid::new().rows(1).columns(n).pattern(GridPattern::Independent))
        .width((360 * n).max(500))
        .height(520);
    for (i, (name, z, diverging)) in panels.iter().enumerate() {
        let (xa, ya) = if i == 0 { ("x".to_string(), "y".to_string()) } else { (format!("x{}", i + 1), format!("y{}", i + 1)) };
        let n_heads = z.first().map(|r| r.len()).unwrap_or(0);
        let mut hm = HeatMap::new((0..n_heads).collect::<Vec<_>>(), (0..z.len()).collect::<Vec<_>>(), z.clone())
            .name(name)
            .x_axis(&xa)
            .y_axis(&ya)
            .hover_template(format!("{name}<br>layer %{{y}}, head %{{x}}<br>{zlabel} %{{z:.4f}}<extra></extra>"))
            .color_bar(ColorBar::new().x(((i + 1) as f64 / n as f64) - 0.02).thickness(10));
        hm = if *diverging {
            let m = z.iter().flatten().filter(|v| v.is_finite()).fold(0f64, |a, &v| a.max(v.abs())).max(1e-12);
            hm.color_scale(ColorScale::Palette(ColorScalePalette::RdBu)).zmid(0.0).zmin(-m).zmax(m).reverse_scale(true)
        } else {
            hm.color_scale(ColorScale::Palette(ColorScalePalette::Viridis))
        };
        plot.add_trace(hm);
        let xaxis = Axis::new().title(Title::with_text(format!("head — {name}")));
        let yaxis = Axis::new().title(Title::with_text("layer"));
        layout = match i {
            0 => layout.x_axis(xaxis).y_axis(yaxis),
            1 => layout.x_axis2(xaxis).y_axis2(yaxis),
            2 => layout.x_axis3(xaxis).y_axis3(yaxis),
            3 => layout.x_axis4(xaxis).y_axis4(yaxis),
            4 => layout.x_axis5(xaxis).y_axis5(yaxis),
            5 => layout.x_axis6(xaxis).y_axis6(yaxis),
            _ => bail!("at most 6 heatmap panels per figure"),
        };
    }
    plot.set_layout(layout);
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
}
