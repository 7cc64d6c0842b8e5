//! Training backend (CPU, single thread): the linear layers of MiniLM-L6 on a 600-piece packed
//! batch (20 sentences × 30 pieces), and a whole forward + backward of the encoder and heads.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ner_edge_benches::values;
use ner_edge_trainer::backprop::linear::{linear_backward, linear_forward, GradMode};
use ner_edge_trainer::backprop::{backward, forward, BackwardScratch, PieceBatch, Tape};
use ner_edge_trainer::model::{random_init, EncoderConfig, ModelWeights};
use std::hint::black_box;
use std::time::Duration;

const N: usize = 600;

fn bench_linear(c: &mut Criterion) {
    let mut group = c.benchmark_group("backprop_linear");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2));
    for (d_in, d_out) in [(384, 1536), (1536, 384), (384, 384)] {
        let x = values(N * d_in, 1);
        let w = values(d_in * d_out, 2);
        let b = values(d_out, 3);
        let dy = values(N * d_out, 4);
        let mut y = vec![0.0f32; N * d_out];
        let (mut dx, mut dw, mut db) = (vec![0.0; N * d_in], vec![0.0; w.len()], vec![0.0; d_out]);
        let id = format!("{N}x{d_in}x{d_out}");
        group.bench_function(BenchmarkId::new("forward", &id), |bch| {
            bch.iter(|| linear_forward(black_box(&x), &w, &b, &mut y))
        });
        group.bench_function(BenchmarkId::new("backward", &id), |bch| {
            bch.iter(|| {
                linear_backward(
                    black_box(&x),
                    &w,
                    &dy,
                    &mut dx,
                    GradMode::Assign,
                    &mut dw,
                    &mut db,
                )
            })
        });
    }
    group.finish();
}

fn bench_model(c: &mut Criterion) {
    let config = EncoderConfig::minilm_l6();
    let w = random_init(&config, 1);
    let sentences: Vec<Vec<u32>> = (0..20)
        .map(|s| {
            (0..30)
                .map(|i| ((s * 131 + i * 17) % 30000) as u32)
                .collect()
        })
        .collect();
    let batch = PieceBatch::new(&config, &sentences).expect("valid batch");
    let d_boundary = values(N * 3, 5);
    let d_types = values(N * config.type_dim, 6);
    let mut tape = Tape::new();
    let mut scratch = BackwardScratch::new();
    let mut grads = ModelWeights::zeros(&config);
    let mut group = c.benchmark_group("backprop_minilm_l6");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("forward_20x30", |bch| {
        bch.iter(|| forward(&w, black_box(&batch), &mut tape))
    });
    group.bench_function("forward_backward_20x30", |bch| {
        bch.iter(|| {
            forward(&w, black_box(&batch), &mut tape);
            backward(
                &w,
                &batch,
                &tape,
                &d_boundary,
                &d_types,
                &mut grads,
                &mut scratch,
            );
        })
    });
    group.finish();
}

criterion_group!(benches, bench_linear, bench_model);
criterion_main!(benches);
