//! `alerts.toml`: where alerts go, one `[[route]]` per destination, read and checked. Secrets
//! (URLs with tokens in them, HMAC keys, PagerDuty routing keys) come from the environment and
//! are kept as [`Secret`]s, which never print.

use std::path::{Path, PathBuf};

use chrono::TimeDelta;
use serde::Deserialize;

use super::Event;
use crate::error::ConfigError;

/// The Events API v2 endpoint a `pagerduty` route posts to unless its `url` says otherwise.
pub const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com/v2/enqueue";

/// How long an open alert waits before it is sent again, unless the route says.
const DEFAULT_REPEAT: &str = "4h";

/// The longest route name: it is a column of `batchscore_alerts` and a metric label.
const MAX_ROUTE_NAME: usize = 64;

/// A value that must not appear in logs or errors: it prints as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// JSON signed with HMAC-SHA256, as GitHub signs webhooks.
    Webhook,
    /// A Slack incoming webhook, Block Kit text.
    Slack,
    /// PagerDuty's Events API v2: trigger, then resolve with the same dedup key.
    PagerDuty,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Slack => "slack",
            Kind::PagerDuty => "pagerduty",
        }
    }
}

/// One destination.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub kind: Kind,
    /// Where requests go: the webhook's or Slack's URL, or PagerDuty's endpoint.
    pub url: Secret,
    /// PagerDuty's routing key.
    pub routing_key: Option<Secret>,
    /// A webhook's HMAC key.
    pub secret: Option<Secret>,
    jobs: Option<globset::GlobSet>,
    /// The events asked for; `None`: all (quarantined rows aside, see [`Route::wants`]).
    events: Option<Vec<String>>,
    pub repeat_every: TimeDelta,
}

impl Route {
    /// Whether alerts of `job` go to this route.
    pub fn covers(&self, job: &str) -> bool {
        self.jobs.as_ref().is_none_or(|jobs| jobs.is_match(job))
    }

    /// Whether the route takes `event` (`resolved` for resolutions). Some alerts go only to
    /// routes that name their event: rows quarantined in a committed window are news to a
    /// route that asked for `bad_rows`, noise to one that takes everything by default.
    pub fn wants(&self, event: &str, only_if_named: bool) -> bool {
        match &self.events {
            Some(events) => events.iter().any(|e| e == event),
            None => !only_if_named,
        }
    }
}

/// The routes of one file.
#[derive(Debug, Clone)]
pub struct Routes {
    pub path: PathBuf,
    pub routes: Vec<Route>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default)]
    route: Vec<RouteFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    name: String,
    kind: String,
    url: Option<String>,
    url_env: Option<String>,
    secret_env: Option<String>,
    jobs: Option<Vec<String>>,
    events: Option<Vec<String>>,
    repeat_every: Option<String>,
}

/// Where the routes file is: `explicit` (`--alerts`, `BATCHSCORE_ALERTS`), which must exist,
/// or `alerts.toml` next to the jobs directory, which may not.
pub fn locate(explicit: Option<&Path>, jobs_dir: &Path) -> (PathBuf, bool) {
    match explicit {
        Some(path) => (path.to_owned(), true),
        None => {
            let beside = std::path::absolute(jobs_dir)
                .ok()
                .and_then(|dir| dir.parent().map(Path::to_owned))
                .unwrap_or_default();
            (beside.join("alerts.toml"), false)
        }
    }
}

/// Read and check the routes file; `Ok(None)` where there is none and none was asked for.
/// `env` reads the environment (the process's, but tests give their own).
pub fn load(
    path: &Path,
    required: bool,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Routes>, ConfigError> {
    let file_error = |problem: String| ConfigError::Alerts {
        path: path.to_owned(),
        route: None,
        problem,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
        Err(e) => return Err(file_error(format!("cannot read the alert routes: {e}"))),
    };
    let file: RoutesFile = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
    let mut routes = Vec::new();
    for route in file.route {
        let name = route.name.clone();
        let checked = check(route, &env).map_err(|problem| ConfigError::Alerts {
            path: path.to_owned(),
            route: Some(name.clone()),
            problem,
        })?;
        if routes.iter().any(|r: &Route| r.name == name) {
            return Err(file_error(format!("two routes are named `{name}`")));
        }
        routes.push(checked);
    }
    Ok(Some(Routes {
        path: path.to_owned(),
        routes,
    }))
}

fn check(route: RouteFile, env: &impl Fn(&str) -> Option<String>) -> Result<Route, String> {
    if route.name.is_empty()
        || route.name.chars().count() > MAX_ROUTE_NAME
        || route.name.chars().any(char::is_control)
    {
        return Err(format!(
            "a route's name must be 1 to {MAX_ROUTE_NAME} characters, none of them control characters"
        ));
    }
    let kind = match route.kind.as_str() {
        "webhook" => Kind::Webhook,
        "slack" => Kind::Slack,
        "pagerduty" => Kind::PagerDuty,
        other => {
            return Err(format!(
                "kind `{other}` is not one of webhook, slack, pagerduty"
            ));
        }
    };
    let from_env = |field: &str, var: &str| -> Result<Secret, String> {
        match env(var) {
            Some(value) if !value.trim().is_empty() => Ok(Secret(value.trim().to_owned())),
            _ => Err(format!(
                "{field} names the environment variable `{var}`, which is not set"
            )),
        }
    };
    let from_url_env = route
        .url_env
        .as_deref()
        .map(|var| from_env("url_env", var))
        .transpose()?;
    let (url, routing_key) = match (kind, route.url, from_url_env) {
        (Kind::PagerDuty, url, Some(key)) => (
            Secret(url.unwrap_or_else(|| PAGERDUTY_EVENTS.to_owned())),
            Some(key),
        ),
        (Kind::PagerDuty, _, None) => {
            return Err(
                "a pagerduty route needs url_env: the environment variable holding its routing key"
                    .to_owned(),
            );
        }
        (_, Some(_), Some(_)) => {
            return Err("give url or url_env, not both".to_owned());
        }
        (_, Some(url), None) => (Secret(url), None),
        (_, None, Some(url)) => (url, None),
        (_, None, None) => {
            return Err(
                "a route needs url_env (the environment variable holding its URL) or url"
                    .to_owned(),
            );
        }
    };
    match url::Url::parse(url.expose()) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
        // The URL may hold a token: the problem is said without it.
        _ => return Err("its URL is not an http:// or https:// URL".to_owned()),
    }
    let secret = match (kind, route.secret_env.as_deref()) {
        (Kind::Webhook, Some(var)) => Some(from_env("secret_env", var)?),
        (_, Some(_)) => {
            return Err("secret_env is for webhook routes only".to_owned());
        }
        (_, None) => None,
    };
    let jobs = match route.jobs {
        Some(patterns) => {
            let mut set = globset::GlobSetBuilder::new();
            for pattern in &patterns {
                let glob = globset::Glob::new(pattern)
                    .map_err(|e| format!("jobs pattern `{pattern}`: {e}"))?;
                set.add(glob);
            }
            Some(set.build().map_err(|e| format!("jobs: {e}"))?)
        }
        None => None,
    };
    if let Some(events) = &route.events {
        for event in events {
            if event != "resolved" && Event::parse(event).is_none() {
                return Err(format!(
                    "event `{event}` is not one of {}",
                    Event::NAMES.join(", ")
                ));
            }
        }
    }
    let repeat_text = route.repeat_every.as_deref().unwrap_or(DEFAULT_REPEAT);
    let repeat_every = crate::spec::parse_duration("repeat_every", repeat_text)?;
    if repeat_every <= TimeDelta::zero() {
        return Err(format!(
            "repeat_every `{repeat_text}` must be longer than 0s"
        ));
    }
    Ok(Route {
        name: route.name,
        kind,
        url,
        routing_key,
        secret,
        jobs,
        events: route.events,
        repeat_every,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(text: &str) -> Result<Routes, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.toml");
        std::fs::write(&path, text).unwrap();
        let env = |var: &str| match var {
            "HOOK" => Some("https://hooks.example.com/T0/secret-token".to_owned()),
            "KEY" => Some("hmac-key".to_owned()),
            _ => None,
        };
        load(&path, true, env)
            .map(Option::unwrap)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_route_takes_its_defaults() {
        let routes = loaded("[[route]]\nname = \"ops\"\nkind = \"webhook\"\nurl_env = \"HOOK\"\nsecret_env = \"KEY\"\n").unwrap();
        let ops = &routes.routes[0];
        assert_eq!(ops.repeat_every, TimeDelta::hours(4));
        assert!(ops.covers("anything"));
        assert!(ops.wants("failed", false) && ops.wants("resolved", false));
        assert!(!ops.wants("bad_rows", true));
        assert_eq!(ops.secret.as_ref().unwrap().expose(), "hmac-key");
        assert_eq!(format!("{ops:?}").matches("secret-token").count(), 0);
    }

    #[test]
    fn jobs_and_events_narrow_a_route() {
        let routes = loaded(
            "[[route]]\nname = \"x\"\nkind = \"slack\"\nurl = \"http://127.0.0.1:9/x\"\njobs = [\"machine_*\"]\nevents = [\"bad_rows\", \"late\"]\nrepeat_every = \"30m\"\n",
        )
        .unwrap();
        let x = &routes.routes[0];
        assert!(x.covers("machine_failure") && !x.covers("churn"));
        assert!(x.wants("bad_rows", true) && x.wants("late", false) && !x.wants("failed", false));
        assert!(!x.wants("resolved", false));
        assert_eq!(x.repeat_every, TimeDelta::minutes(30));
    }

    #[test]
    fn a_bad_route_is_named() {
        for (text, said) in [
            ("kind = \"email\"\nurl_env = \"HOOK\"", "kind `email`"),
            (
                "kind = \"webhook\"\nurl_env = \"UNSET_VAR\"",
                "`UNSET_VAR`, which is not set",
            ),
            (
                "kind = \"webhook\"\nurl_env = \"HOOK\"\nevents = [\"fire\"]",
                "event `fire`",
            ),
            ("kind = \"pagerduty\"\nurl = \"https://x\"", "routing key"),
            ("kind = \"slack\"\nurl = \"ftp://x\"", "not an http"),
            (
                "kind = \"slack\"\nurl_env = \"HOOK\"\nsecret_env = \"KEY\"",
                "webhook routes only",
            ),
            (
                "kind = \"slack\"\nurl_env = \"HOOK\"\nrepeat_every = \"soon\"",
                "repeat_every",
            ),
        ] {
            let err = loaded(&format!("[[route]]\nname = \"r1\"\n{text}\n")).unwrap_err();
            assert!(err.contains("route `r1`") && err.contains(said), "{err}");
            assert!(!err.contains("secret-token"), "{err}");
        }
        let err = loaded("[[route]]\nname = \"a\"\nkind = \"slack\"\nurl = \"http://x\"\n[[route]]\nname = \"a\"\nkind = \"slack\"\nurl = \"http://x\"\n").unwrap_err();
        assert!(err.contains("two routes are named `a`"), "{err}");
    }

    #[test]
    fn a_missing_file_is_no_routes_unless_asked_for() {
        let path = Path::new("/nonexistent/alerts.toml");
        assert!(load(path, false, |_| None).unwrap().is_none());
        assert!(load(path, true, |_| None).is_err());
    }
}
