//! Tokenizer throughput: `Tokenizer::encode` on English news-like text, in words per second
//! (words = whitespace-separated words of the input).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ner_edge::tokenizer::{bert_uncased_meta, Tokenizer};
use std::hint::black_box;

const NEWS: &str = "\
BRUSSELS (Reuters) - The European Commission on Tuesday proposed new rules to curb the \
market power of large technology companies, saying firms such as Google, Amazon and Meta \
would face fines of up to 10 percent of their global turnover if they broke the law. \
Competition Commissioner Margrethe Vestager told reporters in Brussels that the proposals, \
which still need the approval of the European Parliament and the 27 member states, were \
\"a milestone\" for the digital economy. Shares of U.S. technology companies fell 1.8% in \
early trading on Wall Street, while the Stoxx Europe 600 index closed 0.4% lower at 412.35 \
points.
LONDON, March 3 - British Prime Minister Rishi Sunak met Ukrainian President Volodymyr \
Zelenskiy at Downing Street on Wednesday, pledging another 2.5 billion pounds ($3.1 billion) \
in military aid. \"We will stand with Ukraine for as long as it takes,\" Sunak said after the \
talks, which lasted more than two hours. The meeting came a day after the Bank of England \
raised interest rates by a quarter of a percentage point to 4.25%, its eleventh consecutive \
increase, citing persistent inflation in the services sector.
TOKYO - Toyota Motor Corp said on Thursday it would invest about 1.5 trillion yen in \
battery production in Japan and the United States through 2030, as the world's biggest \
carmaker by sales seeks to catch up with rivals such as Tesla Inc and BYD Co Ltd in the \
fast-growing market for electric vehicles. Chief Executive Koji Sato told a news conference \
in Nagoya that the company aimed to sell 1.5 million battery-powered cars a year by 2026.
GENEVA - The World Health Organization (WHO) warned on Friday that cases of measles had \
risen sharply in Europe and Central Asia last year, with more than 30,000 infections \
reported compared with 941 in 2022. Dr. Hans Kluge, the WHO's regional director for Europe, \
urged governments to step up vaccination campaigns before the summer travel season.
";

fn bench_encode(c: &mut Criterion) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/minilm/vocab.txt");
    let vocab = std::fs::read_to_string(path).expect("fixtures/minilm/vocab.txt");
    let tok = Tokenizer::new(&bert_uncased_meta(), &vocab).expect("MiniLM tokenizer");
    let text = NEWS.repeat(4);
    let words = text.split_whitespace().count() as u64;

    let mut group = c.benchmark_group("tokenizer");
    group.throughput(Throughput::Elements(words));
    group.bench_function("encode_news", |b| b.iter(|| tok.encode(black_box(&text))));
    let lines: Vec<&str> = text.lines().collect();
    group.bench_function("encode_news_by_line", |b| {
        b.iter(|| {
            lines
                .iter()
                .map(|l| tok.encode(black_box(l)).ids.len())
                .sum::<usize>()
        })
    });
    let conll: Vec<&str> = text.split_whitespace().collect();
    group.bench_function("encode_words_news", |b| {
        b.iter(|| tok.encode_words(black_box(&conll)))
    });
    group.finish();
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
