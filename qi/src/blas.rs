//! f32 matrix products through the system's OpenBLAS when one is installed, else through the gemm
//! crate (candle's own matmul backend).
//!
//! OpenBLAS is loaded at run time (`libopenblas.so.0`), so qi builds and runs without it. Why it
//! is worth loading: on a 2-core AVX2 machine its sgemm ran SmolLM2's linear and unembedding
//! shapes at 83–120 GFLOP/s against gemm's 75–94, writing fresh outputs as the forward does
//! (`cargo test -p qi --lib matmul_rate_bench -- --ignored --nocapture` prints both), and the
//! Qwen2.5-Coder-0.5B forward in about 30 % less time. Both sum each output in an order fixed by the shapes and
//! the thread count, so a run repeats bit for bit on a machine; the two backends, and OpenBLAS
//! with another thread count, differ in the last bits.
//!
//! `QI_MATMUL` chooses: `auto` (the default: OpenBLAS if it loads), `openblas` (an error if it
//! does not load) or `gemm`. [`backend_name`] says which one a process uses.
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

// CBLAS enum values (cblas.h)
const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;
const LOWER: c_int = 122;

type Sgemm =
    unsafe extern "C" fn(c_int, c_int, c_int, c_int, c_int, c_int, f32, *const f32, c_int, *const f32, c_int, f32, *mut f32, c_int);
type Ssyrk = unsafe extern "C" fn(c_int, c_int, c_int, c_int, c_int, f32, *const f32, c_int, f32, *mut f32, c_int);
type SetThreads = unsafe extern "C" fn(c_int);
type GetConfig = unsafe extern "C" fn() -> *const c_char;

/// A loaded OpenBLAS.
pub struct OpenBlas {
    sgemm: Sgemm,
    ssyrk: Ssyrk,
    set_threads: SetThreads,
    config: String,
    /// The thread count last given to OpenBLAS; held during a call so that concurrent callers
    /// neither share its thread pool nor change its size under each other.
    threads: Mutex<c_int>,
}

/// Which library computes qi's f32 products.
pub enum Backend {
    OpenBlas(&'static OpenBlas),
    Gemm,
}

const LIBRARIES: [&str; 3] = ["libopenblas.so.0", "libopenblas.so", "libopenblas.dylib"];

fn load() -> std::result::Result<OpenBlas, String> {
    let mut why = Vec::new();
    for name in LIBRARIES {
        let cname = CString::new(name).expect("no NUL in a library name");
        // SAFETY: dlopen/dlsym with NUL-terminated names; the handle is never closed, so the
        // function pointers stay valid for the life of the process.
        unsafe {
            let h = libc::dlopen(cname.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if h.is_null() {
                let e = libc::dlerror();
                why.push(if e.is_null() { format!("{name}: not found") } else { CStr::from_ptr(e).to_string_lossy().into_owned() });
                continue;
            }
            let sym = |s: &str| -> std::result::Result<*mut c_void, String> {
                let c = CString::new(s).expect("no NUL in a symbol name");
                let p = libc::dlsym(h, c.as_ptr());
                if p.is_null() { Err(format!("{name} has no {s}")) } else { Ok(p) }
            };
            let sgemm: Sgemm = std::mem::transmute::<*mut c_void, Sgemm>(sym("cblas_sgemm")?);
            let ssyrk: Ssyrk = std::mem::transmute::<*mut c_void, Ssyrk>(sym("cblas_ssyrk")?);
            let set_threads: SetThreads = std::mem::transmute::<*mut c_void, SetThreads>(sym("openblas_set_num_threads")?);
            let config = match sym("openblas_get_config") {
                Ok(p) => {
                    let f = std::mem::transmute::<*mut c_void, GetConfig>(p);
                    let c = f();
                    if c.is_null() { String::new() } else { CStr::from_ptr(c).to_string_lossy().trim().to_string() }
                }
                Err(_) => String::new(),
            };
            return Ok(OpenBlas { sgemm, ssyrk, set_threads, config, threads: Mutex::new(0) });
        }
    }
    Err(why.join("; "))
}

/// The process's one OpenBLAS handle, loaded on first use. One, because its thread count is
/// global to the library: a second handle setting another count would change the bits of the
/// first one's products.
fn openblas() -> std::result::Result<&'static OpenBlas, &'static String> {
    static OPENBLAS: OnceLock<std::result::Result<OpenBlas, String>> = OnceLock::new();
    OPENBLAS.get_or_init(load).as_ref()
}

/// The backend `QI_MATMUL` asks for, loaded once per process; an error names the variable and
/// what it accepts, or why OpenBLAS could not be loaded when it was asked for by name.
pub fn backend() -> candle_core::Result<&'static Backend> {
    static CHOICE: OnceLock<std::result::Result<Backend, String>> = OnceLock::new();
    let choice = CHOICE.get_or_init(|| {
        let want = std::env::var("QI_MATMUL").unwrap_or_default();
        match want.trim() {
            "" | "auto" => Ok(match openblas() {
                Ok(b) => Backend::OpenBlas(b),
                Err(_) => Backend::Gemm,
            }),
            "openblas" => match openblas() {
                Ok(b) => Ok(Backend::OpenBlas(b)),
                Err(e) => Err(format!(
                    "QI_MATMUL=openblas, but OpenBLAS could not be loaded ({e}); install it (Debian/Ubuntu: libopenblas0) or set QI_MATMUL=auto or gemm"
                )),
            },
            "gemm" => Ok(Backend::Gemm),
            other => Err(format!("QI_MATMUL={other:?}: expected auto, openblas or gemm")),
        }
    });
    choice.as_ref().map_err(|e| candle_core::Error::Msg(e.clone()))
}

/// The backend in use, for logs and benchmark lines: `openblas (<its build config>)` or `gemm`.
pub fn backend_name() -> String {
    match backend() {
        Ok(Backend::OpenBlas(b)) => format!("openblas ({})", b.config),
        Ok(Backend::Gemm) => "gemm".into(),
        Err(e) => format!("none: {e}"),
    }
}

/// A short name for what decides the last bits of a product: `gemm`, or `openblas-<hash of its
/// build config>-t<threads>` (OpenBLAS's kernels depend on its build and the CPU it detected, its
/// summation split on the thread count). Part of the twin cache's key for calibrated twins.
pub fn matmul_tag() -> candle_core::Result<String> {
    Ok(match backend()? {
        Backend::OpenBlas(b) => format!("openblas-{}-t{}", &crate::hash::stable_hash(&[&b.config])[..8], candle_core::utils::get_num_threads()),
        Backend::Gemm => "gemm".into(),
    })
}

/// How CBLAS reads a `rows × cols` matrix with row stride `rs` and column stride `cs`, as a
/// row-major operand: `(transpose flag, leading dimension)`, or `None` when neither axis is
/// contiguous.
fn operand(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<(c_int, c_int)> {
    let ld = if cs == 1 && (rs >= cols.max(1) || rows == 1) {
        (NO_TRANS, rs.max(cols).max(1))
    } else if rs == 1 && (cs >= rows.max(1) || cols == 1) {
        (TRANS, cs.max(rows).max(1))
    } else {
        return None;
    };
    c_int::try_from(ld.1).ok().map(|l| (ld.0, l))
}

impl OpenBlas {
    /// `dst[m×n] = a[m×k] · b[k×n]` (dst row-major, contiguous) with `threads` threads; `false`
    /// when the strides or sizes are not ones CBLAS takes (the caller then uses gemm).
    ///
    /// # Safety
    /// Every addressed element of `a` and `b` lies in its allocation; `dst` holds `m·n` writable
    /// f32 that overlap neither.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn sgemm(&self, m: usize, n: usize, k: usize, dst: *mut f32, a: *const f32, a_rs: usize, a_cs: usize, b: *const f32, b_rs: usize, b_cs: usize, threads: usize) -> bool {
        let (Some((ta, lda)), Some((tb, ldb))) = (operand(m, k, a_rs, a_cs), operand(k, n, b_rs, b_cs)) else { return false };
        let (Ok(mi), Ok(ni), Ok(ki)) = (c_int::try_from(m), c_int::try_from(n), c_int::try_from(k)) else { return false };
        let _pool = self.pool(threads);
        // beta = 0: OpenBLAS writes dst without reading it
        (self.sgemm)(ROW_MAJOR, ta, tb, mi, ni, ki, 1.0, a, lda, b, ldb, 0.0, dst, ni);
        true
    }

    /// The lower triangle (diagonal included) of `c[n×n] = alpha · xᵀx + beta · c` for `x` `[k, n]`
    /// row-major and contiguous, with `threads` threads: a Gram matrix for half the products of
    /// a general matmul (`ssyrk`); the strict upper triangle of `c` is neither read nor written.
    /// `false` when a size does not fit CBLAS's `int`.
    ///
    /// # Safety
    /// `x` holds `k·n` readable f32 and `c` holds `n·n` writable f32 that do not overlap it.
    pub unsafe fn syrk_lower(&self, n: usize, k: usize, alpha: f32, x: *const f32, beta: f32, c: *mut f32, threads: usize) -> bool {
        let (Ok(ni), Ok(ki)) = (c_int::try_from(n), c_int::try_from(k)) else { return false };
        let _pool = self.pool(threads);
        (self.ssyrk)(ROW_MAJOR, LOWER, TRANS, ni, ki, alpha, x, ni.max(1), beta, c, ni.max(1));
        true
    }

    /// Holds OpenBLAS's thread pool for one call, sized to `threads`: concurrent callers wait
    /// rather than share it, and none resizes it under another.
    fn pool(&self, threads: usize) -> std::sync::MutexGuard<'_, c_int> {
        let threads = c_int::try_from(threads.max(1)).unwrap_or(1);
        let mut set = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if *set != threads {
            // SAFETY: a plain setter of the loaded library, called under the lock
            unsafe { (self.set_threads)(threads) };
            *set = threads;
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands_are_read_through_their_strides_or_refused() {
        // row-major [3, 5] and its transpose view
        assert_eq!(operand(3, 5, 5, 1), Some((NO_TRANS, 5)));
        assert_eq!(operand(5, 3, 1, 5), Some((TRANS, 5)));
        // a row-major view with padding keeps its row stride as the leading dimension
        assert_eq!(operand(3, 5, 8, 1), Some((NO_TRANS, 8)));
        // neither axis contiguous, or a broadcast row stride: gemm's job
        assert_eq!(operand(3, 5, 10, 2), None);
        assert_eq!(operand(3, 5, 0, 1), None);
        // one row: its stride is irrelevant
        assert_eq!(operand(1, 5, 0, 1), Some((NO_TRANS, 5)));
    }

    #[test]
    fn openblas_products_match_f64_and_repeat_bit_for_bit() {
        // skipped (with a message) where OpenBLAS is not installed; CI installs it
        let b = match openblas() {
            Ok(b) => b,
            Err(e) => return eprintln!("OpenBLAS not loadable here ({e}): skipped"),
        };
        let (m, k, n) = (67, 300, 45);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| ((i * 104729 % 997) as f32 - 498.0) / 300.0).collect(); // [n, k]
        let want: Vec<f64> = (0..m * n)
            .map(|ij| (0..k).map(|l| a[(ij / n) * k + l] as f64 * bt[(ij % n) * k + l] as f64).sum())
            .collect();
        let run = |threads: usize| {
            let mut out = vec![f32::NAN; m * n]; // NaN: proves beta = 0 never reads dst
            // b as the transposed view of bt: b[l, j] = bt[j * k + l]
            assert!(unsafe { b.sgemm(m, n, k, out.as_mut_ptr(), a.as_ptr(), k, 1, bt.as_ptr(), 1, k, threads) });
            out
        };
        let one = run(2);
        for (o, w) in one.iter().zip(&want) {
            assert!((*o as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()), "{o} vs {w}");
        }
        // a given thread count repeats its bits (one and two threads need not agree: the split of
        // the output changes which kernel computes an edge tile)
        assert!(one == run(2), "two threads, the same call twice: different bits");
        let single = run(1);
        assert!(single == run(1), "one thread, the same call twice: different bits");
        assert!(single.iter().zip(&want).all(|(o, w)| (*o as f64 - w).abs() <= 1e-4 * (1.0 + w.abs())));
        // the Gram matrix's lower triangle: alpha·aᵀa + beta·c, upper triangle untouched
        let (rows, cols) = (m, k); // a as [67, 300]
        let mut c: Vec<f32> = (0..cols * cols).map(|i| (i % 5) as f32).collect();
        let before = c.clone();
        assert!(unsafe { b.syrk_lower(cols, rows, 0.5, a.as_ptr(), 2.0, c.as_mut_ptr(), 2) });
        for i in 0..cols {
            for j in 0..cols {
                let got = c[i * cols + j] as f64;
                if j > i {
                    assert_eq!(got, before[i * cols + j] as f64, "upper ({i}, {j}) was written");
                    continue;
                }
                let dot: f64 = (0..rows).map(|r| a[r * cols + i] as f64 * a[r * cols + j] as f64).sum();
                let w = 0.5 * dot + 2.0 * before[i * cols + j] as f64;
                assert!((got - w).abs() <= 1e-4 * (1.0 + w.abs()), "({i}, {j}): {got} vs {w}");
            }
        }
        // strides CBLAS cannot take are refused, not misread
        let mut out = vec![0f32; 4];
        assert!(!unsafe { b.sgemm(2, 2, 2, out.as_mut_ptr(), a.as_ptr(), 4, 2, bt.as_ptr(), 2, 1, 1) });
    }
}
