//! The status page as the daemon serves it: read on a small pool of its own, one page at a time,
//! so no number of browsers can take a connection or a core from the windows being scored.

use std::path::PathBuf;

use chrono::Utc;
use tokio::sync::Semaphore;

use super::page::{self, Links};
use super::{job, overview};
use crate::db::{self, Database};
use crate::with_backend;

/// Connections the pages read on: one page at a time, its jobs a few at once (see
/// `JUDGED_AT_ONCE`).
const CONNECTIONS: u32 = 4;

/// What the daemon's `/` and `/jobs/NAME` pages are made from.
pub struct Pages {
    db: Database,
    jobs_dir: PathBuf,
    /// One page is made at a time; others wait their turn.
    turn: Semaphore,
}

impl std::fmt::Debug for Pages {
    // Never the database's URL: it may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages")
            .field("jobs_dir", &self.jobs_dir)
            .finish_non_exhaustive()
    }
}

impl Pages {
    /// Open the pages' own pool on `url`.
    pub async fn connect(url: &str, jobs_dir: PathBuf) -> anyhow::Result<Pages> {
        let limits = db::Limits {
            connections: CONNECTIONS,
            ..db::Limits::default()
        };
        Ok(Pages {
            db: db::connect_with(url, limits).await?,
            jobs_dir,
            turn: Semaphore::new(1),
        })
    }

    /// Every job, reloading every `refresh` seconds (0: never).
    pub async fn overview(&self, refresh: u32) -> anyhow::Result<String> {
        let _turn = self.turn.acquire().await?;
        let now = Utc::now();
        let jobs =
            with_backend!(&self.db, backend => overview(backend, &self.jobs_dir, None, now).await)?;
        Ok(page::overview(&jobs, now, refresh, Links::Served).into_string())
    }

    /// Job `name`'s page (or its shard's), or `None` if the jobs directory has no such job or
    /// shard.
    pub async fn job(
        &self,
        name: &str,
        shard: Option<u32>,
        refresh: u32,
    ) -> anyhow::Result<Option<String>> {
        // Checked before the turn is taken: a made-up URL costs a directory listing, no query.
        if !job::exists(&self.jobs_dir, name, shard) {
            return Ok(None);
        }
        let _turn = self.turn.acquire().await?;
        let now = Utc::now();
        let detail = with_backend!(&self.db, backend => job::detail(backend, &self.jobs_dir, name, shard, now).await)?;
        Ok(Some(
            page::job(&detail, now, refresh, Links::Served).into_string(),
        ))
    }
}
