use std::time::Instant;
use ner_edge_trainer::*;
use tract_onnx::prelude::*;
#[test]
fn inspect() {
    let w = random_init(&EncoderConfig::minilm_l6(), 1);
    for dt in [WeightDtype::F16, WeightDtype::F32] {
        let bytes = export_onnx(&w, dt).unwrap();
        let t0 = Instant::now();
        let m = tract_onnx::onnx().model_for_read(&mut &bytes[..]).unwrap().into_optimized().unwrap();
        let load = t0.elapsed();
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for n in m.nodes() { *counts.entry(n.op().name().to_string()).or_default() += 1; }
        println!("{dt:?}: {counts:?}");
        for n in m.nodes().iter().filter(|n| n.op().name().contains("Gather") || n.op().name().contains("Cast") || n.op().name().contains("Slice")) {
            println!("  {} {} -> {:?}", n.name, n.op().name(), n.outputs[0].fact);
        }
        let m = m.into_runnable().unwrap();
        for t in [16usize, 32, 128] {
            let ids = tract_ndarray::Array2::<i64>::from_shape_fn((1, t), |(_, j)| (j as i64 * 37) % 30000);
            let mask = tract_ndarray::Array2::<i64>::ones((1, t));
            let inputs = tvec!(Tensor::from(ids).into(), Tensor::from(mask).into());
            m.run(inputs.clone()).unwrap();
            let t0 = Instant::now();
            for _ in 0..5 { m.run(inputs.clone()).unwrap(); }
            println!("{dt:?} load {:?} seq {t}: {:?}/run", load, t0.elapsed() / 5);
        }
    }
}
