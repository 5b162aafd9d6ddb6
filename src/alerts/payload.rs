//! What each kind of route receives: the webhook's JSON and its signature, a Slack message in
//! Block Kit, and a PagerDuty Events API v2 event.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{Alert, Status};
use crate::time::time_text;

/// The webhook's body: every field of the alert, as documented in the README ("Alerts").
pub fn webhook(alert: &Alert, status: Status, link: Option<&str>) -> Vec<u8> {
    let body = json!({
        "event": alert.event.as_str(),
        "status": status.as_str(),
        "job": alert.job,
        "shard": alert.shard,
        "window": alert.window.map(|w| json!({"start": time_text(w.start), "end": time_text(w.end)})),
        "run_id": alert.run_id,
        "message": alert.message,
        "details": alert.details,
        "dedup_key": alert.dedup_key(),
        "occurred_at": time_text(alert.occurred_at),
        "link": link,
    });
    serde_json::to_vec(&body).expect("JSON values serialize")
}

/// `sha256=<hex HMAC-SHA256 of body>`: what `X-Batchscore-Signature` carries, as GitHub's
/// `X-Hub-Signature-256` does.
pub fn signature(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A Slack incoming-webhook message: a header naming the event and the job, the message, the
/// job, event, window and shard as fields, and a context line (run, dedup key, link). `text`
/// is the notification's fallback.
pub fn slack(alert: &Alert, status: Status, link: Option<&str>) -> Value {
    let headline = match status {
        Status::Firing => format!("{}: {}", alert.event.title(), alert.job),
        Status::Resolved => format!("Resolved: {} of {}", alert.event.title(), alert.job),
    };
    let window = alert
        .window
        .map_or_else(|| "–".to_owned(), |w| w.to_string());
    let shard = alert
        .shard
        .map_or_else(|| "all".to_owned(), |s| s.to_string());
    let mut context = vec![format!("dedup key `{}`", escape(&alert.dedup_key()))];
    if let Some(run_id) = &alert.run_id {
        context.insert(0, format!("run `{}`", escape(run_id)));
    }
    if let Some(link) = link {
        context.push(format!("<{}|status>", escape(link)));
    }
    json!({
        "text": cut(&format!("[{}] {headline}: {}", status.as_str(), alert.message), 3000),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": cut(&headline, 150)}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": cut(&escape(&alert.message), 3000)},
                "fields": [
                    {"type": "mrkdwn", "text": format!("*Job*\n{}", cut(&escape(&alert.job), 1900))},
                    {"type": "mrkdwn", "text": format!("*Event*\n{} ({})", alert.event.as_str(), status.as_str())},
                    {"type": "mrkdwn", "text": format!("*Window*\n{window}")},
                    {"type": "mrkdwn", "text": format!("*Shard*\n{shard}")},
                ],
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": cut(&context.join(" · "), 3000)}]},
        ],
    })
}

/// A PagerDuty Events API v2 event: `trigger` with the alert, or `resolve` with its dedup key.
pub fn pagerduty(
    alert: &Alert,
    status: Status,
    routing_key: &str,
    host: &str,
    link: Option<&str>,
) -> Value {
    if status == Status::Resolved {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": alert.dedup_key(),
        });
    }
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert.dedup_key(),
        "payload": {
            "summary": cut(&format!("batchscore {}: {}", alert.event.as_str(), alert.message), 1024),
            "source": host,
            "severity": alert.event.severity(),
            "timestamp": time_text(alert.occurred_at),
            "component": alert.job,
            "group": "batchscore",
            "class": alert.event.as_str(),
            "custom_details": {
                "job": alert.job,
                "shard": alert.shard,
                "window": alert.window.map(|w| w.to_string()),
                "run_id": alert.run_id,
                "message": alert.message,
                "details": alert.details,
            },
        },
        "client": "batchscore",
    });
    if let Some(link) = link {
        event["client_url"] = json!(link);
        event["links"] = json!([{"href": link, "text": "batchscore status"}]);
    }
    event
}

/// Slack's mrkdwn escapes: `&`, `<` and `>` would otherwise start entities and links.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `text` cut to at most `max` characters, marked where it was cut.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((at, _)) if text.chars().count() > max => format!("{}…", &text[..at]),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_github_style() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn text_is_cut_on_characters() {
        assert_eq!(cut("ééééé", 3), "éé…");
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3).chars().count(), 3);
    }
}
