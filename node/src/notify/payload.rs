//! What a delivery says, pure: the idempotency key, the JSON body (webhook, MQTT), the email
//! subject, body and Message-ID, the SMS text, and the MQTT topic. Table-tested.
//!
//! The JSON body (webhook and MQTT) is
//! `{"idempotency_key": "a-12:raised", "transition": "raised", "alarm": {…}}` where `alarm`
//! holds `id, tenant, device, rule_id, rule_version, severity, status, acknowledged, metric,
//! value, raised_at_ms, cleared_at_ms, message`; `value` is a number, boolean, string or
//! `{"lat", "lon"}`. Fields are only ever added.

use serde_json::{Value as Json, json};

use crate::model::{AlarmEvent, AlarmStatus, DEFAULT_TENANT, Transition, Value};

/// Longest SMS text, characters (one GSM segment).
pub const SMS_MAX_CHARS: usize = 160;

/// `raised`, `cleared` or `acknowledged`.
pub fn transition_name(t: Transition) -> &'static str {
    t.as_str()
}

/// `(alarm id, transition)` as one string, `a-12:raised`: the same on every retry and on every
/// node, so a receiver can drop duplicates (DESIGN.md §7).
pub fn idempotency_key(ev: &AlarmEvent) -> String {
    format!("{}:{}", ev.alarm.id, transition_name(ev.transition))
}

/// `alerts/{device}` for the default tenant, `tenants/{tenant}/alerts/{device}` otherwise (as
/// the telemetry topics).
pub fn mqtt_topic(ev: &AlarmEvent) -> String {
    let d = &ev.alarm.device;
    if d.tenant == DEFAULT_TENANT {
        format!("alerts/{}", d.device)
    } else {
        format!("tenants/{}/alerts/{}", d.tenant, d.device)
    }
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Number(n) => json!(n),
        Value::Bool(b) => json!(b),
        Value::Text(s) => json!(s),
        Value::Position { lat, lon } => json!({"lat": lat, "lon": lon}),
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Text(s) => s.clone(),
        Value::Position { lat, lon } => format!("({lat}, {lon})"),
    }
}

/// The JSON document sent to webhooks and published on MQTT.
pub fn json_body(ev: &AlarmEvent) -> Json {
    let a = &ev.alarm;
    json!({
        "idempotency_key": idempotency_key(ev),
        "transition": transition_name(ev.transition),
        "alarm": {
            "id": a.id,
            "tenant": a.device.tenant,
            "device": a.device.device,
            "rule_id": a.rule_id,
            "rule_version": a.rule_version,
            "severity": a.severity,
            "status": match a.status {
                AlarmStatus::Active => "active",
                AlarmStatus::Cleared => "cleared",
            },
            "acknowledged": a.acknowledged,
            "metric": a.metric,
            "value": value_json(&a.value),
            "raised_at_ms": a.raised_at_ms,
            "cleared_at_ms": a.cleared_at_ms,
            "message": a.message,
        }
    })
}

/// One line saying what happened: `[major] boiler: hot raised (temp = 35)`.
pub fn headline(ev: &AlarmEvent) -> String {
    let a = &ev.alarm;
    let device = if a.device.tenant == DEFAULT_TENANT {
        a.device.device.clone()
    } else {
        a.device.to_string()
    };
    format!(
        "[{}] {device}: {} {} ({} = {})",
        a.severity,
        a.rule_id,
        transition_name(ev.transition),
        a.metric,
        value_text(&a.value)
    )
}

/// Email subject: the headline.
pub fn email_subject(ev: &AlarmEvent) -> String {
    headline(ev)
}

/// Email body, plain text: headline, message, then one `key: value` line per detail.
pub fn email_body(ev: &AlarmEvent) -> String {
    let a = &ev.alarm;
    let mut lines = vec![headline(ev), String::new()];
    if !a.message.is_empty() {
        lines.push(a.message.clone());
        lines.push(String::new());
    }
    lines.push(format!("alarm: {}", a.id));
    lines.push(format!("device: {}", a.device));
    lines.push(format!("rule: {} (version {})", a.rule_id, a.rule_version));
    lines.push(format!("raised at (ms): {}", a.raised_at_ms));
    if let Some(c) = a.cleared_at_ms {
        lines.push(format!("cleared at (ms): {c}"));
    }
    lines.push(format!("acknowledged: {}", a.acknowledged));
    lines.push(format!("idempotency key: {}", idempotency_key(ev)));
    lines.join("\n") + "\n"
}

/// Message-ID of the email: `<a-12.raised@starling.alerts>`, derived from the idempotency key
/// so a retried mail has the same id and mail systems can drop the duplicate.
pub fn email_message_id(ev: &AlarmEvent) -> String {
    format!(
        "<{}.{}@starling.alerts>",
        ev.alarm.id,
        transition_name(ev.transition)
    )
}

/// SMS text: the headline, cut to [`SMS_MAX_CHARS`] characters (with `…`).
pub fn sms_text(ev: &AlarmEvent) -> String {
    let text = headline(ev);
    if text.chars().count() <= SMS_MAX_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(SMS_MAX_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// The body POSTed to the SMS provider's webhook.
pub fn sms_body(to: &str, ev: &AlarmEvent) -> Json {
    json!({"to": to, "text": sms_text(ev), "idempotency_key": idempotency_key(ev)})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Alarm, DeviceKey};

    fn event(tenant: &str, transition: Transition, value: Value, message: &str) -> AlarmEvent {
        AlarmEvent {
            alarm: Alarm {
                id: "a-12".into(),
                device: DeviceKey::new(tenant, "boiler"),
                rule_id: "hot".into(),
                rule_version: 7,
                severity: "major".into(),
                status: if transition == Transition::Raised {
                    AlarmStatus::Active
                } else {
                    AlarmStatus::Cleared
                },
                acknowledged: transition == Transition::Acknowledged,
                metric: "temp".into(),
                value,
                raised_at_ms: 1000,
                cleared_at_ms: (transition != Transition::Raised).then_some(2000),
                message: message.into(),
            },
            transition,
        }
    }

    #[test]
    fn keys_topics_and_headlines() {
        let n = |x| Value::Number(x);
        let cases = [
            (
                event(DEFAULT_TENANT, Transition::Raised, n(35.0), ""),
                "a-12:raised",
                "alerts/boiler",
                "[major] boiler: hot raised (temp = 35)",
                "<a-12.raised@starling.alerts>",
            ),
            (
                event("acme", Transition::Cleared, n(21.5), "rule deleted"),
                "a-12:cleared",
                "tenants/acme/alerts/boiler",
                "[major] acme/boiler: hot cleared (temp = 21.5)",
                "<a-12.cleared@starling.alerts>",
            ),
            (
                event(
                    DEFAULT_TENANT,
                    Transition::Acknowledged,
                    Value::Position {
                        lat: 1.5,
                        lon: -2.0,
                    },
                    "",
                ),
                "a-12:acknowledged",
                "alerts/boiler",
                "[major] boiler: hot acknowledged (temp = (1.5, -2))",
                "<a-12.acknowledged@starling.alerts>",
            ),
            (
                event(DEFAULT_TENANT, Transition::Raised, Value::Bool(true), ""),
                "a-12:raised",
                "alerts/boiler",
                "[major] boiler: hot raised (temp = true)",
                "<a-12.raised@starling.alerts>",
            ),
        ];
        for (ev, key, topic, headline_text, message_id) in cases {
            assert_eq!(idempotency_key(&ev), key);
            assert_eq!(mqtt_topic(&ev), topic);
            assert_eq!(headline(&ev), headline_text);
            assert_eq!(email_subject(&ev), headline_text);
            assert_eq!(email_message_id(&ev), message_id);
            assert_eq!(sms_text(&ev), headline_text);
        }
    }

    #[test]
    fn json_body_table() {
        let cases = [
            (Value::Number(35.0), json!(35.0)),
            (Value::Bool(false), json!(false)),
            (Value::Text("open".into()), json!("open")),
            (
                Value::Position { lat: 1.0, lon: 2.0 },
                json!({"lat": 1.0, "lon": 2.0}),
            ),
        ];
        for (value, expected) in cases {
            let body = json_body(&event("acme", Transition::Cleared, value, "m"));
            assert_eq!(body["idempotency_key"], "a-12:cleared");
            assert_eq!(body["transition"], "cleared");
            let a = &body["alarm"];
            assert_eq!(a["value"], expected);
            assert_eq!(a["tenant"], "acme");
            assert_eq!(a["device"], "boiler");
            assert_eq!(a["rule_version"], 7);
            assert_eq!(a["status"], "cleared");
            assert_eq!(a["cleared_at_ms"], 2000);
            assert_eq!(a["message"], "m");
        }
        let raised = json_body(&event("t", Transition::Raised, Value::Number(1.0), ""));
        assert_eq!(raised["alarm"]["cleared_at_ms"], Json::Null);
        assert_eq!(raised["alarm"]["status"], "active");
    }

    #[test]
    fn sms_is_cut_to_one_segment_and_email_carries_details() {
        let long = Value::Text("x".repeat(300));
        let ev = event(DEFAULT_TENANT, Transition::Raised, long, "");
        let text = sms_text(&ev);
        assert_eq!(text.chars().count(), SMS_MAX_CHARS);
        assert!(text.ends_with('…'));
        let body = sms_body("+15550100", &ev);
        assert_eq!(body["to"], "+15550100");
        assert_eq!(body["text"], Json::String(text));
        assert_eq!(body["idempotency_key"], "a-12:raised");

        let ev = event(
            "acme",
            Transition::Cleared,
            Value::Number(3.0),
            "rule deleted",
        );
        let mail = email_body(&ev);
        for line in [
            "rule deleted",
            "alarm: a-12",
            "device: acme/boiler",
            "rule: hot (version 7)",
            "cleared at (ms): 2000",
            "idempotency key: a-12:cleared",
        ] {
            assert!(
                mail.lines().any(|l| l == line),
                "{line:?} missing in {mail}"
            );
        }
    }
}
