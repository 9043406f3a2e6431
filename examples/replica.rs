//! One bot replica for the multi-process tests: reads `CHAT TEXT` lines on stdin, hands
//! each to the pipeline as soon as it arrives (all concurrently, as a webhook server
//! would), and prints every reply as a JSON line on stdout.
//!
//! The bot: a middleware that reads a counter, awaits (`--await-ms`, default 1), then
//! writes what it read + 1 (Telegraf's "stale write after an await"); a wizard `loop`
//! whose two steps `A` and `B` alternate, each counting its runs and replying
//! `A<runs> n=<counter>`; the text `hang` replies (held back), prints
//! `holding the lease` on stderr and sleeps for an hour.
//!
//! Options: `--store SPEC` and `--namespace NAME` (as the demo), `--leases auto|on|off`,
//! `--lease-ttl-ms N`, `--lease-wait-ms N`, `--attempts N`, `--await-ms N`,
//! `--max-queue N` (updates of one key that may wait; default: no bound, since every
//! line of stdin is handed over as soon as it is read), `--outbox` (replies committed with the session, delivered after; at
//! start-up the replies a crashed process left pending are delivered first and
//! `pending keys=K replies=R failed=F` is printed on stderr), `--ids` (each line is
//! `ID CHAT TEXT`, the update id given: a redelivered line is the same update). At the end of stdin it waits for every update and prints
//! `stats handled=H errors=E runs=R` on stderr (`runs`: middleware runs, so
//! `runs - handled` is the number of reruns after conflicts); exit status 1 if an update
//! failed.

#[path = "shared/stores.rs"]
mod stores;

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stagecraft::pipeline::{LeaseConfig, LeaseMode};
use stagecraft::prelude::*;
use stagecraft::transport::{Outgoing, Transport};

static RUNS: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tally {
    count: u64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Steps {
    a: u64,
    b: u64,
}

#[typetag::serde(name = "replica.steps.v1")]
impl SceneState for Steps {}

type C = Cx<Tally>;

struct Args {
    store: String,
    namespace: Option<String>,
    leases: LeaseConfig,
    attempts: usize,
    await_ms: u64,
    max_queue: Option<usize>,
    outbox: bool,
    ids: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        store: "memory".to_owned(),
        namespace: None,
        leases: LeaseConfig::new(),
        attempts: 1000,
        await_ms: 1,
        max_queue: None,
        outbox: false,
        ids: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        let ms = |v: String| v.parse::<u64>().map_err(|e| format!("{e}"));
        match a.as_str() {
            "--store" => args.store = value()?,
            "--namespace" => args.namespace = Some(value()?),
            "--leases" => {
                let mode = match value()?.as_str() {
                    "auto" => LeaseMode::Auto,
                    "on" => LeaseMode::On,
                    "off" => LeaseMode::Off,
                    other => return Err(format!("--leases: `{other}` is not auto|on|off")),
                };
                args.leases = args.leases.mode(mode);
            }
            "--lease-ttl-ms" => {
                args.leases = args.leases.ttl(Duration::from_millis(ms(value()?)?));
            }
            "--lease-wait-ms" => {
                args.leases = args.leases.wait(Duration::from_millis(ms(value()?)?));
            }
            "--attempts" => args.attempts = value()?.parse().map_err(|e| format!("{e}"))?,
            "--await-ms" => args.await_ms = ms(value()?)?,
            "--max-queue" => {
                args.max_queue = Some(value()?.parse().map_err(|e| format!("{e}"))?);
            }
            "--outbox" => args.outbox = true,
            "--ids" => args.ids = true,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

/// Prints each reply as a JSON line.
#[derive(Debug)]
struct Stdout;

#[async_trait]
impl Transport for Stdout {
    async fn send(&self, msg: &Outgoing) -> Result<(), BoxError> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", msg.to_json_line())?;
        out.flush()?;
        Ok(())
    }
}

fn counted(cx: &C) -> Result<u64, Error> {
    cx.session(|s| s.count)
}

fn build(
    args: &Args,
    store: Arc<dyn stagecraft::store::SessionStore>,
) -> Result<Pipeline<Tally>, Error> {
    let await_ms = args.await_ms;
    let steps = Wizard::builder("loop")
        .state::<Steps>()
        .step(|cx: C| async move {
            let a = cx.scene_state_mut(|s: &mut Steps| {
                s.a += 1;
                s.a
            })?;
            cx.reply(format!("A{a} n={}", counted(&cx)?));
            Ok(Outcome::Next)
        })
        .step(|cx: C| async move {
            let b = cx.scene_state_mut(|s: &mut Steps| {
                s.b += 1;
                s.b
            })?;
            cx.reply(format!("B{b} n={}", counted(&cx)?));
            Ok(Outcome::Goto(0))
        })
        .build();
    let stage = Stage::builder().scene(steps).build()?;
    let mut builder = Pipeline::<Tally>::builder()
        .store_arc(store)
        .transport(Stdout)
        .max_attempts(args.attempts)
        .outbox(args.outbox)
        .leases(args.leases.clone());
    builder = builder.max_queue_per_key(args.max_queue.unwrap_or(usize::MAX));
    Ok(builder
        .middleware(move |cx: C, next: Next<Tally, TelegramUpdate>| async move {
            if cx.update().message_text() == Some("hang") {
                cx.reply("held back: this reply must never be sent");
                eprintln!("holding the lease");
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            RUNS.fetch_add(1, Ordering::Relaxed);
            // Read, await, write what was read + 1.
            let count = cx.session(|s| s.count)?;
            if await_ms > 0 {
                tokio::time::sleep(Duration::from_millis(await_ms)).await;
            } else {
                tokio::task::yield_now().await;
            }
            cx.session_mut(|s| s.count = count + 1)?;
            next.run(cx).await
        })
        .stage(stage)
        .on_text(|_cx: C| async move { Ok(Outcome::enter("loop")) })
        .build())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run(args)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<u64, BoxError> {
    let store = stores::open(&args.store, args.namespace.as_deref()).await?;
    // A store that cannot work (unreachable, refused credentials, read-only, corrupt)
    // stops the bot here, with the reason, instead of failing every update.
    stagecraft::store::check(store.as_ref()).await?;
    let bot = build(&args, store)?;
    if args.outbox {
        let done = bot.deliver_pending().await?;
        eprintln!(
            "pending keys={} replies={} failed={}",
            done.keys, done.replies, done.failed
        );
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut tasks = Vec::new();
    // Update ids unique across replicas (each line is a new update; the sessions
    // remember recent ids to skip an update delivered twice).
    let mut id: i64 = i64::from(std::process::id()) << 32;
    while let Some(line) = rx.recv().await {
        let line = match line.split_once(' ') {
            Some((given, rest)) if args.ids => {
                id = given.parse()?;
                rest
            }
            _ => {
                id += 1;
                line.as_str()
            }
        };
        let Some((chat, text)) = line.split_once(' ') else {
            continue;
        };
        let chat: i64 = chat.parse()?;
        let update = TelegramUpdate::from_value(serde_json::json!({
            "update_id": id,
            "message": {
                "message_id": id,
                "date": 0,
                "chat": {"id": chat, "type": "private"},
                "from": {"id": chat, "is_bot": false, "first_name": "R"},
                "text": text,
            }
        }))?;
        // `handle` joins the key's queue now: arrival order is kept.
        tasks.push(tokio::spawn(bot.handle(update)));
    }
    let (mut handled, mut errors) = (0u64, 0u64);
    for t in tasks {
        match t.await? {
            Ok(_) => handled += 1,
            Err(e) => {
                errors += 1;
                eprintln!("error: {e}");
            }
        }
    }
    eprintln!(
        "stats handled={handled} errors={errors} runs={}",
        RUNS.load(Ordering::Relaxed)
    );
    Ok(errors)
}
