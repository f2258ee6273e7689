//! Side-by-side benchmarks of refloop and its peers.
