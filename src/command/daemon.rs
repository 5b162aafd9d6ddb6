//! `batchscore daemon`: the long-running scheduler.

use std::process::ExitCode;

use crate::cli::{DaemonArgs, GlobalArgs};
use crate::daemon::{self, Controls, DaemonOptions};
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
    };
    let controls = Controls::signals()?;
    with_backend!(db, backend => daemon::run(backend, options, controls).await)
}
