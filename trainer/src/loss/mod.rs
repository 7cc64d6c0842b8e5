//! Episode losses on word-level head outputs: prototypes, emissions, CRF negative
//! log-likelihood with CDT transitions, span and type cross-entropies, prior MLP and KL term,
//! and the label memory.
//!
//! * [`episode`](mod@episode): [`episode_loss`] combines everything for one episode and returns
//!   the gradients wrt every sentence's boundary logits and type vectors, the 21 CDT numbers and
//!   the prior MLP; [`prior_prototypes`] is the same prototype path for evaluation.
//! * [`crf`]: CRF NLL over [`ner_edge::decode::unfold`] transitions and its gradient folded onto
//!   the abstract CDT cells.
//! * [`emissions`](mod@emissions): the runtime's emission function in `f64`, with backward.
//! * [`prototypes`]: per-type means of entity-word type vectors.
//! * [`prior`]: the prior MLP (`[s; m]` → fc1 → ReLU → fc2) and `μ = γ·MLP + (1 − γ)·s`.
//! * [`memory`]: the FIFO label memory and its OT retrieval.
//! * [`heads`]: the CDT numbers and prior MLP as named tensors for the optimiser.
//! * [`dense`](mod@dense): [`dense_loss`], the loss of one fully annotated sequence against
//!   learned class vectors.
//! * [`classes`]: the learned class vectors and the "none of these types" vectors.
//! * [`distill`]: [`distill_loss`], a student's piece outputs against a teacher's.
//! * [`assoc`]: the associated memory's read (forward as the runtime, backward) for dense
//!   sequences.

pub mod assoc;
pub mod classes;
pub mod crf;
pub mod dense;
pub mod distill;
pub mod emissions;
pub mod episode;
pub mod heads;
pub mod memory;
pub mod prior;
pub mod prototypes;

pub use classes::{ClassParams, OTHER_BESIDE_CLASSES, OTHER_BESIDE_SUPPORT};
pub use crf::{cdt_from_flat, cdt_to_flat, crf_nll, CdtGrad, CrfTransitions};
pub use dense::{dense_loss, dense_loss_with_offsets, DenseLoss};
pub use distill::{distill_loss, DistillTerms, DistillWeights};
pub use emissions::Emissions;
pub use episode::{
    entity_vectors, episode_loss, prior_prototypes, EpisodeInput, EpisodeLoss, LossTerms,
    LossWeights, SentenceGrad, SentenceRef,
};
pub use heads::HeadParams;
pub use memory::{LabelMemory, Retrieved, SlotKey, DEFAULT_CAPACITY};
pub use prior::PriorParams;
pub use prototypes::TypeMeans;
