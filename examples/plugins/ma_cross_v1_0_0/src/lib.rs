//! ma_cross 1.0.0 (scratch for SDK bring-up).
use plugsync_plugin::{HostContext, HostTime, Plugin, PluginError};
use serde::{Deserialize, Serialize};

/// Config.
#[derive(Deserialize)]
pub struct Config { fast_ma_period: usize }
/// State.
#[derive(Serialize, Deserialize)]
pub struct State { fast_ma_period: usize, n: u64 }
/// Plugin.
pub struct MaCross { state: State }
impl Plugin for MaCross {
    type Config = Config;
    type State = State;
    fn create(config: Config, _host: &HostContext) -> Result<Self, PluginError> {
        Ok(MaCross { state: State { fast_ma_period: config.fast_ma_period, n: 0 } })
    }
    fn call(&mut self, input: &[u8], _now: HostTime, output: &mut Vec<u8>) -> Result<(), PluginError> {
        if input == b"panic" { panic!("boom"); }
        self.state.n += 1;
        output.extend_from_slice(input);
        Ok(())
    }
    fn state(&self) -> &State { &self.state }
    fn restore(&mut self, state: State) -> Result<(), PluginError> { self.state = state; Ok(()) }
}
plugsync_plugin::export_plugin!(MaCross {
    id: "ma_cross",
    version: "1.0.0",
    kind: "strategy",
    state_schema: 1,
    framework: ">=0.1, <1",
    dependencies: { "risk_model": ">=1.0, <2" },
    migrates_from: [],
    downgrades_to: [],
});
