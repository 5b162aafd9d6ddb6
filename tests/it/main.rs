//! Integration tests: the real `batchscore` binary against a real SQLite file and the real
//! PostgreSQL server, with the real ONNX Runtime. Predictions are checked against reference
//! values computed by ONNX Runtime's Python API (`tests/fixtures`, written by `models/train.py`).

// First, so its macros are in scope in every test module.
#[macro_use]
mod support;

mod alerts;
mod bad_input;
mod bad_rows;
mod cost;
mod daemon;
mod deploy;
mod failures;
mod hardening;
mod hostile;
mod layout;
mod lifecycle;
mod logs;
mod migrations;
mod models;
mod monitor;
mod performance;
mod progress;
mod retention;
mod scaffold;
mod scoring;
mod shards;
mod soak;
mod status;
mod status_page;
mod tls;
mod windows;
