//! The largest session a pipeline stores (`PipelineBuilder::max_session_size`): an
//! update that would store more fails with `Error::SessionTooLarge`, under either error
//! policy, and the stored record stays byte for byte as it was. On the memory store,
//! SQLite and Redis (when `STAGECRAFT_REDIS_URL` is set).

mod common;

use std::sync::Arc;

use stagecraft::prelude::*;
use stagecraft::session::ErrorPolicy;
use stagecraft::store::{MemoryStore, SessionStore};
use stagecraft::transport::RecordingTransport;

const KEY: &str = "5:5";

fn message(id: i64, text: &str) -> TelegramUpdate {
    let json = serde_json::json!({"update_id": id, "message": {"message_id": id,
        "chat": {"id": 5}, "from": {"id": 5}, "text": text}});
    TelegramUpdate::from_json(&json.to_string()).unwrap()
}

/// A bot whose session is the text of every message so far.
fn bot(
    store: Arc<dyn SessionStore>,
    policy: ErrorPolicy,
    limit: Option<usize>,
) -> (Pipeline<String>, RecordingTransport) {
    let replies = RecordingTransport::new();
    let mut builder = Pipeline::<String>::builder()
        .store_arc(store)
        .transport(replies.clone())
        .error_policy(policy);
    if let Some(limit) = limit {
        builder = builder.max_session_size(limit);
    }
    let bot = builder
        .on_text(|cx: Cx<String>| async move {
            let text = cx.update().message_text().unwrap_or_default().to_owned();
            let len = cx.session_mut(|s| {
                s.push_str(&text);
                s.len()
            })?;
            cx.reply(format!("stored {len}"));
            Ok(Outcome::Handled)
        })
        .build();
    (bot, replies)
}

/// Grows a session past `limit` (the pipeline's limit; `None`: the default, 1 MiB) and
/// checks the error, the untouched record, the dropped replies and the next update.
async fn over_the_limit_stores_nothing(store: Arc<dyn SessionStore>, limit: Option<usize>) {
    let backend = store.backend();
    for policy in [ErrorPolicy::WriteAnyway, ErrorPolicy::RollBack] {
        let (bot, replies) = bot(Arc::clone(&store), policy, limit);
        let want_limit = limit.unwrap_or(stagecraft::pipeline::DEFAULT_MAX_SESSION_SIZE);
        bot.handle(message(1, "a")).await.unwrap();
        let before = store.load(KEY).await.unwrap().expect("the first session");
        let err = bot
            .handle(message(2, &"x".repeat(want_limit)))
            .await
            .expect_err("a session over the limit");
        match &err {
            Error::SessionTooLarge { key, size, limit } => {
                assert_eq!((key.as_str(), *limit), (KEY, want_limit), "[{backend}]");
                assert!(*size > want_limit, "[{backend}] size {size}");
            }
            other => panic!("[{backend}] {policy:?}: {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(KEY) && text.contains(&want_limit.to_string()),
            "{text}"
        );
        let after = store.load(KEY).await.unwrap().expect("still stored");
        assert_eq!(after.bytes, before.bytes, "[{backend}] {policy:?}: bytes");
        assert_eq!(after.version, before.version, "[{backend}] {policy:?}");
        assert_eq!(
            replies.texts(),
            ["stored 1"],
            "[{backend}] the refused update's reply is dropped"
        );
        // The next update starts from the stored record, not from the refused state.
        bot.handle(message(3, "b")).await.unwrap();
        assert_eq!(replies.texts(), ["stored 1", "stored 2"], "[{backend}]");
        assert_eq!(bot.keys_in_flight(), 0);
        let last = store.load(KEY).await.unwrap().expect("stored");
        let info = stagecraft::session::inspect(&last.bytes).unwrap();
        assert_eq!(info.data, serde_json::json!("ab"), "[{backend}]");
        store.delete(KEY, last.version).await.unwrap();
    }
}

#[tokio::test]
async fn memory_store_with_the_default_limit() {
    over_the_limit_stores_nothing(Arc::new(MemoryStore::new()), None).await;
}

#[tokio::test]
async fn memory_store_with_a_small_limit() {
    over_the_limit_stores_nothing(Arc::new(MemoryStore::new()), Some(4096)).await;
}

#[tokio::test]
async fn no_limit_stores_large_sessions() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let (bot, _) = bot(Arc::clone(&store), ErrorPolicy::RollBack, Some(usize::MAX));
    bot.handle(message(1, &"x".repeat(3 << 20))).await.unwrap();
    let stored = store.load(KEY).await.unwrap().unwrap();
    assert!(stored.bytes.len() > 3 << 20);
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_store() {
    let path = std::env::temp_dir().join(format!(
        "{}.db",
        common::unique_name("stagecraft_session_size")
    ));
    let store = stagecraft::store::SqliteStore::open(&path).await.unwrap();
    over_the_limit_stores_nothing(Arc::new(store.clone()), Some(64 * 1024)).await;
    over_the_limit_stores_nothing(Arc::new(store.clone()), None).await;
    store.pool().close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_store() {
    let Some(url) = common::server_url("STAGECRAFT_REDIS_URL") else {
        return;
    };
    let prefix = format!("{}:", common::unique_name("stagecraft_size"));
    let store = stagecraft::store::RedisStore::connect(&url)
        .await
        .unwrap()
        .with_prefix(&prefix)
        .unwrap();
    over_the_limit_stores_nothing(Arc::new(store.clone()), Some(64 * 1024)).await;
    over_the_limit_stores_nothing(Arc::new(store.clone()), None).await;
    let left = store
        .list(&stagecraft::store::ListFilter::default())
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// `depth` arrays around a number, built without recursion.
fn nested(depth: usize) -> serde_json::Value {
    let mut v = serde_json::json!(1);
    for _ in 0..depth {
        v = serde_json::Value::Array(vec![v]);
    }
    v
}

/// A session nested deeper than records are read back (serde_json's limit of 128
/// levels, the record's envelope included) is not stored: it would not decode, and the
/// next update would lose it. The stored record stays as it was.
#[tokio::test]
async fn data_nested_deeper_than_records_are_read_is_not_stored() {
    let store = MemoryStore::new();
    let replies = RecordingTransport::new();
    let bot = Pipeline::<serde_json::Value>::builder()
        .store(store.clone())
        .transport(replies.clone())
        .session_cache(0)
        .on_text(|cx: Cx<serde_json::Value>| async move {
            let text = cx.update().message_text().unwrap_or_default().to_owned();
            let depth: usize = text.parse().map_err(Error::handler)?;
            let before = cx.session(depth_of)?;
            cx.session_mut(|s| *s = nested(depth))?;
            cx.reply(format!("was {before}"));
            Ok(Outcome::Handled)
        })
        .build();
    // 126 arrays in the record's envelope object: 127 levels, read back.
    bot.handle(message(1, "126")).await.unwrap();
    bot.handle(message(2, "126")).await.unwrap();
    assert_eq!(replies.texts(), ["was 0", "was 126"]);
    let before = store.load(KEY).await.unwrap().unwrap();
    for (id, depth) in [(3, "127"), (4, "1000")] {
        let err = bot.handle(message(id, depth)).await.unwrap_err();
        let text = stagecraft::error::error_chain(&err);
        assert!(
            matches!(&err, Error::Encode { key, .. } if key == KEY),
            "{text}"
        );
        assert!(text.contains("read back to 127 levels"), "{text}");
        assert_eq!(store.load(KEY).await.unwrap().unwrap().bytes, before.bytes);
    }
    bot.handle(message(5, "1")).await.unwrap();
    assert_eq!(replies.texts(), ["was 0", "was 126", "was 126"]);
}

/// How deep arrays nest in `v` (iteratively).
fn depth_of(v: &serde_json::Value) -> usize {
    let mut depth = 0;
    let mut cur = v;
    while let Some(inner) = cur.as_array().and_then(|a| a.first()) {
        depth += 1;
        cur = inner;
    }
    depth
}
