//! Randomised schedules of socket operations, and their executor.
