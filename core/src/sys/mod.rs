//! The only module that talks to the kernel.
