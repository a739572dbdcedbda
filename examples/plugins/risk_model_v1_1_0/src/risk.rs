//! The logic of `risk_model` 1.1.0: config, state (schema 1), the (identity) migrations from
//! and to 1.0.x and the [`Plugin`] implementation, without the export. The messages are the
//! desk's, shared by every version: [`plugsync_desk`] (1.x does not use an order's
//! `limit_price`, but refuses one that is not a positive price, as every version does).

use std::collections::BTreeMap;

use plugsync_desk::{Ack, Cancel, Fill, Order, RiskInput, Verdict, is_price};
use plugsync_plugin::{
    Direction, HostContext, HostTime, Migration, MigrationDoc, Plugin, PluginError,
};
use serde::{Deserialize, Serialize};

/// The instance's config. A field left out takes its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Largest position allowed per instrument, long or short (default 10).
    pub max_position: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config { max_position: 10 }
    }
}

/// The instance's state (state schema 1).
///
/// The limit is recorded for the reader of a snapshot; on restore the instance keeps the limit
/// of the config it was created with (so that a reconfigure takes effect).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Position limit in force.
    pub max_position: u64,
    /// Number of orders rejected since the state began.
    pub rejected: u64,
    /// Exposure per instrument, by instrument name.
    pub instruments: BTreeMap<String, InstrumentState>,
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
}

/// The risk model instance.
#[derive(Debug)]
pub struct RiskModel {
    state: State,
}

impl RiskModel {
    /// An instance with a fresh state.
    pub fn new(config: Config) -> RiskModel {
        RiskModel {
            state: State {
                max_position: config.max_position,
                rejected: 0,
                instruments: BTreeMap::new(),
            },
        }
    }

    /// Checks an order: approves it and reserves its quantity when the position it would lead
    /// to is within the limit, rejects it (and counts the rejection) otherwise.
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
        let limit = self.state.max_position;
        if position.unsigned_abs() > limit {
            self.state.rejected = self.state.rejected.saturating_add(1);
            return Ok(Verdict {
                approved: false,
                order_id: check.order_id,
                reason: Some(format!(
                    "position on {} would be {position}, beyond the limit of {limit} by {}",
                    check.instrument,
                    position.unsigned_abs() - limit
                )),
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
        Ok(RiskModel::new(config))
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

    /// Takes the instruments and the rejection count from the snapshot and keeps the limit of
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
        }
        self.state.rejected = state.rejected;
        self.state.instruments = state.instruments;
        Ok(())
    }

    /// Up from 1.0.x and down to 1.0.x: the config and the state schema are the same, so the
    /// document is checked and returned unchanged.
    fn migrate(migration: Migration) -> Result<MigrationDoc, PluginError> {
        let Migration {
            from,
            to,
            direction,
            doc,
        } = migration;
        match direction {
            Direction::Up if is_v1_0(&from) => same_schema(doc),
            Direction::Down if is_v1_0(&to) => same_schema(doc),
            Direction::Up => Err(PluginError::new(format!(
                "risk_model {to} migrates up only from 1.0.x (>=1.0.0, <1.1.0), not from {from}"
            ))),
            Direction::Down => Err(PluginError::new(format!(
                "risk_model {from} migrates down only to 1.0.x (>=1.0.0, <1.1.0), not to {to}"
            ))),
        }
    }
}

/// Checks that a document has this version's config and state schema, and returns it.
fn same_schema(doc: MigrationDoc) -> Result<MigrationDoc, PluginError> {
    let invalid = |what: &str, e: serde_json::Error| {
        PluginError::new(format!("cannot migrate: the {what} is invalid: {e}"))
    };
    Config::deserialize(&doc.config).map_err(|e| invalid("1.x config", e))?;
    State::deserialize(&doc.state).map_err(|e| invalid("1.x state (schema 1)", e))?;
    Ok(doc)
}

/// Whether `version` is a 1.0.x version (`>=1.0.0, <1.1.0`; a pre-release suffix is ignored).
fn is_v1_0(version: &str) -> bool {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3 && parts[..2] == ["1", "0"] && parts.iter().all(|p| p.parse::<u64>().is_ok())
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
        assert_eq!(create(json!({})).unwrap().state().max_position, 10);
        assert_eq!(
            create(json!({"max_position": 0}))
                .unwrap()
                .state()
                .max_position,
            0
        );
        let cases = [
            (json!({"max_position": -1}), "invalid value"),
            (json!({"max_notional": 1.0}), "unknown field `max_notional`"),
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
                // A limit applies per instrument.
                (
                    json!({"check": {"order_id": 7, "instrument": "NQ", "qty": 2,
                                     "limit_price": 1.0}}),
                    approved(7),
                ),
            ],
        );
        let state = plugin.state();
        assert_eq!(state.rejected, 2);
        let es = &state.instruments["ES"];
        assert_eq!(
            (es.exposure, es.reserved, es.last_price),
            (1, 0, Some(4500.25))
        );
        assert_eq!(state.instruments["NQ"].reserved, 2);
    }

    #[test]
    fn exposure_follows_fills_of_unknown_orders() {
        let mut plugin = create(json!({"max_position": 2})).unwrap();
        run(
            &mut plugin,
            &[
                (fill(98, 5, 10.0), json!({"ok": true})),
                (fill(99, -2, 10.5), json!({"ok": true})),
            ],
        );
        let es = &plugin.state().instruments["ES"];
        assert_eq!(
            (es.exposure, es.reserved, es.last_price),
            (3, -3, Some(10.5))
        );
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
                json!({"check": {"order_id": 1, "instrument": "", "qty": 1}}),
                "invalid check: `instrument` is empty",
            ),
            (
                fill(1, 1, -2.0),
                "invalid fill: `price` must be a positive price",
            ),
            (
                json!({"cancel": {"order_id": 1, "instrument": "ES", "qty": 0}}),
                "invalid cancel: `qty` must not be zero",
            ),
            // Unused by 1.x, but checked as by every version (see `plugsync_desk`).
            (
                json!({"check": {"order_id": 1, "instrument": "ES", "qty": 1,
                                 "limit_price": 0.0}}),
                "invalid check: `limit_price` must be a positive price",
            ),
        ];
        let mut plugin = create(json!({})).unwrap();
        for (input, message) in cases {
            let error = send(&mut plugin, &input).unwrap_err();
            assert!(error.message().contains(message), "{input}: {error}");
        }
        assert_eq!(plugin.state(), RiskModel::new(Config::default()).state());
    }

    #[test]
    fn overflowing_quantities_are_refused() {
        let mut plugin = create(json!({"max_position": u64::MAX})).unwrap();
        send(&mut plugin, &fill(1, i64::MAX, 1.0)).unwrap();
        for input in [fill(2, 1, 1.0), check(3, i64::MIN + 1)] {
            let error = send(&mut plugin, &input).unwrap_err();
            assert!(
                error.message().contains("quantity overflow on `ES`"),
                "{error}"
            );
        }
        let es = &plugin.state().instruments["ES"];
        assert_eq!((es.exposure, es.reserved), (i64::MAX, -i64::MAX));
    }

    #[test]
    fn a_restored_snapshot_continues_exactly() {
        let config = json!({"max_position": 3});
        let inputs = [
            check(1, 2),
            fill(1, 2, 10.5),
            check(2, 2),
            check(3, -5),
            fill(3, -5, 9.75),
            check(4, 1),
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
    fn restore_keeps_the_limit_of_the_instance() {
        let mut plugin = create(json!({"max_position": 1})).unwrap();
        let snapshot = json!({"max_position": 10, "rejected": 3, "instruments": {
            "ES": {"exposure": 1, "reserved": 0, "last_price": 2.5}
        }});
        plugin
            .restore(serde_json::from_value(snapshot).unwrap())
            .unwrap();
        assert_eq!(
            (plugin.state().max_position, plugin.state().rejected),
            (1, 3)
        );
        let verdict = send(&mut plugin, &check(1, 1)).unwrap();
        assert_eq!(
            verdict,
            rejected(1, "position on ES would be 2, beyond the limit of 1 by 1")
        );
    }

    #[test]
    fn restore_refuses_inconsistent_state() {
        let snapshot = json!({"max_position": 10, "rejected": 0, "instruments": {
            "ES": {"exposure": 1, "reserved": 0, "last_price": -2.5}
        }});
        let mut plugin = create(json!({})).unwrap();
        let error = plugin
            .restore(serde_json::from_value(snapshot).unwrap())
            .unwrap_err();
        assert!(
            error.message().contains("`ES` has last price -2.5"),
            "{error}"
        );
    }

    #[test]
    fn rejections_say_by_how_much_the_limit_is_exceeded() {
        let mut plugin = create(json!({"max_position": 10})).unwrap();
        run(
            &mut plugin,
            &[
                (check(1, -4), approved(1)),
                (
                    check(2, -9),
                    rejected(
                        2,
                        "position on ES would be -13, beyond the limit of 10 by 3",
                    ),
                ),
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

    #[test]
    fn migrations_from_and_to_1_0_change_nothing() {
        let doc = json!({"config": {"max_position": 4}, "state": {
            "max_position": 4, "rejected": 2,
            "instruments": {"ES": {"exposure": 1, "reserved": -1, "last_price": 4500.25}}
        }});
        let cases = [
            migration("1.0.0", "1.1.0", Direction::Up, &doc),
            migration("1.1.0", "1.0.0", Direction::Down, &doc),
        ];
        for migration in cases {
            let migrated = RiskModel::migrate(migration).unwrap();
            assert_eq!(serde_json::to_value(migrated).unwrap(), doc);
        }
    }

    #[test]
    fn migrations_refuse_other_versions_and_invalid_documents() {
        let doc =
            json!({"config": {}, "state": {"max_position": 10, "rejected": 0, "instruments": {}}});
        let cases = [
            (
                migration("2.0.0", "1.1.0", Direction::Up, &doc),
                "risk_model 1.1.0 migrates up only from 1.0.x (>=1.0.0, <1.1.0), not from 2.0.0",
            ),
            (
                migration("1.1.0", "0.9.0", Direction::Down, &doc),
                "risk_model 1.1.0 migrates down only to 1.0.x (>=1.0.0, <1.1.0), not to 0.9.0",
            ),
            (
                migration(
                    "1.0.0",
                    "1.1.0",
                    Direction::Up,
                    &json!({"config": {}, "state": {}}),
                ),
                "the 1.x state (schema 1) is invalid: missing field",
            ),
            (
                migration(
                    "1.0.0",
                    "1.1.0",
                    Direction::Up,
                    &json!({"config": {"max": 1}, "state": {}}),
                ),
                "the 1.x config is invalid: unknown field `max`",
            ),
        ];
        for (migration, message) in cases {
            let error = RiskModel::migrate(migration).unwrap_err();
            assert!(error.message().contains(message), "{error}");
        }
    }
}
