//! Throughput of bucky-agent over loopback: GET (identity and snappy), POST-heal into existing files and
//! POST-create of new files, for 17 KB metrics (schema `1m:1d`, 17,308 bytes), with 16 concurrent clients,
//! next to `cat` of the same files. Prints figures; it is not a timed test.
//!
//! ```text
//! cargo run --release -p bucky-agent --example bench_http [-- FILES]   # default 4000 files
//! ```
//! `BENCH_TMP` chooses the directory the files are written to (default: the system temp dir);
//! `BENCH_COALESCE=1` runs the agent with `--coalesce-writes`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bucky_agent::{AppState, Config};
use hashring::{Hash, Node, RingSpec};
use whisper::{CreateOptions, Point, Retention, WhisperBuf};

const CLIENTS: usize = 16;

fn main() -> anyhow::Result<()> {
    let files: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(4000);
    let base = std::env::var_os("BENCH_TMP").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::tempdir_in(base)?;
    let root = dir.path().join("whisper");
    std::fs::create_dir_all(root.join("bench"))?;

    // Files holding the even minutes of the last 12 h; heal sources holding the odd ones.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64 / 60 * 60;
    let header = whisper::header_for(&Retention::parse_list("1m:1d")?, &CreateOptions::default())?;
    let image = |parity: i64, seed: usize| -> anyhow::Result<Vec<u8>> {
        let mut buf = WhisperBuf::empty(header.clone());
        let points: Vec<Point> =
            (0..720).map(|i| Point::new(now - (2 * i + parity) * 60, (seed * 1000 + i as usize) as f64)).collect();
        buf.update_many(&points, now)?;
        Ok(buf.into_bytes())
    };
    let mut paths = Vec::with_capacity(files);
    for i in 0..files {
        let path = root.join(format!("bench/m{i}.wsp"));
        std::fs::write(&path, image(0, i)?)?;
        paths.push(path);
    }
    let source = Arc::new(image(1, 7)?);
    let size = source.len();
    println!("{files} files of {size} bytes (1m:1d), {CLIENTS} concurrent clients, loopback");

    let cat = time_cat(&paths)?;
    report("cat (one process, page cache)", files, size, cat);

    // The agent, in-process, on its own runtime.
    let server = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("agent").build()?;
    let ring = RingSpec::new(vec![Node::parse("127.0.0.1")?], Hash::CarbonCh).build()?;
    let mut config = Config::new("127.0.0.1", ring, &root);
    config.store.coalesce_writes = std::env::var_os("BENCH_COALESCE").is_some_and(|v| v == "1");
    if config.store.coalesce_writes {
        println!("agent runs with --coalesce-writes");
    }
    // As the daemon runs: every request in the in-flight registry, the watchdog running; BENCH_NO_REGISTRY=1
    // measures without the registry (what it costs).
    config.inflight_registry = std::env::var_os("BENCH_NO_REGISTRY").is_none_or(|v| v != "1");
    println!("in-flight registry {}", if config.inflight_registry { "on" } else { "off" });
    let state = AppState::new(config)?;
    state.diagnostics().start(server.handle())?;
    let listener = server.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = server.spawn(bucky_agent::serve(listener, state, async {
        let _ = stopped.await;
    }));

    let client_rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build()?;
    let run = |what: &'static str, make: Arc<dyn Fn(usize) -> reqwest::RequestBuilder + Send + Sync>| {
        let took = client_rt.block_on(drive(files, make))?;
        report(what, files, size, took);
        anyhow::Ok(took)
    };

    let get = {
        let (client, base) = (client.clone(), base.clone());
        run("GET", Arc::new(move |i| client.get(format!("{base}/metrics/bench.m{i}"))))?
    };
    {
        let (client, base) = (client.clone(), base.clone());
        run(
            "GET snappy",
            Arc::new(move |i| client.get(format!("{base}/metrics/bench.m{i}")).header("Accept-Encoding", "snappy")),
        )?;
    }
    let upload = |client: &reqwest::Client, url: String, name: String, body: Arc<Vec<u8>>| {
        let stat = bucky_wire::MetricStat { name, size: body.len() as i64, ..Default::default() };
        client
            .post(url)
            .header("Content-Type", "application/octet-stream")
            .header(bucky_wire::METRIC_STAT_HEADER, stat.to_header_value())
            .body(body.to_vec())
    };
    let heal = {
        let (client, base, source) = (client.clone(), base.clone(), Arc::clone(&source));
        run(
            "POST heal (fills 720 points, fsync)",
            Arc::new(move |i| {
                upload(&client, format!("{base}/metrics/bench.m{i}"), format!("bench.m{i}"), Arc::clone(&source))
            }),
        )?
    };
    {
        let (client, base, source) = (client.clone(), base.clone(), Arc::clone(&source));
        run(
            "POST create (temp, fsync, link, dir fsync)",
            Arc::new(move |i| {
                upload(&client, format!("{base}/metrics/fresh.m{i}"), format!("fresh.m{i}"), Arc::clone(&source))
            }),
        )?;
    }
    println!(
        "GET is {:.2}x the time of cat; POST heal {:.2}x",
        get.as_secs_f64() / cat.as_secs_f64(),
        heal.as_secs_f64() / cat.as_secs_f64()
    );

    let _ = stop.send(());
    server.block_on(serving)??;
    Ok(())
}

/// Sends `files` requests built by `make(i)` with `CLIENTS` in flight; every answer must be 200.
async fn drive(
    files: usize,
    make: Arc<dyn Fn(usize) -> reqwest::RequestBuilder + Send + Sync>,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (next, make) = (Arc::clone(&next), Arc::clone(&make));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= files {
                    return anyhow::Ok(());
                }
                let response = make(i).send().await?;
                let status = response.status();
                let body = response.bytes().await?;
                anyhow::ensure!(status == reqwest::StatusCode::OK, "request {i}: {status}: {body:?}");
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

fn time_cat(paths: &[PathBuf]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for chunk in paths.chunks(1000) {
        let status = Command::new("cat")
            .args(chunk.iter().map(|p| p.as_path()).collect::<Vec<&Path>>())
            .stdout(Stdio::null())
            .status()
            .context("run cat")?;
        anyhow::ensure!(status.success(), "cat failed");
    }
    Ok(started.elapsed())
}

fn report(what: &str, files: usize, size: usize, took: Duration) {
    let secs = took.as_secs_f64();
    println!(
        "{what:<44} {:>9.0} metrics/s {:>8.1} MB/s  ({:.2} s)",
        files as f64 / secs,
        (files * size) as f64 / secs / 1e6,
        secs
    );
}
