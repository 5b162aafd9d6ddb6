//! `batchscore daemon`: the long-running scheduler.

use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{DaemonArgs, GlobalArgs};
use crate::daemon::{self, Controls, DaemonOptions};
use crate::status::pages::Pages;
use crate::{db, with_backend};

pub async fn run(global: &GlobalArgs, args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let max_concurrent = args
        .max_concurrent
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    // No wait on the database outlasts the lease, and the pool has room for every run at once
    // (see `db::Limits`).
    let limits = db::Limits::for_lease(args.lease).for_runs(max_concurrent);
    let db = db::connect_with(&global.database_url, limits).await?;
    // The status page reads on a pool of its own, so browsers never wait on the runs' pool.
    let pages = match args.listen {
        Some(_) => Some(Arc::new(
            Pages::connect(&global.database_url, global.jobs_dir.clone()).await?,
        )),
        None => None,
    };
    let options = DaemonOptions {
        jobs_dir: global.jobs_dir.clone(),
        strict: args.strict,
        max_concurrent,
        shutdown_grace: args.shutdown_grace,
        listen: args.listen,
        lease: args.lease,
        alert_routes: match super::alerts::routes(global) {
            Ok(routes) => routes.filter(|r| !r.routes.is_empty()),
            Err(err) => {
                tracing::error!(error = %err, "alert routes unusable: running without alerts (batchscore jobs validate)");
                None
            }
        },
        public_url: global.public_url.clone(),
        late_check_every: args.late_check_every,
        pages,
    };
    let controls = Controls::signals()?;
    with_backend!(db, backend => daemon::run(backend, options, controls).await)
}
