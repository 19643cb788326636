//! qi-nb — runs qi's Rust notebooks headless with the evcxr Jupyter kernel.
//!
//!   qi-nb run NOTEBOOK_OR_DIR [-p NAME=VALUE …] [-o OUTDIR] [--keep-going] [--cell-timeout S] [--timeout S]
//!   qi-nb params NOTEBOOK_OR_DIR      list the parameters each notebook declares
//!   qi-nb check DIR                   fail if a notebook has outputs or execution counts
//!   qi-nb strip DIR                   remove them
//!
//! Parameters and notebooks are all checked before any kernel starts. Execution goes through
//! Jupyter's own nbclient (Python) driven cell by cell, so outputs are exactly what JupyterLab
//! would store; the executed notebook is written after every cell, also when one fails.
mod notebook;
mod params;
mod run;

use anyhow::Result;
use clap::{Parser, Subcommand};
use notebook::Notebook;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "qi-nb", version, about = "Run, check and strip qi's Rust (evcxr) notebooks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Execute notebooks with the Rust kernel and write the executed copies.
    Run(run::RunArgs),
    /// List the typed parameters of each notebook's `parameters` cell.
    Params { path: PathBuf },
    /// Fail if any notebook has outputs, execution counts or run timings (naming notebook and cell).
    Check { path: PathBuf },
    /// Remove outputs, execution counts and run timings in place.
    Strip { path: PathBuf },
}

fn main() {
    let cli = Cli::parse();
    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("qi-nb: error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn dispatch(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Run(args) => run::run(args),
        Cmd::Params { path } => {
            for p in notebook::collect(&path)? {
                let nb = Notebook::load(&p)?;
                println!("{}", p.display());
                match nb.parameters_cell()? {
                    None => println!("  (no cell tagged `parameters`)"),
                    Some(i) => {
                        let src = notebook::source(&nb.cells()[i]);
                        for par in params::scan(&src) {
                            let ty = par.ty_src.clone().unwrap_or_else(|| "(untyped: not settable)".into());
                            let settable = if par.ty_src.is_some() && par.ty().is_none() { "  (type not settable with -p)" } else { "" };
                            println!("  {}: {ty} = {}{settable}", par.name, src[par.value.clone()].trim());
                        }
                    }
                }
            }
            Ok(0)
        }
        Cmd::Check { path } => {
            let mut bad = 0;
            let files = notebook::collect(&path)?;
            for p in &files {
                let nb = Notebook::load(p)?;
                for (i, why, first) in nb.unstripped() {
                    eprintln!("{}: cell {i} ({first}) has {why}", p.display());
                    bad += 1;
                }
            }
            if bad > 0 {
                eprintln!("qi-nb check: {bad} cell(s) not stripped; run `qi-nb strip {}` (or ./dev notebooks-strip) and commit", path.display());
                return Ok(1);
            }
            println!("qi-nb check: {} notebook(s) stripped", files.len());
            Ok(0)
        }
        Cmd::Strip { path } => {
            for p in notebook::collect(&path)? {
                let mut nb = Notebook::load(&p)?;
                if nb.strip() {
                    nb.save(&p)?;
                    println!("stripped {}", p.display());
                } else {
                    println!("already clean {}", p.display());
                }
            }
            Ok(0)
        }
    }
}
