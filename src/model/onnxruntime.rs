//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! `ort` is built with `load-dynamic`, so nothing is downloaded at build time; the library is
//! found at run time: `ORT_DYLIB_PATH` first, then the places `scripts/install-onnxruntime.sh`
//! and common packagings put it. When it is nowhere, the error says how to install it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::{Environment, GlobalThreadPoolOptions};

use crate::error::ConfigError;

const LIBRARY: &str = "libonnxruntime.so";
/// Where `scripts/install-onnxruntime.sh` installs the library, relative to the project root.
const PROJECT_DIR: &str = ".onnxruntime/lib";

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The process's ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static Environment, ConfigError> {
    ENVIRONMENT
        .get_or_init(load)
        .as_ref()
        .map_err(|problem| ConfigError::OnnxRuntime(problem.clone()))
}

fn load() -> Result<Environment, String> {
    let path = locate()?;
    tracing::debug!(path = %path.display(), "loading ONNX Runtime");
    let builder = ort::init_from(&path).map_err(|e| {
        format!(
            "cannot load ONNX Runtime from {}: {e}. {}",
            path.display(),
            how_to_install()
        )
    })?;
    // One thread pool for every model of the process, not one per session: a daemon with fifty
    // jobs had fifty pools (65 threads), whose allocations spread over glibc's per-thread
    // arenas and grew its memory by fragmentation; and two runs at once each took every core.
    // Its size is ONNX Runtime's default (the physical cores). Spinning threads wait for work
    // by burning a core, which on a small machine is the database's and the reader's: blocking
    // costs microseconds per batch.
    let threads = GlobalThreadPoolOptions::default()
        .with_intra_threads(0)
        .and_then(|options| options.with_inter_threads(1))
        .and_then(|options| options.with_spin_control(false))
        .map_err(|e| format!("cannot set up ONNX Runtime's threads: {e}"))?;
    builder
        .with_name("batchscore")
        .with_logger(std::sync::Arc::new(log))
        .with_global_thread_pool(threads)
        .build()
        .map_err(|e| format!("cannot start ONNX Runtime ({}): {e}", path.display()))
}

/// ONNX Runtime's own log lines, through batchscore's logging rather than straight to stderr
/// in its own format. Its errors come back as the error of the call that failed, which says
/// them in context: here they are only detail.
fn log(level: ort::logging::LogLevel, category: &str, _id: &str, location: &str, message: &str) {
    use ort::logging::LogLevel;
    match level {
        LogLevel::Warning => tracing::warn!(target: "onnxruntime", category, location, "{message}"),
        LogLevel::Verbose | LogLevel::Info => {
            tracing::trace!(target: "onnxruntime", category, location, "{message}")
        }
        LogLevel::Error | LogLevel::Fatal => {
            tracing::debug!(target: "onnxruntime", category, location, "{message}")
        }
    }
}

fn locate() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "ORT_DYLIB_PATH is set to {}, which is not a file. {}",
                path.display(),
                how_to_install()
            ))
        };
    }
    let candidates = candidates();
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            format!(
                "ONNX Runtime library not found (looked in ORT_DYLIB_PATH and {}). {}",
                looked.join(", "),
                how_to_install()
            )
        })
}

/// Next to the binary, in a `lib/` beside its directory, in a project checkout above the
/// binary or the working directory, then the system library directories.
fn candidates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_owned))
    {
        dirs.push(exe_dir.clone());
        dirs.push(exe_dir.join("../lib"));
        dirs.extend(exe_dir.ancestors().map(|dir| dir.join(PROJECT_DIR)));
    }
    if let Ok(cwd) = std::env::current_dir() {
        dirs.extend(cwd.ancestors().map(|dir| dir.join(PROJECT_DIR)));
    }
    dirs.extend(["/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu"].map(PathBuf::from));
    let mut seen = std::collections::HashSet::new();
    dirs.into_iter()
        .map(|dir| dir.join(LIBRARY))
        .filter(|path| seen.insert(path.clone()))
        .collect()
}

fn how_to_install() -> String {
    format!(
        "Install it with scripts/install-onnxruntime.sh (puts it in {PROJECT_DIR}/ of this project), \
         or set ORT_DYLIB_PATH=/path/to/{LIBRARY} (from the onnxruntime 1.31 wheel on PyPI: onnxruntime/capi/)"
    )
}
