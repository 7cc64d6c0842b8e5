//! Decoding throughput: Viterbi, forward–backward and emission scoring, in tokens per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ner_edge::bundle::metadata::CdtParams;
use ner_edge::decode::{label_count, marginals, unfold, Decoder};
use ner_edge::emissions::emissions;
use ner_edge_benches::values;
use std::hint::black_box;

const T: usize = 32;
const TYPE_DIM: usize = 128;

fn params() -> CdtParams {
    let v = values(21, 7);
    let mut matrix = [[0.0; 5]; 3];
    for (r, row) in matrix.iter_mut().enumerate() {
        row.copy_from_slice(&v[5 * r..5 * r + 5]);
    }
    CdtParams {
        matrix,
        start: [v[15], v[16], v[17]],
        end: [v[18], v[19], v[20]],
    }
}

/// Emissions of a realistic shape: computed from random boundary logits and type vectors.
fn sample_emissions(n_types: usize) -> Vec<f32> {
    let boundary: Vec<f32> = values(T * 3, 1).iter().map(|x| x * 4.0).collect();
    let types = values(T * TYPE_DIM, 2);
    let prototypes = values(n_types * TYPE_DIM, 3);
    let mut out = Vec::new();
    emissions(&boundary, &types, TYPE_DIM, &prototypes, n_types, &mut out);
    out
}

fn bench_viterbi(c: &mut Criterion) {
    let mut group = c.benchmark_group("viterbi");
    group.throughput(Throughput::Elements(T as u64));
    for n_types in [5usize, 10, 20] {
        let l = label_count(n_types);
        let trans = unfold(&params(), n_types);
        let em = sample_emissions(n_types);
        let mut decoder = Decoder::new();
        let mut path = Vec::with_capacity(T);
        group.bench_with_input(BenchmarkId::new("types", n_types), &em, |b, em| {
            b.iter(|| black_box(decoder.viterbi(black_box(em), l, &trans, &mut path)))
        });
    }
    group.finish();
}

fn bench_forward_backward(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward_backward");
    group.throughput(Throughput::Elements(T as u64));
    let n_types = 10;
    let l = label_count(n_types);
    let trans = unfold(&params(), n_types);
    let em = sample_emissions(n_types);
    group.bench_with_input(BenchmarkId::new("types", n_types), &em, |b, em| {
        b.iter(|| black_box(marginals(black_box(em), l, &trans).log_z()))
    });
    group.finish();
}

fn bench_emissions(c: &mut Criterion) {
    let mut group = c.benchmark_group("emissions");
    group.throughput(Throughput::Elements(T as u64));
    let n_types = 10;
    let boundary = values(T * 3, 1);
    let types = values(T * TYPE_DIM, 2);
    let prototypes = values(n_types * TYPE_DIM, 3);
    let mut out = Vec::new();
    group.bench_function(BenchmarkId::new("d128_types", n_types), |b| {
        b.iter(|| {
            emissions(
                black_box(&boundary),
                &types,
                TYPE_DIM,
                &prototypes,
                n_types,
                &mut out,
            );
            black_box(out.last().copied())
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_viterbi,
    bench_forward_backward,
    bench_emissions
);
criterion_main!(benches);
