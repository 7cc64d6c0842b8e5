//! Reads every dataset file of `../shared/data` (listed in its `SOURCES.md`) with the corpus
//! readers and checks the documented sentence, token, entity and type counts. Skips, saying
//! so, when the shared data is not there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ner_edge::Error;
use ner_edge_corpus::{
    normalize_tags, read_cluener, read_conll2003, read_corpus, read_hou_episodes, read_mit,
    read_seq_dir, read_token_tag, Corpus, Overlaps, TagScheme,
};

// The runtime tests' rule for skipping when `../shared` data is missing, shared, not copied.
#[path = "../../runtime/tests/common/mod.rs"]
mod common;

fn shared_data() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    common::present(&dir).then_some(dir)
}

#[derive(Clone, Copy)]
enum Reader {
    Conll,
    TokenTag(TagScheme),
    Mit,
    Seq,
}

/// `(path, reader, sentences, tokens, entities after repair, types, repairs)`.
type Expected = (&'static str, Reader, usize, usize, usize, usize, usize);

const BIO: Reader = Reader::TokenTag(TagScheme::Bio);

/// Counts from `SOURCES.md`; entities are `B-` tags after repair, so Twitter-2015 has the
/// documented count plus its repairs, and ATIS/SNIPS entity counts (undocumented) were
/// counted independently.
const EXPECTED: &[Expected] = &[
    (
        "conll2003/train.txt",
        Reader::Conll,
        14041,
        203621,
        23499,
        4,
        0,
    ),
    (
        "conll2003/valid.txt",
        Reader::Conll,
        3250,
        51362,
        5942,
        4,
        0,
    ),
    ("conll2003/test.txt", Reader::Conll, 3453, 46435, 5648, 4, 0),
    (
        "fewnerd/inter/dev.txt",
        Reader::TokenTag(TagScheme::Io),
        18817,
        426011,
        34830,
        13,
        0,
    ),
    (
        "mit_movie/engtrain.bio.txt",
        Reader::Mit,
        9775,
        99491,
        21295,
        12,
        0,
    ),
    (
        "mit_movie/engtest.bio.txt",
        Reader::Mit,
        2443,
        24686,
        5339,
        12,
        0,
    ),
    (
        "mit_movie/trivia10k13train.bio.txt",
        Reader::Mit,
        7816,
        158823,
        23030,
        12,
        0,
    ),
    (
        "mit_movie/trivia10k13test.bio.txt",
        Reader::Mit,
        1953,
        39035,
        5686,
        12,
        0,
    ),
    (
        "mit_restaurant/train.txt",
        Reader::Mit,
        7660,
        70525,
        15363,
        8,
        0,
    ),
    (
        "mit_restaurant/test.txt",
        Reader::Mit,
        1521,
        14256,
        3151,
        8,
        0,
    ),
    ("atis/train", Reader::Seq, 4478, 50497, 14851, 79, 0),
    ("atis/valid", Reader::Seq, 500, 5703, 1709, 67, 0),
    ("atis/test", Reader::Seq, 893, 9164, 2837, 69, 0),
    ("snips/train", Reader::Seq, 13084, 117700, 33958, 39, 0),
    ("snips/valid", Reader::Seq, 700, 6384, 1794, 39, 0),
    ("snips/test", Reader::Seq, 700, 6354, 1790, 39, 0),
    (
        "twitter2015/train.txt",
        BIO,
        4000,
        64439,
        6166 + 186,
        4,
        186,
    ),
    ("twitter2015/valid.txt", BIO, 1000, 16178, 1541 + 53, 4, 53),
    ("twitter2015/test.txt", BIO, 3257, 52822, 5072 + 135, 4, 135),
    ("twitter2017/train.txt", BIO, 3373, 53007, 6049, 4, 0),
    ("twitter2017/valid.txt", BIO, 723, 11309, 1324, 4, 0),
    ("twitter2017/test.txt", BIO, 723, 11330, 1351, 4, 0),
    ("crossner/ai/train.txt", BIO, 100, 3782, 532, 14, 0),
    ("crossner/ai/dev.txt", BIO, 350, 10919, 1549, 14, 0),
    ("crossner/ai/test.txt", BIO, 431, 12991, 1809, 14, 0),
    ("crossner/literature/train.txt", BIO, 100, 3782, 541, 12, 0),
    ("crossner/literature/dev.txt", BIO, 400, 14503, 2130, 12, 0),
    ("crossner/literature/test.txt", BIO, 416, 16157, 2266, 12, 0),
    ("crossner/music/train.txt", BIO, 100, 3909, 648, 13, 0),
    ("crossner/music/dev.txt", BIO, 380, 15591, 2679, 13, 0),
    ("crossner/music/test.txt", BIO, 465, 19605, 3336, 13, 0),
    ("crossner/politics/train.txt", BIO, 200, 8384, 1304, 9, 0),
    ("crossner/politics/dev.txt", BIO, 541, 24624, 3482, 9, 0),
    ("crossner/politics/test.txt", BIO, 651, 27585, 4209, 9, 0),
    ("crossner/science/train.txt", BIO, 200, 7100, 1075, 17, 0),
    ("crossner/science/dev.txt", BIO, 450, 16139, 2538, 17, 0),
    ("crossner/science/test.txt", BIO, 543, 19487, 3089, 17, 0),
];

/// `(path, domain, episodes, support sentences, query sentences, types per episode, repairs)`.
const EPISODES: &[(&str, &str, usize, usize, usize, usize, usize)] = &[
    (
        "hou2020_fewshot_ner/1shot/news_conll.json",
        "News",
        200,
        703,
        4000,
        4,
        0,
    ),
    (
        "hou2020_fewshot_ner/5shot/news_conll.json",
        "News",
        100,
        1574,
        1000,
        4,
        0,
    ),
    (
        "hou2020_fewshot_ner/1shot/mixed_ontonotes.json",
        "OntoNotes",
        100,
        1438,
        2000,
        18,
        105,
    ),
];

fn read(dir: &Path, path: &str, reader: Reader) -> Corpus {
    let full = dir.join(path);
    let result = match reader {
        Reader::Conll => read_conll2003(&full),
        Reader::TokenTag(scheme) => read_token_tag(&full, scheme),
        Reader::Mit => read_mit(&full),
        Reader::Seq => read_seq_dir(&full),
    };
    result.unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn assert_valid_bio(corpus: &Corpus) {
    for sentence in &corpus.sentences {
        assert_eq!(
            sentence.tokens.len(),
            sentence.tags.len(),
            "{}",
            corpus.name
        );
        let mut current: Option<&str> = None;
        for tag in &sentence.tags {
            current = match (tag.get(..2), tag.get(2..)) {
                (Some("B-"), Some(ty)) => Some(ty),
                (Some("I-"), Some(ty)) if current == Some(ty) => Some(ty),
                _ if tag == "O" => None,
                _ => panic!(
                    "{}: invalid BIO tag {tag} in {:?}",
                    corpus.name, sentence.tags
                ),
            };
        }
    }
}

#[test]
fn token_per_line_and_seq_corpora_match_sources_md() {
    let Some(dir) = shared_data() else { return };
    for &(path, reader, sentences, tokens, entities, types, repairs) in EXPECTED {
        let corpus = read(&dir, path, reader);
        let counts = (
            corpus.sentences.len(),
            corpus.token_count(),
            corpus.entity_count(),
            corpus.types.len(),
            corpus.repairs,
        );
        assert_eq!(
            counts,
            (sentences, tokens, entities, types, repairs),
            "{path}: {:?}",
            corpus.types
        );
        assert_valid_bio(&corpus);
        let auto = read_corpus(&dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            auto == corpus,
            "{path}: read_corpus differs from the explicit reader"
        );
    }
}

#[test]
fn documented_type_sets() {
    let Some(dir) = shared_data() else { return };
    let cases: &[(&str, Reader, &[&str])] = &[
        (
            "conll2003/train.txt",
            Reader::Conll,
            &["LOC", "MISC", "ORG", "PER"],
        ),
        (
            "twitter2015/train.txt",
            BIO,
            &["LOC", "ORG", "OTHER", "PER"],
        ),
        ("twitter2017/train.txt", BIO, &["LOC", "MISC", "ORG", "PER"]),
        (
            "fewnerd/inter/dev.txt",
            Reader::TokenTag(TagScheme::Io),
            &[
                "art-painting",
                "building-library",
                "building-other",
                "event-other",
                "location-park",
                "organization-religion",
                "organization-showorganization",
                "other-chemicalthing",
                "other-currency",
                "person-other",
                "person-scholar",
                "product-game",
                "product-train",
            ],
        ),
        (
            "mit_movie/engtrain.bio.txt",
            Reader::Mit,
            &[
                "ACTOR",
                "CHARACTER",
                "DIRECTOR",
                "GENRE",
                "PLOT",
                "RATING",
                "RATINGS_AVERAGE",
                "REVIEW",
                "SONG",
                "TITLE",
                "TRAILER",
                "YEAR",
            ],
        ),
        (
            "mit_movie/trivia10k13train.bio.txt",
            Reader::Mit,
            &[
                "Actor",
                "Award",
                "Character_Name",
                "Director",
                "Genre",
                "Opinion",
                "Origin",
                "Plot",
                "Quote",
                "Relationship",
                "Soundtrack",
                "Year",
            ],
        ),
        (
            "mit_restaurant/train.txt",
            Reader::Mit,
            &[
                "Amenity",
                "Cuisine",
                "Dish",
                "Hours",
                "Location",
                "Price",
                "Rating",
                "Restaurant_Name",
            ],
        ),
        (
            "crossner/politics/train.txt",
            BIO,
            &[
                "country",
                "election",
                "event",
                "location",
                "misc",
                "organisation",
                "person",
                "politicalparty",
                "politician",
            ],
        ),
    ];
    for &(path, reader, types) in cases {
        assert_eq!(read(&dir, path, reader).types, strings(types), "{path}");
    }
}

#[test]
fn unusual_twitter_tokens_survive() {
    let Some(dir) = shared_data() else { return };
    let valid = read(&dir, "twitter2015/valid.txt", BIO);
    assert!(valid
        .sentences
        .iter()
        .flat_map(|s| &s.tokens)
        .any(|t| t == "\u{a0}"));
    let train = read(&dir, "twitter2017/train.txt", BIO);
    assert!(train
        .sentences
        .iter()
        .flat_map(|s| &s.tokens)
        .any(|t| t == "\u{200b}"));
    assert!(train
        .sentences
        .iter()
        .flat_map(|s| &s.tokens)
        .all(|t| !t.starts_with("IMGID:")));
}

#[test]
fn seq_label_files_align_with_sentences() {
    let Some(dir) = shared_data() else { return };
    for (split, intents) in [
        ("atis/train", 21),
        ("atis/valid", 16),
        ("atis/test", 20),
        ("snips/train", 7),
        ("snips/valid", 7),
        ("snips/test", 7),
    ] {
        let sentences = read(&dir, split, Reader::Seq).sentences.len();
        let labels = std::fs::read_to_string(dir.join(split).join("label")).unwrap();
        assert_eq!(labels.lines().count(), sentences, "{split}");
        assert_eq!(
            labels.lines().collect::<BTreeSet<_>>().len(),
            intents,
            "{split}"
        );
    }
}

#[test]
fn cluener_records_spans_and_the_nested_train_record() {
    let Some(dir) = shared_data() else { return };
    let ten = strings(&[
        "address",
        "book",
        "company",
        "game",
        "government",
        "movie",
        "name",
        "organization",
        "position",
        "scene",
    ]);
    let dev = read_cluener(&dir.join("cluener2020/dev.json"), Overlaps::Error).unwrap();
    assert_eq!(
        (dev.sentences.len(), dev.entity_count(), dev.repairs),
        (1343, 3072, 0)
    );
    assert_eq!(dev.types, ten);
    assert_valid_bio(&dev);
    for sentence in &dev.sentences {
        assert_eq!(Some(sentence.tokens.concat()), sentence.text);
    }
    assert!(read_corpus(&dir.join("cluener2020/dev.json")).unwrap() == dev);

    let test = read_cluener(&dir.join("cluener2020/test.json"), Overlaps::Error).unwrap();
    assert_eq!((test.sentences.len(), test.entity_count()), (1345, 0));
    assert!(test.types.is_empty());

    let path = dir.join("cluener2020/train.json");
    match read_cluener(&path, Overlaps::Error) {
        Err(Error::Input(m)) => assert!(
            m.contains("train.json: line 1507: spans [15, 34] (book)"),
            "{m}"
        ),
        other => panic!(
            "expected the nested spans of line 1507 to be refused, got {:?}",
            other.map(|c| c.name)
        ),
    }
    let train = read_cluener(&path, Overlaps::KeepLongest).unwrap();
    assert_eq!(
        (train.sentences.len(), train.entity_count(), train.repairs),
        (10748, 23971 - 2, 2)
    );
    assert_eq!(train.types, ten);
    assert_valid_bio(&train);
}

#[test]
fn hou_episodes_match_sources_md() {
    let Some(dir) = shared_data() else { return };
    for &(path, domain, count, support, query, types, repairs) in EPISODES {
        let episodes = read_hou_episodes(&dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(episodes.len(), count, "{path}");
        let support_total: usize = episodes.iter().map(|e| e.support.len()).sum();
        let query_total: usize = episodes.iter().map(|e| e.query.len()).sum();
        let repairs_total: usize = episodes.iter().map(|e| e.repairs).sum();
        assert_eq!(
            (support_total, query_total, repairs_total),
            (support, query, repairs),
            "{path}"
        );
        for episode in &episodes {
            assert_eq!(episode.domain, domain, "{path}");
            assert_eq!(episode.types.len(), types, "{path}: {:?}", episode.types);
        }
        let all: BTreeSet<&String> = episodes.iter().flat_map(|e| &e.types).collect();
        assert_eq!(all.len(), types, "{path}");
    }
}

#[test]
fn container_support_sets_and_label_list() {
    let Some(dir) = shared_data() else { return };
    let base = dir.join("container_domain_transfer_support_sets");
    for (shots, total) in [("1shot", 25), ("5shot", 87)] {
        let mut sentences = 0;
        for k in 0..10 {
            let path = base.join(format!("samples-conll-{shots}/{k}.txt"));
            let corpus = read_token_tag(&path, TagScheme::Bio).unwrap();
            assert_eq!(
                corpus.types,
                strings(&["LOC", "MISC", "ORG", "PER"]),
                "{}",
                path.display()
            );
            assert_eq!(corpus.repairs, 0);
            sentences += corpus.sentences.len();
        }
        assert_eq!(sentences, total, "{shots}");
    }
    let labels = std::fs::read_to_string(base.join("labels-conll.txt")).unwrap();
    let mut types = BTreeSet::new();
    for tag in labels.lines() {
        let normalized = normalize_tags(&[tag], TagScheme::Bio).unwrap();
        types.extend(normalized.tags[0].strip_prefix("B-").map(str::to_string));
    }
    assert_eq!((labels.lines().count(), types.len()), (9, 4));
}

#[test]
fn every_file_in_sources_md_is_covered() {
    let Some(dir) = shared_data() else { return };
    let Ok(sources) = std::fs::read_to_string(dir.join("SOURCES.md")) else {
        panic!("shared/data without SOURCES.md");
    };
    let mut covered: BTreeSet<String> = BTreeSet::new();
    for &(path, reader, ..) in EXPECTED {
        match reader {
            Reader::Seq => {
                covered.extend(["seq.in", "seq.out", "label"].map(|f| format!("{path}/{f}")))
            }
            _ => {
                covered.insert(path.to_string());
            }
        }
    }
    covered.extend(EPISODES.iter().map(|e| e.0.to_string()));
    covered.extend(["dev", "test", "train"].map(|s| format!("cluener2020/{s}.json")));
    covered.insert("container_domain_transfer_support_sets/labels-conll.txt".to_string());
    for shots in ["1shot", "5shot"] {
        covered.extend((0..10).map(|k| {
            format!("container_domain_transfer_support_sets/samples-conll-{shots}/{k}.txt")
        }));
    }
    let mut listed = 0;
    for line in sources.lines() {
        let Some(rest) = line.strip_prefix("| `shared/data/") else {
            continue;
        };
        let Some((path, _)) = rest.split_once('`') else {
            continue;
        };
        let paths: Vec<String> = match path.split_once("{0..9}") {
            Some((head, tail)) => (0..10).map(|k| format!("{head}{k}{tail}")).collect(),
            None => vec![path.to_string()],
        };
        for path in paths {
            listed += 1;
            assert!(
                covered.contains(&path),
                "SOURCES.md lists {path}, which no test reads"
            );
            assert!(
                dir.join(&path).is_file(),
                "SOURCES.md lists {path}, which is missing"
            );
        }
    }
    assert_eq!(
        listed,
        covered.len(),
        "tests read files that SOURCES.md does not list"
    );
}
