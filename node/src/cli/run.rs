//! Executes client commands: load the profile, call the API through the SDK, print.
//!
//! Every SDK error becomes one line (see [`output::describe_error`]); `main` prints it and
//! exits 1. Printing is line by line to stdout, so `--format json` output pipes into `jq`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use serde_json::Value as Json;
use starling_sdk::proto::{self, ListAlarmsRequest, QueryRequest, WatchAlarmsRequest};
use starling_sdk::{Client, Profile};

use super::output::{self, format_ms, table, value_text};
use super::{
    AlertsCommand, ClientOpts, ClusterCommand, Command, DevicesCommand, Format, RulesCommand,
    StatusFilter, TelemetryCommand,
};

/// The largest page the server serves; `--limit` below it asks for smaller pages.
const MAX_PAGE: u32 = 10_000;

/// Runs one client command. `Command::Dev` and `Command::Serve` are server commands and are
/// refused here.
pub async fn run_client(command: Command) -> anyhow::Result<()> {
    let opts = match &command {
        Command::Dev(_) | Command::Serve(_) => {
            bail!("this is a server command, not a client command")
        }
        Command::Telemetry(a) => &a.opts,
        Command::Rules(a) => &a.opts,
        Command::Alerts(a) => &a.opts,
        Command::Devices(a) => &a.opts,
        Command::Cluster(a) => &a.opts,
    };
    let ctx = Ctx::new(opts)?;
    let result = match &command {
        Command::Dev(_) | Command::Serve(_) => Ok(()),
        Command::Telemetry(a) => telemetry(&ctx, &a.command).await,
        Command::Rules(a) => rules(&ctx, &a.command).await,
        Command::Alerts(a) => alerts(&ctx, &a.command).await,
        Command::Devices(a) => devices(&ctx, &a.command).await,
        Command::Cluster(a) => cluster(&ctx, &a.command).await,
    };
    result.map_err(|e| match e {
        Failure::Sdk(err) => anyhow!(output::describe_error(&err, &opts.profile)),
        Failure::Cli(err) => err,
    })
}

/// A failed command: an API error (described with the profile in mind) or anything else.
enum Failure {
    Sdk(starling_sdk::Error),
    Cli(anyhow::Error),
}

impl From<starling_sdk::Error> for Failure {
    fn from(e: starling_sdk::Error) -> Self {
        Failure::Sdk(e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Cli(e)
    }
}

type Outcome = Result<(), Failure>;

/// What every command needs: the client and how to print.
struct Ctx {
    client: Client,
    format: Format,
    tenant: String,
}

impl Ctx {
    fn new(opts: &ClientOpts) -> anyhow::Result<Ctx> {
        let describe = |e: starling_sdk::Error| anyhow!(output::describe_error(&e, &opts.profile));
        let profile = Profile::load(&opts.profile).map_err(describe)?;
        let client = Client::connect(&profile).map_err(describe)?;
        Ok(Ctx {
            client,
            format: opts.format,
            tenant: opts.tenant.clone(),
        })
    }

    /// Prints JSON lines, or a table of `rows(item)` under `headers`.
    fn print<T>(
        &self,
        items: &[T],
        json: impl Fn(&T) -> Json,
        headers: &[&str],
        row: impl Fn(&T) -> Vec<String>,
    ) -> Outcome {
        let text = match self.format {
            Format::Json => items.iter().map(|i| format!("{}\n", json(i))).collect(),
            Format::Table => table(headers, &items.iter().map(row).collect::<Vec<_>>()),
        };
        print_out(&text)
    }
}

fn print_out(text: &str) -> Outcome {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    Ok(())
}

fn now_ms() -> i64 {
    output::system_time_ms(std::time::SystemTime::now())
}

fn time_arg(name: &str, value: Option<&String>, default: i64) -> anyhow::Result<i64> {
    match value {
        None => Ok(default),
        Some(v) => output::parse_time(v, now_ms()).map_err(|e| anyhow!("--{name}: {e}")),
    }
}

const POINT_HEADERS: &[&str] = &["DEVICE", "METRIC", "TIME", "VALUE"];

fn point_row(p: &proto::Point) -> Vec<String> {
    vec![
        p.device.clone(),
        p.metric.clone(),
        format_ms(p.ts_ms),
        value_text(p.value.as_ref()),
    ]
}

async fn telemetry(ctx: &Ctx, command: &TelemetryCommand) -> Outcome {
    match command {
        TelemetryCommand::Query {
            device,
            metric,
            from,
            to,
            limit,
        } => {
            let now = now_ms();
            let mut request = QueryRequest {
                tenant: ctx.tenant.clone(),
                device: device.clone(),
                metric: metric.clone().unwrap_or_default(),
                from_ms: time_arg("from", from.as_ref(), 0)?,
                to_ms: time_arg("to", to.as_ref(), now)?,
                page_size: limit.map_or(0, |l| l.clamp(1, MAX_PAGE)),
                ..Default::default()
            };
            let points = match limit {
                None => ctx.client.query_all(request).await?,
                Some(limit) => {
                    let limit = *limit as usize;
                    let mut points = Vec::new();
                    while points.len() < limit {
                        let page = ctx.client.query(request.clone()).await?;
                        points.extend(page.points);
                        if page.next_page_token.is_empty() {
                            break;
                        }
                        request.page_token = page.next_page_token;
                    }
                    points.truncate(limit);
                    points
                }
            };
            ctx.print(&points, output::point_json, POINT_HEADERS, point_row)
        }
        TelemetryCommand::Aggregate {
            device,
            metric,
            function,
            interval,
            from,
            to,
            limit,
        } => {
            let interval = humantime::parse_duration(interval.trim()).map_err(|e| {
                anyhow!("invalid --interval {interval:?}: {e}; use e.g. 30s, 1m, 1h, 1d")
            })?;
            let mut request = proto::AggregateRequest {
                tenant: ctx.tenant.clone(),
                device: device.clone(),
                metric: metric.clone(),
                function: function.clone(),
                interval_ms: i64::try_from(interval.as_millis()).unwrap_or(i64::MAX),
                from_ms: time_arg("from", from.as_ref(), 0)?,
                to_ms: time_arg("to", to.as_ref(), now_ms())?,
                page_size: limit.map_or(0, |l| l.clamp(1, MAX_PAGE)),
                page_token: String::new(),
            };
            let mut rows = Vec::new();
            let source = loop {
                let page = ctx.client.aggregate(request.clone()).await?;
                rows.extend(page.rows);
                let full = limit.is_some_and(|l| rows.len() >= l as usize);
                if full || page.next_page_token.is_empty() {
                    break page.source;
                }
                request.page_token = page.next_page_token;
            };
            if let Some(limit) = limit {
                rows.truncate(*limit as usize);
            }
            let json = |r: &proto::AggregateRow| {
                serde_json::json!({"start": format_ms(r.start_ms), "start_ms": r.start_ms,
                    "value": r.value, "count": r.count, "source": source})
            };
            let row = |r: &proto::AggregateRow| {
                vec![
                    format_ms(r.start_ms),
                    r.value.to_string(),
                    r.count.to_string(),
                    source.clone(),
                ]
            };
            ctx.print(&rows, json, &["START", "VALUE", "COUNT", "SOURCE"], row)
        }
        TelemetryCommand::Latest { device } => {
            let points = ctx.client.latest(&ctx.tenant, device).await?;
            ctx.print(&points, output::point_json, POINT_HEADERS, point_row)
        }
        TelemetryCommand::Subscribe { device, metrics } => subscribe(ctx, device, metrics).await,
        TelemetryCommand::Publish { device, values, ts } => {
            let values = output::parse_values(values).map_err(|e| anyhow!(e))?;
            // A client-side timestamp makes an SDK retry idempotent (same device, metric, ts).
            let sample = proto::Sample {
                ts_ms: time_arg("ts", ts.as_ref(), now_ms())?,
                seq: None,
                values: values.into_iter().collect(),
            };
            let response = ctx
                .client
                .publish(&ctx.tenant, device, vec![sample])
                .await?;
            let rejections = &response.rejections;
            match ctx.format {
                Format::Json => {
                    let rejected: Vec<Json> = rejections
                        .iter()
                        .map(|r| serde_json::json!({"sample": r.sample, "metric": r.metric, "reason": r.reason, "message": r.message}))
                        .collect();
                    let line = serde_json::json!({"accepted": response.accepted_points, "rejections": rejected});
                    print_out(&format!("{line}\n"))?;
                }
                Format::Table => {
                    let mut text = format!("accepted {} point(s)\n", response.accepted_points);
                    for r in rejections {
                        text.push_str(&format!(
                            "rejected {}: {} ({})\n",
                            r.metric, r.message, r.reason
                        ));
                    }
                    print_out(&text)?;
                }
            }
            if rejections.is_empty() {
                Ok(())
            } else {
                Err(Failure::Cli(anyhow!(
                    "{} value(s) rejected",
                    rejections.len()
                )))
            }
        }
    }
}

const RULE_HEADERS: &[&str] = &["ID", "VERSION", "UPDATED"];

fn rule_row(r: &proto::Rule) -> Vec<String> {
    vec![
        r.id.clone(),
        r.version.to_string(),
        format_ms(r.updated_at_ms),
    ]
}

/// A rule file's contents and format: `yaml` for `.yaml`/`.yml` files (the server parses and
/// validates them), otherwise `json`, checked to be JSON here so a typo fails before a call.
fn read_rule_file(path: &Path) -> anyhow::Result<(String, &'static str)> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml") {
        return Ok((text, "yaml"));
    }
    serde_json::from_str::<Json>(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    Ok((text, "json"))
}

/// `telemetry subscribe`: one line per point as it is stored (JSON, or aligned columns
/// under a header), until Ctrl-C or the end of the stream (an error: lag or node gone).
async fn subscribe(ctx: &Ctx, device: &str, metrics: &[String]) -> Outcome {
    let request = proto::SubscribeRequest {
        tenant: ctx.tenant.clone(),
        device: device.to_owned(),
        metrics: metrics.to_vec(),
    };
    let mut points = ctx.client.subscribe_with(request).await?;
    let line = |cells: &[String]| {
        format!(
            "{:<24} {:<16} {:<24} {}\n",
            cells[0], cells[1], cells[2], cells[3]
        )
    };
    // On stderr in both formats: once it is printed, no stored point is missed.
    eprintln!("subscribed to {device}; Ctrl-C to stop");
    if ctx.format == Format::Table {
        let headers: Vec<String> = POINT_HEADERS.iter().map(|h| (*h).to_owned()).collect();
        print_out(&line(&headers))?;
    }
    loop {
        tokio::select! {
            // The user is done: a normal exit.
            _ = tokio::signal::ctrl_c() => return Ok(()),
            // The next stored point, an error (lag, node gone), or the server ending it.
            point = points.next() => match point {
                Some(Ok(p)) => match ctx.format {
                    Format::Json => print_out(&format!("{}\n", output::point_json(&p)))?,
                    Format::Table => print_out(&line(&point_row(&p)))?,
                },
                Some(Err(e)) => return Err(e.into()),
                None => return Err(Failure::Cli(anyhow!("the server ended the subscription"))),
            },
        }
    }
}

async fn rules(ctx: &Ctx, command: &RulesCommand) -> Outcome {
    match command {
        RulesCommand::Apply { file } => {
            let (document, format) = read_rule_file(file)?;
            let rule = ctx.client.apply_rule(&document, format).await?;
            ctx.print(&[rule], output::rule_json, RULE_HEADERS, rule_row)
        }
        RulesCommand::List => {
            let rules = ctx.client.list_rules().await?;
            ctx.print(&rules, output::rule_json, RULE_HEADERS, rule_row)
        }
        RulesCommand::History { id } => {
            let versions = ctx.client.rule_history(id).await?;
            ctx.print(&versions, output::rule_json, RULE_HEADERS, rule_row)
        }
        RulesCommand::Rollback { id, to_version } => {
            let rule = ctx.client.rollback_rule(id, *to_version).await?;
            ctx.print(&[rule], output::rule_json, RULE_HEADERS, rule_row)
        }
        RulesCommand::Get { id } => {
            let rule = ctx.client.get_rule(id).await?;
            match ctx.format {
                Format::Json => print_out(&format!("{}\n", output::rule_json(&rule))),
                Format::Table => {
                    let document = serde_json::from_str::<Json>(&rule.document)
                        .ok()
                        .and_then(|d| serde_json::to_string_pretty(&d).ok())
                        .unwrap_or_else(|| rule.document.clone());
                    let head = table(RULE_HEADERS, &[rule_row(&rule)]);
                    print_out(&format!("{head}\n{document}\n"))
                }
            }
        }
        RulesCommand::Delete { id } => {
            let version = ctx.client.delete_rule(id).await?;
            let text = match ctx.format {
                Format::Json => format!(
                    "{}\n",
                    serde_json::json!({"id": id, "deleted_version": version})
                ),
                Format::Table => format!("deleted rule {id} (version {version})\n"),
            };
            print_out(&text)
        }
    }
}

const ALARM_HEADERS: &[&str] = &[
    "ID", "DEVICE", "RULE", "SEVERITY", "STATUS", "ACK", "METRIC", "VALUE", "RAISED", "MESSAGE",
];

fn alarm_row(a: &proto::Alarm) -> Vec<String> {
    vec![
        a.id.clone(),
        a.device.clone(),
        a.rule_id.clone(),
        a.severity.clone(),
        output::status_name(a.status()).to_owned(),
        if a.acknowledged { "yes" } else { "no" }.to_owned(),
        a.metric.clone(),
        value_text(a.value.as_ref()),
        format_ms(a.raised_at_ms),
        a.message.clone(),
    ]
}

async fn alerts(ctx: &Ctx, command: &AlertsCommand) -> Outcome {
    match command {
        AlertsCommand::List {
            device,
            status,
            severity,
        } => {
            let (status, acknowledged) = status_filter(*status);
            let request = ListAlarmsRequest {
                tenant: ctx.tenant.clone(),
                device: device.clone().unwrap_or_default(),
                status: status as i32,
                severity: severity.clone().unwrap_or_default(),
                acknowledged,
            };
            let alarms = ctx.client.list_alarms(request).await?;
            ctx.print(&alarms, output::alarm_json, ALARM_HEADERS, alarm_row)
        }
        AlertsCommand::Ack { id } => {
            let alarm = ctx.client.ack_alarm(id).await?;
            ctx.print(&[alarm], output::alarm_json, ALARM_HEADERS, alarm_row)
        }
        AlertsCommand::Watch {
            device,
            status,
            severity,
        } => {
            let (status, acknowledged) = status_filter(*status);
            let request = WatchAlarmsRequest {
                tenant: ctx.tenant.clone(),
                device: device.clone().unwrap_or_default(),
                severity: severity.clone().unwrap_or_default(),
                status: status as i32,
                acknowledged,
            };
            let mut events = ctx.client.watch_alarms(request).await?;
            if ctx.format == Format::Table {
                eprintln!("watching alarms; Ctrl-C to stop");
            }
            loop {
                tokio::select! {
                    // The user is done: a normal exit.
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    // The next committed transition, an error, or the server ending the stream.
                    event = events.next() => match event {
                        Some(Ok(event)) => print_out(&event_line(ctx.format, &event))?,
                        Some(Err(e)) => return Err(e.into()),
                        None => return Err(Failure::Cli(anyhow!("the server ended the watch"))),
                    },
                }
            }
        }
    }
}

/// `--status` as the request's (status, acknowledged) filters.
fn status_filter(status: Option<StatusFilter>) -> (proto::AlarmStatus, Option<bool>) {
    match status {
        None => (proto::AlarmStatus::Unspecified, None),
        Some(StatusFilter::Active) => (proto::AlarmStatus::Active, None),
        Some(StatusFilter::Cleared) => (proto::AlarmStatus::Cleared, None),
        Some(StatusFilter::Unacked) => (proto::AlarmStatus::Unspecified, Some(false)),
        Some(StatusFilter::Acked) => (proto::AlarmStatus::Unspecified, Some(true)),
    }
}

/// One watch event as a line: JSON, or `TIME TRANSITION ID DEVICE RULE METRIC=VALUE MESSAGE`.
fn event_line(format: Format, event: &proto::AlarmEvent) -> String {
    match format {
        Format::Json => format!("{}\n", output::event_json(event)),
        Format::Table => {
            let transition = output::transition_name(event.transition());
            let Some(a) = &event.alarm else {
                return format!("{transition} (no alarm)\n");
            };
            let at = if a.cleared_at_ms > 0 {
                a.cleared_at_ms
            } else {
                a.raised_at_ms
            };
            format!(
                "{}  {transition:<12}  {}  {}  {}  {}={}  {}\n",
                format_ms(at),
                a.id,
                a.device,
                a.rule_id,
                a.metric,
                value_text(a.value.as_ref()),
                a.message
            )
        }
    }
}

const DEVICE_HEADERS: &[&str] = &["TENANT", "ID", "TYPE", "LABELS", "FIRST SEEN", "LAST SEEN"];

fn device_row(d: &proto::Device) -> Vec<String> {
    vec![
        d.tenant.clone(),
        d.id.clone(),
        d.r#type.clone(),
        output::labels_text(&d.labels),
        format_ms(d.first_seen_ms),
        format_ms(d.last_seen_ms),
    ]
}

async fn devices(ctx: &Ctx, command: &DevicesCommand) -> Outcome {
    let collect = |pairs: &[(String, String)]| pairs.iter().cloned().collect();
    let devices = match command {
        DevicesCommand::List {
            device_type,
            labels,
        } => {
            let request = proto::ListDevicesRequest {
                tenant: ctx.tenant.clone(),
                r#type: device_type.clone().unwrap_or_default(),
                labels: collect(labels),
                ..Default::default()
            };
            ctx.client.list_devices_matching(request).await?
        }
        DevicesCommand::Get { id } => vec![ctx.client.get_device(&ctx.tenant, id).await?],
        DevicesCommand::Register {
            id,
            device_type,
            labels,
        } => {
            let request = proto::RegisterDeviceRequest {
                tenant: ctx.tenant.clone(),
                id: id.clone(),
                r#type: device_type.clone().unwrap_or_default(),
                labels: collect(labels),
            };
            vec![ctx.client.register_device(request).await?]
        }
        DevicesCommand::Label { id, set, remove } => {
            let request = proto::UpdateLabelsRequest {
                tenant: ctx.tenant.clone(),
                id: id.clone(),
                set: collect(set),
                remove: remove.clone(),
            };
            vec![ctx.client.update_device_labels(request).await?]
        }
        DevicesCommand::Delete { id } => {
            ctx.client.delete_device(&ctx.tenant, id).await?;
            return match ctx.format {
                Format::Json => print_out(&format!(
                    "{}\n",
                    serde_json::json!({"deleted": id, "tenant": ctx.tenant})
                )),
                Format::Table => print_out(&format!("deleted device {id}\n")),
            };
        }
    };
    ctx.print(&devices, output::device_json, DEVICE_HEADERS, device_row)
}

async fn cluster(ctx: &Ctx, command: &ClusterCommand) -> Outcome {
    let text = match command {
        ClusterCommand::Status => {
            let s = ctx.client.cluster_status().await?;
            match ctx.format {
                Format::Json => format!("{}\n", output::status_json(&s)),
                Format::Table => {
                    let mut text = table(&output::STATUS_HEADERS, &[output::status_row(&s)]);
                    if !s.members.is_empty() {
                        text.push('\n');
                        text.push_str(&output::members_table(&s.members));
                    }
                    text
                }
            }
        }
        ClusterCommand::Members => {
            let m = ctx.client.cluster_members().await?;
            match ctx.format {
                Format::Json => m
                    .members
                    .iter()
                    .map(|m| format!("{}\n", output::member_json(m)))
                    .collect(),
                Format::Table => output::members_table(&m.members),
            }
        }
        ClusterCommand::Shards => {
            let s = ctx.client.cluster_shards().await?;
            match ctx.format {
                Format::Json => s
                    .ranges
                    .iter()
                    .map(|r| {
                        format!(
                            "{}\n",
                            serde_json::json!({"first": r.first, "last": r.last,
                                               "owner": r.owner, "epoch": r.epoch})
                        )
                    })
                    .collect(),
                Format::Table => {
                    let rows: Vec<Vec<String>> = s
                        .ranges
                        .iter()
                        .map(|r| {
                            vec![
                                format!("{}-{}", r.first, r.last),
                                (r.last - r.first + 1).to_string(),
                                r.owner.to_string(),
                                r.epoch.to_string(),
                            ]
                        })
                        .collect();
                    table(&["SHARDS", "COUNT", "OWNER", "EPOCH"], &rows)
                }
            }
        }
        ClusterCommand::Remove { node } => {
            ctx.client.remove_member(*node).await?;
            format!("node {node} is being removed: its shards move to the other nodes\n")
        }
    };
    print_out(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let json = dir.path().join("r.json");
        std::fs::write(&json, r#"{"id": "r1"}"#).expect("write");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "id: r1").expect("write");
        let yaml = dir.path().join("r.yaml");
        std::fs::write(&yaml, "id: r1").expect("write");

        assert_eq!(
            read_rule_file(&json).expect("json"),
            (r#"{"id": "r1"}"#.to_owned(), "json")
        );
        assert_eq!(
            read_rule_file(&yaml).expect("yaml"),
            ("id: r1".to_owned(), "yaml")
        );
        let err = format!("{:#}", read_rule_file(&bad).expect_err("bad"));
        assert!(err.contains("not valid JSON"), "{err}");
        let err = read_rule_file(&dir.path().join("none.json"))
            .expect_err("missing")
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn watch_lines() {
        let event = proto::AlarmEvent {
            alarm: Some(proto::Alarm {
                id: "a1".into(),
                device: "truck-1".into(),
                rule_id: "hot".into(),
                metric: "temp".into(),
                value: Some(proto::Value {
                    kind: Some(proto::value::Kind::Number(31.0)),
                }),
                raised_at_ms: 1000,
                message: "temp > 30".into(),
                ..Default::default()
            }),
            transition: proto::Transition::Raised as i32,
        };
        assert_eq!(
            event_line(Format::Table, &event),
            "1970-01-01T00:00:01.000Z  raised        a1  truck-1  hot  temp=31  temp > 30\n"
        );
        let json: Json = serde_json::from_str(&event_line(Format::Json, &event)).expect("json");
        assert_eq!(json["transition"], "raised");
        assert_eq!(json["alarm"]["value"], 31.0);
    }
}
