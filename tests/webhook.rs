//! The webhook route (`adapters::webhook`): what it answers, and three replicas of the
//! demo taking the posts of the recorded conversations round-robin on one Redis and on
//! one PostgreSQL, so that the updates of one chat land on different replicas. The
//! replies, sent to a local fake Bot API, equal the one-process transcripts: nothing
//! lost, nothing twice, in order.

#[allow(dead_code)] // this test uses a part of the fake
#[path = "teloxide_e2e/fake_bot_api.rs"]
mod fake_bot_api;

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use stagecraft::adapters::webhook::{SECRET_HEADER, WebhookOptions, router};
use stagecraft::prelude::*;
use stagecraft::store::{MemoryStore, SessionStore};
use stagecraft::testing::{Call, Fault, FaultStore};

use fake_bot_api::FakeBotApi;

/// Posts `body` to `http://{addr}{path}` and returns the status code.
async fn post(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let (path, headers, body) = (
        path.to_owned(),
        headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect::<String>(),
        body.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        write!(
            conn,
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    })
    .await
    .unwrap()
}

fn update(id: i64, text: &str) -> String {
    json!({"update_id": id, "message": {"message_id": id, "date": 0,
        "chat": {"id": 5, "type": "private"}, "from": {"id": 5, "is_bot": false}, "text": text}})
    .to_string()
}

async fn serve(bot: Pipeline<u32>, options: WebhookOptions) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(bot, options)).await });
    addr
}

fn counting_bot(store: Arc<dyn SessionStore>, replies: &RecordingTransport) -> Pipeline<u32> {
    Pipeline::<u32>::builder()
        .store_arc(store)
        .transport(replies.clone())
        .on_text(|cx: Cx<u32>| async move {
            let n = cx.session_mut(|n| {
                *n += 1;
                *n
            })?;
            if cx.update().text() == Some("fail") {
                return Err("the handler failed".into());
            }
            cx.reply(format!("#{n}"));
            Ok(Outcome::Handled)
        })
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_answers_after_the_commit_and_asks_for_retries_only_when_they_help() {
    let replies = RecordingTransport::new();
    let bot = counting_bot(Arc::new(MemoryStore::new()), &replies);
    let addr = serve(bot, WebhookOptions::new("/hook").secret_token("s3cr3t")).await;
    let secret = [(SECRET_HEADER, "s3cr3t")];
    // Handled, and its reply was sent before the answer.
    assert_eq!(post(addr, "/hook", &secret, &update(1, "hi")).await, 200);
    assert_eq!(replies.texts(), ["#1"]);
    // Posted again (Telegram's retry): skipped, answered OK, nothing sent twice.
    assert_eq!(post(addr, "/hook", &secret, &update(1, "hi")).await, 200);
    assert_eq!(replies.texts(), ["#1"]);
    // No or a wrong secret: refused, nothing handled.
    assert_eq!(post(addr, "/hook", &[], &update(2, "hi")).await, 401);
    assert_eq!(
        post(addr, "/hook", &[(SECRET_HEADER, "guess")], &update(3, "hi")).await,
        401
    );
    assert_eq!(replies.texts(), ["#1"]);
    // Not an update, or a handler that fails: OK (a retry would fail the same way).
    assert_eq!(post(addr, "/hook", &secret, "{not json").await, 200);
    assert_eq!(post(addr, "/hook", &secret, &update(4, "fail")).await, 200);
    // Another path is not the webhook.
    assert_eq!(post(addr, "/other", &secret, &update(5, "hi")).await, 404);

    // A store that is down: 503, so Telegram posts it again; once it is back, the
    // repost is handled.
    let store = FaultStore::new(Arc::new(MemoryStore::new()));
    let replies = RecordingTransport::new();
    let bot = counting_bot(store.clone(), &replies);
    let addr = serve(bot, WebhookOptions::default()).await;
    store.inject(Call::Load, Fault::Fail, usize::MAX);
    assert_eq!(post(addr, "/", &[], &update(10, "hi")).await, 503);
    assert!(replies.texts().is_empty());
    store.clear();
    assert_eq!(post(addr, "/", &[], &update(10, "hi")).await, 200);
    assert_eq!(replies.texts(), ["#1"]);
}

type Texts = BTreeMap<i64, Vec<String>>;

/// The recorded conversations: each scenario's updates (made acceptable to teloxide's
/// strict types) and its expected texts per chat.
fn scenarios() -> Vec<(Vec<Value>, Texts)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<PathBuf> = [root.clone(), root.join("telegraf")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.to_string_lossy();
            n.ends_with(".jsonl") && !n.ends_with(".transcript.jsonl")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 4, "scenarios missing: {files:?}");
    files
        .into_iter()
        .map(|file| {
            let lines = std::fs::read_to_string(&file).unwrap();
            let updates = lines
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .filter(|v| v.get("update_id").is_some())
                .map(|mut u| {
                    if let Some(m) = u.get_mut("message") {
                        let chat = &mut m["chat"];
                        if chat.get("type").is_none() {
                            chat["type"] = json!("private");
                        }
                        if m.get("date").is_none() {
                            m["date"] = json!(1_700_000_000);
                        }
                    }
                    u
                })
                .collect();
            let mut expected = Texts::new();
            let transcript =
                std::fs::read_to_string(file.with_extension("transcript.jsonl")).unwrap();
            for line in transcript.lines().filter(|l| !l.trim().is_empty()) {
                let v: Value = serde_json::from_str(line).unwrap();
                if v["method"] == "sendMessage" {
                    expected
                        .entry(v["chat_id"].as_i64().unwrap())
                        .or_default()
                        .push(v["text"].as_str().unwrap().to_owned());
                }
            }
            (updates, expected)
        })
        .collect()
}

/// A replica of the demo on webhooks: its process and the address it listens on.
struct Replica {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn replica(api: &str, store: &str, ns: &str) -> Replica {
    let mut child = Command::new(common::example_binary("demo"))
        .args([
            "--webhook",
            "127.0.0.1:0",
            "--store",
            store,
            "--namespace",
            ns,
        ])
        .env("TELOXIDE_TOKEN", "123456:TEST")
        .env("TELOXIDE_API_URL", api)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the replica stopped before listening"
        );
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split('/').next().unwrap().parse().unwrap();
        }
    };
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in stderr.lines() {});
    Replica { child, addr }
}

async fn three_replicas_on(url: &str) {
    let ns = common::unique_name("webhook");
    let api = FakeBotApi::start(Vec::new()).await;
    let replicas: Vec<Replica> = (0..3).map(|_| replica(&api.url(), url, &ns)).collect();
    let addrs: Vec<_> = replicas.iter().map(|r| r.addr).collect();
    // All scenarios at once: chats run side by side; within a chat, each update is
    // posted when the previous one was answered (as Telegram does), to the next
    // replica in turn.
    let mut chats = Vec::new();
    let mut expected = Texts::new();
    let mut next_id = 0;
    for (updates, texts) in scenarios() {
        expected.extend(texts);
        let mut by_chat: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
        for mut u in updates {
            next_id += 1;
            u["update_id"] = json!(next_id);
            let chat = u["message"]["chat"]["id"]
                .as_i64()
                .or_else(|| u["callback_query"]["message"]["chat"]["id"].as_i64())
                .unwrap_or_default();
            by_chat.entry(chat).or_default().push(u);
        }
        chats.extend(by_chat.into_values());
    }
    let mut posting = tokio::task::JoinSet::new();
    for (c, updates) in chats.into_iter().enumerate() {
        let addrs = addrs.clone();
        posting.spawn(async move {
            for (i, u) in updates.iter().enumerate() {
                let to = addrs[(c + i) % addrs.len()];
                assert_eq!(post(to, "/", &[], &u.to_string()).await, 200);
            }
        });
    }
    while let Some(done) = posting.join_next().await {
        done.unwrap();
    }
    let want: usize = expected.values().map(Vec::len).sum();
    assert!(
        api.wait_for_calls(want, Duration::from_secs(30)).await,
        "{url}: {} of {want} replies",
        api.calls().len()
    );
    assert_eq!(api.texts_by_chat(), expected, "{url}");
    drop(replicas);
    common::drop_namespace(url, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_webhook_replicas_on_one_store_give_the_one_process_transcripts() {
    for var in ["STAGECRAFT_REDIS_URL", "STAGECRAFT_POSTGRES_URL"] {
        if let Some(url) = common::server_url(var) {
            three_replicas_on(&url).await;
        }
    }
}
