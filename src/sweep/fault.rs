//! Test hooks, off unless H200_MPIBENCH_FAULT is set: make one rank misbehave so the tests can
//! prove that a wrong result is counted and that a stuck rank cannot hang the job.
//! `corrupt:R` flips one bit of rank R's output before each check; `stall:R` makes rank R stop
//! before its first timed batch.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    Corrupt(usize),
    Stall(usize),
}

pub const VARIABLE: &str = "H200_MPIBENCH_FAULT";

impl Fault {
    pub fn from_env() -> Result<Fault, String> {
        match std::env::var(VARIABLE) {
            Err(_) => Ok(Fault::None),
            Ok(text) => Fault::parse(&text),
        }
    }

    fn parse(text: &str) -> Result<Fault, String> {
        let bad = || format!("{VARIABLE}={text}: expected corrupt:RANK or stall:RANK");
        let (kind, rank) = text.split_once(':').ok_or_else(bad)?;
        let rank: usize = rank.parse().map_err(|_| bad())?;
        match kind {
            "corrupt" => Ok(Fault::Corrupt(rank)),
            "stall" => Ok(Fault::Stall(rank)),
            _ => Err(bad()),
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
        assert!(Fault::parse("explode:1").is_err());
        assert!(Fault::parse("stall").is_err());
    }
}
