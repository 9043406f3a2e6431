//! Throughput of the reference bot, beside a bare baseline measured in the same run.
//!
//! ```text
//! cargo run --release --example bench -- --store memory --chats 10000 --updates 1000000
//! ```
//!
//! prints one JSON line: `updates_per_sec`, `baseline_updates_per_sec` and `ratio`
//! (baseline / stagecraft), `replies`, `peak_rss_bytes`, and the settings (`store`,
//! `chats`, `updates`, `leases`, `cache`, `queued`, `prefilled_sessions`).
//!
//! Options: `--store memory|sqlite:PATH|redis://…|redis-cluster://…|postgres://…|mysql://…|mongodb://…`,
//! `--namespace NAME` (table, key prefix or collection), `--chats N`, `--updates N`,
//! `--no-baseline`,
//! `--no-leases`, `--cache auto|validate|write-through`, `--prefill N` (other sessions
//! stored first), `--queued N` (each chat's updates come in bursts of N, queued at once,
//! instead of one after another), `--outbox` (replies committed with their step through
//! the session's outbox), `--dedup N` (update ids remembered per session; 0
//! turns de-duplication off), `--idle N` (resident bytes per idle session instead of
//! throughput), `--churn N` (N distinct keys pass through, two updates each: resident
//! memory and the pipeline's per-key tables before, during and after, instead of
//! throughput), `--keep` (with `--churn`: the sessions stay stored instead of ending),
//! `--compare-leases` (throughput with leases and without, side by side: four runs in
//! this process, alternating, each in a namespace of its own (`NAME_0` .. `NAME_3`, or
//! `bench_PID_0` ..), reported as `with_leases_updates_per_sec`,
//! `without_leases_updates_per_sec` (the mean of two runs each) and `leases_ratio`
//! (with / without)).
//!
//! Each chat runs the reference conversation
//! `/start, Alice, abc, 30, yes, /profile, /whoami, hello, /back, outside` (11 replies) over
//! and over, one update after another; all chats are in flight at once, on a
//! current-thread runtime (one core). The baseline does what any session layer must do
//! per update, and nothing else: find the key's async lock in a `DashMap`, lock it, read
//! the stored bytes, decode a small session with serde_json, change it, encode it, store it.
//! On an SQLite file the baseline is a bare sqlx loop on a file beside it: one
//! compare-and-set `UPDATE` per update (grouped 512 to a transaction when there are many
//! chats). For one chat on an SQLite file, `statements_floor_updates_per_sec` is the floor
//! of the store's own statements: the SQLite statements of an update (with leases: the
//! take and read in one transaction, the save and release in another), run on the
//! calling thread with rusqlite and nothing else.

#[path = "shared/demo_bot.rs"]
mod demo_bot;
#[path = "shared/stores.rs"]
mod stores;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use stagecraft::pipeline::{CacheMode, LeaseConfig};
use stagecraft::transport::{Outgoing, Transport};
use stagecraft::update::TelegramUpdate;
use stagecraft::{BoxError, Pipeline};

const CYCLE: [&str; 10] = [
    "/start", "Alice", "abc", "30", "yes", "/profile", "/whoami", "hello", "/back", "outside",
];

struct Args {
    store: String,
    chats: u64,
    updates: u64,
    namespace: Option<String>,
    baseline: bool,
    idle: Option<u64>,
    churn: Option<u64>,
    keep: bool,
    prefill: u64,
    leases: bool,
    cache: CacheMode,
    queued: u64,
    outbox: bool,
    dedup: usize,
    compare_leases: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        store: "memory".into(),
        chats: 10_000,
        updates: 1_000_000,
        namespace: None,
        baseline: true,
        idle: None,
        churn: None,
        keep: false,
        prefill: 0,
        leases: true,
        cache: CacheMode::Auto,
        queued: 1,
        outbox: false,
        dedup: stagecraft::pipeline::DEFAULT_DEDUP_WINDOW,
        compare_leases: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or_else(|| format!("{k} needs a value"));
        match k.as_str() {
            "--store" => a.store = v()?,
            "--chats" => a.chats = v()?.parse().map_err(|e| format!("--chats: {e}"))?,
            "--updates" => a.updates = v()?.parse().map_err(|e| format!("--updates: {e}"))?,
            "--namespace" => a.namespace = Some(v()?),
            "--no-baseline" => a.baseline = false,
            "--prefill" => a.prefill = v()?.parse().map_err(|e| format!("--prefill: {e}"))?,
            "--queued" => a.queued = v()?.parse().map_err(|e| format!("--queued: {e}"))?,
            "--idle" => a.idle = Some(v()?.parse().map_err(|e| format!("--idle: {e}"))?),
            "--churn" => a.churn = Some(v()?.parse().map_err(|e| format!("--churn: {e}"))?),
            "--keep" => a.keep = true,
            "--no-leases" => a.leases = false,
            "--outbox" => a.outbox = true,
            "--compare-leases" => a.compare_leases = true,
            "--dedup" => a.dedup = v()?.parse().map_err(|e| format!("--dedup: {e}"))?,
            "--cache" => {
                a.cache = match v()?.as_str() {
                    "auto" => CacheMode::Auto,
                    "validate" => CacheMode::Validate,
                    "write-through" => CacheMode::WriteThrough,
                    other => {
                        return Err(format!(
                            "--cache: `{other}` (auto, validate, write-through)"
                        ));
                    }
                }
            }
            "--bench" => {} // passed by `cargo bench`-style runners
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if a.chats == 0 {
        return Err("--chats must be at least 1".into());
    }
    if a.queued == 0 {
        return Err("--queued must be at least 1".into());
    }
    Ok(a)
}

/// Counts replies instead of sending them.
#[derive(Debug, Default)]
struct CountingTransport(AtomicU64);

#[async_trait]
impl Transport for CountingTransport {
    async fn send(&self, _msg: &Outgoing) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn update(chat: u64, n: u64, text: &str) -> TelegramUpdate {
    let json = serde_json::json!({"update_id": n, "message": {"message_id": n, "date": 0,
        "chat": {"id": chat, "type": "private"}, "from": {"id": chat, "is_bot": false}, "text": text}});
    TelegramUpdate::from_value(json).unwrap_or_default()
}

async fn run_stagecraft(args: &Args) -> Result<(f64, u64), BoxError> {
    run_stagecraft_with(args, args.leases, args.namespace.as_deref()).await
}

/// One run on the namespace `namespace`, with leases or without.
async fn run_stagecraft_with(
    args: &Args,
    leases: bool,
    namespace: Option<&str>,
) -> Result<(f64, u64), BoxError> {
    let store = stores::open(&args.store, namespace).await?;
    // Other users' sessions already stored: the cost per update must not grow with them.
    for i in 0..args.prefill {
        let key = format!("{}:{}", -(i as i64) - 1, -(i as i64) - 1);
        store.save(&key, br#"{"data":{"updates":3}}"#, None).await?;
    }
    let transport = Arc::new(CountingTransport::default());
    let bot = demo_bot::build(
        Pipeline::<demo_bot::Demo>::builder()
            .store_arc(store)
            .leases(if leases {
                LeaseConfig::new()
            } else {
                LeaseConfig::off()
            })
            .cache_mode(args.cache)
            .outbox(args.outbox)
            .dedup_window(args.dedup)
            .transport(Arc::clone(&transport)),
    )?;
    let per_chat = args.updates / args.chats;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for chat in 1..=args.chats {
        let bot = bot.clone();
        // Build this chat's ten distinct updates once; each handled update is a clone.
        let cycle: Vec<TelegramUpdate> = CYCLE
            .iter()
            .enumerate()
            .map(|(i, t)| update(chat, i as u64, t))
            .collect();
        let queued = args.queued;
        tasks.spawn(async move {
            if queued == 1 {
                for i in 0..per_chat {
                    let mut u = cycle[(i % 10) as usize].clone();
                    u.update_id = i as i64;
                    bot.handle(u).await?;
                }
            } else {
                // Bursts: `queued` updates of the chat handed over at once (each joins the
                // key's queue when `handle` is called), then awaited together.
                let mut i = 0;
                while i < per_chat {
                    let n = queued.min(per_chat - i);
                    let burst: Vec<_> = (i..i + n)
                        .map(|j| {
                            let mut u = cycle[(j % 10) as usize].clone();
                            u.update_id = j as i64;
                            bot.handle(u)
                        })
                        .collect();
                    for r in futures_util::future::join_all(burst).await {
                        r?;
                    }
                    i += n;
                }
            }
            Ok::<(), stagecraft::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((
        (per_chat * args.chats) as f64 / secs,
        transport.0.load(Ordering::Relaxed),
    ))
}

#[derive(Default, Serialize, Deserialize)]
struct SmallSession {
    updates: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    cursor: Option<i64>,
}

/// The bare loop: dashmap + per-key async lock + serde_json of a small session.
async fn run_baseline(args: &Args) -> f64 {
    let locks: Arc<DashMap<u64, Arc<tokio::sync::Mutex<()>>>> = Arc::new(DashMap::new());
    let data: Arc<DashMap<u64, Vec<u8>>> = Arc::new(DashMap::new());
    let per_chat = args.updates / args.chats;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for chat in 1..=args.chats {
        let (locks, data) = (Arc::clone(&locks), Arc::clone(&data));
        let cycle: Vec<TelegramUpdate> = CYCLE
            .iter()
            .enumerate()
            .map(|(i, t)| update(chat, i as u64, t))
            .collect();
        tasks.spawn(async move {
            for i in 0..per_chat {
                let u = cycle[(i % 10) as usize].clone();
                let lock = Arc::clone(locks.entry(chat).or_default().value());
                let _g = lock.lock().await;
                let mut s: SmallSession = match data.get(&chat) {
                    Some(b) => serde_json::from_slice(&b).unwrap_or_default(),
                    None => SmallSession::default(),
                };
                s.updates += 1;
                s.cursor = Some((i % 4) as i64);
                if s.name.is_none() {
                    s.name = u.message.as_ref().and_then(|m| m.text.clone());
                }
                let bytes = serde_json::to_vec(&s).unwrap_or_default();
                data.insert(chat, bytes);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    (per_chat * args.chats) as f64 / start.elapsed().as_secs_f64()
}

/// The bare SQLite loop: what any session layer on sqlx's SQLite driver must do per update
/// at least, and nothing else: one compare-and-set `UPDATE` of the chat's row (autocommit,
/// WAL, `synchronous = NORMAL`, one connection), with the chats in flight grouped into one
/// transaction the way a group commit would. Runs on a file beside the store's.
#[cfg(feature = "sqlite")]
async fn run_sqlite_baseline(path: &str, args: &Args) -> Result<f64, BoxError> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    use sqlx::{ConnectOptions, Connection};
    use stagecraft::store::sqlx;
    let file = format!("{path}-baseline");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{file}{suffix}"));
    }
    let mut conn = SqliteConnectOptions::new()
        .filename(&file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .connect()
        .await?;
    sqlx::query(
        "CREATE TABLE s (k INTEGER PRIMARY KEY, data BLOB NOT NULL, version INTEGER NOT NULL)",
    )
    .execute(&mut conn)
    .await?;
    let session = br#"{"data":{"updates":1},"scenes":[]}"#;
    for chat in 1..=args.chats {
        sqlx::query("INSERT INTO s VALUES (?, ?, 0)")
            .bind(chat as i64)
            .bind(&session[..])
            .execute(&mut conn)
            .await?;
    }
    let per_chat = args.updates / args.chats;
    let update = "UPDATE s SET data = ?, version = version + 1 WHERE k = ? AND version = ?";
    let start = Instant::now();
    for round in 0..per_chat {
        if args.chats == 1 {
            sqlx::query(update)
                .bind(&session[..])
                .bind(1_i64)
                .bind(round as i64)
                .execute(&mut conn)
                .await?;
            continue;
        }
        // Every chat once per round, in groups of 512 per transaction.
        let mut chat = 1;
        while chat <= args.chats {
            let mut tx = conn.begin().await?;
            for c in chat..(chat + 512).min(args.chats + 1) {
                sqlx::query(update)
                    .bind(&session[..])
                    .bind(c as i64)
                    .bind(round as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            chat += 512;
        }
    }
    let ups = (per_chat * args.chats) as f64 / start.elapsed().as_secs_f64();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{file}{suffix}"));
    }
    Ok(ups)
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn current_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// `--idle N`: N sessions created by one update each, then left idle in a memory store
/// (the decoded-session cache off); reports the resident bytes each costs beyond its
/// stored payload.
async fn run_idle(n: u64) -> Result<(), BoxError> {
    use stagecraft::store::SessionStore;
    let store = stagecraft::store::MemoryStore::new();
    let bot = demo_bot::build(
        Pipeline::<demo_bot::Demo>::builder()
            .store(store.clone())
            .session_cache(0)
            .transport(CountingTransport::default()),
    )?;
    let template = update(1, 1, "hello");
    let before = current_rss_bytes();
    for chat in 1..=n {
        let mut u = template.clone();
        if let Some(m) = u.message.as_mut() {
            m.chat.id = chat as i64;
            if let Some(f) = m.from.as_mut() {
                f.id = chat as i64;
            }
        }
        bot.handle(u).await?;
    }
    let after = current_rss_bytes();
    let payload = store.load("1:1").await?.map_or(0, |l| l.bytes.len() as u64);
    let per_session = after.saturating_sub(before) as f64 / n as f64;
    let line = serde_json::json!({
        "store": "memory",
        "idle_sessions": n,
        "stored_sessions": store.len(),
        "rss_growth_bytes": after.saturating_sub(before),
        "bytes_per_session": per_session.round(),
        "payload_bytes_per_session": payload,
        "overhead_bytes_per_session": (per_session - payload as f64).round(),
    });
    println!("{line}");
    Ok(())
}

/// `--churn N`: N distinct keys (user = chat), each sending `hi` (its session is
/// stored) and then `bye` (its session ends and is deleted; with `--keep`, `again`,
/// and the session stays), `--chats` of them in flight at once. Reports resident memory
/// at the start, after the first tenth of the keys (allocator pools warm) and at the
/// end, and the pipeline's per-key tables ([`Pipeline::footprint`]) at the end.
async fn run_churn(args: &Args, n: u64) -> Result<(), BoxError> {
    use stagecraft::prelude::{Cx, Outcome, RouteBuilder};
    use stagecraft::update::Update;
    let store = stores::open(&args.store, args.namespace.as_deref()).await?;
    let transport = Arc::new(CountingTransport::default());
    let bot = Pipeline::<u64>::builder()
        .store_arc(Arc::clone(&store))
        .leases(if args.leases {
            LeaseConfig::new()
        } else {
            LeaseConfig::off()
        })
        .cache_mode(args.cache)
        .transport(Arc::clone(&transport))
        .on_text(|cx: Cx<u64>| async move {
            if cx.update().message_text() == Some("bye") {
                cx.clear_session()?;
            } else {
                cx.session_mut(|n| *n = n.saturating_add(1))?;
            }
            cx.reply("ok");
            Ok(Outcome::Handled)
        })
        .build();
    let last_word = if args.keep { "again" } else { "bye" };
    let templates = [update(1, 0, "hi"), update(1, 0, last_word)];
    let in_flight = usize::try_from(args.chats.min(n)).unwrap_or(usize::MAX);
    let rss_start = current_rss_bytes();
    let mut rss_warm = rss_start;
    let mut tasks = tokio::task::JoinSet::new();
    let warm_at = n / 10;
    for key in 1..=n {
        if key == warm_at + 1 {
            while let Some(r) = tasks.join_next().await {
                r??;
            }
            rss_warm = current_rss_bytes();
        }
        while tasks.len() >= in_flight {
            if let Some(r) = tasks.join_next().await {
                r??;
            }
        }
        let updates: Vec<TelegramUpdate> = templates
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut u = t.clone();
                u.update_id = (key * 2 + i as u64) as i64;
                if let Some(m) = u.message.as_mut() {
                    m.chat.id = key as i64;
                    if let Some(f) = m.from.as_mut() {
                        f.id = key as i64;
                    }
                }
                u
            })
            .collect();
        let bot = bot.clone();
        tasks.spawn(async move {
            for u in updates {
                bot.handle(u).await?;
            }
            Ok::<(), stagecraft::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let rss_end = current_rss_bytes();
    let footprint = bot.footprint();
    let stored = store
        .list(&stagecraft::store::ListFilter::default())
        .await
        .map_or(0, |keys| keys.len());
    let line = serde_json::json!({
        "store": args.store,
        "leases": if args.leases { "auto" } else { "off" },
        "keys": n,
        "sessions_end": if args.keep { "kept" } else { "deleted" },
        "in_flight": in_flight,
        "replies": transport.0.load(Ordering::Relaxed),
        "rss_start_bytes": rss_start,
        "rss_after_first_tenth_bytes": rss_warm,
        "rss_end_bytes": rss_end,
        "rss_growth_after_first_tenth_bytes": rss_end.saturating_sub(rss_warm),
        "peak_rss_bytes": peak_rss_bytes(),
        "keys_in_flight": bot.keys_in_flight(),
        "key_table_entries": footprint.keys,
        "cached_sessions": footprint.cached_sessions,
        "lease_streaks": footprint.lease_streaks,
        "stored_sessions": stored,
    });
    println!("{line}");
    Ok(())
}

async fn sqlite_baseline(args: &Args) -> Result<Option<f64>, BoxError> {
    #[cfg(feature = "sqlite")]
    if let Some(path) = args.store.strip_prefix("sqlite:") {
        if args.baseline && !path.contains(":memory:") {
            return Ok(Some(run_sqlite_baseline(path, args).await?));
        }
    }
    let _ = args;
    Ok(None)
}

/// The floor of the SQLite statements of one chat's updates, one after another: the
/// statements stagecraft runs on the caller's thread, and nothing else, with rusqlite on
/// a file beside the store's. Without leases, one compare-and-set `UPDATE` (autocommit);
/// with them, the lease's take and the record's read in one transaction, then the
/// compare-and-set `UPDATE` and the lease's release in another. Only for one chat.
#[cfg(feature = "sqlite")]
fn run_sqlite_inline_floor(path: &str, args: &Args) -> Result<f64, BoxError> {
    use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
    let file = format!("{path}-floor");
    let remove = || {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{file}{suffix}"));
        }
    };
    remove();
    let mut conn = Connection::open(&file)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(
        "CREATE TABLE s (k TEXT PRIMARY KEY, data BLOB NOT NULL, version INTEGER NOT NULL);
         CREATE TABLE l (k TEXT PRIMARY KEY, token TEXT NOT NULL, expires_at INTEGER NOT NULL)
             WITHOUT ROWID;",
    )?;
    let session = br#"{"data":{"updates":1},"scenes":[]}"#;
    conn.execute("INSERT INTO s VALUES ('1', ?1, 0)", params![&session[..]])?;
    let update = "UPDATE s SET data = ?1, version = ?2 WHERE k = '1' AND version = ?3";
    let start = Instant::now();
    for round in 0..args.updates as i64 {
        if !args.leases {
            conn.prepare_cached(update)?
                .execute(params![&session[..], round + 1, round])?;
            continue;
        }
        let token = format!("t{round}");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "INSERT INTO l VALUES ('1', ?1, ?2) ON CONFLICT (k) DO UPDATE
             SET token = excluded.token, expires_at = excluded.expires_at
             WHERE l.expires_at <= ?3",
        )?
        .execute(params![token, i64::MAX, 0])?;
        let _row: Option<(Vec<u8>, i64)> = tx
            .prepare_cached("SELECT data, version FROM s WHERE k = '1'")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        tx.commit()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(update)?
            .execute(params![&session[..], round + 1, round])?;
        tx.prepare_cached("DELETE FROM l WHERE k = '1' AND token = ?1")?
            .execute([&token])?;
        tx.commit()?;
    }
    let ups = args.updates as f64 / start.elapsed().as_secs_f64();
    drop(conn);
    remove();
    Ok(ups)
}

/// [`run_sqlite_inline_floor`] when the run is one chat on an SQLite file.
fn sqlite_floor(args: &Args) -> Result<Option<f64>, BoxError> {
    #[cfg(feature = "sqlite")]
    if let Some(path) = args.store.strip_prefix("sqlite:") {
        if args.baseline && args.chats == 1 && !path.contains(":memory:") {
            return Ok(Some(run_sqlite_inline_floor(path, args)?));
        }
    }
    let _ = args;
    Ok(None)
}

/// A throughput line: the settings of the run, then `figures` (an object).
fn report(args: &Args, figures: serde_json::Value) -> serde_json::Value {
    let mut line = serde_json::json!({
        "store": args.store,
        "outbox": args.outbox,
        "dedup": args.dedup,
        "cache": format!("{:?}", args.cache),
        "queued": args.queued,
        "chats": args.chats,
        "updates": args.updates / args.chats * args.chats,
    });
    if let (Some(line), serde_json::Value::Object(figures)) = (line.as_object_mut(), figures) {
        line.extend(figures);
    }
    line
}

/// `--compare-leases`: with leases and without, alternating (without, with, without,
/// with), each run on fresh sessions in a namespace of its own.
async fn compare_leases(args: &Args) -> Result<(), BoxError> {
    let base = args
        .namespace
        .clone()
        .unwrap_or_else(|| format!("bench_{}", std::process::id()));
    let mut with = Vec::new();
    let mut without = Vec::new();
    for i in 0..4 {
        let leases = i % 2 == 1;
        let (ups, _) = run_stagecraft_with(args, leases, Some(&format!("{base}_{i}"))).await?;
        if leases {
            with.push(ups);
        } else {
            without.push(ups);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (with_mean, without_mean) = (mean(&with), mean(&without));
    let line = report(
        args,
        serde_json::json!({
            "with_leases_runs": with.iter().map(|u| u.round()).collect::<Vec<_>>(),
            "without_leases_runs": without.iter().map(|u| u.round()).collect::<Vec<_>>(),
            "with_leases_updates_per_sec": with_mean.round(),
            "without_leases_updates_per_sec": without_mean.round(),
            "leases_ratio": (with_mean / without_mean * 100.0).round() / 100.0,
        }),
    );
    println!("{line}");
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Some(n) = args.idle {
        return rt.block_on(run_idle(n));
    }
    if let Some(n) = args.churn {
        return rt.block_on(run_churn(&args, n));
    }
    if args.compare_leases {
        return rt.block_on(compare_leases(&args));
    }
    rt.block_on(async {
        let baseline = if args.baseline && args.store == "memory" {
            Some(run_baseline(&args).await)
        } else {
            sqlite_baseline(&args).await?
        };
        let floor = sqlite_floor(&args)?;
        let (ups, replies) = run_stagecraft(&args).await?;
        let line = report(
            &args,
            serde_json::json!({
                "leases": if args.leases { "auto" } else { "off" },
                "prefilled_sessions": args.prefill,
                "updates_per_sec": ups.round(),
                "baseline_updates_per_sec": baseline.map(f64::round),
                "ratio": baseline.map(|b| (b / ups * 100.0).round() / 100.0),
                "statements_floor_updates_per_sec": floor.map(f64::round),
                "replies": replies,
                "peak_rss_bytes": peak_rss_bytes(),
            }),
        );
        println!("{line}");
        Ok(())
    })
}
