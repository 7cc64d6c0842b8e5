use super::*;

fn minilm() -> Tokenizer {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/minilm/vocab.txt");
    let vocab = std::fs::read_to_string(path).expect("fixtures/minilm/vocab.txt");
    Tokenizer::new(&bert_uncased_meta(), &vocab).expect("minilm tokenizer")
}

fn tiny(vocab: &str) -> Result<Tokenizer> {
    Tokenizer::new(&bert_uncased_meta(), vocab)
}

const TINY: &str = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nun\n##aff\n##able\nhello\n,\n.\nworld\n##s\nx\n";

fn pieces<'t>(tok: &'t Tokenizer, enc: &Encoding) -> Vec<&'t str> {
    enc.ids
        .iter()
        .map(|&id| tok.token(id).unwrap_or("?"))
        .collect()
}

fn texts<'s>(text: &'s str, ranges: &[Range<usize>]) -> Vec<&'s str> {
    ranges.iter().map(|r| &text[r.clone()]).collect()
}

#[test]
fn construction_errors() {
    assert!(matches!(tiny(""), Err(Error::Bundle(_))));
    assert!(
        matches!(tiny("[PAD]\n[UNK]\n[CLS]\n[SEP]\nx\nx\n"), Err(Error::Bundle(m)) if m.contains("twice"))
    );
    assert!(matches!(tiny("[PAD]\n[UNK]\n[CLS]\n"), Err(Error::Bundle(m)) if m.contains("[SEP]")));
    let mut meta = bert_uncased_meta();
    meta.kind = "bpe".into();
    assert!(matches!(Tokenizer::new(&meta, TINY), Err(Error::Bundle(_))));
    let tok = tiny(TINY).expect("tiny");
    assert_eq!(
        (tok.pad_id(), tok.unk_id(), tok.cls_id(), tok.sep_id()),
        (0, 1, 2, 3)
    );
    assert_eq!(tok.vocab_size(), 13);
    assert_eq!(tok.token(5), Some("##aff"));
    assert_eq!(tok.token_id("world"), Some(10));
    assert!(tiny("[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]").is_ok());
}

#[test]
fn greedy_longest_match() {
    let tok = tiny(TINY).expect("tiny");
    let enc = tok.encode("Unaffable hello, worlds unknown.");
    assert_eq!(
        pieces(&tok, &enc),
        ["un", "##aff", "##able", "hello", ",", "world", "##s", "[UNK]", "."]
    );
    assert_eq!(
        texts("Unaffable hello, worlds unknown.", &enc.words),
        ["Unaffable", "hello", ",", "worlds", "unknown", "."]
    );
    assert_eq!(enc.piece_word, [0, 0, 0, 1, 2, 3, 3, 4, 5]);
    assert_eq!(enc.word_first_piece, [0, 3, 4, 5, 7, 8]);
    assert_eq!(enc.piece_spans[1], 2..5);
    assert_eq!(enc.piece_spans[7], 24..31);
    assert_eq!(enc.word_pieces(3), Some(5..7));
    assert_eq!(enc.word_pieces(5), Some(8..9));
    assert_eq!(enc.word_pieces(6), None);
}

#[test]
fn reference_sentence() {
    let tok = minilm();
    let enc = tok.encode("Angela Merkel visited the Siemens plant in Erlangen on Tuesday.");
    assert_eq!(
        enc.ids,
        [10413, 21442, 11705, 4716, 1996, 22108, 3269, 1999, 9413, 25023, 2368, 2006, 9857, 1012]
    );
}

#[test]
fn offsets_map_to_original_text() {
    let tok = minilm();
    let text = "  Ça\u{200b}fé\u{301}!\tİstanbul 東京 [SEP]x";
    let enc = tok.encode(text);
    assert_eq!(
        texts(text, &enc.words),
        [
            "Ça\u{200b}fé\u{301}",
            "!",
            "İstanbul",
            "東",
            "京",
            "[SEP]",
            "x"
        ]
    );
    assert_eq!(enc.ids[enc.ids.len() - 2], tok.sep_id());
    for (span, w) in enc.piece_spans.iter().zip(&enc.piece_word) {
        let word = &enc.words[*w as usize];
        assert!(word.start <= span.start && span.end <= word.end);
    }
    assert!(tok.encode("").words.is_empty());
    assert!(tok.encode(" \t\u{200b}\u{0} \u{301} ").words.is_empty());
    assert_eq!(tok.encode("\u{301}\0A").words, vec![0..4]);
    let marks = tok.encode("\u{301}a\u{302} b");
    assert_eq!(marks.words, [0..5, 6..7]);
    assert_eq!(marks.piece_spans[0], 2..3);
}

#[test]
fn long_words_are_unknown() {
    let tok = minilm();
    let long = "a".repeat(101);
    let enc = tok.encode(&format!("ok {long} ok"));
    assert_eq!(enc.ids, [7929, tok.unk_id(), 7929]);
    assert_eq!(enc.piece_spans[1], 3..104);
    let exact = tok.encode(&"a".repeat(100));
    assert!(!exact.ids.contains(&tok.unk_id()));
}

#[test]
fn settings_are_honoured() {
    let vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nCafé\ncafe\n中文\n中\n文\n";
    let mut meta = bert_uncased_meta();
    let tok = Tokenizer::new(&meta, vocab).expect("tok");
    assert_eq!(tok.encode("Café 中文").ids, [5, 7, 8]);
    meta.lowercase = false;
    meta.strip_accents = false;
    meta.tokenize_chinese_chars = false;
    let tok = Tokenizer::new(&meta, vocab).expect("tok");
    assert_eq!(tok.encode("Café 中文").ids, [4, 6]);
    meta.max_input_chars_per_word = 3;
    let tok = Tokenizer::new(&meta, vocab).expect("tok");
    assert_eq!(tok.encode("Café 中文").ids, [1, 6]);
}

#[test]
fn encode_words_keeps_one_entry_per_word() {
    let tok = minilm();
    let words = ["EU", "rejects", "U.S.", "\u{200b}", "", "New York", "[SEP]"];
    let enc = tok.encode_words(&words);
    assert_eq!(enc.words.len(), words.len());
    let joined = words.join(" ");
    assert_eq!(texts(&joined, &enc.words), words);
    assert_eq!(enc.word_pieces(2).map(|r| r.len()), Some(4));
    assert_eq!(enc.word_pieces(3), Some(6..7));
    assert_eq!(enc.ids[6], tok.unk_id());
    assert_eq!(enc.ids[7], tok.unk_id());
    assert_eq!(enc.piece_spans[7], enc.words[4]);
    assert_eq!(enc.word_pieces(5).map(|r| r.len()), Some(2));
    assert_eq!(enc.ids.last(), Some(&tok.sep_id()));
    for (p, span) in enc.piece_spans.iter().enumerate() {
        let w = &enc.words[enc.piece_word[p] as usize];
        assert!(
            w.start <= span.start && span.end <= w.end,
            "{span:?} in {w:?}"
        );
    }
    assert_eq!(tok.encode_words(&[]), Encoding::default());
}

#[test]
fn canonical_reordering_keeps_offsets_positional() {
    let tok = minilm();
    // U+0327 (class 202) sorts after U+1B44 (class 9, a spacing mark that survives stripping);
    // the reference then gives U+1B44 the position of U+0327.
    let enc = tok.encode(" \u{327}\u{1b44}pq");
    assert_eq!(enc.words, vec![1..8]);
    assert_eq!(enc.piece_spans, vec![1..8]);
}

#[test]
fn pieces_take_the_shape_of_their_basic_token() {
    let tok = minilm();
    let text = "Angela Merkel met NATO's iPhone team in 1996, U.S.";
    let enc = tok.encode(text);
    assert_eq!(enc.shapes.len(), enc.ids.len());
    let by_word: Vec<(&str, u8)> = enc
        .words
        .iter()
        .enumerate()
        .map(|(w, r)| {
            let pieces = enc.word_pieces(w).unwrap();
            let first = enc.shapes[pieces.start];
            assert!(enc.shapes[pieces].iter().all(|&s| s == first));
            (&text[r.clone()], first)
        })
        .collect();
    use super::Shape::*;
    let want = [
        ("Angela", Title),
        ("Merkel", Title),
        ("met", Lower),
        ("NATO", Upper),
        ("'", Other),
        ("s", Lower),
        ("iPhone", Mixed),
        ("team", Lower),
        ("in", Lower),
        ("1996", Digit),
        (",", Other),
        ("U", Title),
        (".", Other),
        ("S", Title),
        (".", Other),
    ];
    let want: Vec<(&str, u8)> = want.iter().map(|&(w, s)| (w, s as u8)).collect();
    assert_eq!(by_word, want);
    let words = ["Merkel", "U.S.", "\u{200b}", "IBM-led"];
    let enc = tok.encode_words(&words);
    assert_eq!(enc.shapes.len(), enc.ids.len());
    assert_eq!(enc.shapes[0], Title as u8);
    let us = enc.word_pieces(1).unwrap();
    assert_eq!(
        enc.shapes[us],
        [Title as u8, Other as u8, Title as u8, Other as u8]
    );
    assert_eq!(enc.shapes[enc.word_pieces(2).unwrap()], [Other as u8]);
    let led = enc.word_pieces(3).unwrap();
    assert_eq!(enc.shapes[led.start], Upper as u8);
    assert_eq!(enc.shapes[led.end - 1], Lower as u8);
}
