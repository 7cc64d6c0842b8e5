//! Label memory (MANNER): optimal-transport retrieval of a stored source type for a new type.
//!
//! * [`sinkhorn`](mod@sinkhorn): entropic OT with uniform marginals between two point clouds,
//!   and the normalised squared Euclidean cost.
//! * [`retrieval`]: pick the memory slot nearest to a support set, move its points next to the
//!   support (barycentric map), and combine into the prior prototype.
//!
//! Transport is computed in `f64`, explicit loops, no gradients; this is also the CPU reference
//! for the trainer's batched Sinkhorn kernel.

pub mod retrieval;
pub mod sinkhorn;

pub use retrieval::{
    barycentric_map, barycentric_map_into, mean_rows, prior_prototype, retrieve, PriorMlp,
    PriorNet, Retrieval, Retriever, PRIOR_GAMMA,
};
pub use sinkhorn::{
    sinkhorn, squared_euclidean_cost, squared_euclidean_cost_into, Plan, SinkhornConfig,
    SinkhornWorkspace,
};
