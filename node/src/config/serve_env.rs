//! `STARLING_*` environment overrides of the serve configuration, pure: variables in, TOML
//! values out, merged over the file's table before it is deserialized.
//!
//! `STARLING_NODE_ID` → `node_id`, `STARLING_MQTT__BROKER` → `mqtt.broker` (`__` separates a
//! section from its key; names are case-insensitive). [`KEYS`] lists every key with how its
//! text becomes a value; a test checks it against the schema, so a new field cannot be
//! forgotten here. A variable whose first part names a section (`STARLING_MQTT__…`) must name
//! a known key; other `STARLING_*` variables are someone else's (`STARLING_PROFILE`) and are
//! ignored.
//!
//! What it does not do: check values beyond their kind (integer, boolean, …); the schema's
//! types and `validate()` do that, naming the key.

use super::serve::ServeConfigError;

/// Prefix of every configuration variable.
pub(super) const PREFIX: &str = "STARLING_";

/// How a variable's text becomes a TOML value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// As is (addresses, paths, durations, secrets — even when they look like numbers).
    Str,
    /// A decimal integer.
    Int,
    /// `true` or `false`.
    Bool,
    /// Comma-separated strings, blanks trimmed, empty items dropped.
    List,
    /// Comma-separated `id=peer` pairs: `cluster.bootstrap`.
    Voters,
}

/// Every configuration key (dotted path) and its kind.
pub(super) const KEYS: &[(&str, Kind)] = &[
    ("node_id", Kind::Int),
    ("data_dir", Kind::Str),
    ("listen.peer", Kind::Str),
    ("listen.client", Kind::Str),
    ("listen.http", Kind::Str),
    ("advertise.peer", Kind::Str),
    ("advertise.client", Kind::Str),
    ("tls.ca", Kind::Str),
    ("tls.cert", Kind::Str),
    ("tls.key", Kind::Str),
    ("tls.client_ca", Kind::Str),
    ("cluster.bootstrap", Kind::Voters),
    ("cluster.join", Kind::List),
    ("cluster.shards", Kind::Int),
    ("cluster.heartbeat", Kind::Str),
    ("cluster.lease", Kind::Str),
    ("cluster.failure_timeout", Kind::Str),
    ("cluster.drift_margin", Kind::Str),
    ("cluster.max_voters", Kind::Int),
    ("mqtt.broker", Kind::Str),
    ("mqtt.client_id", Kind::Str),
    ("mqtt.receive_maximum", Kind::Int),
    ("mqtt.connections", Kind::Int),
    ("mqtt.username", Kind::Str),
    ("mqtt.password", Kind::Str),
    ("mqtt.rescue", Kind::Bool),
    ("ingest.max_payload_bytes", Kind::Int),
    ("ingest.max_ts_future", Kind::Str),
    ("ingest.max_ts_age", Kind::Str),
    ("ingest.idle_timeout", Kind::Str),
    ("ingest.auto_provision", Kind::Bool),
    ("log.filter", Kind::Str),
    ("notify.retry_attempts", Kind::Int),
    ("notify.retry_min_delay", Kind::Str),
    ("notify.retry_max_delay", Kind::Str),
    ("notify.attempt_timeout", Kind::Str),
    ("notify.rate_per_minute", Kind::Int),
    ("notify.rate_burst", Kind::Int),
    ("notify.smtp_host", Kind::Str),
    ("notify.smtp_port", Kind::Int),
    ("notify.smtp_tls", Kind::Str),
    ("notify.smtp_from", Kind::Str),
    ("notify.smtp_username", Kind::Str),
    ("notify.smtp_password", Kind::Str),
    ("notify.smtp_ca", Kind::Str),
    ("notify.sms_url", Kind::Str),
    ("notify.sms_token", Kind::Str),
    ("retention.raw", Kind::Str),
    ("retention.minute", Kind::Str),
    ("retention.hour", Kind::Str),
    ("retention.interval", Kind::Str),
    ("storage.engine", Kind::Str),
    ("storage.embedded.backend", Kind::Str),
    ("storage.scylla.nodes", Kind::List),
    ("storage.scylla.keyspace", Kind::Str),
    ("storage.scylla.replication", Kind::Str),
    ("storage.scylla.consistency", Kind::Str),
    ("storage.scylla.ttl", Kind::Str),
    ("storage.scylla.max_in_flight", Kind::Int),
];

/// One variable's override: the key it sets, the variable, the value.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Override {
    pub key: &'static str,
    pub var: String,
    pub value: toml::Value,
}

/// The configuration overrides among `env`, sorted by key. Errors name the variable.
pub(super) fn overrides(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, ServeConfigError> {
    let mut found = Vec::new();
    for (var, text) in env {
        let Some(rest) = strip_prefix_ignore_case(&var, PREFIX) else {
            continue;
        };
        let path = rest.to_ascii_lowercase().replace("__", ".");
        let problem = |problem: String| ServeConfigError::Env {
            var: var.clone(),
            problem,
        };
        let Some(&(key, kind)) = KEYS.iter().find(|(k, _)| *k == path) else {
            let section = path.split('.').next().unwrap_or_default();
            if KEYS
                .iter()
                .any(|(k, _)| k.split_once('.').map(|s| s.0) == Some(section))
            {
                return Err(problem(format!(
                    "`{path}` is not a configuration key (keys of [{section}]: {})",
                    keys_of(section)
                )));
            }
            continue;
        };
        let value = parse_value(kind, &text).map_err(|e| problem(format!("{key}: {e}")))?;
        found.push(Override { key, var, value });
    }
    found.sort_by(|a, b| a.key.cmp(b.key).then_with(|| a.var.cmp(&b.var)));
    Ok(found)
}

/// Sets every override in `table`, creating sections as needed; a later one wins.
pub(super) fn apply(table: &mut toml::Table, overrides: &[Override]) {
    for o in overrides {
        let mut at = &mut *table;
        let mut parts = o.key.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                at.insert(part.to_owned(), o.value.clone());
                break;
            }
            let entry = at
                .entry(part.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                // The file has a value where a section belongs: the variable replaces it.
                *entry = toml::Value::Table(toml::Table::new());
            }
            let toml::Value::Table(next) = entry else {
                unreachable!("made a table above");
            };
            at = next;
        }
    }
}

fn parse_value(kind: Kind, text: &str) -> Result<toml::Value, String> {
    let t = text.trim();
    Ok(match kind {
        Kind::Str => toml::Value::String(text.to_owned()),
        Kind::Int => toml::Value::Integer(
            t.parse()
                .map_err(|_| format!("{t:?} is not a decimal integer"))?,
        ),
        Kind::Bool => match t.to_ascii_lowercase().as_str() {
            "true" => toml::Value::Boolean(true),
            "false" => toml::Value::Boolean(false),
            _ => return Err(format!("{t:?} is not true or false")),
        },
        Kind::List => toml::Value::Array(
            items(t)
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        Kind::Voters => toml::Value::Array(items(t).map(voter).collect::<Result<_, _>>()?),
    })
}

fn items(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// `1=10.0.0.1:7700` → `{ id = 1, peer = "10.0.0.1:7700" }`.
fn voter(item: &str) -> Result<toml::Value, String> {
    let bad = || format!("{item:?} is not id=host:port (e.g. 1=10.0.0.1:7700)");
    let (id, peer) = item.split_once('=').ok_or_else(bad)?;
    let id: i64 = id.trim().parse().map_err(|_| bad())?;
    let mut t = toml::Table::new();
    t.insert("id".into(), toml::Value::Integer(id));
    t.insert("peer".into(), toml::Value::String(peer.trim().to_owned()));
    Ok(toml::Value::Table(t))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn keys_of(section: &str) -> String {
    let keys: Vec<&str> = KEYS
        .iter()
        .filter_map(|(k, _)| k.strip_prefix(section)?.strip_prefix('.'))
        .collect();
    keys.join(", ")
}
