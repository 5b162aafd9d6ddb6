//! `batchscore_alerts`: the state that makes an alert go out once, whichever process sees its
//! cause first. Every change is a compare-and-set, as claims are: the process whose statement
//! changed the row delivers; the others, which lost the race, deliver nothing.

use chrono::TimeDelta;

use super::dialect::{self, Dialect, Param};
use crate::plan::Window;

/// Which alert: one per job, shard (-1: the whole job), event and route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AlertKey<'a> {
    pub job: &'a str,
    pub shard: i64,
    pub event: &'a str,
    pub route: &'a str,
}

impl AlertKey<'_> {
    fn params(&self) -> Vec<Param> {
        vec![
            self.job.into(),
            self.shard.into(),
            self.event.into(),
            self.route.into(),
        ]
    }
}

/// What a firing condition came to at one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fired {
    /// A new alert (none was open): deliver it.
    Opened,
    /// The open alert was last sent `repeat_every` ago or more: deliver it again.
    Repeated,
    /// Open and sent recently, or another process just took it: deliver nothing.
    Held,
}

const WHERE_KEY: &str = "job = $1 AND shard = $2 AND event = $3 AND route = $4";

/// What an alert row says of its latest cause.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cause<'a> {
    pub run_id: Option<&'a str>,
    pub window: Option<Window>,
    pub message: &'a str,
}

/// Open the alert, or take its repeat if `repeat_every` has passed since it was last sent.
pub(crate) async fn fire<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    key: AlertKey<'_>,
    repeat_every: TimeDelta,
    cause: Cause<'_>,
) -> anyhow::Result<Fired> {
    let params = || {
        let mut params = key.params();
        params.extend([
            Param::from(cause.run_id),
            cause.window.map(|w| w.start).into(),
            cause.window.map(|w| w.end).into(),
            cause.message.into(),
        ]);
        params
    };
    // Opened anew: no row yet, or a resolved one.
    let insert = DB::upsert(
        "batchscore_alerts",
        &[
            "job",
            "shard",
            "event",
            "route",
            "status",
            "opened_at",
            "last_sent_at",
            "sent",
            "run_id",
            "window_start",
            "window_end",
            "message",
        ],
        &[
            &dialect::placeholders(1, 4)[..],
            &[
                "'firing'".to_owned(),
                DB::NOW.to_owned(),
                DB::NOW.to_owned(),
                "1".to_owned(),
            ],
            &dialect::placeholders(5, 4)[..],
        ]
        .concat(),
        "job, shard, event, route",
        &[],
        None,
    );
    if dialect::execute(DB::on_pool(pool), insert, params()).await? == 1 {
        return Ok(Fired::Opened);
    }
    let set = "run_id = $5, window_start = $6, window_end = $7, message = $8";
    let reopen = format!(
        "UPDATE batchscore_alerts SET status = 'firing', opened_at = {now}, last_sent_at = {now}, \
         resolved_at = NULL, sent = 1, {set} WHERE {WHERE_KEY} AND status = 'resolved'",
        now = DB::NOW
    );
    if dialect::execute(DB::on_pool(pool), reopen, params()).await? == 1 {
        return Ok(Fired::Opened);
    }
    let repeat = format!(
        "UPDATE batchscore_alerts SET last_sent_at = {now}, sent = sent + 1, {set} \
         WHERE {WHERE_KEY} AND status = 'firing' AND last_sent_at <= {due}",
        now = DB::NOW,
        due = DB::later("$9"),
    );
    let mut repeat_params = params();
    repeat_params.push(Param::Seconds(-repeat_every.as_seconds_f64()));
    if dialect::execute(DB::on_pool(pool), repeat, repeat_params).await? == 1 {
        return Ok(Fired::Repeated);
    }
    Ok(Fired::Held)
}

/// Resolve the open alert: true for the one process whose statement resolved it, which sends
/// the resolution; false where none was open (or another process resolved it first).
pub(crate) async fn resolve<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    key: AlertKey<'_>,
) -> anyhow::Result<bool> {
    let sql = format!(
        "UPDATE batchscore_alerts SET status = 'resolved', resolved_at = {} \
         WHERE {WHERE_KEY} AND status = 'firing'",
        DB::NOW
    );
    Ok(dialect::execute(DB::on_pool(pool), sql, key.params()).await? == 1)
}

/// The open alerts of a job's shard, as (event, route): a read, so that clearing what is not
/// open (the usual case, after every window) writes nothing.
pub(crate) async fn open_alerts<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    shard: i64,
) -> anyhow::Result<Vec<(String, String)>> {
    let sql = "SELECT event, route FROM batchscore_alerts \
               WHERE job = $1 AND shard = $2 AND status = 'firing'"
        .to_owned();
    let rows = dialect::fetch_all(DB::on_pool(pool), sql, vec![job.into(), shard.into()]).await?;
    rows.iter()
        .map(|row| {
            let event = dialect::required(DB::text(row, "event")?, "event")?;
            Ok((event, dialect::required(DB::text(row, "route")?, "route")?))
        })
        .collect()
}
