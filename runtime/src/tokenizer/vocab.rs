//! WordPiece vocabulary: all tokens in one string arena, looked up by `&str` without allocating.

use crate::{Error, Result};

/// Open-addressing hash table from a key (a slice of the arena) to a token id.
#[derive(Clone, Debug, Default)]
struct StrTable {
    /// `0` = empty, otherwise `1 + index` into `entries`.
    slots: Vec<u32>,
    /// `(key start in arena, key length, token id)`.
    entries: Vec<(u32, u32, u32)>,
    /// Longest key in bytes.
    max_len: usize,
}

impl StrTable {
    fn with_capacity(n: usize) -> StrTable {
        let size = (n.max(1) * 2).next_power_of_two();
        StrTable {
            slots: vec![0; size],
            entries: Vec::with_capacity(n),
            max_len: 0,
        }
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Inserts `key` (`arena[start..start + len]`); returns the id already stored under it, if any.
    fn insert(&mut self, arena: &str, start: usize, len: usize, id: u32) -> Option<u32> {
        let key = arena.get(start..start + len)?;
        let mut slot = hash(key.as_bytes()) as usize & self.mask();
        loop {
            match self.slots.get(slot).copied() {
                Some(0) => break,
                Some(e) => {
                    let (s, l, old) = *self.entries.get(e as usize - 1)?;
                    if arena.get(s as usize..(s + l) as usize) == Some(key) {
                        return Some(old);
                    }
                }
                None => return None,
            }
            slot = (slot + 1) & self.mask();
        }
        self.entries.push((start as u32, len as u32, id));
        if let Some(s) = self.slots.get_mut(slot) {
            *s = self.entries.len() as u32;
        }
        self.max_len = self.max_len.max(len);
        None
    }

    #[inline]
    fn get(&self, arena: &str, key: &str) -> Option<u32> {
        let mut slot = hash(key.as_bytes()) as usize & self.mask();
        loop {
            let e = *self.slots.get(slot)?;
            if e == 0 {
                return None;
            }
            let (s, l, id) = *self.entries.get(e as usize - 1)?;
            if l as usize == key.len() && arena.get(s as usize..(s + l) as usize) == Some(key) {
                return Some(id);
            }
            slot = (slot + 1) & self.mask();
        }
    }
}

/// Fast non-cryptographic hash over 8-byte words (FxHash-style multiply-rotate).
#[inline]
fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        for (d, s) in w.iter_mut().zip(rest) {
            *d = *s;
        }
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    h ^ (h >> 29)
}

/// A WordPiece vocabulary: id = line number of `vocab.txt`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Vocab {
    /// All tokens, concatenated.
    arena: String,
    /// `(start, len)` in `arena` of each token, indexed by id.
    tokens: Vec<(u32, u32)>,
    /// Every token, for the first piece of a word.
    initial: StrTable,
    /// Tokens that start with the continuation prefix, keyed without the prefix.
    continuing: StrTable,
}

impl Vocab {
    /// Parses `vocab.txt` text (one token per line, `\n` or `\r\n`; a final newline is optional).
    ///
    /// Fails on an empty vocabulary, duplicate tokens, or more tokens than fit in `u32`.
    pub(crate) fn parse(text: &str, prefix: &str) -> Result<Vocab> {
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect();
        if lines.is_empty() {
            return Err(Error::Bundle("tokenizer vocabulary is empty".into()));
        }
        if lines.len() >= u32::MAX as usize || text.len() >= u32::MAX as usize {
            return Err(Error::Bundle("tokenizer vocabulary is too large".into()));
        }
        let n_cont = lines
            .iter()
            .filter(|l| !prefix.is_empty() && l.starts_with(prefix))
            .count();
        let mut v = Vocab {
            arena: String::with_capacity(lines.iter().map(|l| l.len()).sum()),
            tokens: Vec::with_capacity(lines.len()),
            initial: StrTable::with_capacity(lines.len()),
            continuing: StrTable::with_capacity(n_cont),
        };
        for l in &lines {
            v.tokens.push((v.arena.len() as u32, l.len() as u32));
            v.arena.push_str(l);
        }
        for (id, &(start, len)) in v.tokens.iter().enumerate() {
            let (start, len, id) = (start as usize, len as usize, id as u32);
            if let Some(first) = v.initial.insert(&v.arena, start, len, id) {
                let token = v.arena.get(start..start + len).unwrap_or_default();
                return Err(Error::Bundle(format!(
                    "tokenizer vocabulary has token {token:?} twice (lines {} and {})",
                    first + 1,
                    id + 1
                )));
            }
            let token = v.arena.get(start..start + len).unwrap_or_default();
            if !prefix.is_empty() && token.starts_with(prefix) {
                v.continuing
                    .insert(&v.arena, start + prefix.len(), len - prefix.len(), id);
            }
        }
        Ok(v)
    }

    pub(crate) fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Id of a whole token.
    #[inline]
    pub(crate) fn id(&self, token: &str) -> Option<u32> {
        self.initial.get(&self.arena, token)
    }

    /// Id of `prefix + rest`, where `prefix` is the continuation prefix given to [`Vocab::parse`].
    #[inline]
    pub(crate) fn continuing_id(&self, rest: &str) -> Option<u32> {
        self.continuing.get(&self.arena, rest)
    }

    /// Longest key in bytes for [`Vocab::id`] (`initial`) or [`Vocab::continuing_id`].
    pub(crate) fn max_key_len(&self, initial: bool) -> usize {
        if initial {
            self.initial.max_len
        } else {
            self.continuing.max_len
        }
    }

    /// Text of token `id`.
    pub(crate) fn token(&self, id: u32) -> Option<&str> {
        let &(start, len) = self.tokens.get(id as usize)?;
        self.arena.get(start as usize..(start + len) as usize)
    }
}
