//! Reusable correctness harnesses.
//!
//! Our unit tests, proptests and fuzz targets call these functions, and so can users who want
//! to verify their own code the way refloop verifies its own.

pub mod framing;
pub mod queue;
