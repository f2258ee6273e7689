//! loom model checks of refloop; they only build under `--cfg loom`.
