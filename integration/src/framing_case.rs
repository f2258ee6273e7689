//! The fuzz/proptest input for the framing oracle.
