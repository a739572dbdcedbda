//! The operations behind the commands: each command is a thin handler over one function here,
//! which tests call directly.

mod demo;
mod inspect;

pub use demo::{DemoOptions, DemoOutcome, StepOutcome, demo};
pub use inspect::{InspectFormat, inspect};
