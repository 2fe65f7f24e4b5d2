//! Three bearerd replicas share one rate limit through the postgres store (SPEC section 11):
//! `rate_limit = { rps = 10 }` on one connection, heavy load from many concurrent clients
//! over 40 properties, an upstream that counts what reaches it. Measured:
//!
//! 1. the most requests the upstream sees in any 1-second window (target: 10, i.e. at most
//!    10.5) and the average per second (target: at least 9);
//! 2. after one replica is killed (SIGKILL, mid-run), how long until the two left take its
//!    share: the upstream again sees 10 in a second from them (target: within 5 s);
//! 3. after an upstream 429 with `Retry-After: 2`, how long until that replica's next request
//!    reaches the upstream (target: at least 2 s).
//!
//! Windows: the strict figure is sliding, the most arrivals in any `[t, t + 1 s)` (what the
//! upstream's own 429 rule counts); the bench also gives the most in aligned seconds
//! `[k, k + 1)` from the start of the load, as a provider counting per clock second sees it.
//! Arrivals after the clients stop (replicas draining) are left out and counted apart. For
//! (3), requests bearerd had already let go when the 429 came back arrive within
//! milliseconds of it; the figure is the first arrival more than 50 ms after it. Every
//! arrival is written to `target/rate_limit_replicas-arrivals.csv`.
//!
//! The replicas are the release binary as child processes, each with its own config, admin
//! and proxy ports and database connections; the upstream, the token endpoint and the
//! clients run in this process, so every time is read from one clock. A fresh database is
//! made for the run (from `BEARERD_TEST_DATABASE_URL`, default the local
//! `postgres://postgres@127.0.0.1:5432/test`) and dropped after; without a reachable
//! database the bench says SKIPPED and exits 0.
//!
//! `cargo bench --bench rate_limit_replicas`
//! (env: `RL_SECONDS`, default 60, at least 20; `RL_CLIENTS` per replica, default 80)

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod load;
mod replica;
mod upstream;
mod windows;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use replica::Replica;
use support::db::TestDb;
use support::replica::wait_ready;
use upstream::Upstream;

/// The replica killed mid-run.
const VICTIM: u8 = 2;

fn main() {
    let seconds = support::env_or("RL_SECONDS", 60).max(20);
    let clients = support::env_or("RL_CLIENTS", 80usize);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let Some(db) = TestDb::create("rl").await else {
            return;
        };
        run(&db.url, seconds, clients).await;
        db.drop_it().await;
    });
}

async fn run(database_url: &str, seconds: u64, clients: usize) {
    let tokens = support::TokenEndpoint::start(Duration::ZERO, Some(3600)).await;
    let upstream = Upstream::start().await;
    let upstream_url = format!("http://{}", upstream.addr);
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| Replica::spawn(i, database_url, &tokens.url(), &upstream_url))
        .collect();
    for r in &replicas {
        wait_ready(r, &r.admin, Duration::from_secs(30)).await;
    }
    // Measure only once every replica runs on its third: a replica that has not yet seen
    // the others still holds a larger share.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !replicas
        .iter()
        .all(|r| r.splits().last().is_some_and(|s| s.live == 3))
    {
        assert!(
            Instant::now() < deadline,
            "the replicas did not all see three live within 20 s:\n{}",
            replicas[0].log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shares: Vec<String> = replicas
        .iter()
        .map(|r| {
            let s = r.splits().last().copied().unwrap();
            format!("replica {} index {} of {}", r.index, s.index, s.live)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    println!(
        "rate_limit_replicas: 3 replicas, rps = 10, {} clients each over {} properties, {seconds} s \
(replica {VICTIM} killed at {} s), then a 429 Retry-After: 2",
        clients,
        load::PROPERTIES,
        seconds / 2
    );
    let counts: Vec<Arc<load::Counts>> = (0..3).map(|_| Arc::default()).collect();
    let stops: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::default()).collect();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (r, (counts, stop)) in replicas.iter().zip(counts.iter().zip(&stops)) {
        tasks.extend(load::start(&r.proxy, r.index, clients, counts, stop));
    }
    tokio::time::sleep_until((t0 + Duration::from_secs(seconds / 2)).into()).await;
    stops[usize::from(VICTIM)].store(true, Ordering::SeqCst);
    let killed_at = replicas[usize::from(VICTIM)].kill();
    tokio::time::sleep_until((t0 + Duration::from_secs(seconds)).into()).await;
    let end = Instant::now();

    // Phase 3: one 429 with Retry-After: 2.
    upstream.throttle_next();
    let throttle_deadline = Instant::now() + Duration::from_secs(5);
    let throttled = loop {
        if let Some(arrival) = upstream.throttled() {
            break arrival;
        }
        assert!(
            Instant::now() < throttle_deadline,
            "no request after the run"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stopped = Instant::now();
    for stop in &stops {
        stop.store(true, Ordering::SeqCst);
    }
    for task in tasks {
        task.abort();
    }
    for r in replicas.iter_mut().filter(|r| r.index != VICTIM) {
        r.stop();
    }

    let report = Report {
        arrivals: upstream.arrivals(),
        t0,
        killed_at,
        end,
        stopped,
        throttled,
        counts,
        survivor_splits: replicas
            .iter()
            .filter(|r| r.index != VICTIM)
            .map(|r| r.splits())
            .collect(),
        shares,
    };
    report.print();
    report.save();
}

/// What the run left to summarise.
struct Report {
    arrivals: Vec<upstream::Arrival>,
    t0: Instant,
    killed_at: Instant,
    end: Instant,
    /// When the clients stopped; what reaches the upstream later comes from replicas
    /// shutting down with requests still waiting.
    stopped: Instant,
    throttled: upstream::Arrival,
    counts: Vec<Arc<load::Counts>>,
    survivor_splits: Vec<Vec<replica::Split>>,
    shares: Vec<String>,
}

impl Report {
    fn times(&self, keep: impl Fn(&upstream::Arrival) -> bool) -> Vec<Instant> {
        let mut times: Vec<Instant> = self
            .arrivals
            .iter()
            .filter(|a| keep(a))
            .map(|a| a.at)
            .collect();
        times.sort();
        times
    }

    /// Every arrival as `seconds since the start,replica,throttled`, for a closer look.
    fn save(&self) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("rate_limit_replicas-arrivals.csv");
        let mut text = String::from("at_s,replica,throttled\n");
        for a in &self.arrivals {
            let at = a.at.checked_duration_since(self.t0).unwrap_or_default();
            text.push_str(&format!(
                "{:.6},{},{}\n",
                at.as_secs_f64(),
                a.replica,
                a.throttled
            ));
        }
        match std::fs::write(&path, text) {
            Ok(()) => println!("arrivals: {}", path.display()),
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }

    fn print(&self) {
        let secs = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64();
        let run = self.times(|a| a.at >= self.t0 && a.at < self.end);
        let all = self.times(|a| a.at < self.stopped);
        let (max, at) = windows::max_sliding(&all);
        let run_seconds = self.end.duration_since(self.t0).as_secs() as usize;
        let aligned = windows::per_second(&run, self.t0, run_seconds);
        let upstream_429s = self
            .arrivals
            .iter()
            .filter(|a| a.throttled && a.at != self.throttled.at && a.at < self.stopped)
            .count();
        let late = self.times(|a| a.at >= self.stopped);
        println!("\nshares: {}", self.shares.join(", "));
        println!("1. window");
        println!(
            "   max requests in any 1 s window (sliding, all phases):  {max}  (target <= 10; \
busiest window starts at {:.3} s)",
            at.map_or(0.0, |t| secs(self.t0, t))
        );
        if let Some(start) = at {
            let busiest: Vec<String> = self
                .arrivals
                .iter()
                .filter(|a| a.at >= start && a.at < start + Duration::from_secs(1))
                .map(|a| format!("r{}@{:.3}", a.replica, secs(self.t0, a.at)))
                .collect();
            println!("   busiest window: {}", busiest.join(" "));
        }
        // The first requests open the upstream connections; they reach the upstream that
        // much later than their slots, so the very first windows are reported apart.
        let warm = self.t0 + Duration::from_secs(2);
        let (after_start, _) =
            windows::max_sliding(&self.times(|a| a.at >= warm && a.at < self.stopped));
        println!("   max in any 1 s window from 2 s on (upstream connections open): {after_start}");
        println!(
            "   max in aligned seconds [k, k+1) since the start:        {}",
            aligned.iter().max().unwrap_or(&0)
        );
        println!("   upstream 429s for going over its own count:           {upstream_429s}");
        let average = windows::rate(&run, self.t0, self.end);
        let before = windows::rate(&run, self.t0, self.killed_at);
        println!(
            "   average per second: {average:.2} over the run (target >= 9); {before:.2} before the kill"
        );
        for r in 0..3u8 {
            let mine = self.times(|a| a.replica == r && a.at >= self.t0 && a.at < self.killed_at);
            println!(
                "     replica {r}: {:.2}/s before the kill",
                windows::rate(&mine, self.t0, self.killed_at)
            );
        }

        println!(
            "2. replica {VICTIM} killed at {:.3} s",
            secs(self.t0, self.killed_at)
        );
        for (n, splits) in self.survivor_splits.iter().enumerate() {
            if let Some(split) = splits.iter().find(|s| s.at > self.killed_at) {
                println!(
                    "   survivor {n} re-split (index {} of {}) {:.2} s after the kill",
                    split.index,
                    split.live,
                    secs(self.killed_at, split.at)
                );
            }
        }
        let survivors = self.times(|a| a.replica != VICTIM && a.at < self.end);
        match windows::first_full_second(&survivors, self.killed_at, 10) {
            Some(t) => println!(
                "   the two left reach 10 in a second {:.2} s after the kill (target <= 5 s)",
                secs(self.killed_at, t)
            ),
            None => println!("   the two left never reach 10 in a second (target <= 5 s)"),
        }
        if let Some(t) = windows::first_full_second(&survivors, self.killed_at, 9) {
            println!(
                "   (9 in a second: {:.2} s after the kill)",
                secs(self.killed_at, t)
            );
        }
        let kill_second = self.killed_at.duration_since(self.t0).as_secs() as usize;
        let from = kill_second.saturating_sub(2);
        let to = (kill_second + 8).min(run_seconds);
        println!(
            "   per aligned second {from}..{to}, all replicas: {:?}",
            &aligned[from..to]
        );
        let survivors_per_second = windows::per_second(&survivors, self.t0, run_seconds);
        println!(
            "   per aligned second {from}..{to}, the two left:  {:?}",
            &survivors_per_second[from..to]
        );

        let paused = self.throttled.replica;
        println!("3. upstream 429 Retry-After: 2 to replica {paused}");
        let offsets: Vec<f64> = self
            .arrivals
            .iter()
            .filter(|a| a.replica == paused && a.at > self.throttled.at)
            .map(|a| secs(self.throttled.at, a.at))
            .filter(|&s| s < 2.5)
            .collect();
        println!(
            "   its arrivals in the 2.5 s after the 429, seconds after it: {:?}",
            offsets
                .iter()
                .map(|s| format!("{s:.3}"))
                .collect::<Vec<_>>()
        );
        // Requests bearerd had already let go when the 429 came back reach the upstream
        // within milliseconds; the pause is about the ones after them.
        let in_flight = Duration::from_millis(50);
        match self
            .arrivals
            .iter()
            .filter(|a| a.replica == paused && a.at > self.throttled.at + in_flight)
            .map(|a| a.at)
            .min()
        {
            Some(t) => println!(
                "   first request after those already in flight (> 50 ms): {:.3} s after the 429 \
(target >= 2 s)",
                secs(self.throttled.at, t)
            ),
            None => println!("   no later request from it reached the upstream"),
        }
        println!(
            "after the clients stopped: {} more requests reached the upstream (replicas draining)",
            late.len()
        );

        let total = |f: fn(&load::Counts) -> u64| self.counts.iter().map(|c| f(c)).sum::<u64>();
        println!(
            "clients: {} answered 200, {} bearerd 429 (waited past max_wait), {} upstream 429, {} other",
            total(|c| c.ok.load(Ordering::Relaxed)),
            total(|c| c.bearerd_429.load(Ordering::Relaxed)),
            total(|c| c.upstream_429.load(Ordering::Relaxed)),
            total(|c| c.other.load(Ordering::Relaxed)),
        );
    }
}
