//! CDT-CRF decoding for an active label set.
//!
//! * [`labels`]: the label layout (`0 = O`, `1 + 2k = B-k`, `2 + 2k = I-k`) and BIO validity.
//! * [`cdt`]: unfolding the 21 learned CDT numbers into dense [`Transitions`] with hard BIO
//!   constraints as `-inf`.
//! * [`viterbi`](mod@viterbi): best path ([`Decoder`] keeps scratch buffers between sentences).
//! * [`marginals`](mod@marginals): forward–backward posteriors and exact entity probabilities.
//!
//! Every decoded path is a valid BIO sequence: I-x only directly after B-x or I-x.

pub mod cdt;
pub mod labels;
pub mod marginals;
pub mod viterbi;

pub use cdt::{unfold, CdtParams, Transitions};
pub use labels::{is_valid_bio, label_count, repair_bio, type_count, Kind, Tag, O_INDEX};
pub use marginals::{marginals, Marginals};
pub use viterbi::{viterbi, Decoder, MAX_LABELS};
