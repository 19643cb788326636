//! Saving plotly figures as files: an interactive HTML page and a static SVG.
//!
//! * `NAME.html` loads `plotly.min.js` from the same folder (plotly.js 3.0.1, MIT, is built into qi
//!   from `qi/assets/` and written next to the figures), so each page is a few KB instead of
//!   4.6 MB and works offline as long as the folder is kept together.
//! * `NAME.svg` is rendered by kaleido 0.2.1 (PyPI; bundles its own headless Chromium), started with
//!   `--plotlyjs=<vendored plotly.min.js>` so it never fetches plotly.js from a CDN. kaleido is
//!   found through `QI_KALEIDO` (its `kaleido/executable/kaleido` launcher), or in the venv
//!   `QI_VENV` (`./dev` sets it to `target/venv`, made by `./dev setup-notebooks`) or the active
//!   `VIRTUAL_ENV`.
//!
//! Files are written atomically. The folder is `QI_FIGURES_DIR`, else `figures/` in the working
//! directory (`./dev` points it at the repository's `figures/`).
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where figures are written: `QI_FIGURES_DIR`, else `figures/` in the working directory.
pub fn figures_dir() -> PathBuf {
    match std::env::var_os("QI_FIGURES_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("figures"),
    }
}

/// plotly.js 3.0.1 (MIT licence), built into qi so figures work wherever qi is used.
pub const PLOTLY_JS: &[u8] = include_bytes!("../assets/plotly.min.js");

/// A copy of plotly.js in the figures folder (written there when absent), for the figures' HTML
/// pages, the notebook display and kaleido.
pub fn plotly_js_path() -> Result<PathBuf> {
    let dir = figures_dir();
    ensure_plotly_js(&dir)?;
    Ok(dir.join("plotly.min.js"))
}

const INSTALL_HINT: &str = "install the static renderer with `pip install kaleido==0.2.1` into a venv and set QI_VENV to it (`./dev setup-notebooks` does this in target/venv), or set QI_KALEIDO to .../site-packages/kaleido/executable/kaleido";

/// kaleido's launcher script (`site-packages/kaleido/executable/kaleido`).
pub fn kaleido_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("QI_KALEIDO").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("QI_KALEIDO={} does not exist; {INSTALL_HINT}", p.display());
    }
    let venvs: Vec<PathBuf> = ["QI_VENV", "VIRTUAL_ENV"].iter().filter_map(|k| std::env::var_os(k)).filter(|v| !v.is_empty()).map(PathBuf::from).collect();
    for venv in &venvs {
        let Ok(rd) = std::fs::read_dir(venv.join("lib")) else { continue };
        for e in rd.flatten() {
            let p = e.path().join("site-packages/kaleido/executable/kaleido");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!("static figure export needs kaleido 0.2.1, which was not found (looked in QI_KALEIDO, QI_VENV, VIRTUAL_ENV: {}); {INSTALL_HINT}", if venvs.is_empty() { "none set".to_string() } else { venvs.iter().map(|v| v.display().to_string()).collect::<Vec<_>>().join(", ") })
}

/// Renders a figure (plotly JSON: `{"data": …, "layout": …}`) to SVG with kaleido.
pub fn render_svg_json(figure_json: &str) -> Result<String> {
    render_json(figure_json, "svg")
}

/// Renders a figure to `svg` (text) or `png` (base64 text, as kaleido returns it). kaleido starts
/// a headless Chromium per call, which can be slow on a loaded machine: each attempt may take
/// `QI_KALEIDO_TIMEOUT` seconds (default 300), and a timed-out attempt is retried once.
pub fn render_json(figure_json: &str, format: &str) -> Result<String> {
    let secs = std::env::var("QI_KALEIDO_TIMEOUT").ok().and_then(|v| v.parse::<u64>().ok()).filter(|v| *v > 0).unwrap_or(300);
    for _attempt in 0..2 {
        if let Some(image) = render_json_once(figure_json, format, secs)? {
            return Ok(image);
        }
    }
    bail!("kaleido did not answer within {secs} s, twice (QI_KALEIDO_TIMEOUT)")
}

/// One kaleido run; `None` when it did not answer within `timeout_secs` (it is killed).
fn render_json_once(figure_json: &str, format: &str, timeout_secs: u64) -> Result<Option<String>> {
    let kaleido = kaleido_path()?;
    let js = plotly_js_path()?;
    let fig: serde_json::Value = serde_json::from_str(figure_json).context("figure is not valid JSON")?;
    let layout = &fig["layout"];
    let width = layout["width"].as_u64().unwrap_or(700);
    let height = layout["height"].as_u64().unwrap_or(500);
    let request = serde_json::json!({"format": format, "width": width, "height": height, "scale": 1, "data": fig});
    let mut child = Command::new(&kaleido)
        .arg("plotly")
        .arg(format!("--plotlyjs={}", js.canonicalize().unwrap_or(js.clone()).display()))
        .args(["--disable-gpu", "--allow-file-access-from-files", "--disable-breakpad", "--disable-dev-shm-usage", "--no-sandbox"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start kaleido at {}; {INSTALL_HINT}", kaleido.display()))?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(request.to_string().as_bytes())?;
        stdin.write_all(b"\n")?;
    } // closing stdin makes kaleido exit after answering
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(stdout).lines().map_while(|l| l.ok()).collect();
        let _ = tx.send(lines);
    });
    let lines = match rx.recv_timeout(Duration::from_secs(timeout_secs)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
    };
    let _ = child.wait();
    // first line: start-up status; then one response per request
    for line in &lines {
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if v["code"].as_i64().unwrap_or(0) != 0 {
            bail!("kaleido failed (code {}): {}", v["code"], v["message"].as_str().unwrap_or("?"));
        }
        if let Some(r) = v["result"].as_str() {
            return Ok(Some(r.to_string()));
        }
    }
    bail!("kaleido returned no image (its output: {:?})", lines.iter().map(|l| l.chars().take(200).collect::<String>()).collect::<Vec<_>>())
}

/// The files written by [`save_figure`].
#[derive(Debug, Clone)]
pub struct FigurePaths {
    pub html: PathBuf,
    pub svg: PathBuf,
}

/// Writes `NAME.html` (interactive, loads the sibling plotly.min.js) and `NAME.svg` (static,
/// kaleido) into [`figures_dir`]. Fails, writing nothing, when the static renderer is missing.
pub fn save_figure(plot: &plotly::Plot, name: &str) -> Result<FigurePaths> {
    save_figure_in(plot, name, &figures_dir())
}

/// [`save_figure`] into a given folder.
pub fn save_figure_in(plot: &plotly::Plot, name: &str, dir: &Path) -> Result<FigurePaths> {
    check_figure_name(name)?;
    let json = plot.to_json();
    let svg = render_svg_json(&json).with_context(|| format!("cannot render figure `{name}`"))?;
    write_figure_files(&json, &svg, name, dir)
}

/// A figure name must be a plain file stem (checked before any rendering).
pub(crate) fn check_figure_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        bail!("figure name `{name}` must be a plain file stem like `induction_heads`");
    }
    Ok(())
}

/// Writes a figure's HTML page (from its plotly JSON) and its already rendered SVG.
pub(crate) fn write_figure_files(json: &str, svg: &str, name: &str, dir: &Path) -> Result<FigurePaths> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the figures folder {} (set QI_FIGURES_DIR, or pass another folder, to write figures elsewhere)", dir.display()))?;
    ensure_plotly_js(dir)?;
    let paths = FigurePaths { html: dir.join(format!("{name}.html")), svg: dir.join(format!("{name}.svg")) };
    crate::io::save_text(&html_page(json, name), &paths.html)?;
    crate::io::save_text(svg, &paths.svg)?;
    Ok(paths)
}

/// Writes qi's plotly.js into `dir` unless a copy of the same size is there.
fn ensure_plotly_js(dir: &Path) -> Result<()> {
    let dst = dir.join("plotly.min.js");
    if std::fs::metadata(&dst).map(|m| m.len()).ok() == Some(PLOTLY_JS.len() as u64) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    crate::io::write_atomic(&dst, |tmp| std::fs::write(tmp, PLOTLY_JS).with_context(|| format!("cannot write {}", dst.display())))
}

/// A standalone page drawing the figure with `plotly.min.js` from the same folder.
pub fn html_page(figure_json: &str, title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{t}</title>\n<script src=\"plotly.min.js\"></script>\n</head>\n<body style=\"margin:0\">\n<div id=\"figure\" style=\"width:100%;height:100vh\"></div>\n<script>\nvar fig = {j};\nif (window.Plotly) {{ Plotly.newPlot(\"figure\", fig.data, fig.layout, Object.assign({{responsive: true}}, fig.config || {{}})); }}\nelse {{ document.body.textContent = \"plotly.min.js was not found next to this file; keep the figures folder together.\"; }}\n</script>\n</body>\n</html>\n",
        t = html_escape(title),
        j = figure_json.replace("</", "<\\/")
    )
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_references_sibling_plotly_js_and_escapes_script_end() {
        let p = html_page(r#"{"data":[{"type":"bar","y":[1],"name":"</script>"}],"layout":{}}"#, "a<b");
        assert!(p.contains("<script src=\"plotly.min.js\"></script>"));
        assert!(p.contains("<title>a&lt;b</title>"));
        assert!(p.contains("<\\/script>") && p.matches("</script>").count() == 2, "{p}");
    }

    #[test]
    fn bad_names_are_refused_before_rendering() {
        let plot = plotly::Plot::new();
        for bad in ["", "a/b", ".hidden"] {
            let e = save_figure_in(&plot, bad, Path::new("/nonexistent")).unwrap_err().to_string();
            assert!(e.contains("plain file stem"), "{e}");
        }
    }

    #[test]
    fn plotly_js_is_built_in_and_written_next_to_the_figures() {
        assert!(PLOTLY_JS.starts_with(b"/**\n* plotly.js v3.0.1") && String::from_utf8_lossy(&PLOTLY_JS[..200]).contains("MIT"));
        let dir = std::env::temp_dir().join(format!("qi-plotly-js-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ensure_plotly_js(&dir).unwrap();
        assert_eq!(std::fs::read(dir.join("plotly.min.js")).unwrap(), PLOTLY_JS);
        // a truncated copy is replaced
        std::fs::write(dir.join("plotly.min.js"), b"/**").unwrap();
        ensure_plotly_js(&dir).unwrap();
        assert_eq!(std::fs::metadata(dir.join("plotly.min.js")).unwrap().len(), PLOTLY_JS.len() as u64);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_figures_folder_that_cannot_be_made_is_an_error_naming_it_and_the_fix() {
        let dir = crate::testing::scratch("figures-blocked");
        let blocked = dir.join("a-file");
        std::fs::write(&blocked, "x").unwrap();
        let e = format!("{:#}", write_figure_files("{}", "<svg/>", "f", &blocked.join("figs")).unwrap_err());
        assert!(e.contains("a-file/figs") && e.contains("QI_FIGURES_DIR"), "{e}");
        assert!(!blocked.join("figs").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Needs kaleido (./dev setup-notebooks); skipped with a message otherwise.
    #[test]
    fn saves_html_and_svg_when_kaleido_is_installed() {
        if let Err(e) = kaleido_path() {
            eprintln!("skipping: {e}");
            return;
        }
        let dir = std::env::temp_dir().join(format!("qi-fig-test-{}", std::process::id()));
        let mut plot = plotly::Plot::new();
        plot.add_trace(plotly::HeatMap::new_z(vec![vec![1.0, 2.0], vec![3.0, 4.0]]));
        let paths = save_figure_in(&plot, "heat", &dir).unwrap();
        let svg = std::fs::read_to_string(&paths.svg).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(100)]);
        assert!(std::fs::read_to_string(&paths.html).unwrap().contains("\"heatmap\""));
        assert!(dir.join("plotly.min.js").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
