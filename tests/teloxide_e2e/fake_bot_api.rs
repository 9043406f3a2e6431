//! A tiny Telegram Bot API server for tests: HTTP/1.1 on 127.0.0.1, just enough of the
//! API for teloxide's long polling `Dispatcher` and for replies.
//!
//! - `getMe`, `getWebhookInfo` (no webhook), `deleteWebhook`.
//! - `getUpdates`: serves a scripted list of batches. Like Telegram, it forgets updates
//!   below `offset` and answers every update of the current batch not yet confirmed; when
//!   the script is exhausted it answers an empty list after a short wait.
//! - `sendMessage` and `answerCallbackQuery`: recorded, answered with valid objects.
//! - `sendPhoto`, `sendDocument`, `editMessageText`, `editMessageReplyMarkup`,
//!   `deleteMessage`: recorded with their body, answered with valid objects.
//! - Every request but `getUpdates` is also kept with its raw body ([`FakeBotApi::requests`]).
//! - Anything else: recorded and answered `404`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub(crate) const BOT_ID: i64 = 424_242;
pub(crate) const BOT_USERNAME: &str = "stagecraft_test_bot";

/// A call the bot made that the server recorded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Call {
    /// `sendMessage`.
    SendMessage {
        chat_id: i64,
        thread_id: Option<i64>,
        text: String,
    },
    /// `answerCallbackQuery`.
    AnswerCallback { id: String, text: Option<String> },
    /// A media, edit or delete call, with its raw body (JSON or multipart).
    Other { method: String, body: String },
    /// A method the server does not know.
    Unknown { method: String },
}

#[derive(Default)]
struct State {
    batches: Vec<Vec<Value>>,
    /// Updates with a smaller id are confirmed (the highest `offset` seen).
    confirmed_below: i64,
    calls: Vec<Call>,
    methods: Vec<String>,
    /// Method and raw body of every request but `getUpdates`.
    requests: Vec<(String, String)>,
    next_message_id: i64,
    /// How many `sendMessage` calls to refuse with 429 (`retry_after`: 1 s) first.
    throttle: usize,
}

/// The running server; stops when dropped.
pub(crate) struct FakeBotApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: watch::Receiver<usize>,
    task: JoinHandle<()>,
}

impl Drop for FakeBotApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBotApi {
    /// Starts serving `batches` (each batch is what one `getUpdates` answers at most).
    pub(crate) async fn start(batches: Vec<Vec<Value>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            batches,
            next_message_id: 1,
            ..State::default()
        }));
        let (tx, changed) = watch::channel(0usize);
        let tx = Arc::new(tx);
        let task = {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, Arc::clone(&state), Arc::clone(&tx)));
                }
            })
        };
        Self {
            addr,
            state,
            changed,
            task,
        }
    }

    /// Refuses the next `n` `sendMessage` calls with 429 Too Many Requests, asking to
    /// retry after `retry_after` seconds (Telegram's flood control).
    pub(crate) fn throttle(&self, n: usize) {
        self.lock().throttle = n;
    }

    /// Adds a batch at the end of the script (served once the ones before it are
    /// confirmed): for a test that answers what the bot sent.
    pub(crate) fn push_batch(&self, batch: Vec<Value>) {
        self.lock().batches.push(batch);
    }

    /// The URL to give `Bot::set_api_url`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every recorded call, in order.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The method (lower case) and raw body of every request but `getUpdates`, in order.
    pub(crate) fn requests(&self) -> Vec<(String, String)> {
        self.lock().requests.clone()
    }

    /// Every method called, in order (including `getUpdates`).
    pub(crate) fn methods(&self) -> Vec<String> {
        self.lock().methods.clone()
    }

    /// The texts sent to each chat, in order.
    pub(crate) fn texts_by_chat(&self) -> BTreeMap<i64, Vec<String>> {
        let mut map: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for call in self.calls() {
            if let Call::SendMessage { chat_id, text, .. } = call {
                map.entry(chat_id).or_default().push(text);
            }
        }
        map
    }

    /// Waits until at least `n` calls were recorded, or `deadline` passed. Returns
    /// whether they arrived.
    pub(crate) async fn wait_for_calls(&self, n: usize, deadline: Duration) -> bool {
        let mut changed = self.changed.clone();
        tokio::time::timeout(deadline, changed.wait_for(|count| *count >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

struct Request {
    method: String,
    body: Value,
    raw: String,
}

/// Reads one request; `None` at the end of the connection or on garbage.
async fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await.ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    // `/bot<token>/<Method>`; method names are case-insensitive.
    let method = path.rsplit('/').next()?.to_ascii_lowercase();
    let raw = String::from_utf8_lossy(&body).into_owned();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Some(Request { method, body, raw })
}

async fn serve(stream: TcpStream, state: Arc<Mutex<State>>, changed: Arc<watch::Sender<usize>>) {
    let mut reader = BufReader::new(stream);
    while let Some(req) = read_request(&mut reader).await {
        let (status, answer) = answer(&req, &state, &changed).await;
        let body = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
            body.len()
        );
        if reader
            .get_mut()
            .write_all(response.as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

fn ok(result: Value) -> (&'static str, Value) {
    ("200 OK", json!({"ok": true, "result": result}))
}

fn chat(id: i64) -> Value {
    if id > 0 {
        json!({"id": id, "type": "private", "first_name": format!("U{id}")})
    } else {
        json!({"id": id, "type": "group", "title": format!("G{id}")})
    }
}

fn bot_user() -> Value {
    json!({"id": BOT_ID, "is_bot": true, "first_name": "Stagecraft", "username": BOT_USERNAME})
}

async fn answer(
    req: &Request,
    state: &Mutex<State>,
    changed: &watch::Sender<usize>,
) -> (&'static str, Value) {
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    lock().methods.push(req.method.clone());
    if req.method != "getupdates" {
        lock().requests.push((req.method.clone(), req.raw.clone()));
    }
    let record = |call: Call| {
        let n = {
            let mut st = lock();
            st.calls.push(call);
            st.calls.len()
        };
        changed.send_replace(n);
    };
    match req.method.as_str() {
        "getme" => {
            let mut me = bot_user();
            me["can_join_groups"] = json!(true);
            me["can_read_all_group_messages"] = json!(false);
            me["supports_inline_queries"] = json!(false);
            me["can_connect_to_business"] = json!(false);
            me["has_main_web_app"] = json!(false);
            ok(me)
        }
        "getwebhookinfo" => ok(json!({
            "url": "", "has_custom_certificate": false, "pending_update_count": 0
        })),
        "deletewebhook" => ok(json!(true)),
        "getupdates" => {
            let offset = req.body["offset"].as_i64().unwrap_or(0);
            let limit = req.body["limit"]
                .as_u64()
                .map_or(100, |l| usize::try_from(l).unwrap_or(100));
            let updates = {
                let mut st = lock();
                st.confirmed_below = st.confirmed_below.max(offset);
                let below = st.confirmed_below;
                st.batches
                    .iter()
                    .map(|batch| {
                        batch
                            .iter()
                            .filter(|u| u["update_id"].as_i64().unwrap_or(0) >= below)
                            .take(limit)
                            .cloned()
                            .collect::<Vec<_>>()
                    })
                    .find(|pending| !pending.is_empty())
                    .unwrap_or_default()
            };
            if updates.is_empty() {
                // Long polling with nothing to say: answer after a short wait.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ok(Value::Array(updates))
        }
        "sendmessage" if lock().throttle > 0 => {
            lock().throttle -= 1;
            (
                "429 Too Many Requests",
                json!({"ok": false, "error_code": 429,
                    "description": "Too Many Requests: retry after 1",
                    "parameters": {"retry_after": 1}}),
            )
        }
        "sendmessage" => {
            let chat_id = req.body["chat_id"].as_i64().unwrap_or_default();
            let thread_id = req.body["message_thread_id"].as_i64();
            let text = req.body["text"].as_str().unwrap_or_default().to_owned();
            let message_id = {
                let mut st = lock();
                st.next_message_id += 1;
                st.next_message_id
            };
            record(Call::SendMessage {
                chat_id,
                thread_id,
                text: text.clone(),
            });
            ok(json!({
                "message_id": message_id,
                "date": 1_700_000_000,
                "chat": chat(chat_id),
                "from": bot_user(),
                "text": text,
            }))
        }
        "answercallbackquery" => {
            record(Call::AnswerCallback {
                id: req.body["callback_query_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                text: req.body["text"].as_str().map(str::to_owned),
            });
            ok(json!(true))
        }
        "sendphoto" | "senddocument" | "editmessagetext" | "editmessagereplymarkup" => {
            let chat_id = field(req, "chat_id").unwrap_or_default();
            let message_id = match field(req, "message_id") {
                Some(id) => id,
                None => {
                    let mut st = lock();
                    st.next_message_id += 1;
                    st.next_message_id
                }
            };
            record(Call::Other {
                method: req.method.clone(),
                body: req.raw.clone(),
            });
            ok(json!({
                "message_id": message_id,
                "date": 1_700_000_000,
                "chat": chat(chat_id),
                "from": bot_user(),
                "text": "",
            }))
        }
        "deletemessage" => {
            record(Call::Other {
                method: req.method.clone(),
                body: req.raw.clone(),
            });
            ok(json!(true))
        }
        other => {
            record(Call::Unknown {
                method: other.to_owned(),
            });
            (
                "404 Not Found",
                json!({"ok": false, "error_code": 404, "description": "Not Found: method not found"}),
            )
        }
    }
}

/// An integer field of a request, from its JSON body or its multipart form.
fn field(req: &Request, name: &str) -> Option<i64> {
    if let Some(n) = req.body[name].as_i64() {
        return Some(n);
    }
    let marker = format!("name=\"{name}\"");
    let at = req.raw.find(&marker)? + marker.len();
    let rest = req.raw[at..]
        .trim_start_matches(|c: char| c != '\n')
        .trim_start();
    rest.split_whitespace().next()?.parse().ok()
}
