//! Throughput and memory of a real `bucky-pickle-relay` process on loopback: N sender threads write
//! carbon-framed protocol-2 pickles as fast as the relay takes them, a sink counts the lines that come
//! out, and the relay's RSS is sampled. Run through `scripts/bench-pickle-relay.sh`.
//!
//! `bench --relay-bin PATH [--senders 4] [--batch 500] [--seconds 10]`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bucky_pickle_relay::{encode, stats::rss_of};

struct Args {
    relay_bin: String,
    senders: usize,
    batch: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args { relay_bin: String::new(), senders: 4, batch: 500, seconds: 10 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--relay-bin" => a.relay_bin = val(),
            "--senders" => a.senders = val().parse().expect("--senders N"),
            "--batch" => a.batch = val().parse().expect("--batch N"),
            "--seconds" => a.seconds = val().parse().expect("--seconds N"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.relay_bin.is_empty(), "--relay-bin PATH is required");
    a
}

/// Kills the relay if the bench panics.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn main() {
    let a = args();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    // The sink: counts lines (and checks the last byte is a newline).
    let sink = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let sink_addr = sink.local_addr().expect("sink addr");
    let received = Arc::new(AtomicU64::new(0));
    let rx = received.clone();
    std::thread::spawn(move || {
        for conn in sink.incoming() {
            let Ok(mut conn) = conn else { continue };
            let rx = rx.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            rx.fetch_add(buf[..n].iter().filter(|&&b| b == b'\n').count() as u64, Relaxed);
                        }
                    }
                }
            });
        }
    });

    let port = free_port();
    let relay = Command::new(&a.relay_bin)
        .args(["-b", &format!("127.0.0.1:{port}"), "-i", "0", &sink_addr.to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start the relay");
    let mut relay = Guard(relay);
    let pid = relay.0.id().to_string();
    let connect = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => return s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("relay did not start: {e}"),
            }
        }
    };

    // Pre-built frames: realistic paths, a timestamp per step, varied values.
    let frames: Vec<Vec<u8>> = (0..64)
        .map(|f| {
            let names: Vec<String> = (0..a.batch)
                .map(|i| format!("bench.host{:02}.cpu{}.metric_{:05}", f % 16, i % 8, (f * a.batch + i) % 20_000))
                .collect();
            let metrics: Vec<(&str, i64, f64)> = names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.as_str(), 1_700_000_000 + f as i64 * 60, (i as f64) * 0.37 + f as f64))
                .collect();
            let mut frame = Vec::new();
            encode::frame(&mut frame, &metrics);
            frame
        })
        .collect();
    let frames = Arc::new(frames);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let senders: Vec<_> = (0..a.senders)
        .map(|s| {
            let (frames, stop, sent) = (frames.clone(), stop.clone(), sent.clone());
            let mut conn = connect();
            let batch = a.batch as u64;
            std::thread::spawn(move || {
                let mut i = s;
                while !stop.load(Relaxed) {
                    conn.write_all(&frames[i % frames.len()]).expect("send to relay");
                    sent.fetch_add(batch, Relaxed);
                    i += 1;
                }
            })
        })
        .collect();

    let mut peak_rss = 0u64;
    let mut samples = Vec::new();
    let mut last = (Instant::now(), 0u64);
    while start.elapsed() < Duration::from_secs(a.seconds) {
        std::thread::sleep(Duration::from_millis(100));
        peak_rss = peak_rss.max(rss_of(&pid).unwrap_or(0));
        if last.0.elapsed() >= Duration::from_secs(1) {
            let now = received.load(Relaxed);
            samples.push((now - last.1) as f64 / last.0.elapsed().as_secs_f64());
            last = (Instant::now(), now);
        }
    }
    stop.store(true, Relaxed);
    for s in senders {
        s.join().expect("sender thread");
    }
    let total = sent.load(Relaxed);
    let send_elapsed = start.elapsed();
    // Graceful stop: SIGTERM flushes the queue; every line must arrive.
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Relaxed) < total && Instant::now() < deadline {
        peak_rss = peak_rss.max(rss_of(&pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let all_elapsed = start.elapsed();
    let got = received.load(Relaxed);
    let status = relay.0.wait().expect("relay exit");
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    samples.sort_by(|x, y| x.total_cmp(y));
    let median = samples.get(samples.len() / 2).copied().unwrap_or(0.0);
    println!("senders={} batch={} seconds={}", a.senders, a.batch, a.seconds);
    println!("metrics sent={total} received={got} lost={}", total.saturating_sub(got));
    println!(
        "throughput: {:.0} metrics/s end-to-end (all delivered after {:.2}s), median 1s window {:.0} metrics/s",
        got as f64 / all_elapsed.as_secs_f64(),
        all_elapsed.as_secs_f64(),
        median
    );
    println!("sender-side rate: {:.0} metrics/s", total as f64 / send_elapsed.as_secs_f64());
    println!("relay peak RSS: {:.1} MiB", peak_rss as f64 / (1024.0 * 1024.0));
    println!("relay exit: {status}");
    println!("loadavg before: {}", load_before.trim());
    println!("loadavg after:  {}", load_after.trim());
    assert_eq!(got, total, "lines lost");
}
