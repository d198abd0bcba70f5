//! ZeRO, the policy: how model state is split over ranks (the partition of the flat buffer into
//! per-rank chunks), what each stage keeps and reduces, the unit schedule, the places units
//! take turns in, the buffer table and the memory planner. The mechanisms that carry it out on
//! a GPU (streams, events, NCCL calls) are backend/cuda's: exchange.rs, unit_buffers.rs.

pub mod buffers;
pub mod partition;
pub mod places;
pub mod planner;
pub mod schedule;
pub mod stage;
pub mod step_model;
