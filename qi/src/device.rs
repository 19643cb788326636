//! The compute device, chosen in one place: `QI_DEVICE` (or the CLI's `--device`, which sets it
//! for the process through [`set_device`]) names it; the default is the CPU. Weights are placed
//! on it when a model is loaded, and every other tensor qi makes is made on the device of the
//! tensors it works with, so no library code assumes the CPU. A CUDA or Metal device needs qi
//! built with the `cuda` or `metal` feature (candle's backends); only the CPU build is tested.
use crate::QiError;
use anyhow::Result;
use candle_core::Device;
use std::sync::OnceLock;

/// Devices qi understands, for error messages.
pub const NAMES: &str = "cpu, cuda, cuda:N, metal, metal:N";

static CHOSEN: OnceLock<String> = OnceLock::new();

/// Chooses the device for this process (before any model is loaded); later calls with another
/// name are refused.
pub fn set_device(name: &str) -> Result<()> {
    parse(name)?;
    let name = name.trim().to_ascii_lowercase();
    let now = CHOSEN.get_or_init(|| name.clone());
    if *now != name {
        return Err(QiError::invalid("device", &name, format!("the device is already {now} for this process")).into());
    }
    Ok(())
}

/// The device named by [`set_device`], else by `QI_DEVICE`, else the CPU.
pub fn device() -> Result<Device> {
    match CHOSEN.get() {
        Some(name) => parse(name),
        None => match std::env::var("QI_DEVICE") {
            Ok(v) if !v.trim().is_empty() => parse(&v).map_err(|e| anyhow::anyhow!("QI_DEVICE: {e:#}")),
            _ => Ok(Device::Cpu),
        },
    }
}

/// The device a name means: `cpu`, `cuda` / `cuda:N`, `metal` / `metal:N`.
pub fn parse(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    let (kind, ordinal) = match name.split_once(':') {
        Some((k, n)) => match n.parse::<usize>() {
            Ok(n) => (k, n),
            Err(_) => return Err(QiError::invalid("device", &name, format!("the part after ':' must be a device number; expected one of {NAMES}")).into()),
        },
        None => (name.as_str(), 0),
    };
    match kind {
        "cpu" if ordinal == 0 => Ok(Device::Cpu),
        "cuda" | "metal" => backend(kind, ordinal).map_err(|e| QiError::invalid("device", &name, e).into()),
        _ => Err(QiError::invalid("device", &name, format!("expected one of {NAMES}")).into()),
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> std::result::Result<Device, String> {
    Device::new_cuda(ordinal).map_err(|e| format!("cannot open CUDA device {ordinal}: {e}"))
}
#[cfg(not(feature = "cuda"))]
fn cuda(_: usize) -> std::result::Result<Device, String> {
    Err("this qi was built without CUDA; rebuild with `--features qi/cuda` (untested)".into())
}
#[cfg(feature = "metal")]
fn metal(ordinal: usize) -> std::result::Result<Device, String> {
    Device::new_metal(ordinal).map_err(|e| format!("cannot open Metal device {ordinal}: {e}"))
}
#[cfg(not(feature = "metal"))]
fn metal(_: usize) -> std::result::Result<Device, String> {
    Err("this qi was built without Metal; rebuild with `--features qi/metal` (untested)".into())
}

fn backend(kind: &str, ordinal: usize) -> std::result::Result<Device, String> {
    if kind == "cuda" {
        cuda(ordinal)
    } else {
        metal(ordinal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_or_are_refused_with_the_valid_ones() {
        assert!(parse("cpu").unwrap().is_cpu());
        assert!(parse(" CPU ").unwrap().is_cpu());
        for bad in ["gpu", "cpu:1", "cuda:x", ""] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("device") && (e.contains(NAMES) || e.contains("device number")), "{bad}: {e}");
        }
        // a backend this build does not have says how to get it, instead of falling back to the CPU
        #[cfg(not(feature = "cuda"))]
        assert!(parse("cuda:0").unwrap_err().to_string().contains("--features qi/cuda"));
        #[cfg(not(feature = "metal"))]
        assert!(parse("metal").unwrap_err().to_string().contains("--features qi/metal"));
    }
}
