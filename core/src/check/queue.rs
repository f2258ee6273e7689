//! Checks of the send queue's properties, shared by loom models and stress tests.
