//! Rules, pure: the rule language, its validation, and the evaluation of a rule for one
//! device. Never awaits, never does I/O, never reads a clock (times come in as arguments).
//!
//! - [`doc`]: the document types (selector, condition AST, notification targets), JSON or
//!   YAML, re-exported by `model`.
//! - [`validate`]: parsing JSON/YAML and one validation pass whose errors name the field path
//!   (`condition.all[1].geofence.shape.polygon.exterior: ring must have at least 4 points…`).
//! - [`geofence`]: circles and polygons compiled into regions (boundary, holes, antimeridian).
//! - [`leaf`]: the state of each leaf condition (threshold with `for` and hysteresis, no-data,
//!   geofence, rate of change).
//! - [`state`]: [`RuleState`], the per-(device, rule) alarm state machine: `on_point`,
//!   `on_tick`, `next_deadline` → [`Transition`].
//!
//! # Time
//!
//! Conditions are evaluated in *event time*, the point's `ts`: a `for` duration is measured
//! between point timestamps, a rate between the timestamps of its window. *No-data* is
//! measured in *receive time*: what matters is when the server last heard from the device.
//! Deadlines (a `for` duration that will complete unless contradicted, a no-data timeout) are
//! absolute receive times, so they can be persisted and survive failover; the device actor
//! schedules one timer for the earliest and the conditions fire without new data. A `for`
//! deadline assumes the device clock keeps its current offset from the receive clock
//! (sample-and-hold: the last value is taken to persist until a point says otherwise).
//!
//! Late points — older than the newest point already evaluated for the device — update
//! history (rate-of-change windows; they count as data received for no-data) but do not
//! re-open evaluation: a late point can neither raise nor clear. Points with equal timestamps
//! are not late: a duplicate is evaluated again, which changes nothing unless its value
//! differs.
//!
//! Pending deadlines survive the owning node as control records ([`pending`]): written when a
//! `for` run or a no-data watch starts or ends, resumed by the next owner.
//!
//! What this does not do: send notifications (targets are validated only), write records
//! (the device actor commits them through Raft), or know
//! device types and labels (there is no device registry yet: selectors on them match nothing).

pub mod doc;
pub mod geofence;
pub mod leaf;
pub mod pending;
pub mod state;
pub mod validate;

pub use leaf::{Truth, Witness};
pub use state::{RuleState, Transition};
