//! Benchmarks live under `benches/benches/`; this crate has no library code of its own.
