//! The framing oracle: checks any [`Framing`](crate::framing::Framing) against its contract.
