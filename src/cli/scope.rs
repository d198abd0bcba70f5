//! Which flags the user gave and which run each belongs to: a flag of another suite is refused
//! with a line naming the suite it belongs to, never silently ignored.

use super::scaling::ScalingArgs;
use super::verify::VerifyArgs;
use super::{phases_name, Phase, SftArgs, SweepArgs};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};

/// What the command line asks for, for the purpose of which flags apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunKind {
    /// The benchmarks of `--suite` (or `verify`), in their order.
    Suite(Vec<Phase>),
    Selftest,
    Plan,
    /// `op`: one GPU op timed alone.
    Op,
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
const UNUSED_BY_CHECKS: [&str; 7] = ["suite", "backend", "seed", "timeout", "telemetry_ms", "straggler_pct", "keep_going"];

/// The sft flags `plan` reads; the others describe training, not memory.
const PLAN_READS: [&str; 8] = ["model", "layers", "seq", "micro_batch", "grad_accum", "recompute", "zero", "bucket_layers"];

/// Refuses the first given flag that `kind` does not use, naming where it belongs.
pub fn check(given: &[String], kind: &RunKind) -> Result<(), String> {
    let groups = [
        (flags::<SweepArgs>(), Phase::Nccl),
        (flags::<SftArgs>(), Phase::Sft),
        (flags::<VerifyArgs>(), Phase::Verify),
        (flags::<ScalingArgs>(), Phase::Scaling),
    ];
    let runs = |phase: Phase| matches!(kind, RunKind::Suite(phases) if phases.contains(&phase));
    for id in given {
        let group = groups.iter().find_map(|(flags, phase)| flags.iter().find(|(i, _)| i == id).map(|(_, spelling)| (spelling, *phase)));
        let refusal = match (kind, group) {
            (RunKind::Plan, Some((_, Phase::Sft))) if PLAN_READS.contains(&id.as_str()) => None,
            (RunKind::Plan, Some((spelling, Phase::Sft))) => Some(format!("{spelling} is a flag of --suite sft; plan does not use it")),
            (_, Some((_, phase))) if runs(phase) => None,
            // --scaling off: sft without the scaling phase
            (_, Some((_, Phase::Scaling))) if id == "scaling" && runs(Phase::Sft) => None,
            (_, Some((spelling, Phase::Nccl))) => Some(format!("{spelling} is a flag of --suite nccl, not of {}", kind.name())),
            (_, Some((spelling, Phase::Sft))) => Some(format!("{spelling} is a flag of --suite sft (and plan), not of {}", kind.name())),
            (_, Some((spelling, Phase::Verify))) => Some(format!("{spelling} is a flag of verify, not of {}", kind.name())),
            (_, Some((spelling, Phase::Scaling))) => {
                Some(format!("{spelling} is a flag of the scaling phase (--suite sft --scaling weak|strong|both, or --suite full), not of {}", kind.name()))
            }
            (RunKind::Plan | RunKind::Op, None) if ["out", "overwrite"].contains(&id.as_str()) => {
                Some(format!("--{id}: {} prints its table and writes no results file", kind.name()))
            }
            (RunKind::Plan, None) if UNUSED_BY_CHECKS.contains(&id.as_str()) => Some(format!("--{} does not apply to plan", id.replace('_', "-"))),
            (RunKind::Selftest | RunKind::Op, None) if id != "seed" && UNUSED_BY_CHECKS.contains(&id.as_str()) => {
                Some(format!("--{} does not apply to {}", id.replace('_', "-"), kind.name()))
            }
            (RunKind::Suite(phases), None) if id == "straggler_pct" && phases == &[Phase::Verify] => {
                Some("--straggler-pct does not apply to verify (its outliers are judged by --tolerance-pct)".to_string())
            }
            (RunKind::Suite(phases), None) if id == "keep_going" && !(runs(Phase::Verify) && phases.len() > 1) => {
                Some(format!("--keep-going lets the benchmarks after a failed verify run: not for {} (e.g. --suite full)", kind.name()))
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
    fn name(&self) -> String {
        match self {
            RunKind::Suite(phases) if phases == &[Phase::Verify] => "verify".into(),
            RunKind::Suite(phases) if phases == &Phase::ALL => "--suite full".into(),
            RunKind::Suite(phases) => format!("--suite {}", phases_name(phases)),
            RunKind::Selftest => "selftest".into(),
            RunKind::Plan => "plan".into(),
            RunKind::Op => "op".into(),
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
        let e = check(&given_of(&["--suite", "sft", "-d", "float128"]), &RunKind::Suite(vec![Phase::Sft])).unwrap_err();
        assert_eq!(e, "-d/--datatype is a flag of --suite nccl, not of --suite sft");
        let e = check(&given_of(&["--suite", "nccl", "--zero", "9", "--lr=-1"]), &RunKind::Suite(vec![Phase::Nccl])).unwrap_err();
        assert!(e.contains("is a flag of --suite sft") && e.contains("--suite nccl"), "{e}");
        let e = check(&given_of(&["plan", "--model", "7b", "--lr", "1"]), &RunKind::Plan).unwrap_err();
        assert!(e.starts_with("--lr is a flag of --suite sft"), "{e}");
        assert!(check(&given_of(&["plan", "--out", "x.h5"]), &RunKind::Plan).is_err());
        assert!(check(&given_of(&["-n", "3", "selftest"]), &RunKind::Selftest).is_err());
        assert_eq!(check(&given_of(&["--timeout", "9", "selftest"]), &RunKind::Selftest).unwrap_err(), "--timeout does not apply to selftest");
        assert!(check(&given_of(&["--backend", "mpi", "plan"]), &RunKind::Plan).is_err());
        assert!(check(&given_of(&["selftest", "--seed", "7"]), &RunKind::Selftest).is_ok());
        assert!(check(&given_of(&["op", "attention", "--seed", "7", "--seq", "512"]), &RunKind::Op).is_ok());
        assert_eq!(check(&given_of(&["op", "adamw", "--out", "x.h5"]), &RunKind::Op).unwrap_err(), "--out: op prints its table and writes no results file");
        assert!(check(&given_of(&["--model", "7b", "op", "copy"]), &RunKind::Op).unwrap_err().ends_with("not of op"));
        assert!(check(&given_of(&["--seed", "7", "plan"]), &RunKind::Plan).is_err());
        assert!(check(&given_of(&["verify", "--model", "7b"]), &RunKind::Suite(vec![Phase::Verify])).unwrap_err().ends_with("not of verify"));
        assert!(check(&given_of(&["-n", "5", "verify"]), &RunKind::Suite(vec![Phase::Verify])).unwrap_err().ends_with("not of verify"));
        assert!(check(&given_of(&["--straggler-pct", "9", "verify"]), &RunKind::Suite(vec![Phase::Verify])).is_err());
        assert!(check(
            &given_of(&["verify", "--seed", "3", "--timeout", "9", "--backend", "mpi", "--telemetry-ms", "0"]),
            &RunKind::Suite(vec![Phase::Verify])
        )
        .is_ok());
        // what each run reads is accepted, defaults are not "given"
        assert!(check(&given_of(&["plan", "--model", "70b", "--zero", "3", "--ranks", "16"]), &RunKind::Plan).is_ok());
        assert!(check(&given_of(&["--suite", "sft", "--model", "tiny", "--out", "x.h5", "--timeout", "9"]), &RunKind::Suite(vec![Phase::Sft])).is_ok());
        assert!(check(&given_of(&["-b", "8", "-e", "1M", "--overwrite"]), &RunKind::Suite(vec![Phase::Nccl])).is_ok());
        assert!(given_of(&[]).is_empty());
        // a list takes the flags of each of its phases
        let full = RunKind::Suite(Phase::ALL.to_vec());
        assert!(check(&given_of(&["--suite", "full", "-e", "1M", "--model", "tiny", "--tolerance-pct", "20", "--keep-going"]), &full).is_ok());
        let e = check(&given_of(&["--suite", "nccl,sft", "--burn-s", "5"]), &RunKind::Suite(vec![Phase::Nccl, Phase::Sft])).unwrap_err();
        assert_eq!(e, "--burn-s is a flag of verify, not of --suite nccl,sft");
        assert!(check(&given_of(&["--suite", "sft", "--keep-going"]), &RunKind::Suite(vec![Phase::Sft])).unwrap_err().starts_with("--keep-going"));
        assert!(check(&given_of(&["--keep-going", "verify"]), &RunKind::Suite(vec![Phase::Verify])).is_err());
        assert!(check(&given_of(&["selftest", "--level", "long"]), &RunKind::Selftest).unwrap_err().ends_with("not of selftest"));
        // scaling's flags come with sft and scaling; --scaling off with sft alone
        let sft = RunKind::Suite(vec![Phase::Sft]);
        assert!(check(&given_of(&["--suite", "sft", "--scaling", "off"]), &sft).is_ok());
        assert!(check(&given_of(&["--suite", "sft", "--scaling-steps", "4"]), &sft).unwrap_err().starts_with("--scaling-steps is a flag of the scaling phase"));
        assert!(check(&given_of(&["--suite", "full", "--scaling-steps", "4"]), &full).is_ok());
        assert!(check(&given_of(&["plan", "--scaling", "weak"]), &RunKind::Plan).unwrap_err().ends_with("not of plan"));
    }

    #[test]
    fn the_last_of_a_repeated_flag_wins() {
        let cli = Cli::try_parse_from(["h200-mpibench", "-e", "16M", "-n", "3", "-e", "1G"]).unwrap();
        assert_eq!((cli.sweep.max_bytes.as_str(), cli.sweep.iters), ("1G", 3));
    }
}
