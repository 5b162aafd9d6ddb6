//! Hostile input never crashes, hangs or half-writes: mutated job files, broken model files,
//! extreme source values, a results table altered between windows, a full disk and abusive
//! clients of the daemon's listener. Each case ends in a clear error that names what is wrong,
//! or in results equal to ONNX Runtime's Python API, and never in a panic, an abort, a hang
//! longer than the lease or a half-written window.

mod disk_full;
mod job_files;
mod listener;
mod model_files;
mod results_table;
mod values;
