//! The messages of the reference trading desk: what its strategy and risk plugins are sent and
//! what they answer, in one crate that every version of every example plugin, the test
//! fixtures, the desk itself (`plugsync::market`) and the tests build against.
//!
//! # The protocol
//!
//! One JSON object per call, whose single key names the message kind; the answer is one JSON
//! object.
//!
//! | to | message | type | answer |
//! | --- | --- | --- | --- |
//! | strategy | `{"bar":{"instrument":"ES","close":4500.25}}` | [`Bar`] | [`Orders`] |
//! | strategy, risk | `{"fill":{"order_id":17,"instrument":"ES","qty":1,"price":4500.25}}` | [`Fill`] | [`Orders`], [`Ack`] |
//! | strategy, risk | `{"cancel":{"order_id":17,"instrument":"ES","qty":1}}` | [`Cancel`] | [`Orders`], [`Ack`] |
//! | risk | `{"check":{"order_id":17,"instrument":"ES","qty":1}}` | [`Order`] | [`Verdict`] |
//!
//! [`StrategyInput`] and [`RiskInput`] are the messages each role is sent. A reader ignores the
//! fields a message kind does not know (a desk may add some) and refuses, with an [`Invalid`]
//! whose text names what is expected, an unknown kind, a missing or mistyped field, an empty
//! `instrument`, a zero `qty` and a price that is not positive ([`StrategyInput::parse`],
//! [`RiskInput::parse`]).
//!
//! # Evolution: additive only
//!
//! - A new field is **optional**: an `Option` with
//!   `#[serde(default, skip_serializing_if = "Option::is_none")]`, so that a message without it
//!   reads as before, and a writer that does not set it writes exactly the bytes it always
//!   wrote. [`Order::limit_price`] is one: ma_cross 2.1.0 sets it, risk_model 2.0.0 reads it,
//!   and the orders of ma_cross 1.0.0 and 2.0.0 are byte for byte what they were before it
//!   existed.
//! - A field is **never renamed, retyped or removed**, and a message kind never changes meaning;
//!   something new is a new optional field or a new kind (which older readers refuse by name
//!   instead of misreading it).
//!
//! Why: a desk runs plugins of several versions side by side (ma_cross 1.0.0 with risk_model
//! 1.1.0, ma_cross 2.1.0 with risk_model 2.0.0), each reading what the others and the desk
//! write; and a swap is undone by replaying the calls recorded since it (the step's journal)
//! into the older version. A recorded message must therefore mean the same to every version,
//! and what versions write (outputs a rollback or a test compares with a reference, the inputs
//! a journal records) must keep its bytes.
//!
//! # What the versions differ in
//!
//! Every version's messages are these types, byte for byte: no message needed a versioned
//! type. The versions differ only in [`Order::limit_price`] (set by ma_cross 2.1.0 and later,
//! used by risk_model 2.0.0 and later) and in what they write into fields (risk_model 1.1.0's
//! rejection [`Verdict::reason`] adds by how much the limit is exceeded). A [`Cancel`] is an
//! [`Order`]: the desk sends back the order it will not fill, `limit_price` included.
//!
//! # Every reader checks every field
//!
//! A version parses and checks every field the protocol knows, including those it does not use
//! (risk_model 1.x refuses an order whose `limit_price` is not a positive price, though only
//! 2.x uses it). So every version refuses the same messages, and a call the newer version
//! refused replays as a refusal in the older one rather than as a change to its state.
//!
//! # What stays in the plugins
//!
//! Only the messages are here. Each plugin version keeps its own config, state, state schema,
//! migrations and maths: those are the version, and its snapshots and checkpoints must keep
//! parsing as that version wrote them.
//!
//! This crate depends on serde alone: [`StrategyInput::parse`] and [`RiskInput::parse`] take
//! the JSON parser (`serde_json::from_slice`), so that each plugin chooses its features (the
//! examples enable `float_roundtrip`).

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A closed bar of an instrument, sent to a strategy: `{"instrument":"ES","close":4500.25}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bar<'a> {
    /// Instrument name; not empty. Borrowed from the input when it has no escapes.
    #[serde(borrow)]
    pub instrument: Cow<'a, str>,
    /// Closing price; positive.
    pub close: f64,
}

/// An order: what a strategy asks the desk to place, and what the desk asks the risk model to
/// check (`{"check":…}`): `{"order_id":17,"instrument":"ES","qty":1}`, with
/// `"limit_price":4500.25` at the end when it has one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order<'a> {
    /// The strategy's id for the order, echoed by its fills, cancels and verdict.
    pub order_id: u64,
    /// Instrument name; not empty.
    #[serde(borrow)]
    pub instrument: Cow<'a, str>,
    /// Quantity: positive to buy, negative to sell; not zero.
    pub qty: i64,
    /// Worst price the order may fill at, if it has one; positive. Set by ma_cross 2.1.0 and
    /// later (the close of the bar that triggered the order), read by risk_model 2.0.0 and
    /// later for its notional limit; left out of the JSON when `None`, so older versions'
    /// orders keep their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_price: Option<f64>,
}

impl Order<'_> {
    /// The same order, owning its instrument name.
    pub fn into_owned(self) -> Order<'static> {
        Order {
            order_id: self.order_id,
            instrument: Cow::Owned(self.instrument.into_owned()),
            qty: self.qty,
            limit_price: self.limit_price,
        }
    }
}

/// An order that will not fill (the risk model rejected it, or it was cancelled), sent back to
/// the plugins that counted on it: the order itself, its `qty` being the part that will not
/// fill.
///
/// The desk sends back the order as it was placed, so a cancel carries the order's
/// `limit_price` when it had one; no plugin reads it there.
pub type Cancel<'a> = Order<'a>;

/// A fill of an order, fed back by the desk to the strategy and the risk model:
/// `{"order_id":17,"instrument":"ES","qty":1,"price":4500.25}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fill<'a> {
    /// Id of the order filled (the reader's own or another one).
    pub order_id: u64,
    /// Instrument name; not empty.
    #[serde(borrow)]
    pub instrument: Cow<'a, str>,
    /// Filled quantity: positive bought, negative sold; not zero.
    pub qty: i64,
    /// Fill price; positive.
    pub price: f64,
}

/// A strategy's answer to every message: `{"orders":[…]}` (empty when it orders nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Orders<'a> {
    /// The orders to place, in order.
    #[serde(borrow)]
    pub orders: Cow<'a, [Order<'a>]>,
}

impl<'a> Orders<'a> {
    /// The answer carrying `orders` (borrowed: writing it allocates nothing).
    pub fn new(orders: &'a [Order<'a>]) -> Orders<'a> {
        Orders {
            orders: Cow::Borrowed(orders),
        }
    }

    /// The same answer, owning its orders.
    pub fn into_owned(self) -> Orders<'static> {
        let orders = self.orders.into_owned().into_iter();
        Orders {
            orders: Cow::Owned(orders.map(Order::into_owned).collect()),
        }
    }
}

/// The risk model's answer to a check: `{"approved":true,"order_id":17}` or
/// `{"approved":false,"order_id":17,"reason":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the desk may place the order.
    pub approved: bool,
    /// Id of the order checked.
    pub order_id: u64,
    /// Why the order was rejected (only when it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The risk model's answer to a fill or a cancel: `{"ok":true}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Always `true`: a message it could not take is an error, not an answer.
    pub ok: bool,
}

impl Ack {
    /// `{"ok":true}`.
    pub const OK: Ack = Ack { ok: true };
}

/// A message sent to a strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyInput<'a> {
    /// A closed bar: `{"bar":{…}}`.
    #[serde(borrow)]
    Bar(Bar<'a>),
    /// A fill of an order on the instrument: `{"fill":{…}}`.
    #[serde(borrow)]
    Fill(Fill<'a>),
    /// An order of this strategy that will not fill: `{"cancel":{…}}`.
    #[serde(borrow)]
    Cancel(Cancel<'a>),
}

impl<'a> StrategyInput<'a> {
    /// The messages a strategy takes, as its parse errors name them.
    pub const EXPECTED: &'static str = "{\"bar\":{\"instrument\",\"close\"}}, \
         {\"fill\":{\"order_id\",\"instrument\",\"qty\",\"price\"}} or \
         {\"cancel\":{\"order_id\",\"instrument\",\"qty\"}}";

    /// Parses one message with `from_slice` (`serde_json::from_slice`) and checks it.
    pub fn parse<E: fmt::Display>(
        bytes: &'a [u8],
        from_slice: impl FnOnce(&'a [u8]) -> Result<StrategyInput<'a>, E>,
    ) -> Result<StrategyInput<'a>, Invalid> {
        parse(from_slice(bytes), Self::EXPECTED, Self::validate)
    }

    /// Checks the values the types do not: see [`Invalid`].
    pub fn validate(&self) -> Result<(), Invalid> {
        match self {
            StrategyInput::Bar(bar) => bar.validate(),
            StrategyInput::Fill(fill) => fill.validate(),
            StrategyInput::Cancel(cancel) => cancel.validate(),
        }
        .map_err(|what| Invalid::value(self.kind(), what))
    }

    /// The message kind: `bar`, `fill` or `cancel`.
    pub fn kind(&self) -> &'static str {
        match self {
            StrategyInput::Bar(_) => "bar",
            StrategyInput::Fill(_) => "fill",
            StrategyInput::Cancel(_) => "cancel",
        }
    }

    /// The instrument the message is about.
    pub fn instrument(&self) -> &str {
        match self {
            StrategyInput::Bar(bar) => &bar.instrument,
            StrategyInput::Fill(fill) => &fill.instrument,
            StrategyInput::Cancel(cancel) => &cancel.instrument,
        }
    }
}

/// A message sent to a risk model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskInput<'a> {
    /// An order to check before the desk places it: `{"check":{…}}`.
    #[serde(borrow)]
    Check(Order<'a>),
    /// A fill of an order on the instrument: `{"fill":{…}}`.
    #[serde(borrow)]
    Fill(Fill<'a>),
    /// An approved order that will not fill: `{"cancel":{…}}`.
    #[serde(borrow)]
    Cancel(Cancel<'a>),
}

impl<'a> RiskInput<'a> {
    /// The messages a risk model takes, as its parse errors name them.
    pub const EXPECTED: &'static str = "{\"check\":{\"order_id\",\"instrument\",\"qty\"}}, \
         {\"fill\":{\"order_id\",\"instrument\",\"qty\",\"price\"}} or \
         {\"cancel\":{\"order_id\",\"instrument\",\"qty\"}}";

    /// Parses one message with `from_slice` (`serde_json::from_slice`) and checks it.
    pub fn parse<E: fmt::Display>(
        bytes: &'a [u8],
        from_slice: impl FnOnce(&'a [u8]) -> Result<RiskInput<'a>, E>,
    ) -> Result<RiskInput<'a>, Invalid> {
        parse(from_slice(bytes), Self::EXPECTED, Self::validate)
    }

    /// Checks the values the types do not: see [`Invalid`].
    pub fn validate(&self) -> Result<(), Invalid> {
        match self {
            RiskInput::Check(order) | RiskInput::Cancel(order) => order.validate(),
            RiskInput::Fill(fill) => fill.validate(),
        }
        .map_err(|what| Invalid::value(self.kind(), what))
    }

    /// The message kind: `check`, `fill` or `cancel`.
    pub fn kind(&self) -> &'static str {
        match self {
            RiskInput::Check(_) => "check",
            RiskInput::Fill(_) => "fill",
            RiskInput::Cancel(_) => "cancel",
        }
    }

    /// The instrument the message is about.
    pub fn instrument(&self) -> &str {
        match self {
            RiskInput::Check(order) | RiskInput::Cancel(order) => &order.instrument,
            RiskInput::Fill(fill) => &fill.instrument,
        }
    }
}

/// `parsed` if it is a message and passes `validate`.
fn parse<T, E: fmt::Display>(
    parsed: Result<T, E>,
    expected: &str,
    validate: fn(&T) -> Result<(), Invalid>,
) -> Result<T, Invalid> {
    let input = parsed.map_err(|e| Invalid::input(e, expected))?;
    validate(&input)?;
    Ok(input)
}

/// Whether `value` is a price: finite and positive.
pub fn is_price(value: f64) -> bool {
    value.is_finite() && value > 0.0
}

// Each check names the first field at fault (instrument, then quantity, then prices).
impl Bar<'_> {
    fn validate(&self) -> Result<(), String> {
        instrument(&self.instrument)?;
        price("close", self.close)
    }
}

impl Order<'_> {
    fn validate(&self) -> Result<(), String> {
        instrument(&self.instrument)?;
        qty(self.qty)?;
        self.limit_price
            .map_or(Ok(()), |limit_price| price("limit_price", limit_price))
    }
}

impl Fill<'_> {
    fn validate(&self) -> Result<(), String> {
        instrument(&self.instrument)?;
        qty(self.qty)?;
        price("price", self.price)
    }
}

fn instrument(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("`instrument` is empty".to_owned());
    }
    Ok(())
}

fn qty(qty: i64) -> Result<(), String> {
    if qty == 0 {
        return Err("`qty` must not be zero".to_owned());
    }
    Ok(())
}

fn price(field: &str, value: f64) -> Result<(), String> {
    if !is_price(value) {
        return Err(format!("`{field}` must be a positive price, not {value}"));
    }
    Ok(())
}

/// A message refused: not JSON, an unknown kind, a missing or mistyped field
/// (`invalid input: …; expected …`), or a value out of range (`invalid <kind>: …`): an empty
/// `instrument`, a zero `qty`, a `close`, `price` or `limit_price` that is not positive.
///
/// Its text is the error a plugin returns (`PluginError::new` takes it as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(String);

impl Invalid {
    fn input(error: impl fmt::Display, expected: &str) -> Invalid {
        Invalid(format!("invalid input: {error}; expected {expected}"))
    }

    fn value(kind: &str, what: String) -> Invalid {
        Invalid(format!("invalid {kind}: {what}"))
    }

    /// What is wrong with the message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

impl From<Invalid> for String {
    fn from(invalid: Invalid) -> String {
        invalid.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(limit_price: Option<f64>) -> Order<'static> {
        Order {
            order_id: 17,
            instrument: "ES".into(),
            qty: 1,
            limit_price,
        }
    }

    fn fill() -> Fill<'static> {
        Fill {
            order_id: 17,
            instrument: "ES".into(),
            qty: 1,
            price: 4500.25,
        }
    }

    fn json(value: &impl Serialize) -> String {
        serde_json::to_string(value).unwrap()
    }

    #[test]
    fn messages_keep_their_bytes() {
        let bar = StrategyInput::Bar(Bar {
            instrument: "ES".into(),
            close: 4500.25,
        });
        let verdict = |approved, reason: Option<&str>| Verdict {
            approved,
            order_id: 17,
            reason: reason.map(str::to_owned),
        };
        let cases = [
            (json(&bar), r#"{"bar":{"instrument":"ES","close":4500.25}}"#),
            (
                json(&StrategyInput::Fill(fill())),
                r#"{"fill":{"order_id":17,"instrument":"ES","qty":1,"price":4500.25}}"#,
            ),
            (
                json(&StrategyInput::Cancel(order(None))),
                r#"{"cancel":{"order_id":17,"instrument":"ES","qty":1}}"#,
            ),
            (
                json(&RiskInput::Check(order(None))),
                r#"{"check":{"order_id":17,"instrument":"ES","qty":1}}"#,
            ),
            (
                json(&RiskInput::Check(order(Some(4500.25)))),
                r#"{"check":{"order_id":17,"instrument":"ES","qty":1,"limit_price":4500.25}}"#,
            ),
            (json(&Orders::new(&[])), r#"{"orders":[]}"#),
            (
                json(&Orders::new(&[order(None), order(Some(1.5))])),
                r#"{"orders":[{"order_id":17,"instrument":"ES","qty":1},{"order_id":17,"instrument":"ES","qty":1,"limit_price":1.5}]}"#,
            ),
            (
                json(&verdict(true, None)),
                r#"{"approved":true,"order_id":17}"#,
            ),
            (
                json(&verdict(false, Some("too big"))),
                r#"{"approved":false,"order_id":17,"reason":"too big"}"#,
            ),
            (json(&Ack::OK), r#"{"ok":true}"#),
        ];
        for (actual, expected) in cases {
            assert_eq!(actual, expected);
        }
    }

    #[test]
    fn messages_read_back_as_written_and_borrow_their_names() {
        let bytes = br#"{"check":{"order_id":17,"instrument":"ES","qty":1,"limit_price":2.5}}"#;
        let input = RiskInput::parse(bytes, serde_json::from_slice).unwrap();
        assert_eq!(input, RiskInput::Check(order(Some(2.5))));
        let RiskInput::Check(Order { instrument, .. }) = &input else {
            unreachable!()
        };
        assert!(matches!(instrument, Cow::Borrowed(_)));
        assert_eq!(json(&input).as_bytes(), bytes);

        let bytes = br#"{"orders":[{"order_id":17,"instrument":"ES","qty":1}]}"#;
        let orders: Orders = serde_json::from_slice(bytes).unwrap();
        let orders = orders.into_owned();
        assert_eq!(orders.orders[..], [order(None)]);
        assert_eq!(json(&orders).as_bytes(), bytes);
    }

    #[test]
    fn an_older_message_reads_with_the_new_field_left_out() {
        // The additive rule: an order written before `limit_price` existed is an order
        // without one, and one a newer desk adds a field to still reads.
        let old = br#"{"check":{"order_id":17,"instrument":"ES","qty":1}}"#;
        let newer = br#"{"check":{"order_id":17,"instrument":"ES","qty":1,"venue":"X"}}"#;
        for bytes in [&old[..], &newer[..]] {
            let input = RiskInput::parse(bytes, serde_json::from_slice).unwrap();
            assert_eq!(input, RiskInput::Check(order(None)));
        }
    }

    #[test]
    fn bad_messages_are_refused_naming_the_field() {
        let strategy = [
            (r#"{"quote":{}}"#, "invalid input: unknown variant `quote`"),
            (r#"{"bar":{"instrument":"ES"}}"#, "missing field `close`"),
            (
                r#"{"bar":{"instrument":"","close":1.0}}"#,
                "invalid bar: `instrument` is empty",
            ),
            (
                r#"{"bar":{"instrument":"ES","close":-1.0}}"#,
                "invalid bar: `close` must be a positive price, not -1",
            ),
            (
                r#"{"fill":{"order_id":1,"instrument":"ES","qty":0,"price":0.0}}"#,
                "invalid fill: `qty` must not be zero",
            ),
            (
                r#"{"fill":{"order_id":1,"instrument":"ES","qty":1,"price":0.0}}"#,
                "invalid fill: `price` must be a positive price, not 0",
            ),
            (
                r#"{"cancel":{"order_id":1,"instrument":"ES","qty":1,"limit_price":"x"}}"#,
                "invalid input: invalid type: string \"x\", expected f64",
            ),
        ];
        for (bytes, message) in strategy {
            let error = StrategyInput::parse(bytes.as_bytes(), serde_json::from_slice)
                .unwrap_err()
                .to_string();
            assert!(error.contains(message), "{bytes}: {error}");
        }
        let error = StrategyInput::parse(b"{", serde_json::from_slice).unwrap_err();
        assert!(
            error.message().ends_with(StrategyInput::EXPECTED),
            "{error}"
        );

        let risk = [
            (
                r#"{"bar":{"instrument":"ES","close":1.0}}"#,
                "unknown variant `bar`",
            ),
            (
                r#"{"check":{"order_id":1,"instrument":"ES","qty":1,"limit_price":0.0}}"#,
                "invalid check: `limit_price` must be a positive price, not 0",
            ),
            (
                r#"{"cancel":{"order_id":1,"instrument":"ES","qty":0}}"#,
                "invalid cancel: `qty` must not be zero",
            ),
        ];
        for (bytes, message) in risk {
            let error = RiskInput::parse(bytes.as_bytes(), serde_json::from_slice)
                .unwrap_err()
                .to_string();
            assert!(error.contains(message), "{bytes}: {error}");
        }
    }

    #[test]
    fn inputs_name_their_kind_and_instrument() {
        let input = StrategyInput::Fill(fill());
        assert_eq!((input.kind(), input.instrument()), ("fill", "ES"));
        let input = RiskInput::Cancel(order(None));
        assert_eq!((input.kind(), input.instrument()), ("cancel", "ES"));
        assert_eq!(
            String::from(Invalid::value("bar", "x".into())),
            "invalid bar: x"
        );
    }
}
