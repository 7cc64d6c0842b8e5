//! Deterministic news-like English text for throughput benchmarks.
//!
//! The sentences are assembled from templates and small word lists written for this project;
//! they have realistic length (10–40 words), capitalisation, punctuation and entity density,
//! which is what tokenizer and tagger speed depend on. They carry no labels.

const PEOPLE: &[&str] = &[
    "Maria Keller",
    "John Abernathy",
    "Li Wei",
    "Fatima Haddad",
    "Pierre Lambert",
    "Olga Petrova",
    "Kwame Mensah",
    "Hiroshi Tanaka",
    "Sofia Rossi",
    "Daniel O'Brien",
    "Ana Beatriz Souza",
    "Rajesh Nair",
    "Emma Lindqvist",
    "Carlos Mendoza",
    "Ingrid Halvorsen",
    "Tomasz Nowak",
];
const ORGS: &[&str] = &[
    "the Federal Reserve",
    "Northwind Energy",
    "the World Health Organization",
    "Bayer",
    "the European Commission",
    "Helios Motors",
    "the Bank of Japan",
    "Unilever",
    "NASA",
    "the International Monetary Fund",
    "Blue Harbor Capital",
    "the Red Cross",
    "Volkswagen",
    "the University of Toronto",
    "Samsung Electronics",
    "the Ministry of Finance",
];
const PLACES: &[&str] = &[
    "Berlin",
    "São Paulo",
    "Nairobi",
    "Seoul",
    "Lyon",
    "Mumbai",
    "Chicago",
    "Gdańsk",
    "Oslo",
    "Buenos Aires",
    "Cairo",
    "Melbourne",
    "Zürich",
    "Hanoi",
    "Vancouver",
    "Marseille",
];
const EVENTS: &[&str] = &[
    "the annual summit",
    "the World Cup qualifier",
    "the climate conference",
    "the trade fair",
    "the election campaign",
    "the peace talks",
    "the shareholder meeting",
    "the film festival",
];
const VERBS: &[&str] = &[
    "said",
    "announced",
    "warned",
    "confirmed",
    "denied",
    "reported",
    "argued",
    "estimated",
];
const OBJECTS: &[&str] = &[
    "quarterly profits rose 4.2 percent",
    "the deal was worth $1.3 billion",
    "talks would resume next week",
    "inflation had eased to 2.9%",
    "the plant would close in 2027",
    "more than 3,000 jobs were at risk",
    "the vaccine trial had met its targets",
    "prices for wheat and maize had fallen sharply",
    "the merger still needed approval",
];
const CONNECTORS: &[&str] = &[
    "on Monday",
    "on Thursday",
    "late on Friday",
    "earlier this month",
    "in a statement",
    "at a news conference",
    "according to officials",
    "after a two-day meeting",
];

/// Small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// `n` sentences, one per line, the same for the same `seed`.
pub fn news_sentences(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let s = match rng.next() % 5 {
                0 => format!(
                    "{} of {} {} {} that {}.",
                    rng.pick(PEOPLE),
                    rng.pick(ORGS),
                    rng.pick(VERBS),
                    rng.pick(CONNECTORS),
                    rng.pick(OBJECTS)
                ),
                1 => format!(
                    "Speaking in {} {}, {} {} that {}, while {} of {} {} the figures.",
                    rng.pick(PLACES),
                    rng.pick(CONNECTORS),
                    rng.pick(PEOPLE),
                    rng.pick(VERBS),
                    rng.pick(OBJECTS),
                    rng.pick(PEOPLE),
                    rng.pick(ORGS),
                    rng.pick(VERBS)
                ),
                2 => format!(
                    "{} {} that {} ahead of {} in {}.",
                    capitalise(rng.pick(ORGS)),
                    rng.pick(VERBS),
                    rng.pick(OBJECTS),
                    rng.pick(EVENTS),
                    rng.pick(PLACES)
                ),
                3 => format!(
                    "\"We expect a difficult year,\" {} told reporters in {} {}, adding that {} and {} would cooperate.",
                    rng.pick(PEOPLE),
                    rng.pick(PLACES),
                    rng.pick(CONNECTORS),
                    rng.pick(ORGS),
                    rng.pick(ORGS)
                ),
                _ => format!(
                    "Delegates from {} and {} met in {} for {}; {} {} that {}.",
                    rng.pick(PLACES),
                    rng.pick(PLACES),
                    rng.pick(PLACES),
                    rng.pick(EVENTS),
                    rng.pick(PEOPLE),
                    rng.pick(VERBS),
                    rng.pick(OBJECTS)
                ),
            };
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_varied() {
        let a = news_sentences(200, 7);
        assert_eq!(a, news_sentences(200, 7));
        assert_ne!(a, news_sentences(200, 8));
        let words: usize = a.iter().map(|s| s.split_whitespace().count()).sum();
        assert!((10 * 200..40 * 200).contains(&words), "{words} words");
        let distinct: std::collections::HashSet<&String> = a.iter().collect();
        assert!(distinct.len() > 150);
    }
}
