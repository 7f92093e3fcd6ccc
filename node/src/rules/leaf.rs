//! The state of one leaf condition for one device, pure: how threshold (with `for` and
//! hysteresis), no-data, geofence and rate-of-change conditions take in points and time.
//!
//! Each leaf holds a three-valued [`Truth`] that persists between points (a point that does
//! not carry the leaf's metric leaves it unchanged: sample-and-hold), and the [`Witness`] that
//! set it: the metric, the value and the time to report when the rule's alarm changes.
//!
//! What this does not do: combine leaves or decide alarm transitions (`state.rs`), nor decide
//! which points are late (the caller calls [`Leaf::observe_late`] for those).

use std::collections::VecDeque;

#[path = "leaf_pending.rs"]
mod pending;

use super::doc::{CmpOp, Condition, GeoTrigger, Geofence, NoData, RateOfChange, Threshold};
use super::geofence::Region;
use crate::model::{TimestampMs, Value};

/// Truth of a condition: `Unknown` until there is enough data to tell (and while a `for`
/// duration runs). An unknown condition neither raises nor clears an alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    False,
    Unknown,
    True,
}

impl Truth {
    pub fn from_bool(b: bool) -> Self {
        if b { Truth::True } else { Truth::False }
    }
}

/// What set a condition's truth: the metric, its value (for rate of change: the rate; for
/// no-data: the silence in seconds) and when (event time, or the deadline that passed).
#[derive(Clone, Debug, PartialEq)]
pub struct Witness {
    pub metric: String,
    pub value: Value,
    pub at_ms: TimestampMs,
}

/// One point as a rule sees it: the sample's values at event time `ts_ms`, received at
/// `received_at_ms`.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    pub ts_ms: TimestampMs,
    pub received_at_ms: TimestampMs,
    pub values: &'a [(String, Value)],
}

impl Observation<'_> {
    fn get(&self, metric: &str) -> Option<&Value> {
        // The last occurrence wins, as it does in the store (same identity, later write).
        self.values
            .iter()
            .rev()
            .find(|(m, _)| m == metric)
            .map(|(_, v)| v)
    }
}

/// Most points a rate-of-change leaf keeps; the oldest are dropped past it, so a window
/// holding more points than this measures over a shorter span.
pub const RATE_HISTORY_CAP: usize = 4096;

/// A leaf condition and its state.
#[derive(Clone, Debug)]
pub enum Leaf {
    Threshold(ThresholdLeaf),
    NoData(NoDataLeaf),
    Geofence(GeofenceLeaf),
    Rate(RateLeaf),
}

impl Leaf {
    /// A fresh leaf for a (validated) condition; `None` for `all`/`any` or an invalid shape.
    pub fn new(condition: &Condition) -> Option<Leaf> {
        Some(match condition {
            Condition::Threshold(t) => Leaf::Threshold(ThresholdLeaf::new(t)),
            Condition::NoData(n) => Leaf::NoData(NoDataLeaf::new(n)),
            Condition::Geofence(g) => Leaf::Geofence(GeofenceLeaf::new(g)?),
            Condition::RateOfChange(r) => Leaf::Rate(RateLeaf::new(r)),
            Condition::All(_) | Condition::Any(_) => return None,
        })
    }

    /// A point evaluated in event-time order.
    pub fn observe(&mut self, obs: &Observation) {
        match self {
            Leaf::Threshold(l) => l.observe(obs),
            Leaf::NoData(l) => l.observe(obs),
            Leaf::Geofence(l) => l.observe(obs),
            Leaf::Rate(l) => l.observe(obs),
        }
    }

    /// A late point: it updates history (rate windows) and counts as data received
    /// (no-data), but changes no truth that is evaluated in event time.
    pub fn observe_late(&mut self, obs: &Observation) {
        match self {
            Leaf::NoData(l) => l.observe(obs),
            Leaf::Rate(l) => {
                l.remember(obs);
            }
            Leaf::Threshold(_) | Leaf::Geofence(_) => {}
        }
    }

    /// The receive clock reads `now`: deadlines at or before it pass.
    pub fn tick(&mut self, now: TimestampMs) {
        match self {
            Leaf::Threshold(l) => l.tick(now),
            Leaf::NoData(l) => l.tick(now),
            Leaf::Geofence(_) | Leaf::Rate(_) => {}
        }
    }

    pub fn truth(&self) -> Truth {
        match self {
            Leaf::Threshold(l) => l.truth(),
            Leaf::NoData(l) => l.truth,
            Leaf::Geofence(l) => l.truth,
            Leaf::Rate(l) => l.truth,
        }
    }

    pub fn witness(&self) -> Option<&Witness> {
        match self {
            Leaf::Threshold(l) => l.witness.as_ref(),
            Leaf::NoData(l) => l.witness.as_ref(),
            Leaf::Geofence(l) => l.witness.as_ref(),
            Leaf::Rate(l) => l.witness.as_ref(),
        }
    }

    /// The absolute receive time at which this leaf may change without new data.
    pub fn deadline(&self) -> Option<TimestampMs> {
        match self {
            Leaf::Threshold(l) => l.pending.map(|p| p.deadline),
            Leaf::NoData(l) => l.deadline(),
            Leaf::Geofence(_) | Leaf::Rate(_) => None,
        }
    }
}

/// A `for` duration that started running.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pending {
    /// Event time of the first point of the run.
    pub since_ms: TimestampMs,
    /// Receive time at which the run is long enough if nothing contradicts it.
    pub deadline: TimestampMs,
}

#[derive(Clone, Debug)]
pub struct ThresholdLeaf {
    cond: Threshold,
    /// Whether the comparison holds, with hysteresis applied; `None` before any value.
    holds: Option<bool>,
    /// The running `for` duration, if the comparison holds but not for long enough yet.
    pending: Option<Pending>,
    /// The comparison has held for the whole `for` duration.
    matured: bool,
    witness: Option<Witness>,
    /// The value that started the running `for` duration (kept for its control record).
    run_value: Option<Value>,
}

impl ThresholdLeaf {
    fn new(cond: &Threshold) -> Self {
        Self {
            cond: cond.clone(),
            holds: None,
            pending: None,
            matured: false,
            witness: None,
            run_value: None,
        }
    }

    fn observe(&mut self, obs: &Observation) {
        let Some(value) = obs.get(&self.cond.metric) else {
            return;
        };
        let Some(x) = value.as_f64() else {
            return;
        };
        let holds = match (self.holds, self.cond.clear) {
            // Inside the hysteresis band the condition keeps holding.
            (Some(true), Some(clear)) => !crossed_back(self.cond.op, x, clear),
            _ => self.cond.op.holds(x, self.cond.value),
        };
        self.witness = Some(Witness {
            metric: self.cond.metric.clone(),
            value: value.clone(),
            at_ms: obs.ts_ms,
        });
        self.holds = Some(holds);
        let Some(hold) = self.cond.hold else {
            return;
        };
        if !holds {
            self.pending = None;
            self.matured = false;
            return;
        }
        if self.matured {
            return;
        }
        if self.pending.is_none() {
            self.run_value = Some(value.clone());
        }
        let run = *self.pending.get_or_insert(Pending {
            since_ms: obs.ts_ms,
            // Assumes the device clock keeps the offset it has now from the receive clock.
            deadline: obs.received_at_ms.saturating_add(hold.as_ms_i64()),
        });
        if obs.ts_ms.saturating_sub(run.since_ms) >= hold.as_ms_i64() {
            self.matured = true;
            self.pending = None;
        }
    }

    fn tick(&mut self, now: TimestampMs) {
        let (Some(run), Some(hold)) = (self.pending, self.cond.hold) else {
            return;
        };
        if now >= run.deadline {
            // Sample-and-hold: no point contradicted the last value before the deadline.
            self.matured = true;
            self.pending = None;
            if let Some(w) = &mut self.witness {
                w.at_ms = run.since_ms.saturating_add(hold.as_ms_i64());
            }
        }
    }

    fn truth(&self) -> Truth {
        match self.holds {
            None => Truth::Unknown,
            Some(false) => Truth::False,
            Some(true) if self.cond.hold.is_none() || self.matured => Truth::True,
            Some(true) => Truth::Unknown, // the `for` duration is still running
        }
    }
}

/// Whether `x` has left a hysteresis band: below `clear` for `>`/`>=`, above it for `<`/`<=`.
fn crossed_back(op: CmpOp, x: f64, clear: f64) -> bool {
    match op {
        CmpOp::Gt | CmpOp::Ge => x < clear,
        CmpOp::Lt | CmpOp::Le => x > clear,
        // Validation refuses `clear` with == and !=; without a band, the comparison decides.
        CmpOp::Eq | CmpOp::Ne => true,
    }
}

#[derive(Clone, Debug)]
pub struct NoDataLeaf {
    metric: Option<String>,
    after_ms: TimestampMs,
    /// Receive time of the last data, or of the first point this leaf saw at all (watching
    /// starts then, so a metric that never arrives is also "no data").
    last_ms: Option<TimestampMs>,
    truth: Truth,
    witness: Option<Witness>,
}

impl NoDataLeaf {
    fn new(cond: &NoData) -> Self {
        Self {
            metric: cond.metric.clone(),
            after_ms: cond.duration().map_or(i64::MAX, |d| d.as_ms_i64()),
            last_ms: None,
            truth: Truth::Unknown,
            witness: None,
        }
    }

    fn observe(&mut self, obs: &Observation) {
        let data = match &self.metric {
            Some(m) => obs.get(m).is_some(),
            None => !obs.values.is_empty(),
        };
        let start = self.last_ms.get_or_insert(obs.received_at_ms);
        if !data {
            return;
        }
        *start = (*start).max(obs.received_at_ms);
        self.truth = Truth::False;
        self.witness = Some(Witness {
            metric: self.metric.clone().unwrap_or_default(),
            value: Value::Number(0.0),
            at_ms: obs.ts_ms,
        });
    }

    fn deadline(&self) -> Option<TimestampMs> {
        match self.truth {
            Truth::True => None,
            _ => self.last_ms.map(|t| t.saturating_add(self.after_ms)),
        }
    }

    fn tick(&mut self, now: TimestampMs) {
        let Some(deadline) = self.deadline() else {
            return;
        };
        if now >= deadline {
            self.truth = Truth::True;
            self.witness = Some(Witness {
                metric: self.metric.clone().unwrap_or_default(),
                value: Value::Number(self.after_ms as f64 / 1000.0),
                at_ms: deadline,
            });
        }
    }
}

#[derive(Clone, Debug)]
pub struct GeofenceLeaf {
    metric: String,
    region: Region,
    trigger: GeoTrigger,
    /// Whether the last evaluated position was inside.
    last_inside: Option<bool>,
    truth: Truth,
    witness: Option<Witness>,
}

impl GeofenceLeaf {
    fn new(cond: &Geofence) -> Option<Self> {
        Some(Self {
            metric: cond.metric.clone(),
            region: Region::compile(&cond.shape).ok()?,
            trigger: cond.trigger,
            last_inside: None,
            truth: Truth::Unknown,
            witness: None,
        })
    }

    fn observe(&mut self, obs: &Observation) {
        let Some(value @ Value::Position { lat, lon }) = obs.get(&self.metric) else {
            return;
        };
        let inside = self.region.contains(*lat, *lon);
        self.truth = match (self.trigger, self.last_inside, inside) {
            (GeoTrigger::Inside, _, inside) => Truth::from_bool(inside),
            (GeoTrigger::Outside, _, inside) => Truth::from_bool(!inside),
            // Edges: true once the crossing is seen; unknown if the first fix is already
            // on the far side (no crossing seen); false again when back.
            (GeoTrigger::Enter, _, false) | (GeoTrigger::Exit, _, true) => Truth::False,
            (GeoTrigger::Enter, Some(false), true) | (GeoTrigger::Exit, Some(true), false) => {
                Truth::True
            }
            (GeoTrigger::Enter | GeoTrigger::Exit, None, _) => Truth::Unknown,
            (GeoTrigger::Enter | GeoTrigger::Exit, Some(_), _) => self.truth,
        };
        self.last_inside = Some(inside);
        self.witness = Some(Witness {
            metric: self.metric.clone(),
            value: value.clone(),
            at_ms: obs.ts_ms,
        });
    }
}

#[derive(Clone, Debug)]
pub struct RateLeaf {
    cond: RateOfChange,
    /// (event time, value), sorted by time, one value per time (the last written wins).
    history: VecDeque<(TimestampMs, f64)>,
    truth: Truth,
    witness: Option<Witness>,
}

impl RateLeaf {
    fn new(cond: &RateOfChange) -> Self {
        Self {
            cond: cond.clone(),
            history: VecDeque::new(),
            truth: Truth::Unknown,
            witness: None,
        }
    }

    /// Adds a point to the window without evaluating (late points, and the first step of
    /// evaluated ones).
    fn remember(&mut self, obs: &Observation) -> Option<f64> {
        let x = obs.get(&self.cond.metric)?.as_f64()?;
        let newest = self
            .history
            .back()
            .map_or(obs.ts_ms, |(t, _)| (*t).max(obs.ts_ms));
        let window_start = newest.saturating_sub(self.cond.window.as_ms_i64());
        if obs.ts_ms < window_start {
            return None; // too old to matter to any window from now on
        }
        match self.history.binary_search_by_key(&obs.ts_ms, |(t, _)| *t) {
            Ok(i) => self.history[i].1 = x,
            Err(i) => self.history.insert(i, (obs.ts_ms, x)),
        }
        while self.history.front().is_some_and(|(t, _)| *t < window_start)
            || self.history.len() > RATE_HISTORY_CAP
        {
            self.history.pop_front();
        }
        Some(x)
    }

    fn observe(&mut self, obs: &Observation) {
        let Some(x) = self.remember(obs) else {
            return;
        };
        let Some(&(t0, x0)) = self.history.front() else {
            return;
        };
        if t0 >= obs.ts_ms {
            self.truth = Truth::Unknown; // one point in the window: no rate
            return;
        }
        let rate = (x - x0) / ((obs.ts_ms - t0) as f64 / 1000.0);
        self.truth = Truth::from_bool(self.cond.op.holds(rate, self.cond.value));
        self.witness = Some(Witness {
            metric: self.cond.metric.clone(),
            value: Value::Number(rate),
            at_ms: obs.ts_ms,
        });
    }
}
