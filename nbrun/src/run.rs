//! `qi-nb run`: validate everything, then execute notebooks one after another with nbclient.
use crate::notebook::{self, Notebook};
use crate::params::{self, Override};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const DRIVER: &str = include_str!("driver.py");
pub const PIP_PACKAGES: &str = "nbclient==0.10.2 jupyter_client==8.6.3";
pub const KERNEL_INSTALL: &str = "cargo install evcxr_jupyter --version 0.22.0 --locked && evcxr_jupyter --install";

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// A notebook, or a folder whose *.ipynb files run one after another (sorted by name).
    pub path: PathBuf,
    /// Override a parameter: NAME=VALUE, rewritten as a literal of the type declared in the
    /// `parameters` cell (`let NAME: TYPE = …;`). Lists are comma-separated; `None` for Option.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<Override>,
    /// Folder for the executed notebooks (and kernel logs).
    #[arg(short = 'o', long = "out", default_value = "out/notebooks")]
    pub out: PathBuf,
    /// Run the remaining cells (and notebooks) after a failure; still exits non-zero.
    #[arg(long)]
    pub keep_going: bool,
    /// Seconds a cell may take.
    #[arg(long, default_value_t = 900)]
    pub cell_timeout: u64,
    /// Seconds a cell containing `:dep` may take (it may compile the dependencies from scratch:
    /// ~15 min on 2 cores).
    #[arg(long, default_value_t = 2700)]
    pub dep_timeout: u64,
    /// Seconds a whole notebook may take.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// Seconds to wait for the kernel to start (it may wait for a cargo lock held by a build).
    #[arg(long, default_value_t = 600)]
    pub startup_timeout: u64,
    /// Python with nbclient [default: $QI_NB_PYTHON, else python3].
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Kernel to use instead of the notebook's own kernelspec (default `rust`).
    #[arg(long)]
    pub kernel: Option<String>,
}

#[derive(Debug)]
struct Prepared {
    nb: Notebook,
    kernel: String,
    applied: BTreeMap<String, String>,
}

/// Loads every notebook, applies the overrides, and reports any problem before anything runs.
fn prepare(args: &RunArgs) -> Result<Vec<Prepared>> {
    let files = notebook::collect(&args.path)?;
    let single = files.len() == 1 && args.path.is_file();
    let mut nbs = Vec::new();
    for f in &files {
        nbs.push(Notebook::load(f)?);
    }
    // which notebooks declare each overridden name
    let mut declared: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for o in &args.params {
        declared.entry(o.name.clone()).or_default();
    }
    for (k, nb) in nbs.iter().enumerate() {
        let names = nb.parameter_names()?;
        if single && !args.params.is_empty() && nb.parameters_cell()?.is_none() {
            bail!("{}: -p was given but the notebook has no cell tagged `parameters`", nb.path.display());
        }
        for (name, v) in declared.iter_mut() {
            if names.contains(name) {
                v.push(k);
            }
        }
    }
    for (name, users) in &declared {
        if users.is_empty() {
            let known: Vec<String> = nbs.iter().map(|nb| format!("{}: {}", nb.name(), nb.parameter_names().unwrap_or_default().join(", "))).collect();
            bail!("unknown parameter `{name}`: no notebook declares it\n  declared parameters:\n    {}", known.join("\n    "));
        }
        if users.len() < nbs.len() {
            let with: Vec<String> = users.iter().map(|&k| nbs[k].name()).collect();
            eprintln!("qi-nb: note: -p {name} applies only to {} (the other notebooks do not declare it)", with.join(", "));
        }
    }
    let mut out = Vec::new();
    for nb in nbs {
        let mut nb = nb;
        let names = nb.parameter_names()?;
        let mine: Vec<Override> = args.params.iter().filter(|o| names.contains(&o.name)).cloned().collect();
        let mut applied = BTreeMap::new();
        if let Some(i) = nb.parameters_cell()? {
            if !mine.is_empty() {
                let src = notebook::source(&nb.cells()[i]);
                let new = params::rewrite(&src, &mine).with_context(|| format!("{}", nb.path.display()))?;
                notebook::set_source(&mut nb.cells_mut()[i], &new);
                for o in &mine {
                    applied.insert(o.name.clone(), o.raw.clone());
                }
            }
        }
        let kernel = args.kernel.clone().or_else(|| nb.kernel_name()).unwrap_or_else(|| "rust".into());
        out.push(Prepared { nb, kernel, applied });
    }
    Ok(out)
}

fn python(args: &RunArgs) -> PathBuf {
    args.python.clone().or_else(|| std::env::var_os("QI_NB_PYTHON").map(PathBuf::from)).unwrap_or_else(|| "python3".into())
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            it.next();
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs the driver; calls `on_event` for each event line; other output is passed to stderr.
fn drive(py: &Path, cfg: &Value, mut on_event: impl FnMut(&Value)) -> Result<i32> {
    let mut child = Command::new(py)
        .arg("-c")
        .arg(DRIVER)
        .arg(cfg.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "cannot run Python `{}`: {e}\n  install the notebook tooling: ./dev setup-notebooks\n  (or: python3 -m venv target/venv && target/venv/bin/pip install {PIP_PACKAGES}; then pass --python target/venv/bin/python)",
                    py.display()
                )
            } else {
                anyhow::anyhow!("cannot run Python `{}`: {e}", py.display())
            }
        })?;
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        match line.strip_prefix("@@qi-nb ") {
            Some(ev) => match serde_json::from_str::<Value>(ev) {
                Ok(v) => on_event(&v),
                Err(_) => eprintln!("{line}"),
            },
            None => eprintln!("{line}"),
        }
    }
    let status = child.wait()?;
    Ok(status.code().unwrap_or(1))
}

fn preflight(py: &Path, kernels: &[String]) -> Result<()> {
    let mut problems: Option<Value> = None;
    let mut missing: Option<Value> = None;
    let code = drive(py, &json!({"mode": "preflight", "kernels": kernels}), |ev| match ev["event"].as_str() {
        Some("preflight") => problems = Some(ev["problems"].clone()),
        Some("missing_python_package") => missing = Some(ev.clone()),
        _ => {}
    })?;
    if let Some(m) = missing {
        bail!(
            "Python `{}` cannot import the notebook tooling ({}).\n  install it: {} -m pip install {PIP_PACKAGES}\n  (or run ./dev setup-notebooks, which creates target/venv with everything pinned)",
            py.display(),
            m["error"].as_str().unwrap_or("?"),
            m["python"].as_str().unwrap_or(&py.display().to_string())
        );
    }
    if let Some(Value::Object(p)) = problems {
        if let Some((k, why)) = p.iter().next() {
            if k == "rust" {
                bail!("{}.\n  install the Rust kernel: {KERNEL_INSTALL}", why.as_str().unwrap_or("kernel missing"));
            }
            bail!("{}", why.as_str().unwrap_or("kernel missing"));
        }
    }
    if code != 0 {
        bail!("the notebook driver failed its start-up check (exit code {code}) with `{}`", py.display());
    }
    Ok(())
}

pub fn run(args: RunArgs) -> Result<i32> {
    let prepared = prepare(&args)?;
    let py = python(&args);
    let mut kernels: Vec<String> = prepared.iter().map(|p| p.kernel.clone()).collect();
    kernels.sort();
    kernels.dedup();
    if let Err(e) = preflight(&py, &kernels) {
        eprintln!("qi-nb: error: {e:#}");
        return Ok(3);
    }
    if std::env::var_os("EVCXR_TMPDIR").is_none() {
        let dir = std::env::temp_dir().join(format!("qi-nb-evcxr-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        eprintln!(
            "qi-nb: note: EVCXR_TMPDIR is not set; using {} for this run so dependencies compile once for all notebooks.\n  ./dev notebooks sets it inside the repo so that the tests, the CLI and the kernel share one build.",
            dir.display()
        );
        std::env::set_var("EVCXR_TMPDIR", &dir);
    }
    // One kernel at a time per EVCXR_TMPDIR: evcxr rewrites the crate there on every cell.
    let tmpdir = PathBuf::from(std::env::var_os("EVCXR_TMPDIR").expect("set above"));
    std::fs::create_dir_all(&tmpdir).with_context(|| format!("cannot create {}", tmpdir.display()))?;
    let lock_path = tmpdir.join("qi-nb.lock");
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).with_context(|| format!("cannot open {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        eprintln!("qi-nb: another qi-nb run is using EVCXR_TMPDIR={}; waiting for it to finish", tmpdir.display());
        lock.lock().with_context(|| format!("cannot lock {}", lock_path.display()))?;
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut summary: Vec<(String, String, f64)> = Vec::new();
    let mut any_failed = false;
    for p in prepared {
        let Prepared { mut nb, kernel, applied } = p;
        let name = nb.name();
        let out_path = args.out.join(&name);
        let log_path = args.out.join(format!("{}.kernel.log", name.trim_end_matches(".ipynb")));
        let cwd = nb.path.parent().filter(|d| !d.as_os_str().is_empty()).map(Path::to_path_buf).unwrap_or_else(|| ".".into());
        let cwd = std::fs::canonicalize(&cwd).unwrap_or(cwd);
        let n_code = nb.cells().iter().filter(|c| c["cell_type"] == "code").count();
        notebook::metadata_mut(&mut nb.json).insert(
            "qi_nb".into(),
            json!({"parameters": applied, "source": nb.path.display().to_string(), "kernel": kernel, "status": "running"}),
        );
        nb.save(&out_path)?;
        let params_text = if applied.is_empty() { String::new() } else { format!(" with {}", applied.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")) };
        println!("== {} ({n_code} code cells, kernel {kernel}){params_text}", nb.path.display());
        let cfg = json!({
            "mode": "run",
            "notebook": out_path.display().to_string(),
            "kernel_log": log_path.display().to_string(),
            "cwd": cwd.display().to_string(),
            "kernel": kernel,
            "cell_timeout": args.cell_timeout,
            "dep_timeout": args.dep_timeout,
            "timeout": args.timeout,
            "startup_timeout": args.startup_timeout,
            "keep_going": args.keep_going,
            // evcxr catches panics and reports the cell as successful unless told not to; with
            // this a panic ends the kernel's subprocess and the cell is an error.
            "setup": if kernel == "rust" { vec![":preserve_vars_on_panic 0"] } else { vec![] },
            // evcxr compiles an empty crate when it starts, which prunes the Cargo.lock in its
            // tmpdir; the next `:dep` then resolves the newest dependency versions and rebuilds
            // everything the tests had built. Restoring the project's lock after start-up keeps
            // the kernel on the tested versions (and on the shared build).
            "cargo_lock": if kernel == "rust" { std::env::var("QI_NB_CARGO_LOCK").ok().filter(|p| !p.is_empty()) } else { None },
            "evcxr_tmpdir": std::env::var("EVCXR_TMPDIR").ok(),
        });
        let t0 = Instant::now();
        let cells = nb.cells().clone();
        let mut failures: Vec<(usize, String, String)> = Vec::new();
        let mut start_error: Option<String> = None;
        let code = drive(&py, &cfg, |ev| {
            let idx = ev["index"].as_u64().unwrap_or(0) as usize;
            let first = cells.get(idx).map(|c| notebook::first_line(&notebook::source(c))).unwrap_or_default();
            match ev["event"].as_str() {
                Some("start") => {
                    println!("  [{}/{}] cell {idx}: {first}  (limit {}s)", ev["n"], ev["total"], ev["timeout"]);
                }
                Some("end") => {
                    let st = ev["status"].as_str().unwrap_or("?");
                    let word = match st {
                        "ok" => "ok",
                        "timeout" => "TIMEOUT",
                        _ => "FAILED",
                    };
                    println!("  [{}/{}] cell {idx}: {word} in {:.1}s  {first}", ev["n"], ev["total"], ev["seconds"].as_f64().unwrap_or(0.0));
                    if st != "ok" {
                        let err = strip_ansi(ev["error"].as_str().unwrap_or(""));
                        let lines: Vec<&str> = err.lines().collect();
                        for l in lines.iter().take(40) {
                            println!("      | {l}");
                        }
                        if lines.len() > 40 {
                            println!("      | … ({} more lines in the executed notebook)", lines.len() - 40);
                        }
                        failures.push((idx, st.to_string(), first.clone()));
                    }
                }
                Some("skipped") => {
                    println!("  cell {idx}: not run ({})", ev["reason"].as_str().unwrap_or(""));
                    failures.push((idx, "timeout".into(), first.clone()));
                }
                Some("note") => println!("  note: {}", ev["text"].as_str().unwrap_or("")),
                Some("kernel_start_failed") => start_error = Some(ev["error"].as_str().unwrap_or("").to_string()),
                _ => {}
            }
        })?;
        let secs = t0.elapsed().as_secs_f64();
        let status = if let Some(e) = &start_error {
            println!("  the kernel `{kernel}` did not start: {e}\n  kernel log: {}", log_path.display());
            "kernel did not start".to_string()
        } else if code == 0 {
            "ok".to_string()
        } else if let Some((idx, st, first)) = failures.first() {
            let what = if st == "timeout" { "timed out" } else { "failed" };
            format!("cell {idx} {what} ({first})")
        } else {
            format!("driver exited with code {code} (kernel log: {})", log_path.display())
        };
        println!("   {} {status} in {secs:.1}s; executed notebook: {}", if code == 0 { "->" } else { "!!" }, out_path.display());
        summary.push((name, status, secs));
        if code != 0 {
            any_failed = true;
            if !args.keep_going {
                break;
            }
        }
    }
    if summary.len() > 1 || any_failed {
        println!("qi-nb summary:");
        for (name, status, secs) in &summary {
            println!("  {name:<32} {secs:>8.1}s  {status}");
        }
    }
    Ok(if any_failed { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    fn nb(params: Option<&str>) -> String {
        let mut cells = vec![serde_json::json!({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": null, "source": ":dep qi = { path = \"../qi\" }"})];
        if let Some(p) = params {
            cells.push(serde_json::json!({"cell_type": "code", "metadata": {"tags": ["parameters"]}, "outputs": [], "execution_count": null, "source": p}));
        }
        serde_json::json!({"cells": cells, "metadata": {"kernelspec": {"name": "rust"}}, "nbformat": 4, "nbformat_minor": 5}).to_string()
    }

    fn folder(files: &[(&str, String)]) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("qi-nb-test-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    fn args(path: &Path, extra: &[&str]) -> RunArgs {
        let mut v = vec!["t".to_string(), path.display().to_string()];
        v.extend(extra.iter().map(|s| s.to_string()));
        T::parse_from(v).run
    }

    #[test]
    fn folder_parameters_apply_where_declared() {
        let dir = folder(&[("a.ipynb", nb(Some("let n: usize = 1;\nlet s: String = String::new();"))), ("b.ipynb", nb(Some("let n: usize = 2;"))), ("c.ipynb", nb(None))]);
        let p = prepare(&args(&dir, &["-p", "n=7", "-p", "s=hi"])).unwrap();
        assert_eq!(p.len(), 3);
        let src = |k: usize| notebook::source(&p[k].nb.cells()[1]);
        assert_eq!(src(0), "let n: usize = 7;\nlet s: String = String::from(\"hi\");");
        assert_eq!(src(1), "let n: usize = 7;");
        assert_eq!(p[0].applied.len(), 2);
        assert_eq!(p[2].applied.len(), 0);
        // a name declared nowhere is an error, as is a bad value anywhere it applies
        let e = prepare(&args(&dir, &["-p", "m=1"])).unwrap_err().to_string();
        assert!(e.contains("unknown parameter `m`") && e.contains("a.ipynb: n, s"), "{e}");
        let e = format!("{:#}", prepare(&args(&dir, &["-p", "n=-1"])).unwrap_err());
        assert!(e.contains("a.ipynb") && e.contains("out of range for usize"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn single_notebook_errors() {
        let dir = folder(&[("plain.ipynb", nb(None)), ("bad.ipynb", "{\"cells\": 3".into())]);
        let e = prepare(&args(&dir.join("plain.ipynb"), &["-p", "n=1"])).unwrap_err().to_string();
        assert!(e.contains("plain.ipynb: -p was given but the notebook has no cell tagged `parameters`"), "{e}");
        assert!(prepare(&args(&dir.join("plain.ipynb"), &[])).is_ok());
        let e = prepare(&args(&dir.join("bad.ipynb"), &[])).unwrap_err().to_string();
        assert!(e.contains("bad.ipynb: not a valid notebook"), "{e}");
        // in a folder, a malformed notebook stops everything before any kernel starts
        assert!(prepare(&args(&dir, &[])).unwrap_err().to_string().contains("bad.ipynb"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ansi_is_stripped_from_errors() {
        assert_eq!(strip_ansi("\u{1b}[31mError\u{1b}[0m: x"), "Error: x");
    }
}
