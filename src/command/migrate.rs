//! `batchscore migrate`: create or upgrade batchscore's own tables.

use std::process::ExitCode;

use crate::cli::GlobalArgs;
use crate::db::{self};
use crate::with_backend;

pub async fn run(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let db = db::connect(&global.database_url).await?;
    with_backend!(&db, backend => crate::db::migrate(backend).await)?;
    println!(
        "batchscore tables are up to date in {}",
        db::redact(&global.database_url)
    );
    Ok(ExitCode::SUCCESS)
}
