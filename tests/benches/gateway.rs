//! Gateway load benchmark (issue #9, DESIGN §8): requests/s, p50/p99 latency and the server's
//! CPU time per request, for the mock upstream alone, for a minimal hyper pass-through proxy
//! in front of it (the baseline), and for Monoize in front of it with the whole pipeline in the
//! path — key auth, the embedded router plugin, the embedded billing plugin's authorize and
//! settle, and the ledger write committed before the last byte leaves — on JSON and SSE
//! answers, at 1 and 32 connections, all in one run, with the ratios Monoize/proxy.
//!
//! Run: `cargo bench -p monoize-tests --bench gateway`. Knobs (environment): `GATEWAY_BENCH_SECS`
//! (seconds per row, default 3), `GATEWAY_BENCH_ROUNDS` (default 1: how many times the proxy
//! and Monoize rows of each configuration run, alternating; the ratios are then each round's
//! median and range), `GATEWAY_BENCH_FILTER` (only rows whose label contains it, e.g.
//! `monoize json 32`), `GATEWAY_BENCH_PHASE_CALLS` (default 2000).
//!
//! How CPU is attributed: the mock, the proxy and Monoize each run in a child process of their
//! own (this binary re-executed with `GATEWAY_BENCH_ROLE`), and the load generator runs in the
//! parent. A child reports its own CPU clock (`CLOCK_PROCESS_CPUTIME_ID`: every thread, the
//! blocking pool, SQLite's writer and wasmtime's epoch ticker included, nanosecond precision)
//! when asked over its stdin, just before and just after each row; the difference divided by
//! the requests served is the server's CPU µs per request, with nothing of the client's or the
//! mock's in it. The parent's own CPU clock gives the client's share the same way. Memory is
//! the server process's own `VmHWM` (peak) and `VmRSS` from `/proc/self/status`.
//!
//! The servers share the machine's cores with the load generator and the mock, as any loopback
//! bench does; the proxy and Monoize rows of one configuration run back to back, so they see
//! the same conditions and their ratio is what to read.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark prints its table and stops at the first failure"
)]

#[path = "gateway/load.rs"]
mod load;
#[path = "gateway/monoize_role.rs"]
mod monoize_role;
#[path = "gateway/servers.rs"]
mod servers;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;

const ROLE_VAR: &str = "GATEWAY_BENCH_ROLE";
const UPSTREAM_VAR: &str = "GATEWAY_BENCH_UPSTREAM";
const AUTHORIZATION: &str = "Bearer sk-bench-0123456789abcdef0123456789abcdef";
const PATH: &str = "/v1/chat/completions";

/// The CPU time this process has used so far, all threads.
pub fn process_cpu() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// `(VmHWM, VmRSS)` of this process in KiB.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn main() {
    assert_eq!(
        monoize_role::KEY,
        AUTHORIZATION.trim_start_matches("Bearer ")
    );
    match std::env::var(ROLE_VAR) {
        Ok(role) => child(&role),
        Err(_) => parent(),
    }
}

// ---------------------------------------------------------------------------------------------
// A child: one server, answering control commands on stdin, one reply per command ending with
// a line `end`. It exits when its stdin closes.

enum Running {
    Plain(SocketAddr),
    Monoize(Box<monoize_role::Monoize>),
}

fn child(role: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let upstream: Option<SocketAddr> = std::env::var(UPSTREAM_VAR)
        .ok()
        .and_then(|text| text.parse().ok());
    let running = runtime.block_on(async {
        match role {
            "mock" => {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let address = listener.local_addr().unwrap();
                tokio::spawn(servers::mock(listener));
                Running::Plain(address)
            }
            "proxy" => {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let address = listener.local_addr().unwrap();
                tokio::spawn(servers::proxy(listener, upstream.unwrap()));
                Running::Plain(address)
            }
            "monoize" => Running::Monoize(Box::new(
                monoize_role::start(upstream.unwrap()).await.unwrap(),
            )),
            other => panic!("unknown role {other}"),
        }
    });
    let address = match &running {
        Running::Plain(address) => *address,
        Running::Monoize(monoize) => monoize.address,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {address}").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        let reply = match (words.next(), &running) {
            (Some("cpu"), _) => vec![format!("cpu {}", process_cpu().as_nanos())],
            (Some("mem"), _) => {
                let (hwm, rss) = memory();
                vec![format!("mem {hwm} {rss}")]
            }
            (Some("stats"), Running::Monoize(monoize)) => vec![monoize.stats().unwrap()],
            (Some("commits"), Running::Monoize(monoize)) => vec![monoize.commits()],
            (Some("phases"), Running::Monoize(monoize)) => {
                let calls = words.next().and_then(|n| n.parse().ok()).unwrap_or(2000);
                runtime.block_on(monoize.phases(calls)).unwrap()
            }
            _ => vec![format!("unknown command {line}")],
        };
        for reply_line in reply {
            writeln!(out, "{reply_line}").unwrap();
        }
        writeln!(out, "end").unwrap();
        out.flush().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The parent: starts the servers, drives the load, prints the table.

struct Server {
    name: &'static str,
    process: Child,
    /// `None` once closed, which tells the child to end.
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    address: SocketAddr,
}

impl Server {
    fn spawn(name: &'static str, upstream: Option<SocketAddr>) -> Server {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .env(ROLE_VAR, name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(upstream) = upstream {
            command.env(UPSTREAM_VAR, upstream.to_string());
        }
        let mut process = command.spawn().unwrap();
        let stdin = process.stdin.take().unwrap();
        let mut stdout = BufReader::new(process.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let address = line
            .trim()
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("{name} did not start: {line:?}"))
            .parse()
            .unwrap();
        Server {
            name,
            process,
            stdin: Some(stdin),
            stdout,
            address,
        }
    }

    fn ask(&mut self, command: &str) -> Vec<String> {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "{} went away",
                self.name
            );
            let line = line.trim_end().to_owned();
            if line == "end" {
                return lines;
            }
            lines.push(line);
        }
    }

    fn numbers(&mut self, command: &str) -> Vec<u64> {
        let reply = self.ask(command);
        reply
            .first()
            .map(|line| {
                line.split_whitespace()
                    .skip(1)
                    .filter_map(|word| word.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn cpu(&mut self) -> Duration {
        let nanos = self.numbers("cpu").first().copied().unwrap_or(0);
        Duration::from_nanos(nanos)
    }

    /// `(VmHWM, VmRSS)` in MiB.
    fn memory(&mut self) -> (f64, f64) {
        let numbers = self.numbers("mem");
        let mib = |index: usize| numbers.get(index).copied().unwrap_or(0) as f64 / 1024.0;
        (mib(0), mib(1))
    }
}

/// How long a child may take to end once its stdin is closed before it is killed.
const CHILD_EXIT_WAIT: Duration = Duration::from_secs(10);

impl Drop for Server {
    fn drop(&mut self) {
        // Closing stdin ends the child, which removes its temporary directory on the way out
        // (Monoize's database file and WAL: a gigabyte or more after a full run). Killed, it
        // would leave them behind; so only a child that does not end in time is killed.
        drop(self.stdin.take());
        let started = Instant::now();
        while started.elapsed() < CHILD_EXIT_WAIT {
            if !matches!(self.process.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Json,
    Sse,
}

impl Answer {
    fn name(self) -> &'static str {
        match self {
            Answer::Json => "json",
            Answer::Sse => "sse",
        }
    }

    fn body(self) -> Bytes {
        let stream = match self {
            Answer::Json => "",
            Answer::Sse => r#","stream":true"#,
        };
        Bytes::from(format!(
            r#"{{"model":"{}","messages":[{{"role":"user","content":"Say hello."}}]{stream}}}"#,
            servers::MODEL
        ))
    }
}

struct Row {
    server: &'static str,
    /// Which round of its configuration, from 1.
    round: u64,
    answer: Answer,
    connections: usize,
    outcome: load::Outcome,
    server_cpu: Duration,
    client_cpu: Duration,
    /// Monoize's ledger writes, the transactions that committed them, and how many of those
    /// a caller committed itself, during the row.
    commits: Option<(u64, u64, u64)>,
}

impl Row {
    fn cpu_per_request(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.outcome.latencies.len().max(1) as f64
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

fn parent() {
    let seconds = env_number("GATEWAY_BENCH_SECS", 3);
    let rounds = env_number("GATEWAY_BENCH_ROUNDS", 1).max(1);
    let phase_calls = env_number("GATEWAY_BENCH_PHASE_CALLS", 2000);
    let filter = std::env::var("GATEWAY_BENCH_FILTER").unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut mock = Server::spawn("mock", None);
    let mut proxy = Server::spawn("proxy", Some(mock.address));
    let mut monoize = Server::spawn("monoize", Some(mock.address));
    println!(
        "gateway: {seconds} s per row, {rounds} round(s), closed-loop keep-alive HTTP/1.1 clients, {} cores, \
         load average {} (pids: mock {}, proxy {}, monoize {})",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average(),
        mock.process.id(),
        proxy.process.id(),
        monoize.process.id(),
    );
    let mut rows = Vec::new();
    let mut monoize_served = 0usize;
    let mut warmed = [false; 3];
    for answer in [Answer::Json, Answer::Sse] {
        for (connections, round) in [1, 32]
            .into_iter()
            .flat_map(|connections| (1..=rounds).map(move |round| (connections, round)))
        {
            for (index, server) in [&mut mock, &mut proxy, &mut monoize]
                .into_iter()
                .enumerate()
            {
                // The mock alone is the floor, not half of a ratio: once is enough.
                if index == 0 && round > 1 {
                    continue;
                }
                let label = format!("{} {} {connections}", server.name, answer.name());
                if !label.contains(&filter) {
                    continue;
                }
                let mut load = load::Load {
                    target: server.address,
                    path: PATH,
                    body: answer.body(),
                    authorization: AUTHORIZATION,
                    stream: answer == Answer::Sse,
                    connections,
                    duration: Duration::from_millis(if warmed[index] { 300 } else { 1000 }),
                    max_requests: 2_000_000,
                };
                warmed[index] = true;
                let warm_up = runtime.block_on(load::run(&load));
                load.duration = Duration::from_secs(seconds);
                let is_monoize = server.name == "monoize";
                let commits_before = is_monoize.then(|| server.numbers("commits"));
                let (server_before, client_before) = (server.cpu(), process_cpu());
                let outcome = runtime.block_on(load::run(&load));
                let (server_after, client_after) = (server.cpu(), process_cpu());
                let commits = commits_before.map(|before| {
                    let after = server.numbers("commits");
                    let delta = |index: usize| {
                        after.get(index).copied().unwrap_or(0)
                            - before.get(index).copied().unwrap_or(0)
                    };
                    (delta(0), delta(1), delta(2))
                });
                if is_monoize {
                    monoize_served += warm_up.latencies.len() + outcome.latencies.len();
                }
                rows.push(Row {
                    server: server.name,
                    round,
                    answer,
                    connections,
                    outcome,
                    server_cpu: server_after.saturating_sub(server_before),
                    client_cpu: client_after.saturating_sub(client_before),
                    commits,
                });
            }
        }
    }
    print_table(&rows, rounds > 1);
    print_ratios(&rows);
    let memory: Vec<_> = [&mut mock, &mut proxy, &mut monoize]
        .into_iter()
        .map(|server| (server.name, server.memory()))
        .collect();
    println!();
    for (name, (hwm, rss)) in &memory {
        println!("memory {name:<8} VmHWM {hwm:>6.1} MiB   VmRSS after load {rss:>6.1} MiB");
    }
    let stats = monoize.ask("stats");
    let stats: Vec<&str> = stats
        .first()
        .map(|line| line.split_whitespace().collect())
        .unwrap_or_default();
    let charges: i64 = stats.get(1).and_then(|n| n.parse().ok()).unwrap_or(-1);
    let consistent = stats.get(2) == Some(&"true");
    println!(
        "ledger: {charges} charges for {monoize_served} requests Monoize served; \
         balance equals the ledger sum: {}{}",
        if consistent { "yes" } else { "NO" },
        if charges == monoize_served as i64 && consistent {
            ""
        } else {
            "   <-- MISMATCH"
        }
    );
    print_targets(&rows, memory.last().map_or(0.0, |(_, (hwm, _))| *hwm));
    println!();
    for line in monoize.ask(&format!("phases {phase_calls}")) {
        println!("{}", line.trim_start_matches("phase "));
    }
    println!("load average at the end: {}", load_average());
}

fn print_table(rows: &[Row], with_rounds: bool) {
    let round = |text: String| {
        if with_rounds {
            format!("{text:>5} ")
        } else {
            String::new()
        }
    };
    println!(
        "{}{:<8} {:<5} {:>5} {:>8} {:>6} {:>9} {:>8} {:>8} {:>12} {:>12}",
        round("round".to_owned()),
        "server",
        "body",
        "conns",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p99 ms",
        "srv µs/req",
        "client µs/req"
    );
    for row in rows {
        println!(
            "{}{:<8} {:<5} {:>5} {:>8} {:>6} {:>9.0} {:>8.3} {:>8.3} {:>12.1} {:>12.1}",
            round(row.round.to_string()),
            row.server,
            row.answer.name(),
            row.connections,
            row.outcome.latencies.len(),
            row.outcome.errors,
            row.outcome.per_second(),
            millis(row.outcome.percentile(0.50)),
            millis(row.outcome.percentile(0.99)),
            row.cpu_per_request(row.server_cpu),
            row.cpu_per_request(row.client_cpu),
        );
    }
}

/// One configuration's proxy and Monoize rows, round by round.
struct Pairs<'a> {
    rounds: Vec<(&'a Row, &'a Row)>,
}

impl<'a> Pairs<'a> {
    fn of(rows: &'a [Row], answer: Answer, connections: usize) -> Option<Pairs<'a>> {
        let of = |server: &str, round: u64| {
            rows.iter().find(|row| {
                row.server == server
                    && row.answer == answer
                    && row.connections == connections
                    && row.round == round
            })
        };
        let rounds: Vec<_> = (1..)
            .map_while(|round| Some((of("proxy", round)?, of("monoize", round)?)))
            .collect();
        (!rounds.is_empty()).then_some(Pairs { rounds })
    }

    /// Each round's `figure` of its pair, sorted.
    fn sorted(&self, figure: impl Fn(&Row, &Row) -> f64) -> Vec<f64> {
        let mut figures: Vec<f64> = self
            .rounds
            .iter()
            .map(|(proxy, monoize)| figure(proxy, monoize))
            .collect();
        figures.sort_by(f64::total_cmp);
        figures
    }

    /// The median round's `figure` (the lower middle of an even count).
    fn median(&self, figure: impl Fn(&Row, &Row) -> f64) -> f64 {
        let figures = self.sorted(figure);
        figures[(figures.len() - 1) / 2]
    }
}

fn requests_ratio(proxy: &Row, monoize: &Row) -> f64 {
    monoize.outcome.per_second() / proxy.outcome.per_second().max(1e-9)
}

fn added_p50(proxy: &Row, monoize: &Row) -> f64 {
    millis(monoize.outcome.percentile(0.5)) - millis(proxy.outcome.percentile(0.5))
}

fn added_p99(proxy: &Row, monoize: &Row) -> f64 {
    millis(monoize.outcome.percentile(0.99)) - millis(proxy.outcome.percentile(0.99))
}

fn cpu_ratio(proxy: &Row, monoize: &Row) -> f64 {
    monoize.cpu_per_request(monoize.server_cpu) / proxy.cpu_per_request(proxy.server_cpu).max(1e-9)
}

fn added_cpu(proxy: &Row, monoize: &Row) -> f64 {
    monoize.cpu_per_request(monoize.server_cpu) - proxy.cpu_per_request(proxy.server_cpu)
}

fn print_ratios(rows: &[Row]) {
    println!();
    for answer in [Answer::Json, Answer::Sse] {
        for connections in [1, 32] {
            let Some(pairs) = Pairs::of(rows, answer, connections) else {
                continue;
            };
            let (writes, transactions, inline) = pairs
                .rounds
                .iter()
                .filter_map(|(_, monoize)| monoize.commits)
                .fold((0, 0, 0), |sum, row| {
                    (sum.0 + row.0, sum.1 + row.1, sum.2 + row.2)
                });
            let ratios = pairs.sorted(requests_ratio);
            let spread = match ratios.as_slice() {
                [_] | [] => String::new(),
                [low, .., high] => format!(" (median of {}: {low:.2}–{high:.2})", ratios.len()),
            };
            println!(
                "monoize/proxy {:<4} {connections:>2} conns: req/s {:.2}x{spread}   added p50 {:+.3} ms   \
                 added p99 {:+.3} ms   CPU/req {:.1}x ({:+.0} µs)   charges/commit {:.1} ({:.0}% inline)",
                answer.name(),
                pairs.median(requests_ratio),
                pairs.median(added_p50),
                pairs.median(added_p99),
                pairs.median(cpu_ratio),
                pairs.median(added_cpu),
                writes as f64 / transactions.max(1) as f64,
                100.0 * inline as f64 / transactions.max(1) as f64,
            );
        }
    }
}

/// The targets, judged on each configuration's median round.
fn print_targets(rows: &[Row], monoize_hwm: f64) {
    let mut worst_ratio = f64::INFINITY;
    let mut worst_added = f64::NEG_INFINITY;
    for answer in [Answer::Json, Answer::Sse] {
        for connections in [1, 32] {
            if let Some(pairs) = Pairs::of(rows, answer, connections) {
                worst_ratio = worst_ratio.min(pairs.median(requests_ratio));
                if connections == 1 {
                    worst_added = worst_added.max(pairs.median(added_p50));
                }
            }
        }
    }
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!(
        "targets: req/s >= 0.5x proxy (worst {worst_ratio:.2}x): {};  added p50 at 1 conn \
         <= 0.3 ms (worst {worst_added:+.3} ms): {};  RSS <= 100 MB (VmHWM {monoize_hwm:.1} MiB): {}",
        verdict(worst_ratio >= 0.5),
        verdict(worst_added <= 0.3),
        verdict(monoize_hwm <= 100.0 * 1e6 / (1024.0 * 1024.0)),
    );
}
