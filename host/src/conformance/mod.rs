//! Plugin conformance (DESIGN §7): `monoize plugin check <world> <file.wasm>` loads a component
//! exactly as the gateway would — same engine, linker and limits — and runs its world's suite
//! against fixtures written into an in-memory database. The suites check contracts, not one
//! policy; `--reference` adds the semantics the default plugins promise.

pub mod billing;
pub mod dashboard;
pub mod fixtures;
pub mod router;

use std::fmt::Write as _;

use serde_json::json;

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The plugin met the contract.
    Passed,
    /// It did not; the reason says how.
    Failed(String),
    /// Not run, because an earlier check it needs failed.
    Skipped(String),
}

/// One named check and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The check's stable name (`legal-plans`, …).
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
}

/// A suite's results for one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The world checked (`router`, …).
    pub world: &'static str,
    /// The plugin's name (its file).
    pub plugin: String,
    /// Every check, in order.
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// How many checks passed.
    pub fn passed(&self) -> usize {
        self.count(|outcome| matches!(outcome, Outcome::Passed))
    }

    /// How many checks failed.
    pub fn failed(&self) -> usize {
        self.count(|outcome| matches!(outcome, Outcome::Failed(_)))
    }

    /// How many checks were skipped.
    pub fn skipped(&self) -> usize {
        self.count(|outcome| matches!(outcome, Outcome::Skipped(_)))
    }

    /// Whether the plugin may be deployed: nothing failed or was skipped.
    pub fn all_passed(&self) -> bool {
        self.passed() == self.checks.len()
    }

    /// The names of the failed checks.
    pub fn failures(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|check| matches!(check.outcome, Outcome::Failed(_)))
            .map(|check| check.name)
            .collect()
    }

    fn count(&self, matches: impl Fn(&Outcome) -> bool) -> usize {
        self.checks
            .iter()
            .filter(|check| matches(&check.outcome))
            .count()
    }

    /// One line per check and a closing `N passed, M failed` line.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for check in &self.checks {
            let _ = match &check.outcome {
                Outcome::Passed => writeln!(text, "ok   {}", check.name),
                Outcome::Failed(reason) => {
                    writeln!(text, "FAIL {}: {}", check.name, one_line(reason))
                }
                Outcome::Skipped(reason) => {
                    writeln!(text, "skip {}: {}", check.name, one_line(reason))
                }
            };
        }
        let _ = write!(text, "{} passed, {} failed", self.passed(), self.failed());
        if self.skipped() > 0 {
            let _ = write!(text, ", {} skipped", self.skipped());
        }
        text.push('\n');
        text
    }

    /// The report as JSON, for machines.
    pub fn to_json(&self) -> serde_json::Value {
        let checks: Vec<serde_json::Value> = self
            .checks
            .iter()
            .map(|check| match &check.outcome {
                Outcome::Passed => json!({"name": check.name, "status": "passed"}),
                Outcome::Failed(reason) => {
                    json!({"name": check.name, "status": "failed", "reason": reason})
                }
                Outcome::Skipped(reason) => {
                    json!({"name": check.name, "status": "skipped", "reason": reason})
                }
            })
            .collect();
        json!({
            "world": self.world,
            "plugin": self.plugin,
            "passed": self.passed(),
            "failed": self.failed(),
            "skipped": self.skipped(),
            "checks": checks,
        })
    }
}

/// What a check answers: `Err` with the reason it failed.
pub(crate) type CheckOutcome = Result<(), String>;

/// A world's suite over a loaded plugin.
pub(crate) trait Suite {
    /// Runs the check `name` (never `loads`, which loading the plugin decided).
    async fn run(&self, name: &str) -> CheckOutcome;
}

/// The runner every world's suite shares: `loads` passes when `loaded` is a suite, and then
/// every other check of `names` runs in order; when the component did not load, `loads` fails
/// with the reason and the rest are skipped.
pub(crate) async fn run_checks<S: Suite>(
    world: &'static str,
    plugin: &str,
    names: &[&'static str],
    loaded: Result<S, String>,
) -> Report {
    let mut checks = Vec::with_capacity(names.len());
    match loaded {
        Ok(suite) => {
            for &name in names {
                let outcome = if name == "loads" {
                    Outcome::Passed
                } else {
                    match suite.run(name).await {
                        Ok(()) => Outcome::Passed,
                        Err(reason) => Outcome::Failed(reason),
                    }
                };
                checks.push(CheckResult { name, outcome });
            }
        }
        Err(reason) => {
            for &name in names {
                let outcome = if name == "loads" {
                    Outcome::Failed(reason.clone())
                } else {
                    Outcome::Skipped("the component did not load".to_owned())
                };
                checks.push(CheckResult { name, outcome });
            }
        }
    }
    Report {
        world,
        plugin: plugin.to_owned(),
        checks,
    }
}

/// `text` on one line, at most 500 characters: a reason may quote a hostile model name.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(500) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}
