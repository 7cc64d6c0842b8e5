//! Times the runtime encoder (tract, one thread, batch 1) on a bundle at given sequence lengths.
//!
//! Usage: `encoder-timing BUNDLE LEN [LEN ...]`; prints `tract LEN median_ms p10_ms p90_ms`, the
//! same line format as `benches/scripts/ort_encoder.py`, so one script can compare the two.
//! LEN counts all positions, `[CLS]` and `[SEP]` included.

use std::time::{Duration, Instant};

use ner_edge::bundle::{tensor_names, Bundle};
use ner_edge::encoder::{Encoder, PieceSeq, SpecialIds};

fn main() {
    if let Err(e) = run() {
        eprintln!("encoder-timing: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, lens) = args
        .split_first()
        .ok_or("usage: encoder-timing BUNDLE LEN [LEN ...]")?;
    let bundle = Bundle::open(std::path::Path::new(path))?;
    let special = SpecialIds {
        cls: 101,
        sep: 102,
        pad: 0,
    };
    let enc = Encoder::load(
        bundle.bytes(tensor_names::ENCODER_ONNX)?,
        &bundle.metadata().encoder,
        special,
    )?;
    for len in lens {
        let n: usize = len.parse()?;
        let ids: Vec<u32> = (0..n.saturating_sub(2))
            .map(|i| 1000 + (i as u32 * 7919) % 19000)
            .collect();
        for _ in 0..10 {
            enc.run_batch(&[PieceSeq::unshaped(&ids)])?;
        }
        let mut times = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while times.len() < 30 || (Instant::now() < deadline && times.len() < 500) {
            let t = Instant::now();
            enc.run_batch(&[PieceSeq::unshaped(&ids)])?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let k = times.len();
        println!(
            "tract {n} {:.3} {:.3} {:.3}",
            times[k / 2],
            times[k / 10],
            times[(9 * k) / 10]
        );
    }
    Ok(())
}
