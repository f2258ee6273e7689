//! The std/loom facade: every atomic and `UnsafeCell` in refloop comes from here.
//!
//! Under `cfg(loom)` these are loom's model-checked types; otherwise they are std's.
