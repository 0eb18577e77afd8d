//! `bucky demo`: a local cluster of three real agents on 127.0.0.2–4 (or `--ips`), grown from a 2-node ring to a
//! 3-node ring and rebalanced, with every generated point compared at the end. Needs no root and no
//! config: the agents listen on loopback addresses and keep their data in a temporary directory.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bucky_wire::MetricStat;
use futures_util::StreamExt;
use hashring::{Hash, Node, RingSpec};
use whisper::{CreateOptions, Point, Retention, WhisperBuf};

use crate::cli::{DemoArgs, DEFAULT_EXCLUDES};
use crate::client::{Client, Upload};
use crate::cluster::{list_agents, Cluster};
use crate::config::{Addr, Config};
use crate::ctx::Ctx;
use crate::engine::{self, unix_now, Interrupts, Operation, Options};
use crate::error::one_line;
use crate::plan::{self, find_misplaced};
use crate::printer::{human_bytes, Printer};
use crate::{ExitStatus, UsageError};

/// Minutes of data written per metric.
const POINTS: i64 = 120;
/// Schema of the generated metrics.
const SCHEMA: &str = "1m:1d";

/// The `bucky-agent` binary: next to this executable, else on PATH.
fn agent_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    if let Some(dir) = exe.parent() {
        let candidate = dir.join("bucky-agent");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("bucky-agent");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(UsageError(format!(
        "bucky-agent not found next to {} nor on PATH: build it with `cargo build --release` (it is part of the \
         bucky workspace) and run target/release/bucky demo",
        exe.display()
    ))
    .into())
}

/// The running agents; killed on drop unless kept.
struct Agents {
    children: Vec<(String, Child)>,
    keep: bool,
}

impl Agents {
    fn stop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        if !self.keep {
            self.stop();
        }
    }
}

/// A port free on every address.
fn pick_port(ips: &[String], wanted: Option<u16>) -> anyhow::Result<u16> {
    // An address this machine cannot listen on at all is named, with the addresses used and how to change them.
    for ip in ips {
        if let Err(e) = TcpListener::bind((ip.as_str(), 0)) {
            return Err(UsageError(cannot_listen(ip, ips, &e)).into());
        }
    }
    let free_everywhere = |port: u16| ips.iter().all(|ip| TcpListener::bind((ip.as_str(), port)).is_ok());
    if let Some(port) = wanted {
        if !free_everywhere(port) {
            bail!("port {port} is not free on {}", ips.join(", "));
        }
        return Ok(port);
    }
    if free_everywhere(bucky_wire::DEFAULT_PORT) {
        return Ok(bucky_wire::DEFAULT_PORT);
    }
    for _ in 0..50 {
        let port = TcpListener::bind((ips[0].as_str(), 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| UsageError(cannot_listen(&ips[0], ips, &e)))?
            .port();
        if free_everywhere(port) {
            return Ok(port);
        }
    }
    bail!("no port is free on all of {}", ips.join(", "))
}

/// Why the demo cannot start on `ips`: the address that failed, all three, and the flag that changes them.
fn cannot_listen(ip: &str, ips: &[String], error: &std::io::Error) -> String {
    format!(
        "cannot listen on {ip} ({error}): the demo's agents need the addresses {}; give three this machine has \
         with --ips A,B,C",
        ips.join(", ")
    )
}

#[allow(clippy::too_many_arguments)]
fn start_agent(
    binary: &Path,
    dir: &Path,
    ip: &str,
    port: u16,
    ring: &[String],
    hash: Hash,
    replicas: usize,
    generation: u32,
) -> anyhow::Result<Child> {
    let data = dir.join(ip).join("whisper");
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let log = dir.join(ip).join(format!("agent.{generation}.log"));
    let log = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    Command::new(binary)
        .args(["-b", &format!("{ip}:{port}"), "-n", ip])
        .arg("-p")
        .arg(&data)
        .args(["--hash", hash.name(), "--replicas", &replicas.to_string()])
        .args(ring)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))
}

async fn wait_ready(client: &Client, agents: &mut Agents, port: u16, dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for (ip, child) in &mut agents.children {
        let addr = Addr { host: ip.clone(), port };
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("the agent on {addr} exited ({status}); see its log in {}", dir.join(ip.as_str()).display());
            }
            if client.hashring(&addr).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent on {addr} did not answer within 30 s; see its log in {}",
                    dir.join(ip.as_str()).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// The generated value of metric `i` at step `k` (exactly representable).
fn value(i: usize, k: i64) -> f64 {
    (i as f64) * 1000.0 + k as f64
}

fn metric_name(i: usize) -> String {
    format!("demo.host{:02}.{}.{}", i % 40, ["cpu", "disk", "net", "mem"][i / 40 % 4], i / 160)
}

fn generate(i: usize, end: i64, header: &whisper::Header) -> anyhow::Result<Vec<u8>> {
    let mut buf = WhisperBuf::empty(header.clone());
    let points: Vec<Point> = (0..POINTS).map(|k| Point::new(end - (POINTS - 1 - k) * 60, value(i, k))).collect();
    buf.update_many(&points, end)?;
    Ok(buf.into_bytes())
}

async fn count_per_agent(ctx: &Ctx, agents: &[Addr]) -> BTreeMap<String, u64> {
    let query = crate::client::ListQuery { regex: None, force: true };
    list_agents(&ctx.client, &query, agents)
        .await
        .into_iter()
        .map(|(a, r)| (a.to_string(), r.map_or(0, |l| l.len() as u64)))
        .collect()
}

/// Runs the demo.
pub(super) async fn run(args: &DemoArgs) -> anyhow::Result<ExitStatus> {
    let hash: Hash = args.hash.parse().map_err(|e| UsageError(format!("{e}")))?;
    if args.ips.len() != 3 {
        return Err(UsageError("--ips needs three addresses".into()).into());
    }
    if !(1..=2).contains(&args.replicas) {
        return Err(UsageError("--replicas must be 1 or 2".into()).into());
    }
    if args.metrics == 0 {
        return Err(UsageError("--metrics must be at least 1".into()).into());
    }
    let binary = agent_binary()?;
    let (dir, _temp) = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let temp = tempfile::Builder::new().prefix("bucky-demo.").tempdir().context("cannot create a temp dir")?;
            let path = temp.path().to_owned();
            if args.keep {
                (temp.keep(), None)
            } else {
                (path, Some(temp))
            }
        }
    };
    let ips = &args.ips;
    let port = pick_port(ips, args.port)?;
    let progress = !args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let config = Config {
        seed: Addr { host: ips[0].clone(), port },
        workers: 8,
        json: false,
        verbose: false,
        force: true,
        timeout: Duration::from_secs(30),
        cache_wait: Duration::from_secs(120),
        snappy: true,
        token: None,
        progress,
        diverse_replicas: None,
        ring_config: None,
        ring_cluster: None,
    };
    let client = Client::new(&config)?;
    let printer = Printer::new(false, false, progress);
    let ctx = Ctx { config, client, printer };
    let p = &ctx.printer;
    p.info(format!("bucky demo: agent {} , data in {}", binary.display(), dir.display()));

    // 1. Two agents, a 2-node ring.
    let ring_v1: Vec<String> = ips[..2].to_vec();
    let ring_v2: Vec<String> = ips.to_vec();
    let mut agents = Agents { children: Vec::new(), keep: false };
    for ip in &ring_v1 {
        agents.children.push((ip.clone(), start_agent(&binary, &dir, ip, port, &ring_v1, hash, args.replicas, 1)?));
    }
    wait_ready(&ctx.client, &mut agents, port, &dir).await?;
    p.info(format!("1. started 2 agents on {} (port {port}), ring {} RF {}", ring_v1.join(", "), hash, args.replicas));

    // 2. Write the metrics where the 2-node ring puts them.
    let nodes: Vec<Node> = ring_v1.iter().map(|ip| Node::new(ip.clone(), None, None)).collect();
    let ring = RingSpec::new(nodes, hash).replicas(args.replicas).build()?;
    let retentions = Retention::parse_list(SCHEMA)?;
    let header = whisper::header_for(&retentions, &CreateOptions::default())?;
    let end = unix_now() / 60 * 60;
    let written = futures_util::stream::iter(0..args.metrics)
        .map(|i| {
            let (ctx, ring, header) = (&ctx, &ring, &header);
            async move {
                let name = metric_name(i);
                let data = generate(i, end, header)?;
                let stat = MetricStat { name: name.clone(), mode: 0o644, mod_time: end, ..MetricStat::default() };
                let upload = Upload::new(stat, &data, true)?;
                for node in ring.nodes_for(&name) {
                    let addr = Addr { host: node.server.clone(), port };
                    ctx.client.heal(&addr, &name, &upload).await?;
                }
                anyhow::Ok(data.len() as u64)
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let mut bytes = 0;
    for w in written {
        bytes += w.context("writing the demo metrics")?;
    }
    let v1_agents: Vec<Addr> = ring_v1.iter().map(|ip| Addr { host: ip.clone(), port }).collect();
    let before = count_per_agent(&ctx, &v1_agents).await;
    p.info(format!(
        "2. wrote {} metrics ({SCHEMA}, {POINTS} points each, {}) onto the 2-node ring: {}",
        args.metrics,
        human_bytes(bytes),
        before.iter().map(|(a, n)| format!("{a} {n}")).collect::<Vec<_>>().join(", ")
    ));

    // 3. Grow the ring to three nodes: every agent restarts with the new ring.
    agents.stop();
    for ip in &ring_v2 {
        agents.children.push((ip.clone(), start_agent(&binary, &dir, ip, port, &ring_v2, hash, args.replicas, 2)?));
    }
    wait_ready(&ctx.client, &mut agents, port, &dir).await?;
    let cluster = Cluster::discover(&ctx.client, &ctx.config.seed, ctx.config.diverse_replicas).await?;
    cluster.require_healthy()?;
    p.info(format!("3. grew the ring to 3 nodes: {}", cluster.ring.describe()));

    // 4. inconsistent
    let excludes: Vec<String> = DEFAULT_EXCLUDES.map(String::from).to_vec();
    let found = find_misplaced(&ctx, &cluster, None, &excludes, &[]).await;
    if !found.failed.is_empty() {
        let failed: Vec<(&Addr, String)> = found.failed.iter().map(|(a, why)| (a, one_line(why.as_ref()))).collect();
        bail!("listing failed: {failed:?}");
    }
    p.info(format!(
        "4. bucky inconsistent: {} copies are on a node that is not among their replicas ({})",
        found.count(),
        found.copies.iter().map(|(a, c)| format!("{a} {}", c.len())).collect::<Vec<_>>().join(", ")
    ));

    // 5. rebalance --delete
    let jobs = plan::rebalance(&ctx, &cluster, None, &excludes, &[]).await?;
    let options = Options {
        op: Operation::Rebalance,
        delete: true,
        workers: 8,
        batch: 32,
        batch_bytes: engine::DEFAULT_BATCH_MIB << 20,
        offload: false,
        inflight_bytes: engine::DEFAULT_INFLIGHT_MIB << 20,
        attempts: 3,
        max_rate: None,
        state_file: None,
        error_file: None,
        error_tolerance: 0,
        now: unix_now,
        interrupts: Interrupts::CtrlC,
        throttle: None,
        damping: engine::DampingConfig::default(),
        graphite: None,
    };
    let summary = engine::execute(&ctx.client, &ctx.printer, options, jobs).await?;
    if summary.aborted {
        return Ok(ExitStatus::Interrupted);
    }
    p.info("5. bucky rebalance --delete:");
    summary.print(&ctx.printer)?;

    // 6. inconsistent again
    let again = find_misplaced(&ctx, &cluster, None, &excludes, &[]).await;
    p.info(format!("6. bucky inconsistent again: {} misplaced copies", again.count()));

    // 7. Compare every point.
    let mut compared = 0u64;
    let mut lost = 0u64;
    let mut missing_files = 0u64;
    let mut checks = futures_util::stream::iter(0..args.metrics)
        .map(|i| {
            let (ctx, cluster) = (&ctx, &cluster);
            async move {
                let name = metric_name(i);
                let mut results = Vec::new();
                for addr in cluster.replicas_of(&name) {
                    results.push(ctx.client.get(&addr, &name).await);
                }
                (i, results)
            }
        })
        .buffer_unordered(16);
    while let Some((i, results)) = checks.next().await {
        for result in results {
            let Some(fetched) = result.with_context(|| format!("reading back {}", metric_name(i)))? else {
                missing_files += 1;
                lost += POINTS as u64;
                continue;
            };
            let buf = WhisperBuf::from_bytes(fetched.data)?;
            for k in 0..POINTS {
                compared += 1;
                if buf.value_at(0, end - (POINTS - 1 - k) * 60) != Some(value(i, k)) {
                    lost += 1;
                }
            }
        }
    }
    let v2_agents: Vec<Addr> = ring_v2.iter().map(|ip| Addr { host: ip.clone(), port }).collect();
    let after = count_per_agent(&ctx, &v2_agents).await;
    p.info(format!(
        "7. metrics per node: {}",
        v2_agents
            .iter()
            .map(|a| format!(
                "{a} {} -> {}",
                before.get(&a.to_string()).copied().unwrap_or(0),
                after.get(&a.to_string()).copied().unwrap_or(0)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let ok = lost == 0 && again.count() == 0 && summary.ok(0);
    if ok {
        p.info(format!(
            "   moved {} metrics ({}), compared {compared} points on every replica: nothing lost.",
            summary.moved,
            human_bytes(summary.bytes)
        ));
    } else {
        p.error(format!(
            "compared {compared} points: {lost} lost or wrong, {missing_files} replica files missing, {} still misplaced",
            again.count()
        ));
    }

    if args.keep {
        agents.keep = true;
        let pids: Vec<String> = agents.children.iter().map(|(_, c)| c.id().to_string()).collect();
        p.info(format!(
            "\nThe agents are still running (data in {}). Try:\n  bucky servers -h {}:{port}\n  bucky list -h {}:{port} | head\n  \
             bucky locate -h {}:{port} {}\n  bucky inconsistent -h {}:{port}\nStop them with: kill {}",
            dir.display(),
            ips[0],
            ips[0],
            ips[0],
            metric_name(0),
            ips[0],
            pids.join(" ")
        ));
    } else {
        agents.stop();
        p.info("8. stopped the agents.");
    }
    Ok(ExitStatus::from_ok(ok))
}
