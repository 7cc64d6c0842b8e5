//! Contexts for tagging sentences of a corpus with context fusion: for each sentence, the text
//! around it ([`ContextKind::Document`]) or deliberately wrong text ([`ContextKind::Random`]).

use crate::Corpus;

/// Which context each test sentence is tagged with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextKind {
    /// No context: the sentence alone.
    None,
    /// The sentences before it in its document (`-DOCSTART-` documents; in a source without
    /// document markers, the sentences before it in the file).
    Document,
    /// As many consecutive sentences of a random other document (without document markers:
    /// of a random place of the file at least `2 n + 1` sentences away).
    Random,
}

impl ContextKind {
    /// How the report describes contexts of this kind with `n` sentences.
    pub fn describe(self, n: usize, documents: bool) -> String {
        let unit = if documents {
            "document (-DOCSTART-)"
        } else {
            "file (no document markers)"
        };
        match self {
            ContextKind::None => "none (each sentence alone)".into(),
            ContextKind::Document => format!("up to {n} previous sentences of the same {unit}"),
            ContextKind::Random => {
                format!("{n} consecutive sentences of a random other place (another {unit})")
            }
        }
    }
}

/// The context of every sentence of `corpus` (words joined by single spaces; `None`: no
/// context), at most `n` sentences each; `seed` fixes the random choices.
pub fn sentence_contexts(
    corpus: &Corpus,
    kind: ContextKind,
    n: usize,
    seed: u64,
) -> Vec<Option<String>> {
    let total = corpus.sentences.len();
    let join = |range: std::ops::Range<usize>| -> Option<String> {
        let words: Vec<&str> = corpus.sentences[range]
            .iter()
            .flat_map(|s| s.tokens.iter().map(String::as_str))
            .collect();
        (!words.is_empty()).then(|| words.join(" "))
    };
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut below = |m: usize| -> usize {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % m.max(1) as u64) as usize
    };
    (0..total)
        .map(|i| match kind {
            ContextKind::None => None,
            ContextKind::Document => {
                let doc = corpus.document_of(i);
                join(i.saturating_sub(n).max(doc.start)..i)
            }
            ContextKind::Random => {
                if n == 0 || total < 2 {
                    return None;
                }
                if corpus.documents.len() >= 2 {
                    let own = corpus.document_of(i);
                    let mut d = below(corpus.documents.len());
                    if corpus.documents[d] == own.start {
                        d = (d + 1) % corpus.documents.len();
                    }
                    let range = corpus.document_of(corpus.documents[d]);
                    if range.is_empty() {
                        return None;
                    }
                    let from = range.start + below(range.len());
                    join(from..(from + n).min(range.end))
                } else {
                    let gap = 2 * n + 1;
                    if total <= 2 * gap {
                        return None;
                    }
                    let from = (i + gap + below(total - 2 * gap)) % total;
                    join(from..(from + n).min(total))
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sentence;

    fn corpus(docs: &[usize]) -> Corpus {
        let sentences = (0..10)
            .map(|i| Sentence {
                tokens: vec![format!("s{i}")],
                tags: vec!["O".into()],
                text: None,
            })
            .collect();
        let mut c = Corpus::new("t", sentences, 0);
        c.documents = docs.to_vec();
        c
    }

    #[test]
    fn document_context_stays_inside_the_document() {
        let c = corpus(&[0, 4, 7]);
        let ctx = sentence_contexts(&c, ContextKind::Document, 2, 1);
        assert_eq!(ctx[0], None);
        assert_eq!(ctx[3].as_deref(), Some("s1 s2"));
        assert_eq!(ctx[4], None, "a document's first sentence has no context");
        assert_eq!(ctx[5].as_deref(), Some("s4"));
        assert_eq!(ctx[9].as_deref(), Some("s7 s8"));
        let none = sentence_contexts(&c, ContextKind::None, 2, 1);
        assert!(none.iter().all(Option::is_none));
    }

    #[test]
    fn random_context_comes_from_another_document() {
        let c = corpus(&[0, 4, 7]);
        for seed in 0..20 {
            let ctx = sentence_contexts(&c, ContextKind::Random, 2, seed);
            for (i, x) in ctx.iter().enumerate() {
                let own = c.document_of(i);
                for w in x.as_deref().unwrap_or("").split_whitespace() {
                    let j: usize = w[1..].parse().unwrap();
                    assert!(
                        !own.contains(&j),
                        "sentence {i} got {w} of its own document"
                    );
                }
            }
        }
        let flat = corpus(&[]);
        let ctx = sentence_contexts(&flat, ContextKind::Document, 3, 0);
        assert_eq!(ctx[5].as_deref(), Some("s2 s3 s4"));
    }
}
