//! How far the planner searches before it gives up.

use serde::Serialize;

/// How far the planner searches: how many paths per plugin, how many states when ordering.
///
/// Both bound work that grows with the registry and the set, so a plan always comes back in
/// bounded time; the defaults plan thousands of plugins in well under a second, and an
/// operator whose set needs more raises them (the CLI will expose them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchLimits {
    /// How many of a plugin's cheapest upgrade paths the ordering may choose from
    /// ([`SearchLimits::DEFAULT_K_PATHS`], 3). One is the cheapest path alone; more let the
    /// order route a plugin through other intermediates when its cheapest path is blocked by
    /// another plugin's requirements.
    pub k_paths: usize,
    /// How many states the ordering may visit before it reports
    /// [`PlanError::SearchBudgetExhausted`](super::PlanError::SearchBudgetExhausted)
    /// ([`SearchLimits::DEFAULT_NODE_BUDGET`], 100,000). A plan whose greedy order works visits
    /// one state per step.
    pub node_budget: usize,
}

impl SearchLimits {
    /// The default [`k_paths`](SearchLimits::k_paths).
    pub const DEFAULT_K_PATHS: usize = 3;
    /// The default [`node_budget`](SearchLimits::node_budget).
    pub const DEFAULT_NODE_BUDGET: usize = 100_000;
}

impl Default for SearchLimits {
    fn default() -> SearchLimits {
        SearchLimits {
            k_paths: SearchLimits::DEFAULT_K_PATHS,
            node_budget: SearchLimits::DEFAULT_NODE_BUDGET,
        }
    }
}
