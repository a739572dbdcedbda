//! The logic of `ma_cross` 2.0.0: config, state (schema 2), the migrations from and to 1.x and
//! the [`Plugin`] implementation, without the export (so that test fixtures can include this
//! file). The messages are the desk's, shared by every version: [`plugsync_desk`].

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::iter;

use plugsync_desk::{Bar, Cancel, Fill, Order, Orders, StrategyInput, is_price};
use plugsync_plugin::{
    Direction, HostContext, HostTime, Migration, MigrationDoc, Plugin, PluginError, SwapSafety,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The instance's config. Every field may be left out and then takes its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Number of closes the fast moving average spans (default 5).
    pub fast_period: u32,
    /// Number of closes the slow moving average spans (default 20); more than
    /// `fast_period`.
    pub slow_period: u32,
    /// Size of the position the strategy holds, long or short (default 1).
    pub order_qty: u32,
    /// How far apart, relative to the slow average, the averages must be for a signal
    /// (default 0.01: 1%); not negative.
    pub signal_threshold: f64,
}

/// Default of [`Config::signal_threshold`], also given by the migration from 1.x.
pub const DEFAULT_SIGNAL_THRESHOLD: f64 = 0.01;

impl Default for Config {
    fn default() -> Config {
        Config {
            fast_period: 5,
            slow_period: 20,
            order_qty: 1,
            signal_threshold: DEFAULT_SIGNAL_THRESHOLD,
        }
    }
}

impl Config {
    /// Checks that the periods are usable and the quantity is not zero.
    pub fn validate(&self) -> Result<(), PluginError> {
        if self.fast_period == 0 {
            return Err(PluginError::new(
                "invalid config: `fast_period` must be at least 1",
            ));
        }
        if self.fast_period >= self.slow_period {
            return Err(PluginError::new(format!(
                "invalid config: `fast_period` ({}) must be less than `slow_period` ({})",
                self.fast_period, self.slow_period
            )));
        }
        if self.order_qty == 0 {
            return Err(PluginError::new(
                "invalid config: `order_qty` must be at least 1",
            ));
        }
        if !(self.signal_threshold.is_finite() && self.signal_threshold >= 0.0) {
            return Err(PluginError::new(format!(
                "invalid config: `signal_threshold` must be a number >= 0 (0.01 is 1%), not {}",
                self.signal_threshold
            )));
        }
        Ok(())
    }
}

/// The instance's state (state schema 2).
///
/// The parameters are recorded for the reader of a snapshot; on restore the instance keeps the
/// parameters of the config it was created with (so that a reconfigure takes effect).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Fast period in force.
    pub fast_period: u32,
    /// Slow period in force.
    pub slow_period: u32,
    /// Order quantity in force.
    pub order_qty: u32,
    /// Signal threshold in force.
    pub signal_threshold: f64,
    /// Id the next order will carry; ids start at 1 and never repeat.
    pub next_order_id: u64,
    /// What the strategy knows per instrument, by instrument name.
    pub instruments: BTreeMap<String, InstrumentState>,
}

/// What the strategy knows about one instrument.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentState {
    /// The last closes, oldest first: at most `slow_period` of them.
    pub closes: VecDeque<f64>,
    /// Filled position: the sum of the quantities of the fills.
    pub position: i64,
    /// Ordered but neither filled nor cancelled yet (signed like the orders).
    pub pending: i64,
    /// The side the strategy is on: 1 long, -1 short, 0 not decided yet.
    pub side: i8,
}

/// The strategy instance.
#[derive(Debug)]
pub struct MaCross {
    state: State,
}

impl MaCross {
    /// An instance with a fresh state.
    pub fn new(config: Config) -> Result<MaCross, PluginError> {
        config.validate()?;
        Ok(MaCross {
            state: State {
                fast_period: config.fast_period,
                slow_period: config.slow_period,
                order_qty: config.order_qty,
                signal_threshold: config.signal_threshold,
                next_order_id: 1,
                instruments: BTreeMap::new(),
            },
        })
    }

    /// Takes in a bar and returns the order it calls for, if any.
    ///
    /// Nothing changes when it fails.
    pub fn on_bar<'b>(&mut self, bar: &'b Bar<'_>) -> Result<Option<Order<'b>>, PluginError> {
        let slow = self.state.slow_period as usize;
        let fast = self.state.fast_period as usize;
        let order_qty = i64::from(self.state.order_qty);
        let threshold = self.state.signal_threshold;
        let order_id = self.state.next_order_id;
        let instrument = instrument_mut(&mut self.state.instruments, &bar.instrument);

        // The window once this close is in: the last `slow - 1` closes, then this one.
        let kept = instrument.closes.len().min(slow - 1);
        let dropped = instrument.closes.len() - kept;
        let window = || {
            instrument
                .closes
                .iter()
                .skip(dropped)
                .copied()
                .chain(iter::once(bar.close))
        };
        let mut side = instrument.side;
        if kept + 1 == slow {
            let slow_ma = window().sum::<f64>() / slow as f64;
            let fast_ma = window().skip(slow - fast).sum::<f64>() / fast as f64;
            let relative = (fast_ma - slow_ma) / slow_ma;
            if relative > threshold {
                side = 1;
            } else if relative < -threshold {
                side = -1;
            }
        }
        let mut order = None;
        if side != 0 && side != instrument.side {
            let target = i64::from(side) * order_qty;
            let qty = target
                .checked_sub(instrument.position)
                .and_then(|qty| qty.checked_sub(instrument.pending))
                .ok_or_else(|| overflow(&bar.instrument))?;
            if qty != 0 {
                let pending = instrument
                    .pending
                    .checked_add(qty)
                    .ok_or_else(|| overflow(&bar.instrument))?;
                let next_order_id = order_id.checked_add(1).ok_or_else(|| {
                    PluginError::new("order ids are exhausted; restart from a fresh state")
                })?;
                order = Some((qty, pending, next_order_id));
            }
        }

        // Everything that can fail has been checked: apply.
        instrument.closes.drain(..dropped);
        instrument.closes.push_back(bar.close);
        instrument.side = side;
        let Some((qty, pending, next_order_id)) = order else {
            return Ok(None);
        };
        instrument.pending = pending;
        self.state.next_order_id = next_order_id;
        Ok(Some(Order {
            order_id,
            instrument: Cow::Borrowed(&bar.instrument),
            qty,
            limit_price: None,
        }))
    }

    /// Takes in a fill: the position moves by its quantity, which is no longer pending.
    pub fn on_fill(&mut self, fill: &Fill<'_>) -> Result<(), PluginError> {
        let instrument = instrument_mut(&mut self.state.instruments, &fill.instrument);
        let position = instrument.position.checked_add(fill.qty);
        let pending = instrument.pending.checked_sub(fill.qty);
        let (Some(position), Some(pending)) = (position, pending) else {
            return Err(overflow(&fill.instrument));
        };
        instrument.position = position;
        instrument.pending = pending;
        Ok(())
    }

    /// Takes in a cancellation: its quantity is no longer pending.
    pub fn on_cancel(&mut self, cancel: &Cancel<'_>) -> Result<(), PluginError> {
        let instrument = instrument_mut(&mut self.state.instruments, &cancel.instrument);
        instrument.pending = instrument
            .pending
            .checked_sub(cancel.qty)
            .ok_or_else(|| overflow(&cancel.instrument))?;
        Ok(())
    }
}

/// The entry of `name`, created empty when first seen (only then is the name copied).
fn instrument_mut<'m>(
    instruments: &'m mut BTreeMap<String, InstrumentState>,
    name: &str,
) -> &'m mut InstrumentState {
    if !instruments.contains_key(name) {
        instruments.insert(name.to_owned(), InstrumentState::default());
    }
    instruments
        .get_mut(name)
        .expect("the entry exists: it was inserted above")
}

fn overflow(instrument: &str) -> PluginError {
    PluginError::new(format!(
        "quantity overflow on `{instrument}`: the position or pending quantity is out of range"
    ))
}

fn write_orders(output: &mut Vec<u8>, orders: &[Order<'_>]) -> Result<(), PluginError> {
    serde_json::to_writer(output, &Orders::new(orders))
        .map_err(|e| PluginError::new(format!("cannot write the output: {e}")))
}

impl Plugin for MaCross {
    type Config = Config;
    type State = State;

    fn create(config: Config, _host: &HostContext) -> Result<MaCross, PluginError> {
        MaCross::new(config)
    }

    fn call(
        &mut self,
        input: &[u8],
        _now: HostTime,
        output: &mut Vec<u8>,
    ) -> Result<(), PluginError> {
        match StrategyInput::parse(input, serde_json::from_slice).map_err(PluginError::new)? {
            StrategyInput::Bar(bar) => {
                let order = self.on_bar(&bar)?;
                write_orders(output, order.as_slice())
            }
            StrategyInput::Fill(fill) => {
                self.on_fill(&fill)?;
                write_orders(output, &[])
            }
            StrategyInput::Cancel(cancel) => {
                self.on_cancel(&cancel)?;
                write_orders(output, &[])
            }
        }
    }

    fn state(&self) -> &State {
        &self.state
    }

    /// Flat when no instrument has a filled position or an order pending: a `when-flat` update
    /// then carries no open risk across the version change.
    fn swap_safe(&self) -> SwapSafety {
        let open: Vec<String> = (self.state.instruments.iter())
            .filter(|(_, i)| i.position != 0 || i.pending != 0)
            .map(|(name, i)| match (i.position, i.pending) {
                (0, pending) => format!("{pending:+} working in {name}"),
                (position, 0) => format!("a position of {position:+} in {name}"),
                (position, pending) => {
                    format!("a position of {position:+} and {pending:+} working in {name}")
                }
            })
            .collect();
        if open.is_empty() {
            SwapSafety::Safe
        } else {
            SwapSafety::NotSafe(format!("holds {}", open.join(", ")))
        }
    }

    /// Takes the instruments and the order ids from the snapshot and keeps the parameters of
    /// this instance's config; windows longer than its slow period keep their last closes.
    fn restore(&mut self, state: State) -> Result<(), PluginError> {
        let State {
            next_order_id,
            mut instruments,
            ..
        } = state;
        if next_order_id == 0 {
            return Err(PluginError::new(
                "invalid state: `next_order_id` must be at least 1",
            ));
        }
        let slow = self.state.slow_period as usize;
        for (name, instrument) in &mut instruments {
            if name.is_empty() {
                return Err(PluginError::new(
                    "invalid state: an instrument name is empty",
                ));
            }
            if !(-1..=1).contains(&instrument.side) {
                return Err(PluginError::new(format!(
                    "invalid state: `{name}` has side {}; expected -1, 0 or 1",
                    instrument.side
                )));
            }
            if let Some(close) = instrument.closes.iter().find(|close| !is_price(**close)) {
                return Err(PluginError::new(format!(
                    "invalid state: `{name}` has close {close}; closes are positive prices"
                )));
            }
            let excess = instrument.closes.len().saturating_sub(slow);
            instrument.closes.drain(..excess);
        }
        self.state.next_order_id = next_order_id;
        self.state.instruments = instruments;
        Ok(())
    }

    /// Up from 1.x: renames `fast_ma_period`/`slow_ma_period` to `fast_period`/`slow_period`
    /// in config and state and adds `signal_threshold` (the config's, if it has one, else
    /// 0.01). Down to 1.x: the reverse, dropping `signal_threshold`.
    fn migrate(migration: Migration) -> Result<MigrationDoc, PluginError> {
        let Migration {
            from,
            to,
            direction,
            doc,
        } = migration;
        match direction {
            Direction::Up if is_v1(&from) => up_from_v1(doc),
            Direction::Down if is_v1(&to) => down_to_v1(doc),
            Direction::Up => Err(PluginError::new(format!(
                "ma_cross {to} migrates up only from 1.x (>=1.0.0, <2.0.0), not from {from}"
            ))),
            Direction::Down => Err(PluginError::new(format!(
                "ma_cross {from} migrates down only to 1.x (>=1.0.0, <2.0.0), not to {to}"
            ))),
        }
    }
}

/// A 1.x config as a migration document carries it: a field left out has its default.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigV1Doc {
    #[serde(skip_serializing_if = "Option::is_none")]
    fast_ma_period: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slow_ma_period: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_qty: Option<u32>,
    /// Read only: a config written for 2.x may already carry it; never written down.
    #[serde(skip_serializing)]
    signal_threshold: Option<f64>,
}

/// A 2.0 config as a migration document carries it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    fast_period: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slow_period: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_qty: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal_threshold: Option<f64>,
}

/// The 1.x state (schema 1).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateV1 {
    fast_ma_period: u32,
    slow_ma_period: u32,
    order_qty: u32,
    next_order_id: u64,
    instruments: BTreeMap<String, InstrumentState>,
}

fn up_from_v1(doc: MigrationDoc) -> Result<MigrationDoc, PluginError> {
    let config: ConfigV1Doc = parse(doc.config, "1.x config")?;
    let state: StateV1 = parse(doc.state, "1.x state (schema 1)")?;
    let signal_threshold = config.signal_threshold.unwrap_or(DEFAULT_SIGNAL_THRESHOLD);
    let config = ConfigDoc {
        fast_period: config.fast_ma_period,
        slow_period: config.slow_ma_period,
        order_qty: config.order_qty,
        signal_threshold: Some(signal_threshold),
    };
    let state = State {
        fast_period: state.fast_ma_period,
        slow_period: state.slow_ma_period,
        order_qty: state.order_qty,
        signal_threshold,
        next_order_id: state.next_order_id,
        instruments: state.instruments,
    };
    document(&config, &state)
}

fn down_to_v1(doc: MigrationDoc) -> Result<MigrationDoc, PluginError> {
    let config: ConfigDoc = parse(doc.config, "2.0 config")?;
    let state: State = parse(doc.state, "2.0 state (schema 2)")?;
    let config = ConfigV1Doc {
        fast_ma_period: config.fast_period,
        slow_ma_period: config.slow_period,
        order_qty: config.order_qty,
        signal_threshold: None,
    };
    let state = StateV1 {
        fast_ma_period: state.fast_period,
        slow_ma_period: state.slow_period,
        order_qty: state.order_qty,
        next_order_id: state.next_order_id,
        instruments: state.instruments,
    };
    document(&config, &state)
}

/// Whether `version` is a 1.x version (`>=1.0.0, <2.0.0`; a pre-release suffix is ignored).
fn is_v1(version: &str) -> bool {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3 && parts[0] == "1" && parts.iter().all(|p| p.parse::<u64>().is_ok())
}

fn parse<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, PluginError> {
    serde_json::from_value(value)
        .map_err(|e| PluginError::new(format!("cannot migrate: the {what} is invalid: {e}")))
}

fn document(config: &impl Serialize, state: &impl Serialize) -> Result<MigrationDoc, PluginError> {
    let failed =
        |e: serde_json::Error| PluginError::new(format!("cannot write the migrated document: {e}"));
    Ok(MigrationDoc {
        config: serde_json::to_value(config).map_err(failed)?,
        state: serde_json::to_value(state).map_err(failed)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn create(config: Value) -> Result<MaCross, PluginError> {
        MaCross::create(serde_json::from_value(config)?, &HostContext::detached())
    }

    fn send(plugin: &mut MaCross, input: &Value) -> Result<Value, PluginError> {
        let mut output = Vec::new();
        plugin.call(input.to_string().as_bytes(), HostTime(0), &mut output)?;
        Ok(serde_json::from_slice(&output).expect("the output is JSON"))
    }

    fn bar(instrument: &str, close: f64) -> Value {
        json!({"bar": {"instrument": instrument, "close": close}})
    }

    fn fill(order_id: u64, instrument: &str, qty: i64) -> Value {
        json!({"fill": {"order_id": order_id, "instrument": instrument, "qty": qty,
                        "price": 100.0}})
    }

    fn orders(orders: &[(u64, &str, i64)]) -> Value {
        let orders: Vec<Value> = orders
            .iter()
            .map(|(id, instrument, qty)| {
                json!({"order_id": id, "instrument": instrument, "qty": qty})
            })
            .collect();
        json!({ "orders": orders })
    }

    /// Feeds `steps` (input, expected output) in order, naming the step that differs.
    fn run(plugin: &mut MaCross, steps: &[(Value, Value)]) {
        for (i, (input, expected)) in steps.iter().enumerate() {
            let output = send(plugin, input).unwrap_or_else(|e| panic!("step {i}: {e}"));
            assert_eq!(&output, expected, "step {i}: {input}");
        }
    }

    #[test]
    fn config_defaults_and_validation() {
        let cases = [
            (json!({}), Ok((5, 20, 1))),
            (
                json!({"fast_period": 2, "slow_period": 3, "order_qty": 4}),
                Ok((2, 3, 4)),
            ),
            (
                json!({"slow_period": 5}),
                Err("`fast_period` (5) must be less than `slow_period` (5)"),
            ),
            (
                json!({"fast_period": 0}),
                Err("`fast_period` must be at least 1"),
            ),
            (
                json!({"order_qty": 0}),
                Err("`order_qty` must be at least 1"),
            ),
            (
                json!({"signal_threshold": -0.5}),
                Err("`signal_threshold` must be a number >= 0"),
            ),
            (
                json!({"fast_ma_period": 3}),
                Err("unknown field `fast_ma_period`"),
            ),
        ];
        for (config, expected) in cases {
            match (create(config.clone()), expected) {
                (Ok(plugin), Ok((fast, slow, qty))) => {
                    let state = plugin.state();
                    assert_eq!(
                        (state.fast_period, state.slow_period, state.order_qty),
                        (fast, slow, qty)
                    );
                }
                (Err(error), Err(message)) => {
                    assert!(error.message().contains(message), "{config}: {error}");
                }
                (result, expected) => panic!("{config}: got {result:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn crossovers_emit_orders_and_fills_move_the_position() {
        let mut plugin = create(json!({"fast_period": 2, "slow_period": 3})).unwrap();
        run(
            &mut plugin,
            &[
                (bar("ES", 10.0), orders(&[])),
                (bar("ES", 10.0), orders(&[])),
                // Full window, fast == slow: no side yet.
                (bar("ES", 10.0), orders(&[])),
                // [10, 10, 13]: fast 11.5 > slow 11: go long.
                (bar("ES", 13.0), orders(&[(1, "ES", 1)])),
                (fill(1, "ES", 1), orders(&[])),
                // [10, 13, 7]: fast 10 == slow 10: keep the side.
                (bar("ES", 7.0), orders(&[])),
                // [13, 7, 4]: fast 5.5 < slow 8: from long 1 to short 1.
                (bar("ES", 4.0), orders(&[(2, "ES", -2)])),
                // Another instrument has its own window.
                (bar("NQ", 1.0), orders(&[])),
                (fill(2, "ES", -2), orders(&[])),
            ],
        );
        let es = &plugin.state().instruments["ES"];
        assert_eq!(es.closes, [13.0, 7.0, 4.0]);
        assert_eq!((es.position, es.pending, es.side), (-1, 0, -1));
        assert_eq!(plugin.state().next_order_id, 3);
    }

    #[test]
    fn pending_quantities_count_towards_the_target() {
        let mut plugin =
            create(json!({"fast_period": 1, "slow_period": 2, "order_qty": 3})).unwrap();
        run(
            &mut plugin,
            &[
                (bar("ES", 10.0), orders(&[])),
                (bar("ES", 11.0), orders(&[(1, "ES", 3)])),
                // Not filled yet: the reversal orders 6, not 3.
                (bar("ES", 9.0), orders(&[(2, "ES", -6)])),
                (fill(1, "ES", 3), orders(&[])),
                (fill(2, "ES", -4), orders(&[])),
                (
                    json!({"cancel": {"order_id": 2, "instrument": "ES", "qty": -2}}),
                    orders(&[]),
                ),
                // Short 1 instead of 3 (2 were cancelled): the next reversal buys 4.
                (bar("ES", 12.0), orders(&[(3, "ES", 4)])),
            ],
        );
        let es = &plugin.state().instruments["ES"];
        assert_eq!((es.position, es.pending, es.side), (-1, 4, 1));
    }

    #[test]
    fn fills_of_unknown_instruments_and_orders_are_positions_too() {
        let mut plugin = create(json!({})).unwrap();
        run(&mut plugin, &[(fill(99, "CL", -2), orders(&[]))]);
        let cl = &plugin.state().instruments["CL"];
        assert_eq!((cl.position, cl.pending), (-2, 2));
    }

    #[test]
    fn bad_input_is_an_error_and_changes_nothing() {
        let cases = [
            (json!("bar"), "invalid input"),
            (
                json!({"quote": {"instrument": "ES"}}),
                "unknown variant `quote`",
            ),
            (
                json!({"bar": {"instrument": "ES"}}),
                "missing field `close`",
            ),
            (
                json!({"bar": {"instrument": "", "close": 1.0}}),
                "invalid bar: `instrument` is empty",
            ),
            (
                json!({"bar": {"instrument": "ES", "close": -1.0}}),
                "invalid bar: `close` must be a positive price",
            ),
            (
                json!({"fill": {"order_id": 1, "instrument": "ES", "qty": 0, "price": 1.0}}),
                "invalid fill: `qty` must not be zero",
            ),
            (
                json!({"fill": {"order_id": 1, "instrument": "ES", "qty": 1, "price": 0.0}}),
                "invalid fill: `price` must be a positive price",
            ),
            (
                json!({"fill": {"order_id": -1, "instrument": "ES", "qty": 1, "price": 1.0}}),
                "invalid input",
            ),
            (
                json!({"cancel": {"order_id": 1, "instrument": "ES", "qty": 0}}),
                "invalid cancel: `qty` must not be zero",
            ),
        ];
        let mut plugin = create(json!({})).unwrap();
        for (input, message) in cases {
            let error = send(&mut plugin, &input).unwrap_err();
            assert!(error.message().contains(message), "{input}: {error}");
        }
        assert!(plugin.state().instruments.is_empty());
        let mut output = Vec::new();
        let error = plugin
            .call(b"{not json", HostTime(0), &mut output)
            .unwrap_err();
        assert!(error.message().starts_with("invalid input: "), "{error}");
    }

    #[test]
    fn unknown_message_fields_are_ignored() {
        let mut plugin = create(json!({})).unwrap();
        let input = json!({"bar": {"instrument": "ES", "close": 1.0, "volume": 12}});
        assert_eq!(send(&mut plugin, &input).unwrap(), orders(&[]));
    }

    #[test]
    fn overflowing_positions_are_refused() {
        let mut plugin = create(json!({})).unwrap();
        send(&mut plugin, &fill(1, "ES", i64::MAX)).unwrap();
        let error = send(&mut plugin, &fill(2, "ES", 1)).unwrap_err();
        assert!(
            error.message().contains("quantity overflow on `ES`"),
            "{error}"
        );
        assert_eq!(plugin.state().instruments["ES"].position, i64::MAX);
    }

    #[test]
    fn a_restored_snapshot_continues_exactly() {
        let config = json!({"fast_period": 2, "slow_period": 4});
        let inputs: Vec<Value> = [10.0, 10.5, 9.75, 11.125, 12.0, 8.5, 8.25]
            .into_iter()
            .map(|close| bar("ES", close))
            .collect();
        let (head, tail) = inputs.split_at(3);
        let mut original = create(config.clone()).unwrap();
        for input in head {
            send(&mut original, input).unwrap();
        }
        let snapshot = serde_json::to_vec(original.state()).unwrap();
        let mut restored = create(config).unwrap();
        restored
            .restore(serde_json::from_slice(&snapshot).unwrap())
            .unwrap();
        assert_eq!(restored.state(), original.state());
        for input in tail {
            assert_eq!(
                send(&mut restored, input).unwrap(),
                send(&mut original, input).unwrap()
            );
        }
        assert_eq!(restored.state(), original.state());
    }

    #[test]
    fn restore_keeps_the_config_of_the_instance() {
        let mut plugin = create(json!({"fast_period": 1, "slow_period": 2})).unwrap();
        let snapshot = json!({
            "fast_period": 2, "slow_period": 3, "order_qty": 1, "signal_threshold": 0.5,
            "next_order_id": 7,
            "instruments": {"ES": {"closes": [1.0, 2.0, 3.0], "position": 1, "pending": 0,
                                   "side": 1}}
        });
        plugin
            .restore(serde_json::from_value(snapshot).unwrap())
            .unwrap();
        let state = plugin.state();
        assert_eq!(
            (state.fast_period, state.slow_period, state.next_order_id),
            (1, 2, 7)
        );
        assert_eq!(state.instruments["ES"].closes, [2.0, 3.0]);
    }

    #[test]
    fn restore_refuses_inconsistent_state() {
        let cases = [
            (
                json!({"next_order_id": 0, "instruments": {}}),
                "`next_order_id` must be at least 1",
            ),
            (
                json!({"next_order_id": 1, "instruments": {"ES": {"closes": [], "position": 0,
                    "pending": 0, "side": 2}}}),
                "`ES` has side 2",
            ),
            (
                json!({"next_order_id": 1, "instruments": {"ES": {"closes": [0.0], "position": 0,
                    "pending": 0, "side": 0}}}),
                "`ES` has close 0",
            ),
        ];
        for (fields, message) in cases {
            let mut snapshot = json!({
                "fast_period": 5, "slow_period": 20, "order_qty": 1, "signal_threshold": 0.01
            });
            snapshot
                .as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            let mut plugin = create(json!({})).unwrap();
            let error = plugin
                .restore(serde_json::from_value(snapshot).unwrap())
                .unwrap_err();
            assert!(error.message().contains(message), "{error}");
        }
    }

    #[test]
    fn moves_within_the_signal_threshold_keep_the_side() {
        let config = json!({"fast_period": 1, "slow_period": 2, "signal_threshold": 0.1});
        let mut plugin = create(config).unwrap();
        run(
            &mut plugin,
            &[
                (bar("ES", 10.0), orders(&[])),
                // [10, 10.5]: +2.4%, [10.5, 12]: +6.7%, [12, 14]: +7.7%: within 10%.
                (bar("ES", 10.5), orders(&[])),
                (bar("ES", 12.0), orders(&[])),
                (bar("ES", 14.0), orders(&[])),
                // [14, 20]: +17.6%.
                (bar("ES", 20.0), orders(&[(1, "ES", 1)])),
                // [20, 19]: -2.6%: still long.
                (bar("ES", 19.0), orders(&[])),
                // [19, 15]: -11.8%.
                (bar("ES", 15.0), orders(&[(2, "ES", -2)])),
            ],
        );
    }

    fn migration(from: &str, to: &str, direction: Direction, doc: &Value) -> Migration {
        Migration {
            from: from.to_owned(),
            to: to.to_owned(),
            direction,
            doc: serde_json::from_value(doc.clone()).unwrap(),
        }
    }

    fn v1_state() -> Value {
        json!({
            "fast_ma_period": 3, "slow_ma_period": 8, "order_qty": 2, "next_order_id": 4,
            "instruments": {"ES": {"closes": [1.5, 2.5], "position": 2, "pending": -1, "side": 1}}
        })
    }

    fn v2_state(signal_threshold: f64) -> Value {
        json!({
            "fast_period": 3, "slow_period": 8, "order_qty": 2,
            "signal_threshold": signal_threshold, "next_order_id": 4,
            "instruments": {"ES": {"closes": [1.5, 2.5], "position": 2, "pending": -1, "side": 1}}
        })
    }

    #[test]
    fn migrates_up_from_1x_and_down_again() {
        // (1.x document, 2.0 document): up maps the first to the second, down the second to
        // the first.
        let cases = [
            (
                json!({"config": {"fast_ma_period": 3, "slow_ma_period": 8, "order_qty": 2},
                       "state": v1_state()}),
                json!({"config": {"fast_period": 3, "slow_period": 8, "order_qty": 2,
                                  "signal_threshold": 0.01},
                       "state": v2_state(0.01)}),
            ),
            (
                json!({"config": {}, "state": v1_state()}),
                json!({"config": {"signal_threshold": 0.01}, "state": v2_state(0.01)}),
            ),
        ];
        for (v1, v2) in cases {
            let up = MaCross::migrate(migration("1.0.0", "2.0.0", Direction::Up, &v1)).unwrap();
            assert_eq!(serde_json::to_value(up).unwrap(), v2);
            let down = MaCross::migrate(migration("2.0.0", "1.0.0", Direction::Down, &v2)).unwrap();
            assert_eq!(serde_json::to_value(down).unwrap(), v1);
        }
    }

    #[test]
    fn migration_up_keeps_a_signal_threshold_the_config_gives() {
        let v1 = json!({"config": {"signal_threshold": 0.05}, "state": v1_state()});
        let up = MaCross::migrate(migration("1.0.0", "2.0.0", Direction::Up, &v1)).unwrap();
        let expected = json!({"config": {"signal_threshold": 0.05}, "state": v2_state(0.05)});
        assert_eq!(serde_json::to_value(up).unwrap(), expected);
    }

    #[test]
    fn a_migrated_instance_carries_on() {
        let v1 = json!({"config": {"fast_ma_period": 1, "slow_ma_period": 2}, "state": {
            "fast_ma_period": 1, "slow_ma_period": 2, "order_qty": 1, "next_order_id": 2,
            "instruments": {"ES": {"closes": [10.0, 11.0], "position": 1, "pending": 0, "side": 1}}
        }});
        let up = MaCross::migrate(migration("1.0.0", "2.0.0", Direction::Up, &v1)).unwrap();
        let mut plugin = create(up.config).unwrap();
        plugin
            .restore(serde_json::from_value(up.state).unwrap())
            .unwrap();
        run(&mut plugin, &[(bar("ES", 5.0), orders(&[(2, "ES", -2)]))]);
    }

    #[test]
    fn migrations_refuse_other_versions_and_invalid_documents() {
        let v1 = json!({"config": {}, "state": v1_state()});
        let cases = [
            (
                migration("2.1.0", "2.0.0", Direction::Up, &v1),
                "ma_cross 2.0.0 migrates up only from 1.x (>=1.0.0, <2.0.0), not from 2.1.0",
            ),
            (
                migration("2.0.0", "0.9.0", Direction::Down, &v1),
                "ma_cross 2.0.0 migrates down only to 1.x (>=1.0.0, <2.0.0), not to 0.9.0",
            ),
            (
                migration("1.x", "2.0.0", Direction::Up, &v1),
                "not from 1.x",
            ),
            (
                migration(
                    "1.0.0",
                    "2.0.0",
                    Direction::Up,
                    &json!({"config": {}, "state": {}}),
                ),
                "the 1.x state (schema 1) is invalid: missing field",
            ),
            (
                migration("2.0.0", "1.0.0", Direction::Down, &v1),
                "the 2.0 state (schema 2) is invalid: unknown field `fast_ma_period`",
            ),
        ];
        for (migration, message) in cases {
            let error = MaCross::migrate(migration).unwrap_err();
            assert!(error.message().contains(message), "{error}");
        }
    }
}
