//! `verify`'s flags and their checks.

use crate::dist::fault::Fault;
use crate::verify::reference::Reference;
use crate::verify::verdict::Tolerances;
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Level {
    /// Inventory, health, every probe once (under a minute on an 8-GPU host).
    Quick,
    /// Quick, then --burn-s seconds of sustained GEMM load on every GPU (a burn-in).
    Long,
}

#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct VerifyArgs {
    /// verify: quick (inventory, health, every probe once) or long (and a burn-in).
    #[arg(long, value_enum, default_value_t = Level::Quick, global = true)]
    pub level: Level,

    /// verify: seconds of sustained GEMM load per GPU with --level long.
    #[arg(long = "burn-s", default_value_t = 60, global = true)]
    pub burn_s: u64,

    /// verify: percent below the median of its peers a GEMM or memory figure may fall.
    #[arg(long = "tolerance-pct", default_value_t = 5.0, global = true)]
    pub tolerance_pct: f64,

    /// verify: percent below (a latency: above) the median of its peers a link figure may fall:
    /// PCIe, GPU-to-GPU, NCCL, MPI.
    #[arg(long = "link-tolerance-pct", default_value_t = 10.0, global = true)]
    pub link_tolerance_pct: f64,

    /// verify: reference table (JSON, as configs/reference/h200.json) for every GPU, instead of
    /// the embedded table that matches each GPU's name.
    #[arg(long, global = true)]
    pub reference: Option<String>,
}

/// The longest burn-in: a day.
pub const MAX_BURN_S: u64 = 24 * 3600;

/// A verify run, validated.
#[derive(Debug)]
pub struct VerifyPlan {
    pub level: Level,
    /// Seconds of burn-in (0 with --level quick).
    pub burn_s: u64,
    pub tolerances: Tolerances,
    pub reference: Option<Reference>,
    pub fault: Fault,
}

impl VerifyArgs {
    /// `given`: the flags on the command line (clap ids).
    pub fn plan(&self, given: &[String], ranks: usize) -> Result<VerifyPlan, String> {
        let long = self.level == Level::Long;
        if !long && given.iter().any(|g| g == "burn_s") {
            return Err("--burn-s: the burn-in runs with --level long".into());
        }
        if long && !(1..=MAX_BURN_S).contains(&self.burn_s) {
            return Err(format!("--burn-s {}: 1 to {MAX_BURN_S} seconds", self.burn_s));
        }
        for (flag, pct) in [("--tolerance-pct", self.tolerance_pct), ("--link-tolerance-pct", self.link_tolerance_pct)] {
            if !(pct > 0.0 && pct < 100.0) {
                return Err(format!("{flag} {pct}: more than 0 and less than 100"));
            }
        }
        let reference = self.reference.as_deref().map(Reference::from_file).transpose()?;
        Ok(VerifyPlan {
            level: self.level,
            burn_s: if long { self.burn_s } else { 0 },
            tolerances: Tolerances { compute_pct: self.tolerance_pct, link_pct: self.link_tolerance_pct },
            reference,
            fault: Fault::from_env_for(ranks)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn plan(args: &[&str]) -> Result<super::VerifyPlan, String> {
        let mut argv = vec!["h200-mpibench", "verify"];
        argv.extend_from_slice(args);
        let matches = <Cli as clap::CommandFactory>::command().try_get_matches_from(&argv).map_err(|e| e.to_string())?;
        let given = crate::cli::scope::given(&matches);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        assert_eq!(cli.command, Some(Command::Verify));
        cli.verify.plan(&given, 2)
    }

    #[test]
    fn flags_are_checked() {
        let p = plan(&[]).unwrap();
        assert_eq!((p.burn_s, p.tolerances.compute_pct, p.tolerances.link_pct), (0, 5.0, 10.0));
        assert_eq!(plan(&["--level", "long"]).unwrap().burn_s, 60);
        assert!(plan(&["--burn-s", "5"]).unwrap_err().contains("--level long"));
        assert!(plan(&["--level", "long", "--burn-s", "0"]).unwrap_err().starts_with("--burn-s 0"));
        assert!(plan(&["--tolerance-pct", "0"]).unwrap_err().starts_with("--tolerance-pct 0"));
        assert!(plan(&["--link-tolerance-pct", "100"]).is_err());
        assert!(plan(&["--reference", "/nonexistent.json"]).unwrap_err().starts_with("--reference /nonexistent.json"));
    }
}
