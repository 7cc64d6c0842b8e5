//! The label layout shared by emissions, decoding and span extraction.
//!
//! For `n` active entity types there are `L = 1 + 2n` labels: index 0 is O, `1 + 2k` is B-k and
//! `2 + 2k` is I-k, where `k` is the position of the type in the active set.

/// Number of labels for `n_types` active entity types: `1 + 2 n_types`.
#[inline]
pub const fn label_count(n_types: usize) -> usize {
    1 + 2 * n_types
}

/// Number of entity types of a label set with `n_labels` labels, or `None` when `n_labels` is not
/// of the form `1 + 2n`.
#[inline]
pub const fn type_count(n_labels: usize) -> Option<usize> {
    if n_labels % 2 == 1 {
        Some(n_labels / 2)
    } else {
        None
    }
}

/// Index of the O label.
pub const O_INDEX: usize = 0;

/// A label of the BIO scheme; the payload of `B` and `I` is the active type index `k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tag {
    /// Outside any entity.
    O,
    /// First word of an entity of type `k`.
    B(usize),
    /// A later word of an entity of type `k`.
    I(usize),
}

/// Abstract tag kind of the collapsed-dependency-transfer parameters: O = 0, B = 1, I = 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Outside.
    O = 0,
    /// Begin, whatever the type.
    B = 1,
    /// Inside, whatever the type.
    I = 2,
}

impl Tag {
    /// The tag with label index `index` (every index names a tag; whether it belongs to a label
    /// set of a given size is `index < label_count(n_types)`).
    #[inline]
    pub const fn from_index(index: usize) -> Tag {
        if index == 0 {
            Tag::O
        } else if index % 2 == 1 {
            Tag::B((index - 1) / 2)
        } else {
            Tag::I((index - 2) / 2)
        }
    }

    /// The label index of this tag; inverse of [`Tag::from_index`].
    #[inline]
    pub const fn to_index(self) -> usize {
        match self {
            Tag::O => 0,
            Tag::B(k) => 1 + 2 * k,
            Tag::I(k) => 2 + 2 * k,
        }
    }

    /// The entity type index, `None` for O.
    #[inline]
    pub const fn type_index(self) -> Option<usize> {
        match self {
            Tag::O => None,
            Tag::B(k) | Tag::I(k) => Some(k),
        }
    }

    /// The abstract kind (O, B or I) that indexes the CDT start/end vectors and matrix rows.
    #[inline]
    pub const fn kind(self) -> Kind {
        match self {
            Tag::O => Kind::O,
            Tag::B(_) => Kind::B,
            Tag::I(_) => Kind::I,
        }
    }

    /// Whether `self` may follow `prev` under hard BIO constraints (`prev == None` is the start of
    /// the sentence): I-x only after B-x or I-x; everything else is allowed.
    #[inline]
    pub const fn may_follow(self, prev: Option<Tag>) -> bool {
        match (prev, self) {
            (Some(Tag::B(p)), Tag::I(x)) | (Some(Tag::I(p)), Tag::I(x)) => p == x,
            (_, Tag::I(_)) => false,
            _ => true,
        }
    }
}

/// Whether `path` (label indices) is a valid BIO sequence over `n_labels` labels: every index is
/// in range and every I-x directly follows B-x or I-x. The empty path is valid.
pub fn is_valid_bio(path: &[usize], n_labels: usize) -> bool {
    let mut prev = None;
    for &label in path {
        if label >= n_labels {
            return false;
        }
        let tag = Tag::from_index(label);
        if !tag.may_follow(prev) {
            return false;
        }
        prev = Some(tag);
    }
    true
}

/// Makes `path` a valid BIO sequence in place: an I-x that does not follow B-x or I-x becomes B-x.
/// A valid path is left unchanged.
pub fn repair_bio(path: &mut [usize]) {
    let mut prev = None;
    for label in path.iter_mut() {
        let mut tag = Tag::from_index(*label);
        if let Tag::I(k) = tag {
            if !tag.may_follow(prev) {
                tag = Tag::B(k);
                *label = tag.to_index();
            }
        }
        prev = Some(tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips() {
        assert_eq!(label_count(0), 1);
        assert_eq!(label_count(10), 21);
        assert_eq!(type_count(21), Some(10));
        assert_eq!(type_count(20), None);
        assert_eq!(Tag::from_index(0), Tag::O);
        assert_eq!(Tag::from_index(1), Tag::B(0));
        assert_eq!(Tag::from_index(2), Tag::I(0));
        assert_eq!(Tag::from_index(7), Tag::B(3));
        assert_eq!(Tag::from_index(8), Tag::I(3));
        for i in 0..50 {
            assert_eq!(Tag::from_index(i).to_index(), i);
        }
    }

    #[test]
    fn bio_validity() {
        assert!(is_valid_bio(&[], 1));
        assert!(is_valid_bio(&[0, 1, 2, 2, 3, 4, 0], 5));
        assert!(!is_valid_bio(&[2], 5));
        assert!(!is_valid_bio(&[0, 2], 5));
        assert!(!is_valid_bio(&[1, 4], 5));
        assert!(!is_valid_bio(&[3, 2], 5));
        assert!(!is_valid_bio(&[5], 5));
        let mut p = vec![2, 0, 4, 1, 4, 4];
        repair_bio(&mut p);
        assert_eq!(p, vec![1, 0, 3, 1, 3, 4]);
        assert!(is_valid_bio(&p, 5));
    }
}
