//! Bundle format v1: round trips, every specific corruption, fuzzing, open time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use half::f16;
use ner_edge::bundle::{
    describe, reseal, sample_bundle_bytes, sample_metadata, sample_writer, tensor_names, Bundle,
    BundleWriter, DType, TensorInfo, ALIGNMENT, HEADER_LEN,
};
use ner_edge::error::{ChecksumSection, FormatProblem};
use ner_edge::Error;
use proptest::prelude::*;

const AT_VERSION: usize = 4;
const AT_FLAGS: usize = 8;
const AT_FILE_LEN: usize = 16;
const AT_METADATA_OFFSET: usize = 24;
const AT_METADATA_LEN: usize = 32;
const AT_TABLE_OFFSET: usize = 40;
const AT_TABLE_LEN: usize = 48;
const AT_TENSOR_COUNT: usize = 56;
const AT_DATA_OFFSET: usize = 64;
const AT_DATA_LEN: usize = 72;
const HEADER_U64_FIELDS: [usize; 11] = [16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96];

fn sample() -> Vec<u8> {
    sample_bundle_bytes(3, 8).expect("sample bundle")
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn set_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn unique_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "ner-edge-bundle-test-{}-{n}-{tag}.nerb",
        std::process::id()
    ))
}

/// Leaks `bytes` into a 64-byte-aligned `'static` slice, shifted by `misalign` bytes.
fn leak_aligned(bytes: &[u8], misalign: usize) -> &'static [u8] {
    let buf: &'static mut [u8] = vec![0u8; bytes.len() + 2 * ALIGNMENT].leak();
    let start = (ALIGNMENT - buf.as_ptr() as usize % ALIGNMENT) % ALIGNMENT + misalign;
    buf[start..start + bytes.len()].copy_from_slice(bytes);
    &buf[start..start + bytes.len()]
}

/// Offsets of the fields of one tensor-table entry.
#[derive(Debug)]
struct Entry {
    name_len_at: usize,
    name_at: usize,
    dtype_at: usize,
    rank_at: usize,
    dims_at: Vec<usize>,
    offset_at: usize,
    len_at: usize,
}

fn entries(b: &[u8]) -> Vec<Entry> {
    let mut p = u64_at(b, AT_TABLE_OFFSET) as usize;
    let mut out = Vec::new();
    for _ in 0..u64_at(b, AT_TENSOR_COUNT) {
        let name_len = u16::from_le_bytes([b[p], b[p + 1]]) as usize;
        let name_at = p + 2;
        let dtype_at = name_at + name_len;
        let rank_at = dtype_at + 1;
        let rank = b[rank_at] as usize;
        let dims_at = (0..rank).map(|d| rank_at + 1 + 8 * d).collect();
        let offset_at = rank_at + 1 + 8 * rank;
        out.push(Entry {
            name_len_at: p,
            name_at,
            dtype_at,
            rank_at,
            dims_at,
            offset_at,
            len_at: offset_at + 8,
        });
        p = offset_at + 16;
    }
    out
}

fn entry_of(b: &[u8], name: &str) -> Entry {
    entries(b)
        .into_iter()
        .find(|e| {
            &b[e.name_at..e.name_at + name.len()] == name.as_bytes()
                && e.dtype_at - e.name_at == name.len()
        })
        .unwrap_or_else(|| panic!("no table entry {name}"))
}

#[track_caller]
fn expect_err(bytes: Vec<u8>, needles: &[&str]) -> String {
    expect_problem(bytes, needles).1
}

/// The structured problem and the message of opening `bytes`, which must fail with a one-line
/// [`Error::Format`] naming the file and containing every needle.
#[track_caller]
fn expect_problem(bytes: Vec<u8>, needles: &[&str]) -> (FormatProblem, String) {
    match Bundle::from_vec(bytes, "test.nerb") {
        Ok(_) => panic!("expected an error containing {needles:?}, bundle opened"),
        Err(Error::Format {
            problem,
            message: m,
        }) => {
            for n in needles {
                assert!(m.contains(n), "error {m:?} lacks {n:?}");
            }
            assert!(
                m.starts_with("test.nerb: "),
                "error {m:?} does not name the file"
            );
            assert!(!m.contains('\n'), "error {m:?} is not one line");
            (problem, m)
        }
        Err(e) => panic!("expected Error::Format, got {e}"),
    }
}

#[track_caller]
fn expect_resealed_err(mut bytes: Vec<u8>, needles: &[&str]) -> String {
    reseal(&mut bytes);
    expect_err(bytes, needles)
}

/// Properties every bundle that opens must have; panics (fails the test) otherwise.
fn check_invariants(b: &Bundle) {
    let file_len = b.file_len();
    assert_eq!(b.as_bytes().len(), file_len);
    for t in b.tensors() {
        assert_eq!(t.offset % ALIGNMENT, 0, "{t:?}");
        assert!(
            t.offset.checked_add(t.len).is_some_and(|e| e <= file_len),
            "{t:?}"
        );
        let n: usize = t.shape.iter().product();
        assert_eq!(n * t.dtype.size(), t.len, "{t:?}");
        assert_eq!(b.bytes(&t.name).unwrap().len(), t.len);
        assert_eq!(b.tensor_info(&t.name).unwrap(), t);
        match t.dtype {
            DType::F16 => {
                assert_eq!(b.f16_view(&t.name).unwrap().len(), n);
                assert_eq!(b.to_f32_vec(&t.name).unwrap().len(), n);
            }
            DType::F32 => {
                assert_eq!(b.f32_view(&t.name).unwrap().len(), n);
                assert_eq!(b.to_f32_vec(&t.name).unwrap().len(), n);
            }
            _ => assert!(b.to_f32_vec(&t.name).is_err()),
        }
    }
    for required in [
        tensor_names::ENCODER_ONNX,
        tensor_names::VOCAB,
        tensor_names::PROTOTYPES,
        tensor_names::LABEL_MEMORY,
    ] {
        b.tensor_info(required).unwrap();
    }
    let n_types = b.metadata().labels.types.len();
    let protos = b.tensor_info(tensor_names::PROTOTYPES).unwrap();
    assert_eq!(protos.shape, vec![n_types, b.metadata().encoder.type_dim]);
    for t in &b.metadata().labels.types {
        assert!(t.prototype_row < n_types);
    }
    let mem_rows = b.tensor_info(tensor_names::LABEL_MEMORY).unwrap().shape[0];
    for s in &b.metadata().label_memory.slots {
        assert!(s
            .first_row
            .checked_add(s.rows)
            .is_some_and(|e| e <= mem_rows));
    }
    assert!(std::str::from_utf8(b.bytes(tensor_names::VOCAB).unwrap()).is_ok());
    assert_eq!(b.content_id().len(), 32);
    assert!(!describe(b).is_empty());
}

struct Extra {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn rich_writer() -> (BundleWriter, Vec<Extra>) {
    let mut w = sample_writer(3, 8).unwrap();
    let mut extras = Vec::new();
    let mut push = |name: String, dtype: DType, shape: &[usize], bytes: Vec<u8>| {
        w.add_raw(&name, dtype, shape, bytes.clone()).unwrap();
        extras.push(Extra {
            name,
            dtype,
            shape: shape.to_vec(),
            bytes,
        });
    };
    let f32s: Vec<f32> = (0..6).map(|i| i as f32 * 0.25 - 1.0).collect();
    push(
        "x.f32".into(),
        DType::F32,
        &[2, 3],
        f32s.iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    let f16s: Vec<f16> = [1.0f32, -2.5, 65504.0, 1e-7].map(f16::from_f32).to_vec();
    push(
        "x.f16".into(),
        DType::F16,
        &[4],
        f16s.iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    push("x.i8".into(), DType::I8, &[3, 1], vec![0x80, 0x00, 0x7f]);
    push("x.u8".into(), DType::U8, &[5], vec![0, 1, 2, 254, 255]);
    push("x.bytes".into(), DType::Bytes, &[7], b"opaque\0".to_vec());
    push("x.empty.f32".into(), DType::F32, &[0, 8], vec![]);
    push("x.empty.bytes".into(), DType::Bytes, &[0], vec![]);
    push(
        "x.scalar".into(),
        DType::F32,
        &[],
        3.5f32.to_le_bytes().to_vec(),
    );
    push(
        "x.rank8".into(),
        DType::U8,
        &[1, 1, 2, 1, 1, 1, 1, 1],
        vec![9, 8],
    );
    push("x.名前".into(), DType::U8, &[1], vec![42]);
    for i in 0..100usize {
        let len = (i * 37) % 130;
        let dtype = DType::ALL[i % DType::ALL.len()];
        let n = len / dtype.size();
        let bytes: Vec<u8> = (0..n * dtype.size()).map(|k| (k * 31 + i) as u8).collect();
        let bytes = if dtype == DType::F16 || dtype == DType::F32 {
            bytes.iter().map(|&b| b & 0x3f).collect()
        } else {
            bytes
        };
        push(format!("many.{i:03}"), dtype, &[n], bytes);
    }
    (w, extras)
}

fn check_extras(b: &Bundle, extras: &[Extra]) {
    for e in extras {
        let t = b.tensor_info(&e.name).unwrap();
        assert_eq!(
            (t.dtype, &t.shape, t.len),
            (e.dtype, &e.shape, e.bytes.len()),
            "{}",
            e.name
        );
        assert_eq!(b.bytes(&e.name).unwrap(), &e.bytes[..], "{}", e.name);
        assert_eq!(t.offset % 64, 0);
    }
    assert_eq!(
        b.f32_view("x.f32").unwrap(),
        &[-1.0, -0.75, -0.5, -0.25, 0.0, 0.25]
    );
    assert_eq!(
        b.to_f32_vec("x.f32").unwrap(),
        vec![-1.0, -0.75, -0.5, -0.25, 0.0, 0.25]
    );
    let h = b.f16_view("x.f16").unwrap();
    assert_eq!(h[0], f16::from_f32(1.0));
    assert_eq!(h[2], f16::MAX);
    assert_eq!(b.to_f32_vec("x.f16").unwrap()[1], -2.5);
    assert_eq!(b.i8_view("x.i8").unwrap(), &[-128, 0, 127]);
    assert_eq!(b.f32_view("x.scalar").unwrap(), &[3.5]);
    assert!(b.f32_view("x.empty.f32").unwrap().is_empty());
    assert!(b.bytes("x.empty.bytes").unwrap().is_empty());
    let m = b.f16_view("x.f32").unwrap_err().to_string();
    assert!(m.contains("\"x.f32\" is f32, not f16"), "{m}");
    assert!(b.f32_view("x.f16").is_err());
    assert!(b.to_f32_vec("x.u8").is_err());
    let m = b.bytes("nope").unwrap_err().to_string();
    assert!(m.contains("no tensor named \"nope\""), "{m}");
}

#[test]
fn bundle_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Bundle>();
    assert_send_sync::<BundleWriter>();
}

#[test]
fn round_trip_through_from_vec_from_static_and_open() {
    let (w, extras) = rich_writer();
    let bytes = w.to_bytes().unwrap();
    assert_eq!(&bytes[..4], b"NERB");

    let from_vec = Bundle::from_vec(bytes.clone(), "vec").unwrap();
    let from_static = Bundle::from_static(leak_aligned(&bytes, 0), "static").unwrap();
    let path = unique_path("roundtrip");
    w.write(&path).unwrap();
    let opened = Bundle::open(&path).unwrap();
    assert_eq!(opened.name(), path.display().to_string());

    for b in [&from_vec, &from_static, &opened] {
        assert_eq!(b.version(), 1);
        assert_eq!(b.file_len(), bytes.len());
        assert_eq!(b.as_bytes(), &bytes[..]);
        assert_eq!(b.metadata(), w.metadata());
        assert_eq!(b.tensors().len(), 4 + extras.len());
        check_extras(b, &extras);
        check_invariants(b);
        assert_eq!(b.tensors(), from_vec.tensors());
        assert_eq!(b.content_id(), from_vec.content_id());
    }
    let names: Vec<&str> = opened.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        &names[..4],
        &[
            tensor_names::ENCODER_ONNX,
            tensor_names::VOCAB,
            tensor_names::PROTOTYPES,
            tensor_names::LABEL_MEMORY
        ]
    );
    let protos = opened.f16_view(tensor_names::PROTOTYPES).unwrap();
    assert_eq!(protos.len(), 3 * 8);
    assert!(protos.iter().all(|v| v.to_f32().abs() <= 1.0));
    assert_eq!(
        opened.f16_view(tensor_names::LABEL_MEMORY).unwrap().len(),
        6 * 8
    );
    drop(opened);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn from_vec_accepts_any_alignment_and_from_static_requires_64() {
    let bytes = sample();
    let mut seen_misaligned = false;
    // Every bundle stays alive, so no vector can reuse the block of an earlier (aligned) one
    // and the allocator has to hand out fresh addresses.
    let mut kept = Vec::new();
    for extra in 1..64 {
        let mut v = Vec::with_capacity(bytes.len() + extra);
        v.extend_from_slice(&bytes);
        seen_misaligned |= !(v.as_ptr() as usize).is_multiple_of(64);
        let b = Bundle::from_vec(v, "v").unwrap();
        assert_eq!(b.as_bytes().as_ptr() as usize % 64, 0);
        check_invariants(&b);
        kept.push(b);
    }
    assert!(
        seen_misaligned,
        "allocator only returned 64-aligned vectors; branch untested"
    );
    let m = Bundle::from_static(leak_aligned(&bytes, 8), "s")
        .unwrap_err()
        .to_string();
    assert!(m.contains("8 bytes past a 64-byte boundary"), "{m}");
}

#[test]
fn writer_rejects_bad_tensors() {
    let mut w = BundleWriter::new(sample_metadata(3, 8));
    w.add_f32("a", &[2, 2], &[1.0; 4]).unwrap();
    let msg = |r: ner_edge::Result<()>| r.unwrap_err().to_string();
    assert!(msg(w.add_f32("a", &[1], &[1.0])).contains("added twice"));
    assert!(msg(w.add_f32("b", &[2, 3], &[1.0; 5])).contains("needs 24 bytes, got 20"));
    assert!(msg(w.add_f16("c", &[usize::MAX, 2], &[])).contains("overflows"));
    assert!(msg(w.add_u8("", &[0], &[])).contains("name must be"));
    assert!(msg(w.add_u8(&"n".repeat(257), &[0], &[])).contains("name must be"));
    assert!(msg(w.add_u8("tab\there", &[0], &[])).contains("name must be"));
    assert!(msg(w.add_u8("r9", &[1; 9], &[0])).contains("rank 9"));
    assert!(msg(w.add_raw("bb", DType::Bytes, &[1, 1], vec![0])).contains("shape [len]"));
    w.add_u8(&"n".repeat(256), &[0], &[]).unwrap();
    let m = w.to_bytes().unwrap_err().to_string();
    assert!(
        m.contains("required tensor \"encoder.onnx\" is missing"),
        "{m}"
    );
}

#[test]
fn write_replaces_atomically_and_old_maps_stay_valid() {
    let path = unique_path("atomic");
    let first = sample_writer(3, 8).unwrap();
    first.write(&path).unwrap();
    let old = Bundle::open(&path).unwrap();
    let old_id = old.content_id();
    let old_protos = old.to_f32_vec(tensor_names::PROTOTYPES).unwrap();

    let mut second = sample_writer(4, 8).unwrap();
    second.add_u8("extra", &[3], &[1, 2, 3]).unwrap();
    second.write(&path).unwrap();
    let new = Bundle::open(&path).unwrap();
    assert_ne!(new.content_id(), old_id);
    assert_eq!(new.metadata().labels.types.len(), 4);
    assert_eq!(old.content_id(), old_id);
    assert_eq!(
        old.to_f32_vec(tensor_names::PROTOTYPES).unwrap(),
        old_protos
    );
    let dir = path.parent().unwrap();
    let stem = path.file_name().unwrap().to_string_lossy().to_string();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!(".{stem}.tmp"))
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    drop((old, new));
    std::fs::remove_file(&path).unwrap();

    let m = second
        .write(Path::new("/nonexistent-dir/x.nerb"))
        .unwrap_err();
    assert!(matches!(m, Error::Io { .. }), "{m}");
}

#[test]
fn content_id_tracks_every_byte_of_content() {
    let a = Bundle::from_vec(sample(), "a").unwrap();
    let b = Bundle::from_vec(sample(), "b").unwrap();
    assert_eq!(a.content_id(), b.content_id());
    assert!(a.content_id().chars().all(|c| c.is_ascii_hexdigit()));

    let mut w = sample_writer(3, 8).unwrap();
    w.metadata_mut().provenance.notes.push('!');
    let c = Bundle::from_vec(w.to_bytes().unwrap(), "c").unwrap();
    assert_ne!(a.content_id(), c.content_id());

    let mut bytes = sample();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    reseal(&mut bytes);
    let d = Bundle::from_vec(bytes, "d").unwrap();
    assert_ne!(a.content_id(), d.content_id());
}

#[test]
fn describe_lists_everything() {
    let b = Bundle::from_vec(sample(), "sample.nerb").unwrap();
    let text = describe(&b);
    for needle in [
        "sample.nerb",
        "format version:  1",
        "tokenizer:       wordpiece",
        &format!("{} bytes", b.file_len()),
        &b.content_id(),
        "labels.prototypes",
        "f16",
        "[3, 8]",
        "[6, 8]",
        "encoder.onnx",
        "bytes",
        "PER",
        "LOC",
        "ORG",
        "active",
        "conll2003",
        "rows 4..6",
        "\"type_dim\": 8",
        "\"matrix\"",
    ] {
        assert!(
            text.contains(needle),
            "describe() lacks {needle:?}:\n{text}"
        );
    }
}

#[test]
fn header_corruptions_give_specific_errors() {
    let good = sample();
    let len = good.len() as u64;

    let mut b = good.clone();
    b[..4].copy_from_slice(b"GGUF");
    let (problem, _) = expect_problem(b, &["bad magic", "at byte 0", "NERB"]);
    assert_eq!(
        problem,
        FormatProblem::BadMagic {
            found: *b"GGUF",
            expected: *b"NERB"
        }
    );

    let mut b = good.clone();
    set_u32(&mut b, AT_VERSION, 2);
    let (problem, _) = expect_problem(b.clone(), &["unsupported structural version 2", "byte 4"]);
    assert_eq!(
        problem,
        FormatProblem::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    );
    expect_resealed_err(b, &["unsupported structural version 2"]);

    let mut b = good.clone();
    set_u32(&mut b, AT_FLAGS, 1);
    expect_resealed_err(b, &["unknown flags 0x00000001", "byte 8"]);

    let mut b = good.clone();
    set_u32(&mut b, 12, 64);
    expect_resealed_err(b, &["header length 64", "byte 12"]);

    let mut b = good.clone();
    b[100] = 1;
    expect_resealed_err(b, &["reserved header bytes 96..128"]);

    let mut b = good.clone();
    b.extend_from_slice(&[0; 5]);
    expect_err(
        b,
        &["5 bytes of trailing garbage", &format!("at byte {len}")],
    );

    let mut b = good.clone();
    set_u64(&mut b, AT_METADATA_OFFSET, len + 64);
    expect_resealed_err(
        b,
        &[
            "metadata bytes",
            "run past the end of the file",
            "header bytes 24, 32",
        ],
    );

    let mut b = good.clone();
    set_u64(&mut b, AT_METADATA_LEN, u64::MAX);
    expect_resealed_err(
        b,
        &[
            "metadata offset 128 + length 18446744073709551615",
            "overflows",
        ],
    );

    let mut b = good.clone();
    set_u64(&mut b, AT_METADATA_OFFSET, 64);
    expect_resealed_err(b, &["metadata offset 64", "overlaps the header"]);

    let mut b = good.clone();
    let t = u64_at(&b, AT_TABLE_OFFSET);
    set_u64(&mut b, AT_TABLE_OFFSET, t - 1);
    expect_resealed_err(b, &["tensor table offset", "overlaps the metadata"]);

    let mut b = good.clone();
    set_u64(&mut b, AT_TABLE_LEN, u64::MAX - 10);
    expect_resealed_err(b, &["tensor table offset", "overflows"]);

    let mut b = good.clone();
    set_u64(&mut b, AT_DATA_LEN, u64::MAX);
    expect_resealed_err(b, &["data section offset", "overflows"]);

    let mut b = good.clone();
    let d = u64_at(&b, AT_DATA_OFFSET);
    let dl = u64_at(&b, AT_DATA_LEN);
    set_u64(&mut b, AT_DATA_OFFSET, d + 1);
    set_u64(&mut b, AT_DATA_LEN, dl - 1);
    expect_resealed_err(b, &["data section offset", "not a multiple of 64"]);

    let mut b = good.clone();
    set_u64(&mut b, AT_DATA_LEN, dl - 64);
    expect_resealed_err(
        b,
        &[
            "data section ends at byte",
            &format!("file ends at byte {len}"),
        ],
    );

    let mut b = good.clone();
    set_u64(&mut b, AT_TENSOR_COUNT, u64::MAX);
    expect_resealed_err(b, &["tensor count 18446744073709551615", "cannot fit"]);

    let mut b = good.clone();
    set_u64(&mut b, AT_TENSOR_COUNT, 3);
    expect_resealed_err(b, &["unused bytes at the end of the tensor table"]);

    let mut b = good.clone();
    set_u64(&mut b, AT_FILE_LEN, len + 1);
    expect_resealed_err(b, &["truncated", "declares"]);
}

#[test]
fn truncation_anywhere_is_reported() {
    let good = sample();
    let meta = u64_at(&good, AT_METADATA_OFFSET) as usize;
    let table = u64_at(&good, AT_TABLE_OFFSET) as usize;
    let data = u64_at(&good, AT_DATA_OFFSET) as usize;
    for cut in [
        0,
        3,
        4,
        60,
        HEADER_LEN - 1,
        HEADER_LEN,
        meta + 10,
        table + 3,
        data,
        good.len() - 1,
    ] {
        let m = expect_err(good[..cut].to_vec(), &["truncated"]);
        assert!(m.contains(&format!("file is {cut} bytes")), "{m}");
    }
    let path = unique_path("short");
    std::fs::write(&path, &good[..100]).unwrap();
    let m = Bundle::open(&path).unwrap_err().to_string();
    assert!(m.contains("truncated: file is 100 bytes"), "{m}");
    std::fs::remove_file(&path).unwrap();
    let m = Bundle::open(&path).unwrap_err();
    assert!(matches!(m, Error::Io { .. }), "{m}");
}

#[test]
fn checksum_mismatches_are_reported() {
    let good = sample();
    let mut b = good.clone();
    b[HEADER_LEN + 5] ^= 0x20;
    let (problem, _) = expect_problem(b, &["header checksum mismatch", "stored at byte 88"]);
    assert!(matches!(
        problem,
        FormatProblem::ChecksumMismatch {
            section: ChecksumSection::Header,
            stored,
            computed,
        } if stored != computed
    ));

    let mut b = good.clone();
    let e = entry_of(&b, tensor_names::PROTOTYPES);
    b[e.len_at] ^= 0x40;
    expect_err(b, &["header checksum mismatch"]);

    let mut b = good.clone();
    let last = b.len() - 1;
    b[last] ^= 1;
    let (problem, _) = expect_problem(b, &["data checksum mismatch", "stored at byte 80"]);
    assert!(matches!(
        problem,
        FormatProblem::ChecksumMismatch {
            section: ChecksumSection::Data,
            ..
        }
    ));

    let mut b = good.clone();
    b[88] ^= 1;
    expect_err(b, &["header checksum mismatch"]);
}

#[test]
fn table_corruptions_give_specific_errors() {
    let good = sample();
    let data_len = u64_at(&good, AT_DATA_LEN);
    let onnx = entry_of(&good, tensor_names::ENCODER_ONNX);
    let protos = entry_of(&good, tensor_names::PROTOTYPES);

    let mut b = good.clone();
    set_u64(&mut b, protos.offset_at, data_len + 64);
    expect_resealed_err(
        b,
        &[
            "\"labels.prototypes\"",
            "runs past its end",
            &format!("byte {}", protos.offset_at),
        ],
    );

    let mut b = good.clone();
    set_u64(&mut b, protos.len_at, u64::MAX);
    expect_resealed_err(b, &["\"labels.prototypes\"", "overflows"]);

    let mut b = good.clone();
    set_u64(&mut b, onnx.offset_at, 1);
    expect_resealed_err(b, &["\"encoder.onnx\"", "offset 1", "not a multiple of 64"]);

    let mut b = good.clone();
    let memory = entry_of(&good, tensor_names::LABEL_MEMORY);
    set_u64(&mut b, memory.offset_at, u64_at(&good, protos.offset_at));
    expect_resealed_err(b, &["overlap", "labels.prototypes", "labels.memory"]);

    let mut b = good.clone();
    b[protos.dtype_at] = 9;
    expect_resealed_err(
        b,
        &["unknown dtype code 9", &format!("byte {}", protos.dtype_at)],
    );

    let mut b = good.clone();
    b[protos.dtype_at] = DType::F32.code();
    expect_resealed_err(b, &["byte length 48", "[3, 8] x f32 (96 bytes)"]);

    let mut b = good.clone();
    b[protos.rank_at] = 9;
    expect_resealed_err(b, &["rank 9", "exceeds 8"]);

    let mut b = good.clone();
    set_u64(&mut b, protos.dims_at[0], 1 << 40);
    set_u64(&mut b, protos.dims_at[1], 1 << 40);
    expect_resealed_err(b, &["element count overflows at dimension 1"]);

    let mut b = good.clone();
    set_u64(&mut b, protos.dims_at[0], u64::MAX);
    expect_resealed_err(b, &["dimension 0", "too large"]);

    let mut b = good.clone();
    b[onnx.rank_at + 1..onnx.rank_at + 9].copy_from_slice(&7u64.to_le_bytes());
    reseal(&mut b);
    let (problem, _) = expect_problem(b, &["\"encoder.onnx\"", "does not match shape [7]"]);
    assert_eq!(
        problem,
        FormatProblem::TensorShape {
            tensor: tensor_names::ENCODER_ONNX.into()
        }
    );

    let mut b = good.clone();
    b[onnx.name_len_at..onnx.name_len_at + 2].copy_from_slice(&0u16.to_le_bytes());
    expect_resealed_err(b, &["name length 0", &format!("byte {}", onnx.name_len_at)]);

    let mut b = good.clone();
    b[onnx.name_len_at..onnx.name_len_at + 2].copy_from_slice(&u16::MAX.to_le_bytes());
    expect_resealed_err(b, &["name length 65535"]);

    let mut b = good.clone();
    b[onnx.name_at] = 0xff;
    expect_resealed_err(b, &["entry 0", "not UTF-8"]);

    let mut b = good.clone();
    b[onnx.name_at] = b'\n';
    expect_resealed_err(b, &["control characters"]);

    let last = entries(&good).pop().unwrap();
    let mut b = good.clone();
    let t_len = u64_at(&b, AT_TABLE_LEN);
    set_u64(&mut b, AT_TABLE_LEN, t_len - 4);
    expect_resealed_err(
        b,
        &[
            "entry 3",
            "truncated",
            "byte length",
            &format!("byte {}", last.len_at),
        ],
    );

    let mut w = sample_writer(3, 8).unwrap();
    w.add_u8("dup.a", &[1], &[1]).unwrap();
    w.add_u8("dup.b", &[1], &[2]).unwrap();
    let mut b = w.to_bytes().unwrap();
    let e = entry_of(&b, "dup.b");
    b[e.name_at + 4] = b'a';
    expect_resealed_err(b, &["\"dup.a\"", "duplicate tensor name"]);
}

fn with_meta(edit: impl FnOnce(&mut BundleWriter)) -> Vec<u8> {
    let mut w = sample_writer(3, 8).unwrap();
    edit(&mut w);
    let checked = w.to_bytes();
    let bytes = w.to_bytes_unchecked().unwrap();
    let direct = Bundle::from_vec(bytes.clone(), "x")
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert_eq!(
        checked
            .map(|_| ())
            .map_err(|e| e.to_string().replace("bundle writer output", "x")),
        direct
    );
    bytes
}

#[test]
fn metadata_corruptions_give_specific_errors() {
    let good = sample();
    let m_off = u64_at(&good, AT_METADATA_OFFSET) as usize;
    let mut b = good.clone();
    b[m_off] = b'x';
    expect_resealed_err(
        b,
        &[
            "metadata JSON (bytes 128..",
            "does not parse",
            "line 1 column 1",
        ],
    );

    let mut b = good.clone();
    let m_len = u64_at(&good, AT_METADATA_LEN) as usize;
    let text = std::str::from_utf8(&b[m_off..m_off + m_len]).unwrap();
    let at = text.find("\"type_dim\"").unwrap();
    b[m_off + at + 1] = b'X';
    expect_resealed_err(b, &["does not parse", "type_dim"]);

    let b = with_meta(|w| {
        let mut w2 = BundleWriter::new(w.metadata().clone());
        let mut src = sample_writer(3, 8).unwrap().to_bytes().unwrap();
        let src = Bundle::from_vec(std::mem::take(&mut src), "s").unwrap();
        for name in [
            tensor_names::ENCODER_ONNX,
            tensor_names::VOCAB,
            tensor_names::PROTOTYPES,
        ] {
            let t = src.tensor_info(name).unwrap();
            w2.add_raw(name, t.dtype, &t.shape, src.bytes(name).unwrap().to_vec())
                .unwrap();
        }
        *w = w2;
    });
    expect_err(b, &["required tensor \"labels.memory\" is missing"]);

    let b = with_meta(|w| {
        let mut w2 = BundleWriter::new(w.metadata().clone());
        w2.add_bytes(tensor_names::ENCODER_ONNX, b"onnx").unwrap();
        w2.add_bytes(
            tensor_names::VOCAB,
            ner_edge::bundle::sample_vocab().as_bytes(),
        )
        .unwrap();
        w2.add_f16(tensor_names::PROTOTYPES, &[3, 7], &[0.0; 21])
            .unwrap();
        w2.add_f16(tensor_names::LABEL_MEMORY, &[6, 8], &[0.0; 48])
            .unwrap();
        *w = w2;
    });
    expect_err(
        b,
        &[
            "\"labels.prototypes\" has shape [3, 7]",
            "expected",
            "[3, 8]",
        ],
    );

    let b = with_meta(|w| {
        let mut w2 = BundleWriter::new(w.metadata().clone());
        w2.add_bytes(tensor_names::ENCODER_ONNX, b"onnx").unwrap();
        w2.add_bytes(
            tensor_names::VOCAB,
            ner_edge::bundle::sample_vocab().as_bytes(),
        )
        .unwrap();
        w2.add_u8(tensor_names::PROTOTYPES, &[3, 8], &[0; 24])
            .unwrap();
        w2.add_f16(tensor_names::LABEL_MEMORY, &[6, 8], &[0.0; 48])
            .unwrap();
        *w = w2;
    });
    let (problem, _) = expect_problem(b, &["\"labels.prototypes\" must be f16 or f32, found u8"]);
    assert_eq!(
        problem,
        FormatProblem::TensorShape {
            tensor: tensor_names::PROTOTYPES.into()
        }
    );

    let b = with_meta(|w| w.metadata_mut().labels.types[1].prototype_row = 5);
    expect_err(
        b,
        &[
            "labels.types[1].prototype_row = 5 is out of range",
            "3 rows",
        ],
    );

    let b = with_meta(|w| w.metadata_mut().labels.types[2].prototype_row = 0);
    expect_err(
        b,
        &["labels.types[2].prototype_row = 0 is used by another type"],
    );

    let b = with_meta(|w| w.metadata_mut().labels.types[2].name = "PER".into());
    expect_err(b, &["labels.types[2].name = \"PER\"", "repeated"]);

    let b = with_meta(|w| w.metadata_mut().labels.default_active.push("DATE".into()));
    expect_err(
        b,
        &["labels.default_active[3] = \"DATE\" is not in labels.types"],
    );

    let b = with_meta(|w| w.metadata_mut().label_memory.slots[2].first_row = 5);
    expect_err(b, &["label_memory.slots[2] rows 5..+2 run past the 6 rows"]);

    let b = with_meta(|w| w.metadata_mut().label_memory.slots[1].first_row = usize::MAX);
    expect_err(b, &["label_memory.slots[1]", "run past"]);

    let b = with_meta(|w| w.metadata_mut().label_memory.slots[1].first_row = 1);
    expect_err(
        b,
        &["label_memory.slots[0] and label_memory.slots[1] overlap"],
    );

    let b = with_meta(|w| w.metadata_mut().label_memory.capacity = 1);
    expect_err(
        b,
        &["label_memory.slots[0].rows = 2 exceeds label_memory.capacity = 1"],
    );

    let b = with_meta(|w| w.metadata_mut().encoder.vocab_size = 10);
    expect_err(
        b,
        &[
            "\"tokenizer.vocab\" has 47 lines",
            "encoder.vocab_size = 10",
        ],
    );

    let b = with_meta(|w| w.metadata_mut().tokenizer.cls_token = "<s>".into());
    expect_err(
        b,
        &["tokenizer.cls_token = \"<s>\" is not in tensor \"tokenizer.vocab\""],
    );

    let b = with_meta(|w| w.metadata_mut().tokenizer.kind = "bpe".into());
    expect_err(b, &["tokenizer.kind = \"bpe\""]);

    let b = with_meta(|w| w.metadata_mut().encoder.weight_dtype = "int4".into());
    expect_err(b, &["encoder.weight_dtype = \"int4\""]);

    let b = with_meta(|w| w.metadata_mut().transitions.start[0] = f32::INFINITY);
    expect_err(b, &["does not parse"]);

    let mut w = BundleWriter::new(sample_metadata(3, 8));
    w.add_bytes(tensor_names::ENCODER_ONNX, b"onnx").unwrap();
    let mut vocab = ner_edge::bundle::sample_vocab().into_bytes();
    vocab[0] = 0xff;
    w.add_bytes(tensor_names::VOCAB, &vocab).unwrap();
    w.add_f16(tensor_names::PROTOTYPES, &[3, 8], &[0.0; 24])
        .unwrap();
    w.add_f16(tensor_names::LABEL_MEMORY, &[6, 8], &[0.0; 48])
        .unwrap();
    let m = w.to_bytes().unwrap_err().to_string();
    assert!(
        m.contains("\"tokenizer.vocab\"") && m.contains("not valid UTF-8"),
        "{m}"
    );
    expect_err(w.to_bytes_unchecked().unwrap(), &["not valid UTF-8"]);
}

fn mutate(bytes: &[u8], edits: &[(usize, u8)]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for &(at, v) in edits {
        let n = b.len();
        b[at % n] = v;
    }
    b
}

fn write_u64s(bytes: &[u8], edits: &[(usize, u64)], targets: &[usize]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for &(i, v) in edits {
        let at = targets[i % targets.len()];
        set_u64(&mut b, at, v);
    }
    b
}

fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(63),
        Just(64),
        Just(128),
        Just(u64::MAX),
        Just(u64::MAX - 63),
        Just(1 << 32),
        Just(i64::MAX as u64),
        0u64..4096,
        any::<u64>(),
    ]
}

fn table_targets(b: &[u8]) -> Vec<usize> {
    entries(b)
        .into_iter()
        .flat_map(|e| e.dims_at.into_iter().chain([e.offset_at, e.len_at]))
        .collect()
}

fn table_byte_targets(b: &[u8]) -> Vec<usize> {
    entries(b)
        .into_iter()
        .flat_map(|e| {
            [
                e.name_len_at,
                e.name_len_at + 1,
                e.name_at,
                e.dtype_at,
                e.rank_at,
            ]
        })
        .collect()
}

fn open_no_panic(bytes: Vec<u8>) -> Result<(), String> {
    match Bundle::from_vec(bytes, "fuzz") {
        Ok(b) => {
            check_invariants(&b);
            Ok(())
        }
        Err(Error::Format { message: m, .. }) => {
            assert!(m.starts_with("fuzz: ") && !m.contains('\n'), "{m}");
            Err(m)
        }
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

fn fuzz_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(fuzz_config(1000))]

    #[test]
    fn fuzz_truncation_is_always_an_error(cut in 0usize..4096) {
        let good = sample();
        let cut = cut % good.len();
        let m = open_no_panic(good[..cut].to_vec()).unwrap_err();
        prop_assert!(m.contains("truncated"), "{}", m);
        let problem = match Bundle::from_vec(good[..cut].to_vec(), "fuzz") {
            Err(Error::Format { problem, .. }) => problem,
            other => panic!("{other:?}"),
        };
        prop_assert_eq!(problem, FormatProblem::Truncated);
    }

    #[test]
    fn fuzz_byte_flips_are_caught(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let good = sample();
        let b = mutate(&good, &edits);
        let changed = b != good;
        let r = open_no_panic(b);
        prop_assert_eq!(r.is_err(), changed);
    }

    #[test]
    fn fuzz_u64_writes_are_caught(
        edits in prop::collection::vec((any::<usize>(), interesting_u64()), 1..4),
        in_header in any::<bool>(),
    ) {
        let good = sample();
        let targets: Vec<usize> = if in_header {
            HEADER_U64_FIELDS.to_vec()
        } else {
            (0..good.len() - 8).collect()
        };
        let b = write_u64s(&good, &edits, &targets);
        let changed = b != good;
        prop_assert_eq!(open_no_panic(b).is_err(), changed);
    }

    #[test]
    fn fuzz_resealed_header_fields(edits in prop::collection::vec((any::<usize>(), interesting_u64()), 1..4)) {
        let good = sample();
        let mut b = write_u64s(&good, &edits, &HEADER_U64_FIELDS[..8]);
        reseal(&mut b);
        let _ = open_no_panic(b);
    }

    #[test]
    fn fuzz_resealed_table_fields(
        words in prop::collection::vec((any::<usize>(), interesting_u64()), 0..4),
        bytes in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    ) {
        let good = sample();
        let mut b = write_u64s(&good, &words, &table_targets(&good));
        let byte_targets = table_byte_targets(&good);
        for (i, v) in bytes {
            b[byte_targets[i % byte_targets.len()]] = v;
        }
        reseal(&mut b);
        let _ = open_no_panic(b);
    }

    #[test]
    fn fuzz_resealed_anywhere(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let good = sample();
        let mut b = mutate(&good, &edits);
        reseal(&mut b);
        let _ = open_no_panic(b);
    }

    #[test]
    fn fuzz_resealed_metadata_text(
        edits in prop::collection::vec((any::<usize>(), prop::sample::select(b"0123456789{}[]\",:-.eE ax\\".to_vec())), 1..4),
    ) {
        let good = sample();
        let m_off = u64_at(&good, AT_METADATA_OFFSET) as usize;
        let m_len = u64_at(&good, AT_METADATA_LEN) as usize;
        let mut b = good.clone();
        for (at, v) in edits {
            b[m_off + at % m_len] = v;
        }
        reseal(&mut b);
        let _ = open_no_panic(b);
    }

    #[test]
    fn fuzz_metadata_values(
        n_types in 0usize..5,
        type_dim in 0usize..5,
        row in prop::option::of(any::<usize>()),
        first_row in prop::option::of(prop_oneof![0usize..16, Just(usize::MAX), any::<usize>()]),
        rows in prop::option::of(prop_oneof![0usize..16, Just(usize::MAX)]),
        vocab_size in prop::option::of(0usize..100),
        mem_rows in 0usize..12,
    ) {
        let mut meta = sample_metadata(n_types, type_dim);
        if let (Some(r), Some(t)) = (row, meta.labels.types.first_mut()) {
            t.prototype_row = r;
        }
        if let Some(s) = meta.label_memory.slots.first_mut() {
            if let Some(f) = first_row { s.first_row = f; }
            if let Some(r) = rows { s.rows = r; }
        }
        if let Some(v) = vocab_size { meta.encoder.vocab_size = v; }
        let mut w = BundleWriter::new(meta);
        w.add_bytes(tensor_names::ENCODER_ONNX, b"onnx").unwrap();
        w.add_bytes(tensor_names::VOCAB, ner_edge::bundle::sample_vocab().as_bytes()).unwrap();
        w.add_f16(tensor_names::PROTOTYPES, &[n_types, type_dim], &vec![0.5; n_types * type_dim]).unwrap();
        w.add_f32(tensor_names::LABEL_MEMORY, &[mem_rows, type_dim], &vec![0.5; mem_rows * type_dim]).unwrap();
        let _ = open_no_panic(w.to_bytes_unchecked().unwrap());
    }
}

#[test]
fn open_time_of_a_30_mb_bundle() {
    let mut w = sample_writer(4, 128).unwrap();
    let n = 15 * 1024 * 1024;
    let weights: Vec<u8> = (0..2 * n).map(|i| (i % 251) as u8 & 0x3b).collect();
    w.add_raw("encoder.weights", DType::F16, &[n / 384, 384], weights)
        .unwrap();
    let path = unique_path("30mb");
    w.write(&path).unwrap();
    let first = Bundle::open(&path).unwrap();
    assert!(first.file_len() >= 30 * 1024 * 1024);
    drop(first);
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let b = Bundle::open(&path).unwrap();
            let dt = t.elapsed().as_secs_f64() * 1e3;
            assert_eq!(b.f16_view("encoder.weights").unwrap().len(), n);
            dt
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let info: TensorInfo = Bundle::open(&path)
        .unwrap()
        .tensor_info("encoder.weights")
        .unwrap()
        .clone();
    assert_eq!(info.offset % 64, 0);
    let bytes = std::fs::read(&path).unwrap();
    let t = Instant::now();
    let sum = ner_edge::bundle::xxh64(&bytes, 0);
    let hash_ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "Bundle::open on {:.1} MiB (checksums verified, page cache warm): min {:.2} ms, median {:.2} ms \
         [{} build]; xxh64 alone: {hash_ms:.2} ms (sum {sum:016x})",
        bytes.len() as f64 / (1024.0 * 1024.0),
        times[0],
        times[times.len() / 2],
        if cfg!(debug_assertions) { "debug" } else { "optimised" },
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn released_pages_read_back_the_same_bytes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default.nerb");
    let bundle = Bundle::open(&path).unwrap();
    let before = ner_edge::bundle::xxh64(bundle.bytes(tensor_names::ENCODER_ONNX).unwrap(), 0);
    let released = bundle.release_pages(tensor_names::ENCODER_ONNX).unwrap();
    if cfg!(unix) {
        assert!(released > 1 << 20, "released {released} bytes");
    }
    let after = ner_edge::bundle::xxh64(bundle.bytes(tensor_names::ENCODER_ONNX).unwrap(), 0);
    assert_eq!(before, after);
    let owned = Bundle::from_vec(std::fs::read(&path).unwrap(), "owned").unwrap();
    assert_eq!(owned.release_pages(tensor_names::ENCODER_ONNX).unwrap(), 0);
    assert!(matches!(
        bundle.release_pages("nope"),
        Err(Error::Format {
            problem: FormatProblem::MissingTensor { .. },
            ..
        })
    ));
}
