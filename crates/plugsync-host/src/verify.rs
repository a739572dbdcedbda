//! Verification of a new version before it takes traffic, on throwaway instances only.
//!
//! - **health** of the new version restored from the live state, migrated (what would serve);
//! - **probes**: input → expected output, from a given state or a fresh instance (output on
//!   live state cannot be predicted);
//! - **differential**: a clone of the old version and a migrated clone of the new one, both
//!   restored from the same snapshot, get the same inputs; their outputs are shown side by side.
//!
//! Nothing live is touched: the live instance is only snapshotted.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::library::{Instance, Library};

/// What to check before a switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// Check the health of the new version restored from the migrated live state.
    #[serde(default = "yes")]
    pub health: bool,
    /// Input → expected output checks.
    #[serde(default)]
    pub probes: Vec<Probe>,
    /// Inputs fed to both versions from the same snapshot, outputs compared.
    #[serde(default)]
    pub differential: Vec<Value>,
}

fn yes() -> bool {
    true
}

impl Default for VerifySpec {
    fn default() -> Self {
        VerifySpec {
            health: true,
            probes: Vec::new(),
            differential: Vec::new(),
        }
    }
}

/// A sequence of inputs fed to a throwaway instance, with the outputs expected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Name shown in reports.
    pub name: String,
    /// State to start from (of the new version's schema); a fresh instance when absent.
    #[serde(default)]
    pub state: Option<Value>,
    /// The inputs, in order.
    pub steps: Vec<ProbeStep>,
}

/// One input of a probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ProbeStep {
    /// The input (sent as JSON).
    pub input: Value,
    /// The output expected (compared as JSON); unchecked when absent.
    #[serde(default)]
    pub expect: Option<Value>,
}

/// A probe step whose output was not the one expected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct ProbeMismatch {
    /// Index of the step.
    pub step: usize,
    /// Its input.
    pub input: Value,
    /// What was expected.
    pub expected: Value,
    /// What came out (or the error).
    pub actual: Result<Value, String>,
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct ProbeOutcome {
    /// The probe's name.
    pub name: String,
    /// Steps whose output differed.
    pub mismatches: Vec<ProbeMismatch>,
    /// An error that stopped the probe (creating or restoring the instance).
    pub error: Option<String>,
}

impl ProbeOutcome {
    /// Whether the probe passed.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty() && self.error.is_none()
    }
}

/// One input of the differential check, with both versions' outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct DifferentialRow {
    /// The input.
    pub input: Value,
    /// Output of the running version's clone.
    pub old: Result<Value, String>,
    /// Output of the new version's migrated clone.
    pub new: Result<Value, String>,
}

impl DifferentialRow {
    /// Whether both versions answered the same.
    pub fn agrees(&self) -> bool {
        self.old == self.new
    }
}

/// Everything verification found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct VerifyReport {
    /// Health of the migrated clone: `Ok` or the reason it gave.
    pub health: Option<Result<(), String>>,
    /// Each probe.
    pub probes: Vec<ProbeOutcome>,
    /// The differential check, side by side (differences are shown, not failures).
    pub differential: Vec<DifferentialRow>,
}

impl VerifyReport {
    /// Whether the new version may be switched in.
    pub fn passed(&self) -> bool {
        !matches!(self.health, Some(Err(_))) && self.probes.iter().all(ProbeOutcome::passed)
    }

    /// One line per failure, for error messages.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        if let Some(Err(reason)) = &self.health {
            let _ = write!(out, "health check failed: {reason}; ");
        }
        for probe in &self.probes {
            if let Some(error) = &probe.error {
                let _ = write!(out, "probe `{}` could not run: {error}; ", probe.name);
            }
            for m in &probe.mismatches {
                let actual = match &m.actual {
                    Ok(value) => value.to_string(),
                    Err(error) => format!("error `{error}`"),
                };
                let _ = write!(
                    out,
                    "probe `{}` step {}: expected {}, got {actual}; ",
                    probe.name, m.step, m.expected
                );
            }
        }
        if out.is_empty() {
            "all checks passed".to_owned()
        } else {
            out.truncate(out.len() - 2);
            out
        }
    }
}

/// What verification needs: both versions, the live snapshot and its migration.
pub(crate) struct Subject<'a> {
    pub old_library: &'a Arc<Library>,
    pub old_config: &'a [u8],
    pub snapshot: &'a [u8],
    pub new_library: &'a Arc<Library>,
    pub new_config: &'a [u8],
    pub migrated_state: &'a [u8],
    pub now_ns: i64,
}

fn call_json(instance: &mut Instance, input: &Value, now_ns: i64) -> Result<Value, String> {
    let bytes = serde_json::to_vec(input).map_err(|e| e.to_string())?;
    let output = instance.call(&bytes, now_ns).map_err(|f| f.message)?;
    serde_json::from_slice(output)
        .or_else(|_| Ok(Value::String(String::from_utf8_lossy(output).into_owned())))
}

fn instance(
    library: &Arc<Library>,
    config: &[u8],
    state: Option<&[u8]>,
) -> Result<Instance, String> {
    let mut instance = Instance::create(library.clone(), config)
        .map_err(|f| format!("`create` failed: {}", f.message))?;
    if let Some(state) = state {
        instance
            .restore(state)
            .map_err(|f| format!("`restore` failed: {}", f.message))?;
    }
    Ok(instance)
}

/// Runs the checks of `spec`.
pub(crate) fn run(spec: &VerifySpec, subject: &Subject<'_>) -> VerifyReport {
    let mut report = VerifyReport::default();
    let migrated = instance(
        subject.new_library,
        subject.new_config,
        Some(subject.migrated_state),
    );
    if spec.health {
        report.health = Some(match &migrated {
            Ok(instance) => instance.health().map_err(|f| f.message),
            Err(error) => Err(error.clone()),
        });
    }
    for probe in &spec.probes {
        let state = probe
            .state
            .as_ref()
            .map(|s| serde_json::to_vec(s).unwrap_or_default());
        let mut outcome = ProbeOutcome {
            name: probe.name.clone(),
            mismatches: Vec::new(),
            error: None,
        };
        match instance(subject.new_library, subject.new_config, state.as_deref()) {
            Err(error) => outcome.error = Some(error),
            Ok(mut instance) => {
                for (step, probe_step) in probe.steps.iter().enumerate() {
                    let actual = call_json(&mut instance, &probe_step.input, subject.now_ns);
                    if let Some(expected) = &probe_step.expect
                        && actual.as_ref() != Ok(expected)
                    {
                        outcome.mismatches.push(ProbeMismatch {
                            step,
                            input: probe_step.input.clone(),
                            expected: expected.clone(),
                            actual,
                        });
                    }
                }
            }
        }
        report.probes.push(outcome);
    }
    if !spec.differential.is_empty() {
        let old = instance(
            subject.old_library,
            subject.old_config,
            Some(subject.snapshot),
        );
        let new = instance(
            subject.new_library,
            subject.new_config,
            Some(subject.migrated_state),
        );
        match (old, new) {
            (Ok(mut old), Ok(mut new)) => {
                for input in &spec.differential {
                    report.differential.push(DifferentialRow {
                        input: input.clone(),
                        old: call_json(&mut old, input, subject.now_ns),
                        new: call_json(&mut new, input, subject.now_ns),
                    });
                }
            }
            (old, new) => {
                let error = |side: Result<Instance, String>| side.err().unwrap_or_default();
                let (old_error, new_error) = (error(old), error(new));
                for input in &spec.differential {
                    report.differential.push(DifferentialRow {
                        input: input.clone(),
                        old: Err(old_error.clone()),
                        new: Err(new_error.clone()),
                    });
                }
            }
        }
    }
    report
}
