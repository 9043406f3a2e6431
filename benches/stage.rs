//! Per-update costs of the reference bot, with the bare baseline beside them.
//!
//! `cargo bench --bench stage`. Groups:
//! - `update/*`: one whole update through the pipeline on the memory store, and the bare
//!   baseline (dashmap + per-key async lock + serde_json of a small session);
//! - `sqlite/*` (feature `sqlite`): one whole update on an SQLite file (one chat, each
//!   update committed before the next), and the bare sqlx loop beside it (one
//!   compare-and-set `UPDATE` per iteration on one connection);
//! - `split/*`: the parts of an update: key, key + lock + dispatch of an update nothing
//!   takes, load, decode, route, encode, save.

#![allow(missing_docs)] // criterion_group! generates undocumented items

#[path = "../examples/shared/demo_bot.rs"]
mod demo_bot;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use stagecraft::Pipeline;
use stagecraft::session::KeyStrategy;
use stagecraft::store::{Codec, MemoryStore, SessionStore};
use stagecraft::transport::LogTransport;
use stagecraft::update::TelegramUpdate;

const CYCLE: [&str; 10] = [
    "/start", "Alice", "abc", "30", "yes", "/profile", "/whoami", "hello", "/back", "outside",
];

fn updates(chat: i64) -> Vec<TelegramUpdate> {
    CYCLE
        .iter()
        .enumerate()
        .map(|(i, t)| {
            TelegramUpdate::from_json(&format!(
                r#"{{"update_id":{i},"message":{{"message_id":{i},"chat":{{"id":{chat}}},"from":{{"id":{chat}}},"text":"{t}"}}}}"#
            ))
            .unwrap()
        })
        .collect()
}

#[derive(Default, Serialize, Deserialize)]
struct Small {
    updates: u64,
    name: Option<String>,
}

fn whole_update(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bot =
        demo_bot::build(Pipeline::<demo_bot::Demo>::builder().transport(LogTransport)).unwrap();
    let cycle = updates(7);
    let mut i = 0usize;
    c.bench_function("update/stagecraft_memory", |b| {
        b.iter(|| {
            let u = cycle[i % 10].clone();
            i += 1;
            rt.block_on(bot.handle(u)).unwrap()
        });
    });

    let locks: DashMap<i64, Arc<tokio::sync::Mutex<()>>> = DashMap::new();
    let data: DashMap<i64, Vec<u8>> = DashMap::new();
    let mut j = 0usize;
    c.bench_function("update/baseline", |b| {
        b.iter(|| {
            let u = cycle[j % 10].clone();
            j += 1;
            rt.block_on(async {
                let lock = Arc::clone(locks.entry(7).or_default().value());
                let _g = lock.lock().await;
                let mut s: Small = data
                    .get(&7)
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
                s.updates += 1;
                s.name = u.message.as_ref().and_then(|m| m.text.clone());
                data.insert(7, serde_json::to_vec(&s).unwrap());
            });
        });
    });
}

fn split(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let u = updates(7).remove(1);
    let key = KeyStrategy::<TelegramUpdate>::UserInChat;
    c.bench_function("split/key", |b| b.iter(|| key.key(black_box(&u))));
    // A pipeline with no handler: the key, its lock, the chain and the commit of an
    // untouched session (no store I/O).
    let idle = Pipeline::<demo_bot::Demo>::builder()
        .transport(LogTransport)
        .build();
    c.bench_function("split/key_lock_dispatch", |b| {
        b.iter(|| rt.block_on(idle.handle(black_box(u.clone()))).unwrap())
    });

    let store = MemoryStore::new();
    let record = br#"{"data":{"updates":12,"profile":{"name":"Alice","age":30}},"scenes":[{"scene":"signup","cursor":2,"entered_at":1700000000,"state":{"demo.signup.v1":{"name":"Alice","age":0}}}]}"#;
    rt.block_on(store.save("7:7", record, None)).unwrap();
    c.bench_function("split/load_memory", |b| {
        b.iter(|| rt.block_on(store.load(black_box("7:7"))).unwrap())
    });
    c.bench_function("split/decode_record", |b| {
        b.iter(|| stagecraft::session::inspect(black_box(record)).unwrap());
    });
    let value: serde_json::Value = serde_json::from_slice(record).unwrap();
    c.bench_function("split/encode_record", |b| {
        b.iter(|| Codec::Json.encode(black_box(&value)).unwrap())
    });
    c.bench_function("split/save_memory", |b| {
        b.iter(|| {
            let v = rt.block_on(store.load("7:7")).unwrap().unwrap().version;
            rt.block_on(store.save("7:7", black_box(record), Some(v)))
                .unwrap()
        });
    });
    c.bench_function("split/route_command", |b| {
        b.iter(|| stagecraft::update::Command::parse(black_box("/profile@bot args")));
    });
}

#[cfg(feature = "sqlite")]
fn sqlite(c: &mut Criterion) {
    use stagecraft::store::{SqliteStore, sqlx};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("stagecraft-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = rt.block_on(SqliteStore::open(dir.join("bot.db"))).unwrap();
    let bot = demo_bot::build(
        Pipeline::<demo_bot::Demo>::builder()
            .store(store)
            .transport(LogTransport),
    )
    .unwrap();
    let cycle = updates(7);
    let mut i = 0usize;
    c.bench_function("sqlite/stagecraft", |b| {
        b.iter(|| {
            let u = cycle[i % 10].clone();
            i += 1;
            rt.block_on(bot.handle(u)).unwrap()
        });
    });

    let mut conn = rt
        .block_on(async {
            use sqlx::ConnectOptions;
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(dir.join("bare.db"))
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .connect()
                .await
        })
        .unwrap();
    rt.block_on(async {
        sqlx::query(
            "CREATE TABLE s (k INTEGER PRIMARY KEY, data BLOB NOT NULL, version INTEGER NOT NULL)",
        )
        .execute(&mut conn)
        .await?;
        sqlx::query("INSERT INTO s VALUES (1, x'7b7d', 0)")
            .execute(&mut conn)
            .await
    })
    .unwrap();
    let session = br#"{"data":{"updates":12,"profile":{"name":"Alice","age":30}},"scenes":[]}"#;
    let mut version = 0_i64;
    c.bench_function("sqlite/bare_sqlx", |b| {
        b.iter(|| {
            rt.block_on(
                sqlx::query(
                    "UPDATE s SET data = ?, version = version + 1 WHERE k = 1 AND version = ?",
                )
                .bind(&session[..])
                .bind(version)
                .execute(&mut conn),
            )
            .unwrap();
            version += 1;
        });
    });
    drop(conn);
    drop(bot);
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(not(feature = "sqlite"))]
fn sqlite(_: &mut Criterion) {}

criterion_group!(benches, whole_update, sqlite, split);
criterion_main!(benches);
