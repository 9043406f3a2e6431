//! Allocations per update, counted with a counting global allocator (a regression guard:
//! the number is kept in docs/performance.md; this is a count, not a timing).
#![allow(unsafe_code)] // a global allocator is an unsafe trait; the library itself forbids unsafe

#[path = "../examples/shared/demo_bot.rs"]
mod demo_bot;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use stagecraft::Pipeline;
use stagecraft::pipeline::Dispatch;
use stagecraft::transport::RecordingTransport;
use stagecraft::update::TelegramUpdate;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CYCLE: [&str; 10] = [
    "/start", "Alice", "abc", "30", "yes", "/profile", "/whoami", "hello", "/back", "outside",
];

#[test]
fn allocations_per_update_of_the_reference_conversation() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let replies = RecordingTransport::new();
    let bot =
        demo_bot::build(Pipeline::<demo_bot::Demo>::builder().transport(replies.clone())).unwrap();
    let updates: Vec<TelegramUpdate> = CYCLE
        .iter()
        .enumerate()
        .map(|(i, t)| {
            TelegramUpdate::from_json(&format!(
                r#"{{"update_id":{i},"message":{{"message_id":{i},"chat":{{"id":5}},"from":{{"id":5}},"text":"{t}"}}}}"#
            ))
            .unwrap()
        })
        .collect();
    rt.block_on(async {
        // Each handled update is a new one (its own id): a repeated id would be skipped
        // as a duplicate, and measure nothing.
        let mut next_id = 100;
        let mut fresh = |u: &TelegramUpdate| {
            let mut u = u.clone();
            next_id += 1;
            u.update_id = next_id;
            u
        };
        // Warm up: the first cycle creates the session and the caches.
        for u in &updates {
            assert_eq!(bot.handle(fresh(u)).await.unwrap(), Dispatch::Handled);
        }
        let _ = replies.take();
        const ROUNDS: u64 = 20;
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..ROUNDS {
            for u in &updates {
                bot.handle(fresh(u)).await.unwrap();
            }
            assert_eq!(replies.take().len(), 11, "every update handled");
        }
        let per_update = (ALLOCATIONS.load(Ordering::Relaxed) - before) / (ROUNDS * 10);
        println!("allocations per update: {per_update}");
        // Includes the update's own clone (2 allocations) and its replies (1.1 per update).
        // 13 when this guard was last set (15 with every feature); the signup's
        // confirmation now carries a two-button keyboard: 4 allocations to build it and 4
        // for the recorder's copy, once per round of 10 updates (+0.8 per update).
        assert!(
            per_update <= 16,
            "allocations per update grew to {per_update}"
        );
    });
}
