//! ZeRO: how model state is split over ranks: the partition of the flat buffer into per-rank
//! chunks, what each stage keeps and reduces, and the memory planner.

pub mod buffers;
pub mod partition;
pub mod places;
pub mod planner;
pub mod stage;
pub mod exchange;
pub mod unit_buffers;
pub mod schedule;
