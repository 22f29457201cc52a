//! `walplayer quickstart`: the whole tool in one command, with nothing
//! configured. Mints certificates in a temporary directory, starts a sink
//! on loopback, generates WAL, plays it with a few jobs, checks that the
//! sink stored every byte, prints the summary and cleans up.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::common::certs::{self, CertSpec};
use crate::common::config::KlioConfig;
use crate::common::generate::{self, GenerateSpec, Payload};
use crate::common::play::{self, PlayOptions};
use crate::common::sink::{self, Fsync, Sink, SinkSettings};
use crate::common::tls;
use crate::common::upload::UploadSettings;
use crate::common::walname::segment_bytes_from_mib;

/// Cluster name the demo uploads as.
const CLUSTER: &str = "quickstart";

/// Flags of `walplayer quickstart`.
#[derive(Debug, Clone, clap::Args)]
pub struct QuickstartArgs {
    /// WAL files to generate and play
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub files: u64,
    /// Size of each WAL file in MB
    #[arg(long, value_name = "MB", default_value_t = 16)]
    pub wal_size: u64,
    /// Parallel uploads
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// Keep the temporary directory (certificates, WAL, results) and print its path
    #[arg(long)]
    pub keep: bool,
}

/// Runs the demo; returns the exit status of the play step.
pub async fn run(args: QuickstartArgs, shutdown: CancellationToken) -> Result<i32> {
    let segment_bytes =
        segment_bytes_from_mib(args.wal_size).map_err(|e| anyhow::anyhow!("--wal-size: {e}"))?;
    let tmp = tempfile::Builder::new()
        .prefix("walplayer-quickstart-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let root = tmp.path();
    eprintln!("quickstart: working in {}", root.display());

    let minted = certs::mint(&root.join("certs"), &CertSpec::default())?;
    eprintln!("quickstart: minted a CA, server and client certificates");

    let sink_tls = tls::server_config(&minted.server.cert, &minted.server.key, &minted.server.ca)?;
    let sink_data = root.join("sink");
    let sink = Sink::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SinkSettings {
            tls: sink_tls,
            storage: sink::storage(Some(sink_data.clone()), Fsync::Block),
            read_only: false,
        },
    )
    .await
    .context("cannot start the sink on loopback")?;
    let address = sink.local_addr().to_string();
    let sink_stop = shutdown.child_token();
    let sink_task = tokio::spawn(sink.serve(sink_stop.clone()));
    eprintln!(
        "quickstart: sink listening on {address}, storing into {}",
        sink_data.display()
    );

    let wal_dir = root.join("wal");
    let spec = GenerateSpec {
        dir: wal_dir.clone(),
        count: args.files,
        segment_bytes,
        timeline: 1,
        start_lsn: 0,
        pg_version: generate::PgVersion::V16,
        gzip: false,
        system_id: generate::DEFAULT_SYSTEM_ID,
    };
    tokio::task::spawn_blocking(move || {
        generate::generate(&spec, &Payload::synthetic(), &mut |_, _| {})
    })
    .await??;
    eprintln!(
        "quickstart: generated {} WAL files of {} MiB",
        args.files, args.wal_size
    );

    let results = root.join("results.json");
    let summary = root.join("summary.json");
    let outcome = play::play(
        PlayOptions {
            dir: wal_dir.clone(),
            jobs: args.jobs as usize,
            upload: UploadSettings {
                block_bytes: 2048 * 1024,
                timeout: std::time::Duration::from_secs(120),
            },
            klio: KlioConfig {
                cluster_name: CLUSTER.into(),
                address,
                server_ca: minted.client.ca.clone(),
                client_cert: minted.client.cert.clone(),
                client_key: minted.client.key.clone(),
            },
            output: Some(results.clone()),
            summary: Some(summary.clone()),
            quiet: false,
        },
        shutdown.clone(),
    )
    .await;
    sink_stop.cancel();
    let sink_totals = sink_task.await?.context("sink failed")?;
    let outcome = outcome?;
    eprintln!("quickstart: sink saw {}", sink_totals.to_text());

    let identical = compare_dirs(&wal_dir, &sink_data.join(CLUSTER))?;
    eprintln!(
        "quickstart: {identical} of {} files stored byte-identical",
        args.files
    );
    if args.keep {
        let kept = tmp.keep();
        eprintln!(
            "quickstart: kept {} (results.json, summary.json, certs/klio-config.yaml)",
            kept.display()
        );
    }
    let code = outcome.exit_code();
    if identical != args.files && code == 0 {
        anyhow::bail!(
            "the sink stored {identical} of {} files byte-identical",
            args.files
        );
    }
    Ok(code)
}

/// Counts files of `sent` that `stored` holds byte-identical.
fn compare_dirs(sent: &Path, stored: &Path) -> Result<u64> {
    let mut identical = 0;
    for entry in std::fs::read_dir(sent)? {
        let path = entry?.path();
        let Some(name) = path.file_name() else {
            continue;
        };
        let a = std::fs::read(&path)?;
        if std::fs::read(stored.join(name)).is_ok_and(|b| a == b) {
            identical += 1;
        }
    }
    Ok(identical)
}
