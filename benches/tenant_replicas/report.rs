//! What the tenant replicas run shows: the clients' answers, and from the provider's notes
//! the refreshes per tenant and per cycle, which replica did them, and any reuse.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::Settings;
use crate::load::Counts;
use crate::provider::{Outcome, Provider, Refresh};

pub fn print(
    provider: &Provider,
    counts: &[Arc<Counts>],
    t0: Instant,
    end: Instant,
    settings: &Settings,
) {
    let ok: u64 = counts.iter().map(|c| c.ok.load(Ordering::Relaxed)).sum();
    let failed: u64 = counts
        .iter()
        .map(|c| c.failed.load(Ordering::Relaxed))
        .sum();
    let run = end.duration_since(t0).as_secs_f64();
    println!(
        "1. requests: {ok} answered 200, {failed} failed (target 0) in {run:.1} s ({:.0}/s); per replica: {}",
        ok as f64 / run,
        counts
            .iter()
            .enumerate()
            .map(|(i, c)| format!(
                "r{i} {} ok / {} failed",
                c.ok.load(Ordering::Relaxed),
                c.failed.load(Ordering::Relaxed)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for c in counts {
        for failure in c.failures.lock().unwrap().iter() {
            println!("   failed: {failure}");
        }
    }
    println!(
        "   the API answered: {}",
        provider
            .api_answers()
            .iter()
            .map(|(status, n)| format!("{n} x {status}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let refreshes = provider.refreshes();
    let by = |o: Outcome| refreshes.iter().filter(|r| r.outcome == o).count();
    println!(
        "2. refresh requests: {} ({} rotated, {} reuse detected (target 0), {} on a revoked grant, {} unknown token); grants revoked: {}",
        refreshes.len(),
        by(Outcome::Rotated),
        by(Outcome::Reuse),
        by(Outcome::Revoked),
        by(Outcome::Unknown),
        provider.revoked()
    );
    let reuse_after = refreshes
        .iter()
        .filter(|r| r.outcome == Outcome::Reuse && r.at >= end)
        .count();
    println!(
        "   of the reuse, after the load while the replicas were stopped one by one (SIGTERM): {reuse_after}"
    );
    cycles(&refreshes, t0, end, settings);
}

/// Per tenant and per cycle (generation of the refresh token presented).
fn cycles(refreshes: &[Refresh], t0: Instant, end: Instant, settings: &Settings) {
    let mut per_cycle: HashMap<(usize, u64), (usize, HashSet<u8>)> = HashMap::new();
    let mut per_tenant: BTreeMap<usize, Vec<&Refresh>> = BTreeMap::new();
    for r in refreshes.iter().filter(|r| r.outcome != Outcome::Unknown) {
        let cycle = per_cycle.entry((r.tenant, r.generation)).or_default();
        cycle.0 += 1;
        cycle.1.insert(r.replica);
        per_tenant.entry(r.tenant).or_default().push(r);
    }
    let most = per_cycle.values().map(|(n, _)| *n).max().unwrap_or(0);
    let several_replicas = per_cycle.values().filter(|(_, r)| r.len() > 1).count();
    println!(
        "3. cycles: {} (tenant, generation) refreshed; refresh requests per cycle: max {most} (target 1); cycles refreshed by more than one replica: {several_replicas}",
        per_cycle.len()
    );
    let rotated: Vec<usize> = (0..settings.tenants)
        .map(|t| {
            per_tenant.get(&t).map_or(0, |rs| {
                rs.iter().filter(|r| r.outcome == Outcome::Rotated).count()
            })
        })
        .collect();
    let during: usize = per_tenant
        .values()
        .flatten()
        .filter(|r| r.outcome == Outcome::Rotated && r.at >= t0 && r.at < end)
        .count();
    println!(
        "   refreshes per tenant over the whole run: min {}, max {}; {during} during the load ({:.0}/s)",
        rotated.iter().min().unwrap_or(&0),
        rotated.iter().max().unwrap_or(&0),
        during as f64 / end.duration_since(t0).as_secs_f64()
    );
    let mut by_replica = [0usize; 3];
    for r in refreshes.iter().filter(|r| r.outcome == Outcome::Rotated) {
        if let Some(n) = by_replica.get_mut(usize::from(r.replica)) {
            *n += 1;
        }
    }
    let tenants_by_several = per_tenant
        .values()
        .filter(|rs| rs.iter().map(|r| r.replica).collect::<HashSet<_>>().len() > 1)
        .count();
    println!(
        "   refreshes by replica: r0 {}, r1 {}, r2 {}; tenants refreshed by more than one replica over the run (in different cycles): {tenants_by_several}",
        by_replica[0], by_replica[1], by_replica[2]
    );
    // The time between two refreshes of one tenant: about the lifetime less the skew; a
    // second refresh soon after the first (with the new token) would be a wasted cycle.
    let mut gaps: Vec<Duration> = per_tenant
        .values()
        .flat_map(|rs| {
            let mut times: Vec<Instant> = rs
                .iter()
                .filter(|r| r.outcome == Outcome::Rotated)
                .map(|r| r.at)
                .collect();
            times.sort();
            times
                .windows(2)
                .map(|w| w[1].duration_since(w[0]))
                .collect::<Vec<_>>()
        })
        .collect();
    gaps.sort();
    if let (Some(first), Some(last)) = (gaps.first(), gaps.last()) {
        let quarter = settings.lifetime / 4;
        println!(
            "   gap between two refreshes of a tenant: min {:.2} s, median {:.2} s, max {:.2} s; gaps under a quarter lifetime ({:.1} s): {}",
            first.as_secs_f64(),
            gaps[gaps.len() / 2].as_secs_f64(),
            last.as_secs_f64(),
            quarter.as_secs_f64(),
            gaps.iter().filter(|g| **g < quarter).count()
        );
    }
}
