use super::*;

fn empty_map() -> Vec<u8> {
    vec![0, 0, 0, 0]
}

fn tokenizer(pieces: &[(&str, f32)]) -> UnigramTokenizer {
    let mut all = vec![
        ("<s>".to_string(), 0.0),
        ("<pad>".to_string(), 0.0),
        ("</s>".to_string(), 0.0),
        ("<unk>".to_string(), 0.0),
    ];
    all.extend(pieces.iter().map(|&(p, s)| (p.to_string(), s)));
    UnigramTokenizer::new(UnigramSpec {
        pieces: all,
        unk_id: 3,
        unk_score: -30.0,
        bos_id: 0,
        eos_id: 2,
        pad_id: 1,
        charsmap: empty_map(),
    })
    .unwrap()
}

fn texts(t: &UnigramTokenizer, pieces: &[UnigramPiece]) -> Vec<String> {
    pieces
        .iter()
        .map(|p| t.piece(p.id).unwrap().to_string())
        .collect()
}

#[test]
fn viterbi_prefers_the_most_probable_segmentation() {
    let t = tokenizer(&[
        ("▁", -2.0),
        ("▁ab", -3.0),
        ("▁a", -1.0),
        ("b", -1.5),
        ("c", -1.0),
        ("bc", -1.0),
    ]);
    let pieces = t.encode("abc");
    assert_eq!(texts(&t, &pieces), ["▁a", "bc"]);
    assert_eq!(pieces[0].span, 0..1);
    assert_eq!(pieces[1].span, 1..3);
    assert!(pieces[0].unit_start && !pieces[1].unit_start);
}

#[test]
fn unknown_chars_are_fused_and_offsets_cover_them() {
    let t = tokenizer(&[("▁", -2.0), ("a", -1.0)]);
    let pieces = t.encode("xy a");
    assert_eq!(texts(&t, &pieces), ["▁", "<unk>", "▁", "a"]);
    assert_eq!(pieces[1].span, 0..2);
    assert_eq!(pieces[2].span, 2..3);
}

#[test]
fn spaces_collapse_and_leading_space_gets_no_second_marker() {
    let t = tokenizer(&[("▁", -2.0), ("▁a", -1.0), ("▁b", -1.0)]);
    let pieces = t.encode("  a   b");
    assert_eq!(texts(&t, &pieces), ["▁a", "▁b"]);
    assert_eq!(pieces[0].span, 1..3);
    assert_eq!(pieces[1].span, 5..7);
    assert!(t.encode("").is_empty());
    assert_eq!(texts(&t, &t.encode("   ")), ["▁"]);
}

#[test]
fn units_split_every_ideograph() {
    let t = tokenizer(&[
        ("▁", -2.0),
        ("银行", -1.0),
        ("银", -5.0),
        ("行", -5.0),
        ("▁浙", -4.0),
        ("商", -5.0),
        ("x", -1.0),
        ("▁x", -1.0),
    ]);
    let plain = t.encode("浙商银行");
    assert_eq!(texts(&t, &plain), ["▁浙", "商", "银行"]);
    let units = t.encode_units("浙商银行x");
    assert_eq!(texts(&t, &units), ["▁浙", "商", "银", "行", "x"]);
    assert!(units.iter().all(|p| p.unit_start));
    let spans: Vec<_> = units.iter().map(|p| p.span.clone()).collect();
    assert_eq!(spans, [0..3, 3..6, 6..9, 9..12, 12..13]);
    let unknown = t.encode_units("丁丁");
    assert_eq!(texts(&t, &unknown), ["▁", "<unk>", "<unk>"]);
}

#[test]
fn units_keep_wide_punctuation_apart() {
    let t = tokenizer(&[
        ("▁", -2.0),
        ("》。", -1.0),
        ("》", -5.0),
        ("。", -5.0),
        ("三", -5.0),
        ("5》", -1.0),
        ("5", -5.0),
        ("▁GTA", -3.0),
    ]);
    assert_eq!(texts(&t, &t.encode("三》。")), ["▁", "三", "》。"]);
    let units = t.encode_units("三》。");
    assert_eq!(texts(&t, &units), ["▁", "三", "》", "。"]);
    assert_eq!(units.iter().filter(|p| p.unit_start).count(), 4);
    let latin = t.encode_units("GTA5》");
    assert_eq!(texts(&t, &latin), ["▁GTA", "5", "》"]);
    assert_eq!(
        latin.iter().map(|p| p.unit_start).collect::<Vec<_>>(),
        [true, false, true]
    );
}

#[test]
fn bad_vocabularies_are_errors() {
    let spec = |pieces: Vec<(String, f32)>, unk: u32| UnigramSpec {
        pieces,
        unk_id: unk,
        unk_score: -10.0,
        bos_id: 0,
        eos_id: 0,
        pad_id: 0,
        charsmap: empty_map(),
    };
    assert!(UnigramTokenizer::new(spec(vec![], 0)).is_err());
    assert!(UnigramTokenizer::new(spec(vec![("a".into(), 0.0)], 1)).is_err());
    assert!(UnigramTokenizer::new(spec(vec![("".into(), 0.0)], 0)).is_err());
    assert!(UnigramTokenizer::new(spec(vec![("a".into(), f32::NAN)], 0)).is_err());
    assert!(UnigramTokenizer::new(spec(vec![("a".into(), 0.0), ("a".into(), -1.0)], 0)).is_err());
}

proptest::proptest! {
    #[test]
    fn pieces_cover_the_text_in_order(text in "[a-c 浙商银\u{301}\u{200b}\t]{0,24}") {
        let t = tokenizer(&[("▁", -2.0), ("a", -1.0), ("▁a", -1.5), ("商", -3.0), ("bc", -2.0)]);
        for pieces in [t.encode(&text), t.encode_units(&text)] {
            let mut last = 0;
            for p in &pieces {
                proptest::prop_assert!(p.span.start <= p.span.end);
                proptest::prop_assert!(p.span.end <= text.len());
                proptest::prop_assert!(text.is_char_boundary(p.span.start));
                proptest::prop_assert!(text.is_char_boundary(p.span.end));
                proptest::prop_assert!(p.span.start >= last || p.span.is_empty());
                last = last.max(p.span.start);
                proptest::prop_assert!((p.id as usize) < t.vocab_size());
            }
            if !text.trim().is_empty() {
                proptest::prop_assert!(!pieces.is_empty());
            }
        }
        for p in t.encode_units(&text) {
            let covered = &text[p.span.clone()];
            let alone = covered.chars().filter(|&c| stands_alone(c)).count();
            proptest::prop_assert!(alone <= 1, "{covered:?}");
        }
    }
}
