//! The explorer: cases from consecutive seeds, greedy shrinking, replays.
