//! Which flags the user gave and which run each belongs to: a flag of another suite is refused
//! with a line naming the suite it belongs to, never silently ignored.

use super::{SftArgs, SweepArgs};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};

/// What the command line asks for, for the purpose of which flags apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    Sweeps,
    Sft,
    Selftest,
    Plan,
    Verify,
}

/// The flags given on the command line (not defaults), by clap id, the subcommand's included.
pub fn given(matches: &ArgMatches) -> Vec<String> {
    let mut ids: Vec<String> =
        matches.ids().filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine)).map(|id| id.to_string()).collect();
    if let Some((_, sub)) = matches.subcommand() {
        ids.extend(given(sub));
    }
    ids.sort();
    ids.dedup();
    ids
}

/// Shared flags that plan and selftest do not read: they run no suite, pick no backend, have
/// no phase to time out and no benchmark to sample; plan draws nothing (selftest's --seed draws
/// its inputs).
const UNUSED_BY_CHECKS: [&str; 6] = ["suite", "backend", "seed", "timeout", "telemetry_ms", "straggler_pct"];

/// The sft flags `plan` reads; the others describe training, not memory.
const PLAN_READS: [&str; 8] = ["model", "layers", "seq", "micro_batch", "grad_accum", "recompute", "zero", "bucket_layers"];

/// Refuses the first given flag that `kind` does not use, naming where it belongs.
pub fn check(given: &[String], kind: RunKind) -> Result<(), String> {
    let sweep = flags::<SweepArgs>();
    let sft = flags::<SftArgs>();
    for id in given {
        let in_sweep = sweep.iter().find(|(i, _)| i == id);
        let in_sft = sft.iter().find(|(i, _)| i == id);
        let refusal = match (kind, in_sweep, in_sft) {
            (RunKind::Sft | RunKind::Selftest | RunKind::Plan | RunKind::Verify, Some((_, spelling)), _) => {
                Some(format!("{spelling} is a flag of --suite nccl, not of {}", kind.name()))
            }
            (RunKind::Sweeps | RunKind::Selftest | RunKind::Verify, _, Some((_, spelling))) => {
                Some(format!("{spelling} is a flag of --suite sft (and plan), not of {}", kind.name()))
            }
            (RunKind::Plan, _, Some((i, spelling))) if !PLAN_READS.contains(&i.as_str()) => {
                Some(format!("{spelling} is a flag of --suite sft; plan does not use it"))
            }
            (RunKind::Plan, None, None) if ["out", "overwrite"].contains(&id.as_str()) => {
                Some(format!("--{id}: plan prints its table and writes no results file"))
            }
            (RunKind::Plan, None, None) if UNUSED_BY_CHECKS.contains(&id.as_str()) => Some(format!("--{} does not apply to plan", id.replace('_', "-"))),
            (RunKind::Selftest, None, None) if id != "seed" && UNUSED_BY_CHECKS.contains(&id.as_str()) => {
                Some(format!("--{} does not apply to selftest", id.replace('_', "-")))
            }
            (RunKind::Verify, None, None) if ["suite", "straggler_pct"].contains(&id.as_str()) => {
                Some(format!("--{} does not apply to verify (its outliers are judged by --tolerance-pct)", id.replace('_', "-")))
            }
            _ => None,
        };
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
    }
    Ok(())
}

impl RunKind {
    fn name(self) -> &'static str {
        match self {
            RunKind::Sweeps => "--suite nccl",
            RunKind::Sft => "--suite sft",
            RunKind::Selftest => "selftest",
            RunKind::Plan => "plan",
            RunKind::Verify => "verify",
        }
    }
}

/// Each flag of an argument group: its clap id and how a user spells it (`-d/--datatype`).
fn flags<A: Args>() -> Vec<(String, String)> {
    A::augment_args(clap::Command::new("flags"))
        .get_arguments()
        .map(|a| {
            let spelling = match (a.get_short(), a.get_long()) {
                (Some(s), Some(l)) => format!("-{s}/--{l}"),
                (None, Some(l)) => format!("--{l}"),
                (Some(s), None) => format!("-{s}"),
                (None, None) => a.get_id().to_string(),
            };
            (a.get_id().to_string(), spelling)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::{CommandFactory, FromArgMatches, Parser};

    fn given_of(args: &[&str]) -> Vec<String> {
        let mut argv = vec!["h200-mpibench"];
        argv.extend_from_slice(args);
        let matches = Cli::command().try_get_matches_from(argv).unwrap();
        Cli::from_arg_matches(&matches).unwrap();
        given(&matches)
    }

    #[test]
    fn flags_of_another_suite_are_refused_with_its_name() {
        let e = check(&given_of(&["--suite", "sft", "-d", "float128"]), RunKind::Sft).unwrap_err();
        assert_eq!(e, "-d/--datatype is a flag of --suite nccl, not of --suite sft");
        let e = check(&given_of(&["--suite", "nccl", "--zero", "9", "--lr=-1"]), RunKind::Sweeps).unwrap_err();
        assert!(e.contains("is a flag of --suite sft") && e.contains("--suite nccl"), "{e}");
        let e = check(&given_of(&["plan", "--model", "7b", "--lr", "1"]), RunKind::Plan).unwrap_err();
        assert!(e.starts_with("--lr is a flag of --suite sft"), "{e}");
        assert!(check(&given_of(&["plan", "--out", "x.h5"]), RunKind::Plan).is_err());
        assert!(check(&given_of(&["-n", "3", "selftest"]), RunKind::Selftest).is_err());
        assert_eq!(check(&given_of(&["--timeout", "9", "selftest"]), RunKind::Selftest).unwrap_err(), "--timeout does not apply to selftest");
        assert!(check(&given_of(&["--backend", "mpi", "plan"]), RunKind::Plan).is_err());
        assert!(check(&given_of(&["selftest", "--seed", "7"]), RunKind::Selftest).is_ok());
        assert!(check(&given_of(&["--seed", "7", "plan"]), RunKind::Plan).is_err());
        assert!(check(&given_of(&["verify", "--model", "7b"]), RunKind::Verify).unwrap_err().ends_with("not of verify"));
        assert!(check(&given_of(&["-n", "5", "verify"]), RunKind::Verify).unwrap_err().ends_with("not of verify"));
        assert!(check(&given_of(&["--straggler-pct", "9", "verify"]), RunKind::Verify).is_err());
        assert!(check(&given_of(&["verify", "--seed", "3", "--timeout", "9", "--backend", "mpi", "--telemetry-ms", "0"]), RunKind::Verify).is_ok());
        // what each run reads is accepted, defaults are not "given"
        assert!(check(&given_of(&["plan", "--model", "70b", "--zero", "3", "--ranks", "16"]), RunKind::Plan).is_ok());
        assert!(check(&given_of(&["--suite", "sft", "--model", "tiny", "--out", "x.h5", "--timeout", "9"]), RunKind::Sft).is_ok());
        assert!(check(&given_of(&["-b", "8", "-e", "1M", "--overwrite"]), RunKind::Sweeps).is_ok());
        assert!(given_of(&[]).is_empty());
    }

    #[test]
    fn the_last_of_a_repeated_flag_wins() {
        let cli = Cli::try_parse_from(["h200-mpibench", "-e", "16M", "-n", "3", "-e", "1G"]).unwrap();
        assert_eq!((cli.sweep.max_bytes.as_str(), cli.sweep.iters), ("1G", 3));
    }
}
