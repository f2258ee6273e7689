//! Randomised socket schedules against refloop's real loop, and the fuzz-input types shared by
//! the fuzz targets and the replay tests.

pub mod framing_case;
pub mod resp;
pub mod schedule;
pub mod sim_schedule;
