//! Rich display in the evcxr Jupyter kernel.
//!
//! evcxr shows the last expression of a cell through its `evcxr_display()` method, which prints
//! `EVCXR_BEGIN_CONTENT <mime>` … `EVCXR_END_CONTENT` blocks; evcxr merges all blocks printed by a
//! cell into one output bundle (one entry per MIME type), and the front-end picks the richest
//! type it can render. So show one table or one figure per cell.
//!
//! * [`table`]: a polars DataFrame as an HTML table (`text/html`, first and last rows when long)
//!   plus polars' own text rendering (`text/plain`).
//! * [`figure`]: a plotly figure as `application/vnd.plotly.v1+json` (interactive in JupyterLab
//!   with the plotly extension), a static SVG inside `text/html` (an `<img>` with a data URL, for
//!   any viewer without that extension: GitHub, nbconvert, VS Code, an untrusted notebook), and a
//!   one-line `text/plain`. Without the static renderer the HTML loads the vendored plotly.js
//!   instead (interactive where scripts run, e.g. JupyterLab with the notebook trusted).
use polars::prelude::{AnyValue, DataFrame};
use std::fmt::Write as _;

/// Prints one output bundle: `(mime type, content)` pairs.
pub fn emit(parts: &[(&str, &str)]) {
    let mut s = String::new();
    for (mime, content) in parts {
        let _ = write!(s, "EVCXR_BEGIN_CONTENT {mime}\n{content}\nEVCXR_END_CONTENT\n");
    }
    print!("{s}");
}

pub use crate::figures::html_escape;

/// A short human rendering of a float: 4 significant digits, scientific outside [1e-3, 1e5).
pub fn fmt_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return "0".into();
    }
    let a = x.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{x:.3e}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    format!("{x:.decimals$}")
}

fn cell_text(v: &AnyValue) -> String {
    match v {
        AnyValue::Null => "null".into(),
        AnyValue::Float64(x) => fmt_float(*x),
        AnyValue::Float32(x) => fmt_float(*x as f64),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// A DataFrame shown as an HTML table; see [`table`].
#[derive(Clone)]
pub struct Table {
    df: DataFrame,
    max_rows: usize,
    caption: Option<String>,
}

/// Wraps a DataFrame for display: the last expression `qi::display::table(&df)` renders as a
/// table. Long frames show their first and last rows (20 by default, see [`Table::max_rows`]).
pub fn table(df: &DataFrame) -> Table {
    Table { df: df.clone(), max_rows: 20, caption: None }
}

impl Table {
    /// Shows at most `n` rows (half from the top, half from the bottom); 0 shows all.
    pub fn max_rows(mut self, n: usize) -> Self {
        self.max_rows = n;
        self
    }

    /// A caption above the table.
    pub fn caption(mut self, text: impl Into<String>) -> Self {
        self.caption = Some(text.into());
        self
    }

    /// Row indices shown, with `None` marking the elided middle.
    fn rows(&self) -> Vec<Option<usize>> {
        let h = self.df.height();
        if self.max_rows == 0 || h <= self.max_rows {
            return (0..h).map(Some).collect();
        }
        let top = self.max_rows.div_ceil(2);
        let bottom = self.max_rows - top;
        (0..top).map(Some).chain(std::iter::once(None)).chain((h - bottom..h).map(Some)).collect()
    }

    pub fn to_html(&self) -> String {
        let cols = self.df.columns();
        let mut s = String::from("<div class=\"qi-table\">");
        if let Some(c) = &self.caption {
            let _ = write!(s, "<p><b>{}</b></p>", html_escape(c));
        }
        s.push_str("<table border=\"1\" class=\"dataframe\">\n<thead><tr><th></th>");
        for c in cols {
            let _ = write!(s, "<th>{}<br><small>{}</small></th>", html_escape(c.name()), html_escape(&c.dtype().to_string()));
        }
        s.push_str("</tr></thead>\n<tbody>\n");
        for r in self.rows() {
            match r {
                None => {
                    let _ = writeln!(s, "<tr><th>…</th>{}</tr>", "<td>…</td>".repeat(cols.len()));
                }
                Some(i) => {
                    let _ = write!(s, "<tr><th>{i}</th>");
                    for c in cols {
                        let v = c.get(i).map(|v| cell_text(&v)).unwrap_or_else(|e| format!("error: {e}"));
                        let _ = write!(s, "<td>{}</td>", html_escape(&v));
                    }
                    s.push_str("</tr>\n");
                }
            }
        }
        let _ = write!(s, "</tbody></table>\n<p><small>{} rows × {} columns</small></p></div>", self.df.height(), self.df.width());
        s
    }

    /// A markdown table (what `qi show` prints): the same cells and elision as [`Table::to_html`].
    pub fn to_markdown(&self) -> String {
        let cols = self.df.columns();
        let row = |cells: Vec<String>| format!("| {} |\n", cells.iter().map(|c| c.replace('|', "\\|").replace('\n', " ")).collect::<Vec<_>>().join(" | "));
        let mut s = String::new();
        if let Some(c) = &self.caption {
            let _ = writeln!(s, "**{c}**\n");
        }
        s.push_str(&row(cols.iter().map(|c| c.name().to_string()).collect()));
        s.push_str(&row(vec!["---".to_string(); cols.len()]));
        for r in self.rows() {
            s.push_str(&row(match r {
                None => vec!["…".to_string(); cols.len()],
                Some(i) => cols.iter().map(|c| c.get(i).map(|v| cell_text(&v)).unwrap_or_else(|e| format!("error: {e}"))).collect(),
            }));
        }
        s
    }

    pub fn to_text(&self) -> String {
        match &self.caption {
            Some(c) => format!("{c}\n{}", self.df),
            None => self.df.to_string(),
        }
    }

    /// Called by evcxr for a cell's last expression.
    pub fn evcxr_display(&self) {
        emit(&[("text/html", &self.to_html()), ("text/plain", &self.to_text())]);
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// Markdown text (a `qi report` table, a computed finding) that a notebook shows rendered.
#[derive(Clone, Debug)]
pub struct Markdown(pub String);

/// Wraps Markdown text for display: the last expression `qi::display::markdown(text)` renders it.
pub fn markdown(text: impl Into<String>) -> Markdown {
    Markdown(text.into())
}

impl Markdown {
    /// evcxr's display hook: rendered Markdown, with the text itself as the plain fallback.
    pub fn evcxr_display(&self) {
        emit(&[("text/markdown", &self.0), ("text/plain", &self.0)]);
    }
}

/// A plotly figure prepared for display; see [`figure`].
#[derive(Clone)]
pub struct Figure {
    json: String,
    title: String,
    /// The static image when it was rendered already (by [`crate::notebook::show`]).
    svg: Option<String>,
}

/// Wraps a plotly figure for display: the last expression `qi::display::figure(&plot)` renders
/// interactively in JupyterLab and as a static SVG elsewhere.
pub fn figure(plot: &plotly::Plot) -> Figure {
    let json = plot.to_json();
    let title = serde_json::from_str::<serde_json::Value>(&json)
        .ok()
        .and_then(|v| {
            let t = &v["layout"]["title"];
            t["text"].as_str().or(t.as_str()).map(str::to_string)
        })
        .unwrap_or_else(|| "untitled".into());
    Figure { json, title, svg: None }
}

impl Figure {
    /// This figure with its static image already rendered, so displaying it renders nothing.
    pub fn with_svg(mut self, svg: String) -> Self {
        self.svg = Some(svg);
        self
    }

    /// The plotly JSON of the figure.
    pub fn json(&self) -> &str {
        &self.json
    }
}

impl Figure {
    /// The bundle: plotly JSON, HTML (static SVG, or a plotly.js loader without the static
    /// renderer) and a text line.
    pub fn bundle(&self) -> Vec<(&'static str, String)> {
        let text = format!("<plotly figure: {}>", self.title);
        let rendered = match &self.svg {
            Some(svg) => Ok(svg.clone()),
            None => crate::figures::render_svg_json(&self.json),
        };
        let html = match rendered {
            Ok(svg) => svg_img_html(&svg, &self.title),
            Err(e) => loader_html(&self.json, &e.to_string()),
        };
        vec![("application/vnd.plotly.v1+json", self.json.clone()), ("text/html", html), ("text/plain", text)]
    }

    pub fn evcxr_display(&self) {
        let b = self.bundle();
        let parts: Vec<(&str, &str)> = b.iter().map(|(m, c)| (*m, c.as_str())).collect();
        emit(&parts);
    }
}

/// An `<img>` holding the SVG as a base64 data URL: sanitizers (JupyterLab for untrusted
/// notebooks, GitHub) drop inline `<svg>` markup but keep images.
pub fn svg_img_html(svg: &str, alt: &str) -> String {
    format!("<img alt=\"{}\" src=\"data:image/svg+xml;base64,{}\"/>", html_escape(alt), base64(svg.as_bytes()))
}

/// HTML that draws the figure with the vendored plotly.js, referenced by a path relative to the
/// kernel's working directory (the notebook's folder), so no 3.5 MB copy lands in the notebook.
fn loader_html(json: &str, why: &str) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    let src = match crate::figures::plotly_js_path() {
        Ok(js) => relative_path(&cwd, &js),
        Err(_) => "plotly.min.js".to_string(),
    };
    let id = format!("qi-plot-{:x}", fxhash(json));
    format!(
        "<div id=\"{id}\" style=\"height:450px\"></div>\n<!-- no static image: {} -->\n<script src=\"{}\"></script>\n<script>(function(){{var f={};var go=function(){{if(window.Plotly){{Plotly.newPlot(\"{id}\",f.data,f.layout,f.config);}}else{{setTimeout(go,100);}}}};go();}})();</script>",
        html_escape(why).replace("--", "- -"),
        html_escape(&src),
        json.replace("</", "<\\/")
    )
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// `to` relative to the directory `from` (both made absolute), with `/` separators.
pub fn relative_path(from: &std::path::Path, to: &std::path::Path) -> String {
    use std::path::Component;
    let abs = |p: &std::path::Path| if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(p) };
    let norm = |p: std::path::PathBuf| {
        let mut v: Vec<String> = vec![];
        for c in p.components() {
            match c {
                Component::Normal(x) => v.push(x.to_string_lossy().to_string()),
                Component::ParentDir => {
                    v.pop();
                }
                _ => {}
            }
        }
        v
    };
    let (a, b) = (norm(abs(from)), norm(abs(to)));
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = std::iter::repeat_n("..".to_string(), a.len() - common).collect();
    parts.extend(b[common..].iter().cloned());
    parts.join("/")
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if chunk.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    #[test]
    fn floats_read_well() {
        assert_eq!(fmt_float(0.0), "0");
        assert_eq!(fmt_float(0.123456), "0.1235");
        assert_eq!(fmt_float(12.3456), "12.35");
        assert_eq!(fmt_float(1234.5), "1234");
        assert_eq!(fmt_float(1.0e-5), "1.000e-5");
        assert_eq!(fmt_float(f64::NAN), "NaN");
    }

    #[test]
    fn table_html_escapes_and_elides() {
        let df = df!("name" => ["<a>", "b", "c", "d", "e"], "x" => [1.0f64, 2.5, 3.0, 4.0, 0.5]).unwrap();
        let t = table(&df).max_rows(2).caption("scores & more");
        let h = t.to_html();
        assert!(h.contains("&lt;a&gt;") && !h.contains("<a>"), "{h}");
        assert!(h.contains("<b>scores &amp; more</b>"));
        assert!(h.contains("<th>0</th>") && h.contains("<th>4</th>") && !h.contains("<th>2</th>"), "{h}");
        assert!(h.contains("<th>…</th>"));
        assert!(h.contains("5 rows × 2 columns"));
        assert!(h.contains("<small>f64</small>") && h.contains("<td>1.000</td>") && h.contains("<td>0.5000</td>"), "{h}");
        assert_eq!(table(&df).rows().len(), 5);
        assert!(t.to_text().contains("shape: (5, 2)"));
        let m = t.to_markdown();
        assert_eq!(m, "**scores & more**\n\n| name | x |\n| --- | --- |\n| <a> | 1.000 |\n| … | … |\n| e | 0.5000 |\n", "{m}");
    }

    #[test]
    fn helpers() {
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
        assert_eq!(relative_path(std::path::Path::new("/a/b/nb"), std::path::Path::new("/a/b/figures/p.js")), "../figures/p.js");
        assert_eq!(relative_path(std::path::Path::new("/a"), std::path::Path::new("/a/x.js")), "x.js");
        let img = svg_img_html("<svg/>", "t\"x");
        assert!(img.starts_with("<img alt=\"t&quot;x\" src=\"data:image/svg+xml;base64,PHN2Zy8+\""), "{img}");
    }
}
