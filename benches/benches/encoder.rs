//! Encoder forward (tract, one thread, batch 1) on a MiniLM-L6-shaped random-weight bundle,
//! f16 weights as shipped, at 16, 32 and 128 positions.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ner_edge::bundle::{tensor_names, Bundle};
use ner_edge::encoder::{Encoder, PieceSeq, SpecialIds};
use ner_edge_trainer::export::fixture::{random_bundle, Shape};
use ner_edge_trainer::WeightDtype;

fn encoder(c: &mut Criterion) {
    let bytes = random_bundle(Shape::Minilm, 7, WeightDtype::F16).expect("bundle");
    let bundle = Bundle::from_vec(bytes, "minilm-random").expect("valid bundle");
    let special = SpecialIds {
        cls: 101,
        sep: 102,
        pad: 0,
    };
    let enc = Encoder::load(
        bundle.bytes(tensor_names::ENCODER_ONNX).expect("onnx"),
        &bundle.metadata().encoder,
        special,
    )
    .expect("encoder loads");
    let mut group = c.benchmark_group("encoder_minilm_l6");
    for positions in [16usize, 32, 128] {
        let ids: Vec<u32> = (0..positions - 2)
            .map(|i| 1000 + (i as u32 * 7919) % 19000)
            .collect();
        group.throughput(Throughput::Elements(positions as u64));
        group.bench_function(format!("{positions}_tokens"), |b| {
            b.iter(|| enc.run_batch(&[PieceSeq::unshaped(&ids)]).expect("run"))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = encoder
}
criterion_main!(benches);
