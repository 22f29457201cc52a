//! `walplayer quickstart`: the whole tool in one command, with nothing
//! configured. Mints certificates in a temporary directory, starts a sink
//! on loopback, a coordinator and a few agent processes (mutual TLS on
//! both channels), runs a small generated workload through them, checks
//! what the sink stored, prints the merged summary and cleans up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use walplayer_klio::console;
use walplayer_klio::exit::Exit;
use walplayer_klio::settings::{BlockSize, Jobs, UploadSettings};

use crate::certs::{self, CertSpec, MintedCerts};
use crate::progress::Progress;
use walplayer_coordinator::plan::{Length, Workload};
use walplayer_coordinator::{Coordinator, CoordinatorOptions};
use walplayer_klio::tls;
use walplayer_proto::control::{Source, Split};
use walplayer_sink::{self as sink, Fsync, Sink, SinkSettings};
use walplayer_wal::generate::check_page_headers;
use walplayer_wal::walname::{segment_bytes_from_mib, SegmentName};

/// Flags of `walplayer quickstart`.
#[derive(Debug, Clone, clap::Args)]
pub struct QuickstartArgs {
    /// WAL files in total, over every agent and cluster
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub files: u64,
    /// Size of each WAL file in MB
    #[arg(long, value_name = "MB", default_value_t = 16)]
    pub wal_size: u64,
    /// Agent processes to start
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub agents: u32,
    /// Postgres clusters each agent simulates
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub clusters_per_agent: u32,
    /// Parallel uploads per agent
    #[arg(short, long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// Keep the temporary directory (certificates, results, stored WAL, logs) and print its path
    #[arg(long)]
    pub keep: bool,
    /// Make the temporary directory in DIR (default: $TMPDIR, else /tmp).
    /// Needs room for every file twice (generated and stored): with a
    /// read-only root file system, point it at a writable volume
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

/// Agent processes, killed if still running when dropped.
/// The agent processes; any still running when this is dropped are killed
/// (and reaped by tokio).
struct Agents(Vec<Child>);

/// Runs the demo; returns the coordinator's exit status.
pub async fn run(args: QuickstartArgs, shutdown: CancellationToken) -> Result<Exit> {
    let segment_bytes =
        segment_bytes_from_mib(args.wal_size).map_err(|e| anyhow::anyhow!("--wal-size: {e}"))?;
    let parent = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("walplayer-quickstart-")
        .tempdir_in(&parent)
        .with_context(|| {
            format!(
                "cannot create a temporary directory in {} (from {}); give a writable directory \
                 with --work-dir DIR or the TMPDIR environment variable",
                parent.display(),
                if args.work_dir.is_some() {
                    "--work-dir"
                } else if std::env::var_os("TMPDIR").is_some() {
                    "TMPDIR"
                } else {
                    "the default, as TMPDIR is not set"
                }
            )
        })?;
    let root = tmp.path();
    console::say(&format!("quickstart: working in {}", root.display()));
    let minted = certs::mint(&root.join("certs"), &CertSpec::default())?;

    let sink_data = root.join("sink");
    let sink = Sink::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SinkSettings {
            tls: tls::server_config(&minted.server.cert, &minted.server.key, &minted.server.ca)?,
            storage: sink::storage(Some(sink_data.clone()), Fsync::Block),
            read_only: false,
        },
    )
    .await
    .context("cannot start the sink on loopback")?;
    let sink_address = sink.local_addr().to_string();
    let sink_stop = CancellationToken::new();
    let sink_task = tokio::spawn(sink.serve(sink_stop.clone()));
    console::say(&format!(
        "quickstart: Klio-compatible sink on {sink_address} (mutual TLS, fsync every block)"
    ));

    let coordinator = Coordinator::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        coordinator_options(&args, &minted, root)?,
    )
    .await?;
    let control = coordinator.local_addr().to_string();
    let agents = start_agents(&args, &minted, root, &control, &sink_address)?;
    console::say(&format!(
        "quickstart: coordinator on {control} (mutual TLS), {} agent processes, {} clusters each; {} files of {} MiB",
        args.agents, args.clusters_per_agent, args.files, args.wal_size
    ));

    let outcome = coordinator
        .run(shutdown, Box::new(Progress::new(false, 0, 0)))
        .await;
    let agents_done = wait_agents(agents, Duration::from_secs(30)).await;
    sink_stop.cancel();
    let sink_totals = sink_task.await?;
    let outcome = outcome?;
    console::say(&format!("quickstart: sink saw {}", sink_totals.to_text()));
    if let Err(e) = agents_done {
        console::warn(&format!("quickstart: {e}"));
    }

    crate::report::write(&root.join("report.html"), &outcome.document())?;
    let stored = check_stored(&sink_data, segment_bytes)?;
    console::say(&format!("quickstart: {stored} stored files checked: sizes and page headers valid for their positions"));
    if args.keep {
        let kept = tmp.keep();
        console::say(&format!(
            "quickstart: kept {} (results.json, summary.json, report.html, certs/, sink/, agent-*.log)",
            kept.display()
        ));
    }
    if outcome.exit == Exit::Ok && stored != args.files {
        bail!(
            "the sink holds {stored} complete files, {} were sent",
            args.files
        );
    }
    Ok(outcome.exit)
}

fn coordinator_options(
    args: &QuickstartArgs,
    minted: &MintedCerts,
    root: &Path,
) -> Result<CoordinatorOptions> {
    let c = &minted.coordinator;
    Ok(CoordinatorOptions {
        agents: args.agents as usize,
        register_timeout: Duration::from_secs(30),
        ready_timeout: Duration::from_secs(120),
        agent_timeout: Duration::from_secs(15),
        run_timeout: None,
        barrier_delay: Duration::from_millis(500),
        workload: Workload {
            source: Source::Generate,
            length: Length::Total(args.files),
            wal_size_mib: args.wal_size,
            gzip: false,
            split: Split::Shard,
            clusters_per_agent: args.clusters_per_agent,
            jobs: Jobs::new(args.jobs.into(), Jobs::MAX)
                .map_err(|e| anyhow::anyhow!("--jobs: {e}"))?,
            upload: UploadSettings {
                block: BlockSize::DEFAULT,
                timeout: Duration::from_secs(120),
                retries: 2,
                verify: true,
            },
            address: None,
            simulate: None,
        },
        simulation: None,
        output: Some(root.join("results.json")),
        summary: Some(root.join("summary.json")),
        tls: Some(tls::control_server_config(&c.cert, &c.key, &c.ca)?),
    })
}

fn start_agents(
    args: &QuickstartArgs,
    minted: &MintedCerts,
    root: &Path,
    control: &str,
    sink: &str,
) -> Result<Agents> {
    let exe =
        std::env::current_exe().context("cannot find the walplayer executable to start agents")?;
    let mut agents = Agents(Vec::new());
    for i in 0..args.agents {
        let data = root.join(format!("agent-{i}"));
        std::fs::create_dir_all(&data)?;
        let log = std::fs::File::create(root.join(format!("agent-{i}.log")))?;
        let child = Command::new(&exe)
            .kill_on_drop(true)
            .arg("agent")
            .args([
                "--coordinator",
                control,
                "--name",
                &format!("quickstart-{i}"),
                "--once",
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&minted.klio_config)
            .args(["--cluster-name", "quickstart", "--address", sink])
            .arg("--control-ca")
            .arg(&minted.agent.ca)
            .arg("--control-cert")
            .arg(&minted.agent.cert)
            .arg("--control-key")
            .arg(&minted.agent.key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start agent process {}", exe.display()))?;
        agents.0.push(child);
    }
    Ok(agents)
}

async fn wait_agents(mut agents: Agents, limit: Duration) -> Result<()> {
    let all = async {
        for child in &mut agents.0 {
            let status = child.wait().await?;
            if !status.success() {
                bail!("an agent exited with {status}; see its agent-*.log (--keep)");
            }
        }
        Ok(())
    };
    tokio::time::timeout(limit, all)
        .await
        .map_err(|_| anyhow::anyhow!("agents did not exit within {limit:?}"))?
}

/// Checks every complete file the sink stored: full size, and a valid
/// page header on every page for the file's own position.
fn check_stored(dir: &Path, segment_bytes: u64) -> Result<u64> {
    let mut checked = 0;
    for cluster in std::fs::read_dir(dir)
        .with_context(|| format!("sink stored nothing in {}", dir.display()))?
    {
        let cluster: PathBuf = cluster?.path();
        for file in std::fs::read_dir(&cluster)? {
            let path = file?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let Some(segment) = SegmentName::parse(name) else {
                continue;
            };
            let data = std::fs::read(&path)?;
            if data.len() as u64 != segment_bytes {
                bail!(
                    "{} holds {} bytes, not {segment_bytes}",
                    path.display(),
                    data.len()
                );
            }
            check_page_headers(&data, segment, segment_bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            checked += 1;
        }
    }
    Ok(checked)
}
