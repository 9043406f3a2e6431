//! Bad input gets a clear error and loses nothing.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stagecraft::prelude::*;
use stagecraft::store::{ListFilter, Record, Version};

#[derive(Debug, Default, Serialize, Deserialize)]
struct D {
    n: u32,
}

type C = Cx<D>;

/// A store whose server is down.
#[derive(Debug)]
struct DownStore;

#[async_trait]
impl SessionStore for DownStore {
    fn backend(&self) -> &'static str {
        "down"
    }
    async fn load(&self, _key: &str) -> stagecraft::Result<Option<Record>> {
        Err(Error::store(
            "down",
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        ))
    }
    async fn save(&self, _: &str, _: &[u8], _: Option<Version>) -> stagecraft::Result<Version> {
        Err(Error::store(
            "down",
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        ))
    }
    async fn delete(&self, _: &str, _: Version) -> stagecraft::Result<()> {
        Err(Error::store(
            "down",
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        ))
    }
    async fn list(&self, _: &ListFilter) -> stagecraft::Result<Vec<String>> {
        Ok(Vec::new())
    }
}

fn counter(builder: stagecraft::pipeline::PipelineBuilder<D, TelegramUpdate>) -> Pipeline<D> {
    builder
        .on_text(|cx: C| async move {
            let n = cx.session_mut(|d| {
                d.n += 1;
                d.n
            });
            cx.reply(match n {
                Ok(n) => format!("n={n}"),
                Err(e) => format!("no session: {e}"),
            });
            Ok(Outcome::Handled)
        })
        .build()
}

#[tokio::test]
async fn a_store_that_is_down_is_a_store_error_and_no_reply_is_sent() {
    let replies = RecordingTransport::new();
    let bot = counter(
        Pipeline::<D>::builder()
            .store(DownStore)
            .transport(replies.clone()),
    );
    let u = TelegramUpdate::from_json(
        r#"{"update_id":1,"message":{"chat":{"id":1},"from":{"id":1},"text":"x"}}"#,
    )
    .unwrap();
    let err = bot.handle(u).await.unwrap_err();
    assert!(err.is_store(), "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );
    assert!(replies.sent().is_empty());
    assert_eq!(
        bot.keys_in_flight(),
        0,
        "the key is released after a failure"
    );
}

#[tokio::test]
async fn an_update_without_a_chat_runs_without_a_session() {
    let store = MemoryStore::new();
    let replies = RecordingTransport::new();
    let bot = counter(
        Pipeline::<D>::builder()
            .store(store.clone())
            .transport(replies.clone()),
    );
    // A channel post has a chat but no user: no user-in-chat key.
    let u = TelegramUpdate::from_json(
        r#"{"update_id":1,"channel_post":{"chat":{"id":-9},"text":"x"}}"#,
    )
    .unwrap();
    bot.handle(u).await.unwrap();
    assert_eq!(
        replies.texts(),
        ["no session: this update has no session (no chat or user to derive a key from)"]
    );
    assert!(store.is_empty(), "nothing stored under a made-up key");
}

/// By default a record that is not even JSON does not strand its user: the update is
/// handled on a fresh session and the old bytes are kept in the record's `lost` field.
#[tokio::test]
async fn an_undecodable_session_is_mended_and_its_bytes_kept() {
    let store = MemoryStore::new();
    store
        .save("1:1", b"{\"data\": not json", None)
        .await
        .unwrap();
    let bot = counter(Pipeline::<D>::builder().store(store.clone()));
    let u = TelegramUpdate::from_json(
        r#"{"update_id":1,"message":{"chat":{"id":1},"from":{"id":1},"text":"x"}}"#,
    )
    .unwrap();
    bot.handle(u).await.unwrap();
    let rec = store.load("1:1").await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&rec.bytes).unwrap();
    assert_eq!(v["lost"][0]["what"], "record", "{v}");
    assert_eq!(v["lost"][0]["value"], "{\"data\": not json", "{v}");
}

/// Under `DecodePolicy::Fail` it is a decode error naming the key, and the bytes stay.
#[tokio::test]
async fn an_undecodable_session_is_a_decode_error_and_the_bytes_stay() {
    let store = MemoryStore::new();
    store
        .save("1:1", b"{\"data\": not json", None)
        .await
        .unwrap();
    let bot = counter(
        Pipeline::<D>::builder()
            .store(store.clone())
            .decode_policy(stagecraft::session::DecodePolicy::Fail),
    );
    let u = TelegramUpdate::from_json(
        r#"{"update_id":1,"message":{"chat":{"id":1},"from":{"id":1},"text":"x"}}"#,
    )
    .unwrap();
    let err = bot.handle(u).await.unwrap_err();
    assert!(
        matches!(&err, Error::Decode { key, .. } if key == "1:1"),
        "{err:?}"
    );
    assert_eq!(
        store.load("1:1").await.unwrap().unwrap().bytes,
        b"{\"data\": not json"
    );
}

#[tokio::test]
async fn unknown_scene_from_a_handler_is_an_error_with_the_id() {
    let bot = Pipeline::<D>::builder()
        .stage(Stage::builder().build().unwrap())
        .on_text(|_cx: C| async move { Ok(Outcome::enter("nope")) })
        .build();
    let u = TelegramUpdate::from_json(
        r#"{"update_id":1,"message":{"chat":{"id":1},"from":{"id":1},"text":"x"}}"#,
    )
    .unwrap();
    let err = bot.handle(u).await.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownScene(id) if id == "nope"),
        "{err:?}"
    );
}

#[test]
fn garbage_updates_are_errors_not_panics() {
    for bad in [
        "",
        "null",
        "{}",
        "{\"update_id\":1,\"message\":7}",
        "\u{0}",
        "{\"update_id\":1e999}",
    ] {
        assert!(TelegramUpdate::from_json(bad).is_err(), "{bad:?}");
    }
}
