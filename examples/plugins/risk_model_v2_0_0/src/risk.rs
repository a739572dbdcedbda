//! The logic of `risk_model` 2.0.0: config, state (schema 2), the migrations from and to 1.x
//! and the [`Plugin`] implementation, without the export. The messages are the desk's, shared
//! by every version: [`plugsync_desk`] (2.0.0 is the first to use an order's `limit_price`).

use std::collections::BTreeMap;

use plugsync_desk::{Ack, Cancel, Fill, Order, RiskInput, Verdict, is_price};
use plugsync_plugin::{
    Direction, HostContext, HostTime, Migration, MigrationDoc, Plugin, PluginError,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The instance's config. A field left out takes its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Largest position allowed per instrument, long or short (default 10).
    pub max_position: u64,
    /// Largest notional (position × limit price) allowed per instrument, either way (default
    /// 1000000.0); checked for orders that carry a limit price.
    pub max_notional: f64,
}

/// Default of [`Config::max_notional`], also given by the migration from 1.x.
pub const DEFAULT_MAX_NOTIONAL: f64 = 1_000_000.0;

impl Default for Config {
    fn default() -> Config {
        Config {
            max_position: 10,
            max_notional: DEFAULT_MAX_NOTIONAL,
        }
    }
}

impl Config {
    /// Checks that the notional limit is a number.
    pub fn validate(&self) -> Result<(), PluginError> {
        if !(self.max_notional.is_finite() && self.max_notional >= 0.0) {
            return Err(PluginError::new(format!(
                "invalid config: `max_notional` must be a number >= 0, not {}",
                self.max_notional
            )));
        }
        Ok(())
    }
}

/// The instance's state (state schema 2).
///
/// The limits are recorded for the reader of a snapshot; on restore the instance keeps the
/// limits of the config it was created with (so that a reconfigure takes effect).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Limits in force.
    pub limits: Limits,
    /// Number of orders rejected since the state began.
    pub rejected: u64,
    /// Exposure per instrument, by instrument name.
    pub instruments: BTreeMap<String, InstrumentState>,
}

/// The limits a risk model enforces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest position per instrument, either way.
    pub max_position: u64,
    /// Largest notional per instrument, either way.
    pub max_notional: f64,
}

/// What the risk model records about one instrument.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentState {
    /// Filled position: the sum of the quantities of the fills.
    pub exposure: i64,
    /// Approved but neither filled nor cancelled yet (signed like the orders).
    pub reserved: i64,
    /// Price of the last fill; null before the first.
    pub last_price: Option<f64>,
    /// `exposure × last_price` after the last fill (0 before the first).
    pub notional: f64,
}

/// The risk model instance.
#[derive(Debug)]
pub struct RiskModel {
    state: State,
}

impl RiskModel {
    /// An instance with a fresh state.
    pub fn new(config: Config) -> Result<RiskModel, PluginError> {
        config.validate()?;
        Ok(RiskModel {
            state: State {
                limits: Limits {
                    max_position: config.max_position,
                    max_notional: config.max_notional,
                },
                rejected: 0,
                instruments: BTreeMap::new(),
            },
        })
    }

    /// Checks an order: approves it and reserves its quantity when the position it would lead
    /// to is within the position limit and, for an order with a limit price, its notional at
    /// that price within the notional limit; rejects it (and counts the rejection) otherwise.
    ///
    /// Nothing changes when it fails.
    pub fn check(&mut self, check: &Order<'_>) -> Result<Verdict, PluginError> {
        let (exposure, reserved) = self
            .state
            .instruments
            .get(&*check.instrument)
            .map_or((0, 0), |instrument| {
                (instrument.exposure, instrument.reserved)
            });
        let reserved = reserved
            .checked_add(check.qty)
            .ok_or_else(|| overflow(&check.instrument))?;
        let position = exposure
            .checked_add(reserved)
            .ok_or_else(|| overflow(&check.instrument))?;
        let Limits {
            max_position,
            max_notional,
        } = self.state.limits;
        let instrument = &check.instrument;
        let mut reason = None;
        if position.unsigned_abs() > max_position {
            reason = Some(format!(
                "position on {instrument} would be {position}, beyond the limit of \
                 {max_position} by {}",
                position.unsigned_abs() - max_position
            ));
        } else if let Some(limit_price) = check.limit_price {
            let notional = position as f64 * limit_price;
            if notional.abs() > max_notional {
                reason = Some(format!(
                    "notional on {instrument} would be {notional}, beyond the limit of \
                     {max_notional} by {}",
                    notional.abs() - max_notional
                ));
            }
        }
        if reason.is_some() {
            self.state.rejected = self.state.rejected.saturating_add(1);
            return Ok(Verdict {
                approved: false,
                order_id: check.order_id,
                reason,
            });
        }
        instrument_mut(&mut self.state.instruments, &check.instrument).reserved = reserved;
        Ok(Verdict {
            approved: true,
            order_id: check.order_id,
            reason: None,
        })
    }

    /// Takes in a fill: the exposure moves by its quantity, which is no longer reserved.
    pub fn on_fill(&mut self, fill: &Fill<'_>) -> Result<(), PluginError> {
        let instrument = instrument_mut(&mut self.state.instruments, &fill.instrument);
        let exposure = instrument.exposure.checked_add(fill.qty);
        let reserved = instrument.reserved.checked_sub(fill.qty);
        let (Some(exposure), Some(reserved)) = (exposure, reserved) else {
            return Err(overflow(&fill.instrument));
        };
        instrument.exposure = exposure;
        instrument.reserved = reserved;
        instrument.last_price = Some(fill.price);
        instrument.notional = exposure as f64 * fill.price;
        Ok(())
    }

    /// Takes in a cancellation: its quantity is no longer reserved.
    pub fn on_cancel(&mut self, cancel: &Cancel<'_>) -> Result<(), PluginError> {
        let instrument = instrument_mut(&mut self.state.instruments, &cancel.instrument);
        instrument.reserved = instrument
            .reserved
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
        "quantity overflow on `{instrument}`: the exposure or reserved quantity is out of range"
    ))
}

fn write(output: &mut Vec<u8>, value: &impl Serialize) -> Result<(), PluginError> {
    serde_json::to_writer(output, value)
        .map_err(|e| PluginError::new(format!("cannot write the output: {e}")))
}

impl Plugin for RiskModel {
    type Config = Config;
    type State = State;

    fn create(config: Config, _host: &HostContext) -> Result<RiskModel, PluginError> {
        RiskModel::new(config)
    }

    fn call(
        &mut self,
        input: &[u8],
        _now: HostTime,
        output: &mut Vec<u8>,
    ) -> Result<(), PluginError> {
        match RiskInput::parse(input, serde_json::from_slice).map_err(PluginError::new)? {
            RiskInput::Check(check) => {
                let verdict = self.check(&check)?;
                write(output, &verdict)
            }
            RiskInput::Fill(fill) => {
                self.on_fill(&fill)?;
                write(output, &Ack::OK)
            }
            RiskInput::Cancel(cancel) => {
                self.on_cancel(&cancel)?;
                write(output, &Ack::OK)
            }
        }
    }

    fn state(&self) -> &State {
        &self.state
    }

    /// Takes the instruments and the rejection count from the snapshot and keeps the limits of
    /// this instance's config.
    fn restore(&mut self, state: State) -> Result<(), PluginError> {
        for (name, instrument) in &state.instruments {
            if name.is_empty() {
                return Err(PluginError::new(
                    "invalid state: an instrument name is empty",
                ));
            }
            if let Some(price) = instrument.last_price.filter(|price| !is_price(*price)) {
                return Err(PluginError::new(format!(
                    "invalid state: `{name}` has last price {price}; prices are positive"
                )));
            }
            if !instrument.notional.is_finite() {
                return Err(PluginError::new(format!(
                    "invalid state: `{name}` has notional {}; expected a number",
                    instrument.notional
                )));
            }
        }
        self.state.rejected = state.rejected;
        self.state.instruments = state.instruments;
        Ok(())
    }

    /// Up from 1.x: moves `max_position` into `limits`, adds `max_notional` (the config's, if
    /// it has one, else 1000000.0) to config and limits, and each instrument's `notional`
    /// (`exposure × last_price`, 0 without a price). Down to 1.x: the reverse, dropping
    /// `max_notional` and `notional`.
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
                "risk_model {to} migrates up only from 1.x (>=1.0.0, <2.0.0), not from {from}"
            ))),
            Direction::Down => Err(PluginError::new(format!(
                "risk_model {from} migrates down only to 1.x (>=1.0.0, <2.0.0), not to {to}"
            ))),
        }
    }
}

/// A 1.x config as a migration document carries it: a field left out has its default.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigV1Doc {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_position: Option<u64>,
    /// Read only: a config written for 2.x may already carry it; never written down.
    #[serde(skip_serializing)]
    max_notional: Option<f64>,
}

/// A 2.0 config as a migration document carries it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_notional: Option<f64>,
}

/// The 1.x state (schema 1).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateV1 {
    max_position: u64,
    rejected: u64,
    instruments: BTreeMap<String, InstrumentStateV1>,
}

/// An instrument in the 1.x state (schema 1).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstrumentStateV1 {
    exposure: i64,
    reserved: i64,
    last_price: Option<f64>,
}

fn up_from_v1(doc: MigrationDoc) -> Result<MigrationDoc, PluginError> {
    let config: ConfigV1Doc = parse(doc.config, "1.x config")?;
    let state: StateV1 = parse(doc.state, "1.x state (schema 1)")?;
    let max_notional = config.max_notional.unwrap_or(DEFAULT_MAX_NOTIONAL);
    let config = ConfigDoc {
        max_position: config.max_position,
        max_notional: Some(max_notional),
    };
    let instruments = state
        .instruments
        .into_iter()
        .map(|(name, instrument)| {
            let notional = instrument
                .last_price
                .map_or(0.0, |price| instrument.exposure as f64 * price);
            let instrument = InstrumentState {
                exposure: instrument.exposure,
                reserved: instrument.reserved,
                last_price: instrument.last_price,
                notional,
            };
            (name, instrument)
        })
        .collect();
    let state = State {
        limits: Limits {
            max_position: state.max_position,
            max_notional,
        },
        rejected: state.rejected,
        instruments,
    };
    document(&config, &state)
}

fn down_to_v1(doc: MigrationDoc) -> Result<MigrationDoc, PluginError> {
    let config: ConfigDoc = parse(doc.config, "2.0 config")?;
    let state: State = parse(doc.state, "2.0 state (schema 2)")?;
    let config = ConfigV1Doc {
        max_position: config.max_position,
        max_notional: None,
    };
    let instruments = state
        .instruments
        .into_iter()
        .map(|(name, instrument)| {
            let instrument = InstrumentStateV1 {
                exposure: instrument.exposure,
                reserved: instrument.reserved,
                last_price: instrument.last_price,
            };
            (name, instrument)
        })
        .collect();
    let state = StateV1 {
        max_position: state.limits.max_position,
        rejected: state.rejected,
        instruments,
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

    fn create(config: Value) -> Result<RiskModel, PluginError> {
        RiskModel::create(serde_json::from_value(config)?, &HostContext::detached())
    }

    fn send(plugin: &mut RiskModel, input: &Value) -> Result<Value, PluginError> {
        let mut output = Vec::new();
        plugin.call(input.to_string().as_bytes(), HostTime(0), &mut output)?;
        Ok(serde_json::from_slice(&output).expect("the output is JSON"))
    }

    fn check(order_id: u64, qty: i64) -> Value {
        json!({"check": {"order_id": order_id, "instrument": "ES", "qty": qty}})
    }

    fn limit_check(order_id: u64, qty: i64, limit_price: f64) -> Value {
        json!({"check": {"order_id": order_id, "instrument": "ES", "qty": qty,
                         "limit_price": limit_price}})
    }

    fn fill(order_id: u64, qty: i64, price: f64) -> Value {
        json!({"fill": {"order_id": order_id, "instrument": "ES", "qty": qty, "price": price}})
    }

    fn approved(order_id: u64) -> Value {
        json!({"approved": true, "order_id": order_id})
    }

    fn rejected(order_id: u64, reason: &str) -> Value {
        json!({"approved": false, "order_id": order_id, "reason": reason})
    }

    /// Feeds `steps` (input, expected output) in order, naming the step that differs.
    fn run(plugin: &mut RiskModel, steps: &[(Value, Value)]) {
        for (i, (input, expected)) in steps.iter().enumerate() {
            let output = send(plugin, input).unwrap_or_else(|e| panic!("step {i}: {e}"));
            assert_eq!(&output, expected, "step {i}: {input}");
        }
    }

    #[test]
    fn config_defaults_and_validation() {
        let limits = create(json!({})).unwrap().state().limits.clone();
        assert_eq!(
            (limits.max_position, limits.max_notional),
            (10, 1_000_000.0)
        );
        let cases = [
            (json!({"max_position": -1}), "invalid value"),
            (
                json!({"max_notional": -1.0}),
                "`max_notional` must be a number >= 0",
            ),
            (json!({"limits": {}}), "unknown field `limits`"),
        ];
        for (config, message) in cases {
            let error = create(config.clone()).unwrap_err();
            assert!(error.message().contains(message), "{config}: {error}");
        }
    }

    #[test]
    fn orders_beyond_the_position_limit_are_rejected() {
        let mut plugin = create(json!({"max_position": 2})).unwrap();
        let ok = json!({"ok": true});
        run(
            &mut plugin,
            &[
                (check(1, 1), approved(1)),
                (check(2, 1), approved(2)),
                // Reserved orders count: 2 reserved + 1.
                (
                    check(3, 1),
                    rejected(3, "position on ES would be 3, beyond the limit of 2 by 1"),
                ),
                (fill(1, 1, 4500.25), ok.clone()),
                // Exposure 1 + reserved 1 - 4.
                (check(4, -4), approved(4)),
                (
                    check(5, -1),
                    rejected(5, "position on ES would be -3, beyond the limit of 2 by 1"),
                ),
                (
                    json!({"cancel": {"order_id": 4, "instrument": "ES", "qty": -4}}),
                    ok.clone(),
                ),
                // Order 2 is still reserved: exposure 1 + reserved 1 - 1.
                (check(6, -1), approved(6)),
            ],
        );
        let state = plugin.state();
        assert_eq!(state.rejected, 2);
        let es = &state.instruments["ES"];
        assert_eq!(
            (es.exposure, es.reserved, es.last_price, es.notional),
            (1, 0, Some(4500.25), 4500.25)
        );
    }

    #[test]
    fn orders_with_a_limit_price_beyond_the_notional_limit_are_rejected() {
        let mut plugin = create(json!({"max_position": 5, "max_notional": 10000.0})).unwrap();
        run(
            &mut plugin,
            &[
                (limit_check(1, 2, 4500.25), approved(1)),
                (
                    limit_check(2, 1, 4500.0),
                    rejected(
                        2,
                        "notional on ES would be 13500, beyond the limit of 10000 by 3500",
                    ),
                ),
                // Without a limit price only the position is checked.
                (check(3, 1), approved(3)),
                // The position limit is checked first.
                (
                    limit_check(4, 3, 1.0),
                    rejected(4, "position on ES would be 6, beyond the limit of 5 by 1"),
                ),
                (fill(1, 2, 4500.25), json!({"ok": true})),
                // Exposure 2 + reserved 1 - 8, at 2000.5.
                (
                    limit_check(5, -8, 2000.5),
                    rejected(
                        5,
                        "notional on ES would be -10002.5, beyond the limit of 10000 by 2.5",
                    ),
                ),
            ],
        );
        let state = plugin.state();
        assert_eq!(state.rejected, 3);
        let es = &state.instruments["ES"];
        assert_eq!((es.exposure, es.reserved, es.notional), (2, 1, 9000.5));
    }

    #[test]
    fn bad_input_is_an_error_and_changes_nothing() {
        let cases = [
            (json!(["check"]), "invalid input"),
            (json!({"order": {}}), "unknown variant `order`"),
            (
                json!({"check": {"order_id": 1, "instrument": "ES"}}),
                "missing field `qty`",
            ),
            (check(1, 0), "invalid check: `qty` must not be zero"),
            (
                limit_check(1, 1, 0.0),
                "invalid check: `limit_price` must be a positive price",
            ),
            (
                fill(1, 1, -2.0),
                "invalid fill: `price` must be a positive price",
            ),
        ];
        let mut plugin = create(json!({})).unwrap();
        for (input, message) in cases {
            let error = send(&mut plugin, &input).unwrap_err();
            assert!(error.message().contains(message), "{input}: {error}");
        }
        assert_eq!(
            plugin.state(),
            RiskModel::new(Config::default()).unwrap().state()
        );
    }

    #[test]
    fn a_restored_snapshot_continues_exactly() {
        let config = json!({"max_position": 3, "max_notional": 100.0});
        let inputs = [
            limit_check(1, 2, 10.5),
            fill(1, 2, 10.5),
            check(2, 2),
            limit_check(3, -5, 40.0),
            fill(3, -5, 9.75),
            limit_check(4, 1, 33.3),
        ];
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
    fn restore_keeps_the_limits_of_the_instance() {
        let mut plugin = create(json!({"max_position": 1, "max_notional": 5.0})).unwrap();
        let snapshot = json!({
            "limits": {"max_position": 10, "max_notional": 1000000.0}, "rejected": 3,
            "instruments": {"ES": {"exposure": 1, "reserved": 0, "last_price": 2.5,
                                   "notional": 2.5}}
        });
        plugin
            .restore(serde_json::from_value(snapshot).unwrap())
            .unwrap();
        let state = plugin.state();
        assert_eq!(
            (state.limits.max_position, state.limits.max_notional),
            (1, 5.0)
        );
        assert_eq!(state.rejected, 3);
        let verdict = send(&mut plugin, &check(1, 1)).unwrap();
        assert_eq!(
            verdict,
            rejected(1, "position on ES would be 2, beyond the limit of 1 by 1")
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
        json!({"max_position": 4, "rejected": 2, "instruments": {
            "ES": {"exposure": -3, "reserved": 1, "last_price": 4500.25},
            "NQ": {"exposure": 0, "reserved": 2, "last_price": null}
        }})
    }

    fn v2_state(max_notional: f64) -> Value {
        json!({"limits": {"max_position": 4, "max_notional": max_notional}, "rejected": 2,
            "instruments": {
                "ES": {"exposure": -3, "reserved": 1, "last_price": 4500.25,
                       "notional": -13500.75},
                "NQ": {"exposure": 0, "reserved": 2, "last_price": null, "notional": 0.0}
            }
        })
    }

    #[test]
    fn migrates_up_from_1x_computing_notionals_and_down_again() {
        // (1.x document, 2.0 document): up maps the first to the second, down the second to
        // the first.
        let cases = [
            (
                json!({"config": {"max_position": 4}, "state": v1_state()}),
                json!({"config": {"max_position": 4, "max_notional": 1000000.0},
                       "state": v2_state(1_000_000.0)}),
            ),
            (
                json!({"config": {}, "state": v1_state()}),
                json!({"config": {"max_notional": 1000000.0}, "state": v2_state(1_000_000.0)}),
            ),
        ];
        for (v1, v2) in cases {
            for from in ["1.0.0", "1.1.0"] {
                let up = RiskModel::migrate(migration(from, "2.0.0", Direction::Up, &v1)).unwrap();
                assert_eq!(serde_json::to_value(up).unwrap(), v2);
                let down =
                    RiskModel::migrate(migration("2.0.0", from, Direction::Down, &v2)).unwrap();
                assert_eq!(serde_json::to_value(down).unwrap(), v1);
            }
        }
    }

    #[test]
    fn migration_up_keeps_a_notional_limit_the_config_gives() {
        let v1 = json!({"config": {"max_notional": 5000.0}, "state": v1_state()});
        let up = RiskModel::migrate(migration("1.1.0", "2.0.0", Direction::Up, &v1)).unwrap();
        let expected = json!({"config": {"max_notional": 5000.0}, "state": v2_state(5000.0)});
        assert_eq!(serde_json::to_value(up).unwrap(), expected);
    }

    #[test]
    fn a_migrated_instance_carries_on() {
        let v1 = json!({"config": {"max_position": 4}, "state": v1_state()});
        let up = RiskModel::migrate(migration("1.0.0", "2.0.0", Direction::Up, &v1)).unwrap();
        let mut plugin = create(up.config).unwrap();
        plugin
            .restore(serde_json::from_value(up.state).unwrap())
            .unwrap();
        run(
            &mut plugin,
            &[
                (limit_check(1, 1, 4500.0), approved(1)),
                (
                    json!({"check": {"order_id": 2, "instrument": "NQ", "qty": 3}}),
                    rejected(2, "position on NQ would be 5, beyond the limit of 4 by 1"),
                ),
            ],
        );
        assert_eq!(plugin.state().rejected, 3);
    }

    #[test]
    fn migrations_refuse_other_versions_and_invalid_documents() {
        let v1 = json!({"config": {}, "state": v1_state()});
        let cases = [
            (
                migration("2.1.0", "2.0.0", Direction::Up, &v1),
                "risk_model 2.0.0 migrates up only from 1.x (>=1.0.0, <2.0.0), not from 2.1.0",
            ),
            (
                migration("2.0.0", "0.9.0", Direction::Down, &v1),
                "risk_model 2.0.0 migrates down only to 1.x (>=1.0.0, <2.0.0), not to 0.9.0",
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
                "the 2.0 state (schema 2) is invalid",
            ),
        ];
        for (migration, message) in cases {
            let error = RiskModel::migrate(migration).unwrap_err();
            assert!(error.message().contains(message), "{error}");
        }
    }
}
