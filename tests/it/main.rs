//! Integration tests: the real `batchscore` binary against a real SQLite file and the real
//! PostgreSQL server, with the real ONNX Runtime. Predictions are checked against reference
//! values computed by ONNX Runtime's Python API (`tests/fixtures`, written by `models/train.py`).

mod bad_input;
mod bad_rows;
mod daemon;
mod hardening;
mod scoring;
mod support;
mod windows;
