//! Supervised fine-tuning: run settings, synthetic data, the training loop, step metrics.

pub mod cpu_rank;
pub mod cpu_trainer;
pub mod data;
pub mod data_parallel;
pub mod gpu_trainer;
pub mod metrics;
pub mod run_config;
pub mod scaling;
pub mod step_loop;
