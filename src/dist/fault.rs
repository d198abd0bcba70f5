//! Test hooks, off unless H200_MPIBENCH_FAULT is set: make one rank misbehave so the tests can
//! prove that a wrong result is counted, that a stuck rank cannot hang the job and that a slow
//! one is named. `corrupt:R` flips one bit of rank R's output before each check; `stall:R` makes
//! rank R stop before its first timed batch; `slow:R:MS` makes rank R sleep MS milliseconds in
//! each SFT step, before its first micro-batch; `slowprobe:R` makes each of rank R's verify
//! probes do its work SLOW_PROBE_REPEAT times where once counts; `memory:MIB` makes every
//! rank's memory checks see at most MIB MiB available (host memory, or GPU memory free).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    Corrupt(usize),
    Stall(usize),
    Slow { rank: usize, ms: u64 },
    SlowProbe(usize),
    Memory { mib: u64 },
}

/// How many times a probe of the `slowprobe:` rank repeats its work: a fifth of the figure.
pub const SLOW_PROBE_REPEAT: usize = 5;

pub const VARIABLE: &str = "H200_MPIBENCH_FAULT";

impl Fault {
    pub fn from_env() -> Result<Fault, String> {
        match std::env::var(VARIABLE) {
            Err(_) => Ok(Fault::None),
            Ok(text) => Fault::parse(&text),
        }
    }

    /// The hook of the environment, refused if its rank is not one of the job's `ranks`.
    pub fn from_env_for(ranks: usize) -> Result<Fault, String> {
        let fault = Fault::from_env()?;
        match fault.rank() {
            Some(r) if r >= ranks => Err(format!("{VARIABLE}: rank {r} does not exist (the job has {ranks} ranks)")),
            _ => Ok(fault),
        }
    }

    fn parse(text: &str) -> Result<Fault, String> {
        let bad = || format!("{VARIABLE}={text}: expected corrupt:RANK, stall:RANK, slow:RANK:MS, slowprobe:RANK or memory:MIB");
        let mut parts = text.split(':');
        let kind = parts.next().ok_or_else(bad)?;
        let mut number = || -> Result<u64, String> { parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad) };
        let fault = match kind {
            "corrupt" => Fault::Corrupt(number()? as usize),
            "stall" => Fault::Stall(number()? as usize),
            "slow" => Fault::Slow { rank: number()? as usize, ms: number()?.min(60_000) },
            "slowprobe" => Fault::SlowProbe(number()? as usize),
            "memory" => Fault::Memory { mib: number()?.min(1 << 40) },
            _ => return Err(bad()),
        };
        match parts.next() {
            None => Ok(fault),
            Some(_) => Err(bad()),
        }
    }

    /// The rank the hook acts on, if any.
    pub fn rank(self) -> Option<usize> {
        match self {
            Fault::None | Fault::Memory { .. } => None,
            Fault::Corrupt(r) | Fault::Stall(r) | Fault::SlowProbe(r) | Fault::Slow { rank: r, .. } => Some(r),
        }
    }

    /// How long `rank` sleeps in each SFT step (`slow:`), if at all.
    pub fn step_delay(self, rank: usize) -> Option<std::time::Duration> {
        match self {
            Fault::Slow { rank: r, ms } if r == rank => Some(std::time::Duration::from_millis(ms)),
            _ => None,
        }
    }

    /// The memory the checks may see available (`memory:`), if limited.
    pub fn memory_limit_bytes(self) -> Option<u64> {
        match self {
            Fault::Memory { mib } => Some(mib << 20),
            _ => None,
        }
    }

    /// How many times `rank`'s verify probes do each repetition's work (1 without the hook).
    pub fn probe_repeat(self, rank: usize) -> usize {
        match self {
            Fault::SlowProbe(r) if r == rank => SLOW_PROBE_REPEAT,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hooks() {
        assert_eq!(Fault::parse("corrupt:1").unwrap(), Fault::Corrupt(1));
        assert_eq!(Fault::parse("stall:0").unwrap(), Fault::Stall(0));
        assert_eq!(Fault::parse("slow:3:250").unwrap(), Fault::Slow { rank: 3, ms: 250 });
        assert_eq!(Fault::parse("slow:3:250").unwrap().step_delay(3), Some(std::time::Duration::from_millis(250)));
        assert_eq!(Fault::parse("slow:3:250").unwrap().step_delay(2), None);
        assert_eq!(Fault::parse("slowprobe:2").unwrap().probe_repeat(2), SLOW_PROBE_REPEAT);
        assert_eq!(Fault::parse("slowprobe:2").unwrap().probe_repeat(1), 1);
        assert_eq!(Fault::parse("memory:3").unwrap().memory_limit_bytes(), Some(3 << 20));
        assert_eq!((Fault::parse("memory:3").unwrap().rank(), Fault::None.memory_limit_bytes()), (None, None));
        assert!(Fault::parse("explode:1").is_err());
        assert!(Fault::parse("stall").is_err() && Fault::parse("slow:1").is_err() && Fault::parse("stall:1:2").is_err());
    }
}
