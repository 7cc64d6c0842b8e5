//! The committed fixture bundle is exactly what `ner-tools make-fixture` writes, so anyone can
//! regenerate it (README) and a format or exporter change cannot leave a stale fixture behind.

use ner_edge_trainer::export::fixture::{random_bundle, Shape};
use ner_edge_trainer::WeightDtype;

#[test]
fn committed_fixture_is_reproducible() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/bundles/tiny.nerb");
    let committed = std::fs::read(&path).expect("fixture bundle is committed");
    let fresh = random_bundle(Shape::Tiny, 7, WeightDtype::F16).expect("fixture builds");
    assert!(
        committed == fresh,
        "fixtures/bundles/tiny.nerb is stale: regenerate it with \
         `cargo run --release -p ner-edge-tools -- make-fixture --out fixtures/bundles/tiny.nerb`"
    );
}
