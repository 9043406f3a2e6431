//! The fuzz targets of `fuzz/` (cargo-fuzz, nightly), run here on stable by the plain
//! test harness: each target over its kept corpus `fuzz/corpus/<target>/` and a few
//! thousand deterministic pseudo-random mutations of it. An input that panics, or that
//! allocates without bound, fails the test with the input written to a file.
//!
//! `STAGECRAFT_FUZZ_MUTATIONS=N` changes the number of mutations per target (default
//! 2,000); `STAGECRAFT_FUZZ_SEED=N` the seed. See docs/reliability.md.
#![allow(unsafe_code)] // a global allocator is an unsafe trait; the library itself forbids unsafe

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

/// Counts the bytes live and the peak on each thread (a target runs on one thread: its
/// runtime is a current-thread one).
struct Peak;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grew(by: usize) {
    // `try_with`: the thread's locals may already be gone while it exits.
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(by);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrank(by: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(by)));
}

// SAFETY: forwards to the system allocator; only counts, in thread-locals that need no
// allocation (const-initialised `Cell`s without destructors).
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size);
        shrank(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Peak = Peak;

/// The most one input may have allocated at once: a fixed allowance (the runtime, the
/// bot, the store) and a generous multiple of its size. libFuzzer's limit is 2 GiB.
fn allowance(input: &[u8]) -> usize {
    (32 << 20) + input.len().saturating_mul(256)
}

thread_local! {
    static PANICKED: Cell<bool> = const { Cell::new(false) };
}

/// Notes a panic on this thread, also one that a runtime catches (a spawned task's).
fn watch_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = PANICKED.try_with(|p| p.set(true));
            default(info);
        }));
    });
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// SplitMix64: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Pieces that matter to the parsers, spliced in by the mutations.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\n",
    b"\r\n",
    b"\\u0000",
    b"\\ud800",
    b"\xff",
    b"\xc3",
    b"null",
    b"-9223372036854775808",
    b"9223372036854775807",
    b"18446744073709551615",
    b"18446744073709551616",
    b"1e999",
    b"-0.0",
    b"\"update_id\":",
    b"{\"parallel\":[",
    b"{\"advance_clock_s\":",
    b"{\"comment\":\"",
    b"\"message\":{\"chat\":{\"id\":1},\"from\":{\"id\":1},\"text\":\"",
    b"\"callback_query\":{\"id\":\"q\",\"from\":{\"id\":1}}",
    b"\"scenes\":[{\"scene\":\"",
    b"\"cursor\":",
    b"\"expires\":",
    b"\"state\":{\"demo.signup.v1\":{",
    b"\"state\":{\"json\":",
    b"\"v\":",
    b"\"data\":",
    b"signup",
    b"profile",
    b"poll",
    b"/start",
    b"/where",
    b"\x80",
    b"\xdc\xff\xff",
    b"\xdd\xff\xff\xff\xff",
    b"\xdb\xff\xff\xff\xff",
];

/// One mutation of `input` (with `other`, another corpus entry, for splicing).
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = [0, 0xff, 0x7f, 0x80, b'0', b'9', b'-', b' '][rng.below(8)];
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(len + 1);
                out.splice(at..at, token.iter().copied());
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(16));
                out.drain(at..at + n);
            }
            4 if len > 0 => {
                // Repeat a piece (nesting, long runs).
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(8));
                let piece = out[at..at + n].to_vec();
                let times = 1 + rng.below(64);
                for _ in 0..times {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            5 if !other.is_empty() => {
                // Splice: a prefix of this one and a suffix of the other.
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            6 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next() as u8;
            }
            7 => {
                let at = rng.below(len + 1);
                let n = rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            _ if len > 1 => {
                // Swap two bytes.
                let (i, j) = (rng.below(len), rng.below(len));
                out.swap(i, j);
            }
            _ => out.push(rng.next() as u8),
        }
    }
    out.truncate(64 * 1024);
    out
}

/// Runs `f` on `input`: a panic (on this thread, caught by a runtime or not) or an
/// allocation peak beyond the allowance fails, with the input saved to a file.
fn run_one(target: &str, f: fn(&[u8]), input: &[u8], what: &str) {
    PANICKED.with(|p| p.set(false));
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(input)));
    let peak = PEAK.with(Cell::get).saturating_sub(start);
    let panicked = result.is_err() || PANICKED.with(Cell::get);
    let too_much = peak > allowance(input);
    if panicked || too_much {
        let saved = std::env::temp_dir().join(format!(
            "stagecraft-fuzz-{target}-{}-{:016x}",
            std::process::id(),
            fnv(input)
        ));
        if target != "self_test" {
            let _ = std::fs::write(&saved, input);
        }
        let why = if panicked {
            "panicked".to_owned()
        } else {
            format!("allocated {peak} bytes at once")
        };
        panic!(
            "{target}: {what} {why}; the input ({} bytes) is in {} \
             (add it to fuzz/corpus/{target}/ once fixed): {:?}",
            input.len(),
            saved.display(),
            String::from_utf8_lossy(&input[..input.len().min(300)])
        );
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run_target(target: &str) {
    watch_panics();
    let f = targets::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no target {target}"));
    let corpus = corpus(target);
    assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ is empty");
    for (path, input) in &corpus {
        run_one(target, f, input, &path.display().to_string());
    }
    let mutations = env_number("STAGECRAFT_FUZZ_MUTATIONS", 2000);
    let mut rng = Rng(env_number("STAGECRAFT_FUZZ_SEED", 0x5eed) ^ fnv(target.as_bytes()));
    for n in 0..mutations {
        let a = &corpus[rng.below(corpus.len())].1;
        let b = &corpus[rng.below(corpus.len())].1;
        let input = mutate(&mut rng, a, b);
        run_one(target, f, &input, &format!("mutation {n}"));
    }
}

#[test]
fn fuzz_record_bytes() {
    run_target("record_bytes");
}

#[test]
fn fuzz_record_json() {
    run_target("record_json");
}

#[test]
fn fuzz_telegram_update() {
    run_target("telegram_update");
}

#[test]
fn fuzz_replay() {
    run_target("replay");
}

#[test]
fn fuzz_key_strategies() {
    run_target("key_strategies");
}

/// Every target has a test above and a kept corpus.
#[test]
fn every_target_runs_here() {
    let source = include_str!("fuzz_corpus.rs");
    for (name, _) in targets::TARGETS {
        assert!(
            source.contains(&format!("run_target(\"{name}\")")),
            "{name} has no test"
        );
        let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{name}.rs"));
        assert!(bin.exists(), "{}", bin.display());
    }
}

/// The harness itself: a panic that a runtime catches (in a spawned task) and an
/// allocation beyond the allowance both fail an input.
#[test]
fn the_harness_notices_caught_panics_and_big_allocations() {
    watch_panics();
    fn panics_in_a_task(_: &[u8]) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let joined = rt.block_on(async { tokio::spawn(async { panic!("in a task") }).await });
        assert!(joined.is_err(), "the runtime caught it");
    }
    fn allocates(input: &[u8]) {
        let big = vec![1u8; 64 << 20];
        assert!(big.len() > input.len());
    }
    for (f, name) in [
        (panics_in_a_task as fn(&[u8]), "panics_in_a_task"),
        (allocates, "allocates"),
    ] {
        let noticed = std::panic::catch_unwind(|| run_one("self_test", f, b"x", name));
        assert!(noticed.is_err(), "{name} went unnoticed");
    }
}
