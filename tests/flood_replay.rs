//! A `parallel` replay line of 100,000 updates of one key is not queued whole: the
//! replay reads the batch's items as it hands them over, at most
//! `Limits::max_parallel_tasks` at a time, and the pipeline's per-key queue bound
//! (1,000 by default) refuses the excess with `Error::Overloaded`. Measured as the peak
//! of live heap bytes with a counting global allocator (a size, not a timing).
#![allow(unsafe_code)] // a global allocator is an unsafe trait; the library itself forbids unsafe

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use stagecraft::clock::ManualClock;
use stagecraft::prelude::*;
use stagecraft::replay::{Limits, REPLAY_EPOCH_S, replay_with};

struct Peak;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        grew(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Peak = Peak;

const UPDATES: usize = 100_000;

/// One `parallel` line of `UPDATES` messages of user 5 in chat 5.
fn flood_line() -> String {
    let mut line = String::from("{\"parallel\":[");
    for i in 0..UPDATES {
        if i > 0 {
            line.push(',');
        }
        line.push_str(&format!(
            r#"{{"update_id":{i},"message":{{"message_id":{i},"chat":{{"id":5}},"from":{{"id":5}},"text":"m"}}}}"#
        ));
    }
    line.push_str("]}\n");
    line
}

struct Run {
    handled: usize,
    failed: usize,
    /// Peak live heap bytes during the replay, above what was live before it.
    peak_growth: usize,
}

async fn replay_flood(line: &str, queue: Option<usize>, tasks: usize) -> Run {
    let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
    let mut builder =
        Pipeline::<u64>::builder()
            .clock(clock.clone())
            .on_text(|cx: Cx<u64>| async move {
                cx.session_mut(|n| *n = n.saturating_add(1))?;
                Ok(Outcome::Handled)
            });
    if let Some(n) = queue {
        builder = builder.max_queue_per_key(n);
    }
    let bot = builder.build();
    let limits = Limits::default()
        .max_line_bytes(line.len())
        .max_parallel_tasks(tasks);
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let summary = replay_with(&bot, &clock, line.as_bytes(), limits)
        .await
        .unwrap();
    let peak_growth = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    assert!(summary.is_clean());
    assert_eq!(summary.updates, UPDATES);
    assert_eq!(bot.keys_in_flight(), 0);
    let stored = bot.store().load("5:5").await.unwrap().expect("a session");
    let count: u64 = stagecraft::session::inspect(&stored.bytes)
        .unwrap()
        .data
        .as_u64()
        .unwrap();
    let handled = usize::try_from(count).unwrap();
    assert_eq!(handled + summary.failed_updates, UPDATES);
    Run {
        handled,
        failed: summary.failed_updates,
        peak_growth,
    }
}

#[tokio::test]
async fn a_parallel_line_of_100_000_updates_of_one_key_is_not_queued_whole() {
    let line = flood_line();
    let bounded = replay_flood(&line, None, Limits::default().max_parallel_tasks).await;
    // Room for the line read (its copy), the list of its items, and the updates in
    // flight: far below what 100,000 queued updates take (below).
    let allowed = 2 * line.len() + (16 << 20);
    eprintln!(
        "bounded: handled {}, refused {}, peak heap growth {} KiB (line {} KiB)",
        bounded.handled,
        bounded.failed,
        bounded.peak_growth >> 10,
        line.len() >> 10
    );
    assert!(bounded.failed > 0, "the excess of the key was refused");
    assert!(
        bounded.peak_growth < allowed,
        "peak heap growth {} bytes, allowed {allowed}",
        bounded.peak_growth
    );
    // The same line with neither bound queues every update at once.
    let unbounded = replay_flood(&line, Some(usize::MAX), usize::MAX).await;
    eprintln!(
        "unbounded: handled {}, peak heap growth {} KiB",
        unbounded.handled,
        unbounded.peak_growth >> 10
    );
    assert_eq!(unbounded.handled, UPDATES);
    assert!(
        unbounded.peak_growth > 2 * bounded.peak_growth,
        "the measure sees queued updates: {} vs {}",
        unbounded.peak_growth,
        bounded.peak_growth
    );
}
