//! Label-memory OT: one Sinkhorn solve (15 memory rows × 10 support rows, d = 128, ε = 0.1) and
//! retrieval against a realistic memory (60 slots × 15 rows).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ner_edge::adapt::memory::{
    squared_euclidean_cost, Plan, Retriever, SinkhornConfig, SinkhornWorkspace,
};
use ner_edge::bundle::MemorySlot;
use ner_edge_benches::values;
use std::hint::black_box;

const D: usize = 128;
const M: usize = 15;
const N: usize = 10;
const SLOTS: usize = 60;

fn bench_sinkhorn(c: &mut Criterion) {
    let x = values(M * D, 1);
    let y = values(N * D, 2);
    let cost = squared_euclidean_cost(&x, M, &y, N, D);
    let cfg = SinkhornConfig::default();
    let mut ws = SinkhornWorkspace::new();
    let mut plan = Plan::default();
    ws.solve(&cost, M, N, &cfg, &mut plan);
    println!(
        "sinkhorn {M}x{N} d={D}: {} iterations to marginal error {:.2e} (converged: {})",
        plan.iterations, plan.marginal_error, plan.converged
    );
    let exhaustive = SinkhornConfig { tol: 0.0, ..cfg };

    let mut group = c.benchmark_group("sinkhorn");
    group.bench_function(BenchmarkId::new("solve", format!("{M}x{N}")), |b| {
        b.iter(|| {
            ws.solve(black_box(&cost), M, N, &cfg, &mut plan);
            black_box(plan.distance)
        })
    });
    group.bench_function(
        BenchmarkId::new("cost_and_solve", format!("{M}x{N}_d{D}")),
        |b| {
            b.iter(|| {
                let cost = squared_euclidean_cost(black_box(&x), M, &y, N, D);
                ws.solve(&cost, M, N, &cfg, &mut plan);
                black_box(plan.distance)
            })
        },
    );
    group.bench_function(
        BenchmarkId::new("solve_1000_iters", format!("{M}x{N}")),
        |b| {
            b.iter(|| {
                ws.solve(black_box(&cost), M, N, &exhaustive, &mut plan);
                black_box(plan.distance)
            })
        },
    );
    group.finish();
}

fn bench_retrieve(c: &mut Criterion) {
    let memory = values(SLOTS * M * D, 3);
    let slots: Vec<MemorySlot> = (0..SLOTS)
        .map(|k| MemorySlot {
            type_name: format!("type{k}"),
            source: String::new(),
            first_row: k * M,
            rows: M,
        })
        .collect();
    let support = values(N * D, 4);
    let mut retriever = Retriever::new();
    if let Some(r) = retriever.retrieve(&memory, &slots, D, &support, N) {
        println!(
            "retrieve {SLOTS} slots x {M} rows, {N} support rows: slot {}, distance {:.4}, converged {}",
            r.slot, r.distance, r.converged
        );
    }
    let mut group = c.benchmark_group("retrieve");
    group.bench_function(
        BenchmarkId::new("slots", format!("{SLOTS}x{M}_n{N}_d{D}")),
        |b| b.iter(|| black_box(retriever.retrieve(black_box(&memory), &slots, D, &support, N))),
    );
    group.finish();
}

criterion_group!(benches, bench_sinkhorn, bench_retrieve);
criterion_main!(benches);
