//! The results table of a chaos run, and the replay command of a failing one.

use crate::checkers::Violation;

/// What one scenario run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: String,
    pub seed: u64,
    pub faults: usize,
    pub acked: u64,
    /// Acknowledged points lost by Starling.
    pub lost: usize,
    /// Acknowledged points lost in a broker crash (the broker's promise, reported apart).
    pub broker_lost: usize,
    pub violations: Vec<Violation>,
    /// The slowest heal → first durable write, ms.
    pub recovery_ms: Option<i64>,
}

/// The command that replays `scenario` with `seed`.
pub fn replay_command(scenario: &str, seed: u64) -> String {
    format!("cargo run -p chaos-tests --release -- run --scenario {scenario} --seed {seed}")
}

/// A Markdown table (it reads in a terminal and pastes into the README).
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| scenario | seed | faults | acked | lost | broker-lost | violations | recovery (max) |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            o.scenario,
            o.seed,
            o.faults,
            o.acked,
            o.lost,
            o.broker_lost,
            o.violations.len(),
            o.recovery_ms
                .map_or("-".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_replay() {
        let o = Outcome {
            scenario: "kill".into(),
            seed: 7,
            faults: 3,
            acked: 1200,
            lost: 0,
            broker_lost: 2,
            violations: vec![],
            recovery_ms: Some(2500),
        };
        let t = table(&[o]);
        assert!(
            t.ends_with("| kill | 7 | 3 | 1200 | 0 | 2 | 0 | 2.5 s |\n"),
            "{t}"
        );
        assert_eq!(
            replay_command("kill", 7),
            "cargo run -p chaos-tests --release -- run --scenario kill --seed 7"
        );
    }
}
