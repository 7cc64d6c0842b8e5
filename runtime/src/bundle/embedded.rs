//! The default bundle compiled into the binary (cargo feature `embedded-bundle`).

use super::reader::Bundle;
use crate::Result;

#[cfg(feature = "embedded-bundle")]
#[repr(C, align(64))]
struct Aligned<T: ?Sized>(T);

#[cfg(feature = "embedded-bundle")]
static DEFAULT: &Aligned<[u8]> = &Aligned(*include_bytes!("../../../models/default.nerb"));

/// The bundle embedded at build time, read in place; `None` when built without the feature.
pub fn embedded() -> Option<Result<Bundle>> {
    #[cfg(feature = "embedded-bundle")]
    {
        Some(Bundle::from_static(&DEFAULT.0, "<embedded default bundle>"))
    }
    #[cfg(not(feature = "embedded-bundle"))]
    {
        None
    }
}
