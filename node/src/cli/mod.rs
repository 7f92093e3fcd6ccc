//! The `starling` command line (clap derive).
//!
//! - Server commands: `dev` (its arguments only; `node::run_dev` runs it) and `serve` (the
//!   config file's path; `main` loads it, `node::run_serve` runs it).
//! - `simulate`: a device fleet publishing over MQTT (arguments only; `simulate::run` runs it).
//!   It is neither a server nor an API client, so it sits beside [`Command`] in [`TopCommand`].
//! - `certs`: makes a cluster's CA, node and client certificates ([`certs`]); local files only,
//!   so it also sits in [`TopCommand`].
//! - Client commands, `starling <noun> <verb>`: `telemetry`, `rules`, `alerts`, `devices`,
//!   `cluster`. They call the API through the SDK ([`run_client`]) and print aligned tables or
//!   JSON lines (`--format json`: one JSON object per line).
//!
//! What it does not do: start servers, or talk to anything but the public gRPC API. Pure
//! helpers (time parsing, JSON shapes, tables) live in [`output`]; execution in `run`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod certs;
pub mod output;
mod run;
mod simulate;

pub use certs::CertsArgs;
pub use run::run_client;
pub use simulate::SimulateArgs;

/// Parses the process arguments (exits with usage on error, as clap does).
pub fn parse() -> Cli {
    Cli::parse()
}

/// Starling: an IoT telemetry and alerting platform, server and client in one binary.
#[derive(Debug, Parser)]
#[command(name = "starling", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: TopCommand,
}

/// Every `starling` command: `simulate`, then the server and client commands of [`Command`]
/// (flattened: they appear as siblings of `simulate` on the command line).
#[derive(Debug, Clone, Subcommand)]
pub enum TopCommand {
    /// Simulate a fleet of devices (trucks, weather stations or factory machines; faults,
    /// dropouts and malformed messages) publishing telemetry to an MQTT broker at QoS 1.
    Simulate(SimulateArgs),
    /// Make the cluster CA, node certificates and client certificates with their profiles.
    Certs(CertsArgs),
    #[command(flatten)]
    Node(Command),
}

/// Every `starling` command.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run one node for development: embedded store, embedded MQTT broker, dev certificates.
    Dev(DevArgs),
    /// Run a production node from its configuration file (see examples/starling.toml).
    Serve(ServeArgs),
    /// Query, inspect and publish telemetry.
    Telemetry(TelemetryArgs),
    /// Apply, list, show and delete alert rules.
    Rules(RulesArgs),
    /// List, acknowledge and watch alarms.
    Alerts(AlertsArgs),
    /// List and show devices.
    Devices(DevicesArgs),
    /// Show the cluster's state.
    Cluster(ClusterArgs),
}

/// Arguments of `starling dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Where the node keeps its data, certificates and client profile.
    #[arg(long, value_name = "DIR", default_value = "./starling-data")]
    pub data_dir: PathBuf,
    /// Port of the embedded MQTT broker's MQTT 3.1.1 listener, for devices (ignored with
    /// --broker).
    #[arg(long, default_value_t = 1883)]
    pub mqtt_port: u16,
    /// Port of the embedded broker's MQTT 5 listener (devices that speak MQTT 5, and the
    /// node's own ingress). Default: --mqtt-port + 1.
    #[arg(long)]
    pub mqtt5_port: Option<u16>,
    /// Port of the client gRPC API (TLS with client certificates).
    #[arg(long, default_value_t = 7600)]
    pub grpc_port: u16,
    /// Port of the admin HTTP server (/metrics, /healthz).
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Use this external MQTT broker (host:port) instead of the embedded one.
    #[arg(long, value_name = "HOST:PORT")]
    pub broker: Option<String>,
    /// This node's id.
    #[arg(long, default_value_t = 1)]
    pub node_id: u64,
    /// Stop a device's actor after this long without data (e.g. 5m, 90s).
    #[arg(long, default_value = "5m")]
    pub idle_timeout: humantime::Duration,
    /// Refuse points whose `ts` is more than this after the receive time (e.g. 1d, 10m).
    #[arg(long, value_name = "DURATION", default_value = "1d")]
    pub max_ts_future: Option<humantime::Duration>,
    /// Refuse points whose `ts` is more than this before the receive time (default: any age).
    #[arg(long, value_name = "DURATION")]
    pub max_ts_age: Option<humantime::Duration>,
    /// Address the gRPC and HTTP ports listen on.
    #[arg(long, default_value = "127.0.0.1", value_parser = parse_ip)]
    pub bind: String,
    /// TOML file with a `[notify]` table (SMTP server, SMS webhook, retries, rate limits),
    /// as in `starling serve`'s config; without it email and SMS targets are not configured.
    #[arg(long, value_name = "FILE")]
    pub notify_config: Option<PathBuf>,
    /// Engine of the embedded telemetry store: redb or fjall (files under DIR/store; a node
    /// refuses to start on the other engine's files).
    #[arg(long, value_name = "ENGINE", default_value = "redb")]
    pub store_backend: crate::storage::backend::EmbeddedBackend,
}

/// Arguments of `starling serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The node's TOML configuration file; `STARLING_<SECTION>__<KEY>` variables override it
    /// (e.g. STARLING_MQTT__BROKER=10.0.0.5:1883, STARLING_NODE_ID=3).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Validate the configuration, print the effective configuration as TOML and exit
    /// (exit code 2 when it is invalid).
    #[arg(long)]
    pub check: bool,
}

/// Checks `--bind` is an IP address, keeping it as text.
fn parse_ip(s: &str) -> Result<String, String> {
    s.parse::<IpAddr>()
        .map(|_| s.to_owned())
        .map_err(|e| format!("{s:?} is not an IP address: {e}"))
}

/// Options shared by every client command; accepted before or after the verb.
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// Client profile: endpoint and certificates (`starling dev` writes DATA_DIR/client.toml).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "STARLING_PROFILE",
        default_value = "./starling-data/client.toml"
    )]
    pub profile: PathBuf,
    /// Output: aligned columns, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Tenant of the devices and alarms addressed (empty: the default tenant).
    #[arg(long, global = true, value_name = "T", default_value = "")]
    pub tenant: String,
}

/// Output format of client commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns with a header line.
    Table,
    /// One JSON object per line.
    Json,
}

/// `starling telemetry …`.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: TelemetryCommand,
}

/// Telemetry verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum TelemetryCommand {
    /// Points of one device in a time range, every page.
    Query {
        /// Device id.
        #[arg(long)]
        device: String,
        /// Only this metric (default: every metric).
        #[arg(long)]
        metric: Option<String>,
        /// Inclusive start: RFC 3339 (UTC), Unix ms, `now` or relative (`-1h`). Default: 0.
        #[arg(long, value_name = "T", allow_hyphen_values = true)]
        from: Option<String>,
        /// Exclusive end, same forms as --from. Default: now.
        #[arg(long, value_name = "T", allow_hyphen_values = true)]
        to: Option<String>,
        /// Print at most N points.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// One function of one metric over intervals, e.g. `--function avg --interval 1m`.
    /// The server answers from 1h rollups, 1m rollups or raw points (printed as `source`).
    Aggregate {
        /// Device id.
        #[arg(long)]
        device: String,
        /// The metric.
        #[arg(long)]
        metric: String,
        /// min | max | avg | sum | count | last.
        #[arg(long, default_value = "avg")]
        function: String,
        /// Interval width: `30s`, `1m`, `15m`, `1h`, `1d`, `250ms`…
        #[arg(long, default_value = "1m")]
        interval: String,
        /// Inclusive start, same forms as `query --from`. Default: 0.
        #[arg(long, value_name = "T", allow_hyphen_values = true)]
        from: Option<String>,
        /// Exclusive end, same forms as `query --from`. Default: now.
        #[arg(long, value_name = "T", allow_hyphen_values = true)]
        to: Option<String>,
        /// Print at most N intervals.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// The newest point of each metric of one device.
    Latest {
        /// Device id.
        #[arg(long)]
        device: String,
    },
    /// Publish one sample through the API (not MQTT).
    Publish {
        /// Device id.
        #[arg(long)]
        device: String,
        /// A flat JSON object of metric → value, e.g. '{"temp": 21.5, "door": false}'.
        #[arg(long, value_name = "JSON")]
        values: String,
        /// Sample time, same forms as `query --from`. Default: now.
        #[arg(long, value_name = "T", allow_hyphen_values = true)]
        ts: Option<String>,
    },
    /// Print the points of one device as they are stored, until Ctrl-C.
    Subscribe {
        /// Device id.
        device: String,
        /// Only this metric (repeatable; default: every metric).
        #[arg(long = "metric", value_name = "METRIC")]
        metrics: Vec<String>,
    },
}

/// `starling rules …`.
#[derive(Debug, Clone, Args)]
pub struct RulesArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: RulesCommand,
}

/// Rules verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum RulesCommand {
    /// Create or replace a rule from a JSON or YAML (.yaml, .yml) document; its "id" names
    /// the rule. Examples: examples/rules/.
    Apply {
        /// The rule document.
        #[arg(long, short)]
        file: PathBuf,
    },
    /// Every rule.
    List,
    /// One rule, with its document.
    Get {
        /// Rule id.
        id: String,
    },
    /// Delete a rule.
    Delete {
        /// Rule id.
        id: String,
    },
    /// Every version of a rule, oldest first (kept after a delete).
    History {
        /// Rule id.
        id: String,
    },
    /// Make an earlier version's document current again (as a new version).
    Rollback {
        /// Rule id.
        id: String,
        /// The version to restore (see `rules history`).
        #[arg(long)]
        to_version: u64,
    },
}

/// `starling alerts …`.
#[derive(Debug, Clone, Args)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: AlertsCommand,
}

/// Alarm states for `alerts list|watch --status` (status × acknowledgement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFilter {
    /// Raised and not cleared.
    Active,
    /// Cleared.
    Cleared,
    /// Not acknowledged yet (active or cleared).
    Unacked,
    /// Acknowledged (active or cleared).
    Acked,
}

/// Alerts verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum AlertsCommand {
    /// Alarms, newest first as the server orders them.
    List {
        /// Only this device's alarms.
        #[arg(long)]
        device: Option<String>,
        /// Only alarms in this state.
        #[arg(long, value_enum)]
        status: Option<StatusFilter>,
        /// Only alarms of this severity (as the rule names it, e.g. `major`).
        #[arg(long)]
        severity: Option<String>,
    },
    /// Acknowledge an alarm.
    Ack {
        /// Alarm id.
        id: String,
    },
    /// Print alarm transitions as they are committed, until Ctrl-C.
    Watch {
        /// Only this device's alarms.
        #[arg(long)]
        device: Option<String>,
        /// Only transitions leaving the alarm in this state.
        #[arg(long, value_enum)]
        status: Option<StatusFilter>,
        /// Only alarms of this severity.
        #[arg(long)]
        severity: Option<String>,
    },
}

/// `starling devices …`.
#[derive(Debug, Clone, Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: DevicesCommand,
}

/// Devices verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum DevicesCommand {
    /// Registered devices of the tenant, optionally filtered.
    List {
        /// Only devices of this type.
        #[arg(long = "type", value_name = "TYPE")]
        device_type: Option<String>,
        /// Only devices with this label (repeat: all must match).
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// One device.
    Get {
        /// Device id.
        id: String,
    },
    /// Registers a device, or replaces the type and labels of a registered one.
    Register {
        /// Device id: 1-128 characters of [A-Za-z0-9_.:-].
        id: String,
        /// What kind of device it is (rule selectors match on it).
        #[arg(long = "type", value_name = "TYPE")]
        device_type: Option<String>,
        /// A label (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Sets labels (`KEY=VALUE`) and removes labels (`--remove KEY`) of a registered device.
    Label {
        /// Device id.
        id: String,
        /// Labels to set.
        #[arg(value_name = "KEY=VALUE", value_parser = parse_label)]
        set: Vec<(String, String)>,
        /// A label to remove (repeatable).
        #[arg(long = "remove", value_name = "KEY")]
        remove: Vec<String>,
    },
    /// Removes a device from the registry (its stored telemetry stays).
    Delete {
        /// Device id.
        id: String,
    },
}

/// `KEY=VALUE` of a label argument.
fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE (for example site=north)")),
    }
}

/// `starling cluster …`.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// Cluster verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// Leader, term, commit index and members, as the answering node sees them.
    Status,
    /// Every member: role, health and last heartbeat as the leader sees them, shards owned.
    Members,
    /// The shard map: each run of shards with its owner and epoch.
    Shards,
    /// Remove a node: its shards move to the others, then it leaves the Raft membership.
    Remove {
        /// The node id to remove.
        node: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::geo::LatLon;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("starling").chain(args.iter().copied()))
    }

    #[test]
    fn dev_defaults() {
        let Ok(Cli {
            command: TopCommand::Node(Command::Dev(a)),
        }) = parse(&["dev"])
        else {
            panic!("dev did not parse");
        };
        assert_eq!(a.data_dir, PathBuf::from("./starling-data"));
        assert_eq!((a.mqtt_port, a.grpc_port, a.http_port), (1883, 7600, 8080));
        assert_eq!(a.broker, None);
        assert_eq!(a.node_id, 1);
        assert_eq!(*a.idle_timeout, std::time::Duration::from_secs(300));
        assert_eq!(a.bind, "127.0.0.1");
        assert_eq!(
            a.store_backend,
            crate::storage::backend::EmbeddedBackend::Redb
        );
    }

    #[test]
    fn accepted_and_refused_command_lines() {
        let cases: &[(&[&str], bool)] = &[
            (
                &[
                    "dev",
                    "--idle-timeout",
                    "90s",
                    "--bind",
                    "::1",
                    "--broker",
                    "h:1883",
                ],
                true,
            ),
            (&["dev", "--idle-timeout", "soon"], false),
            (&["serve", "--config", "starling.toml"], true),
            (&["serve", "--config", "starling.toml", "--check"], true),
            (&["serve"], false),
            (&["serve", "--check"], false),
            (&["dev", "--bind", "localhost"], false),
            (
                &[
                    "telemetry",
                    "query",
                    "--device",
                    "d",
                    "--from",
                    "-1h",
                    "--limit",
                    "5",
                ],
                true,
            ),
            (
                &["telemetry", "--format", "json", "query", "--device", "d"],
                true,
            ),
            (
                &["telemetry", "query", "--device", "d", "--format", "json"],
                true,
            ),
            (&["telemetry", "query"], false),
            (
                &["telemetry", "query", "--device", "d", "--format", "xml"],
                false,
            ),
            (&["telemetry", "latest", "--device", "d"], true),
            (&["telemetry", "subscribe", "d"], true),
            (
                &[
                    "telemetry",
                    "subscribe",
                    "d",
                    "--metric",
                    "a",
                    "--metric",
                    "b",
                ],
                true,
            ),
            (&["telemetry", "subscribe", "d", "--format", "json"], true),
            (&["telemetry", "subscribe"], false),
            (
                &["telemetry", "publish", "--device", "d", "--values", "{}"],
                true,
            ),
            (&["rules", "apply", "--file", "r.json"], true),
            (&["rules", "list"], true),
            (&["rules", "get", "r1"], true),
            (&["rules", "delete", "r1"], true),
            (
                &["alerts", "list", "--device", "d", "--status", "active"],
                true,
            ),
            (&["alerts", "list", "--status", "open"], false),
            (&["alerts", "ack", "a1"], true),
            (&["alerts", "watch"], true),
            (
                &[
                    "alerts",
                    "list",
                    "--severity",
                    "major",
                    "--status",
                    "unacked",
                ],
                true,
            ),
            (
                &[
                    "alerts",
                    "watch",
                    "--device",
                    "d",
                    "--severity",
                    "minor",
                    "--status",
                    "acked",
                ],
                true,
            ),
            (&["alerts", "watch", "--status", "open"], false),
            (&["devices", "list", "--tenant", "acme"], true),
            (&["devices", "get", "d"], true),
            (
                &["devices", "list", "--type", "truck", "--label", "site=n"],
                true,
            ),
            (&["devices", "list", "--label", "site"], false),
            (
                &[
                    "devices", "register", "d", "--type", "t", "--label", "a=1", "--label", "b=",
                ],
                true,
            ),
            (&["devices", "register", "d", "--label", "=1"], false),
            (
                &["devices", "label", "d", "a=1", "b=2", "--remove", "c"],
                true,
            ),
            (&["devices", "label", "d", "oops"], false),
            (&["devices", "delete", "d", "--format", "json"], true),
            (&["devices", "delete"], false),
            (&["cluster", "status", "--profile", "/p.toml"], true),
            (&["cluster"], false),
            (&["simulate"], true),
            (
                &[
                    "simulate",
                    "--broker",
                    "127.0.0.1:1883",
                    "--devices",
                    "5",
                    "--rate",
                    "20",
                    "--messages",
                    "20",
                    "--seed",
                    "7",
                    "--format",
                    "json",
                ],
                true,
            ),
            (&["simulate", "--duration", "5m", "--tenant", "acme"], true),
            (
                &["simulate", "--scenario", "weather", "--duration", "5m"],
                true,
            ),
            (
                &[
                    "simulate",
                    "--scenario",
                    "factory",
                    "--fault-probability",
                    "0.5",
                ],
                true,
            ),
            (&["simulate", "--spike-probability", "0.5"], true),
            (&["simulate", "--scenario", "ships"], false),
            (&["simulate", "--fault-probability", "2"], false),
            (&["simulate", "--center", "-33.9,18.4"], true),
            (&["simulate", "--broker", "[::1]:1883"], true),
            (&["simulate", "--duration", "5s", "--messages", "3"], false),
            (&["simulate", "--messages", "0"], false),
            (&["simulate", "--devices", "0"], false),
            (&["simulate", "--rate", "0"], false),
            (&["simulate", "--rate", "NaN"], false),
            (&["simulate", "--spike-probability", "1.5"], false),
            (&["simulate", "--dropout-probability", "-0.1"], false),
            (&["simulate", "--center", "91,0"], false),
            (&["simulate", "--center", "48.1"], false),
            (&["simulate", "--broker", "localhost"], false),
            (&["simulate", "--broker", "h:0"], false),
            (&["simulate", "--prefix", "a/b"], false),
            (&["simulate", "--tenant", "+"], false),
            (&["simulate", "--speed-kmh", "-1"], false),
        ];
        for (args, ok) in cases {
            assert_eq!(parse(args).is_ok(), *ok, "{args:?}");
        }
    }

    #[test]
    fn simulate_defaults() {
        let Ok(Cli {
            command: TopCommand::Simulate(a),
        }) = parse(&["simulate"])
        else {
            panic!("simulate did not parse");
        };
        assert_eq!(a.broker, ("127.0.0.1".to_owned(), 1883));
        assert_eq!((a.devices, a.rate, a.seed), (10, 1.0, 42));
        assert_eq!((a.duration, a.messages), (None, None));
        assert_eq!(a.scenario, crate::simulate::scenario::Scenario::Logistics);
        assert_eq!((a.prefix.as_deref(), a.tenant.as_str()), (None, ""));
        assert_eq!(
            (
                a.fault_probability,
                a.dropout_probability,
                a.malformed_probability
            ),
            (0.01, 0.0, 0.0)
        );
        assert_eq!(
            a.center,
            LatLon {
                lat: 48.137,
                lon: 11.575
            }
        );
        assert_eq!((a.speed_kmh, a.format), (60.0, Format::Table));
    }

    #[test]
    fn client_options_after_the_verb() {
        let cli = parse(&[
            "cluster",
            "status",
            "--profile",
            "/p.toml",
            "--format",
            "json",
        ])
        .expect("parse");
        let TopCommand::Node(Command::Cluster(ClusterArgs { opts, .. })) = cli.command else {
            panic!("not cluster");
        };
        assert_eq!(opts.profile, PathBuf::from("/p.toml"));
        assert_eq!(opts.format, Format::Json);
    }
}
