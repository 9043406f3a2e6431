//! The reference bot as a console chat, or replaying a recorded conversation.
//!
//! ```text
//! $ cargo run --example demo
//! /start
//! What is your name?
//! Alice
//! How old are you, Alice?
//! ```
//!
//! `--replay FILE` (or `-` for stdin) reads the replay format and prints the transcript
//! (one `{"method":"sendMessage",...}` line per reply) and nothing else on stdout. A
//! malformed line is reported on stderr with its number (`line 4: not JSON: ...`) and
//! skipped; the replay goes on, and the demo exits with status 1 when any line was bad.
//! `--store memory|sqlite:PATH|redis://...|redis-cluster://...|postgres://...|mysql://...` picks the store
//! (default: `sqlite:demo.db` when built with the `sqlite` feature, else memory; a replay
//! uses a fresh memory store unless `--store` is given, so it prints the same transcript
//! every time). A
//! password in the URL is never shown: messages print the URL with it masked. The store
//! is checked at start (`stagecraft::store::check`: it answers, accepts the credentials,
//! can write and delete a record); when it cannot, the demo prints why and exits with
//! status 1 before reading any input.
//! `--diagram` prints the bot's scenes as a Mermaid flowchart (`Stage::to_mermaid`).
//! `--help` lists every flag. In the console, `/quit` (or the end of the input) leaves.
//! `--user N` / `--chat N` set who is typing in the console (default 1001).
//! `--namespace NAME` picks the table (SQL stores) or key prefix (Redis) to use.
//! `--attempts N` caps how often an update whose write conflicted with another process runs
//! (default: no cap; reruns back off until the update's 60 s deadline).
//! `--remind` gives the signup wizard a durable timeout: after 600 s without an update of
//! the user in it, it sends `Still there? Send /cancel to stop.` once; any update re-arms
//! it, leaving cancels it. In the console and with `--telegram` it fires on the wall
//! clock (checked every second); in a replay, `advance_clock_s` lines fire it, a
//! deadline stored by an earlier run on the same store included. Without it the
//! replies are exactly those of the recorded transcripts.
//!
//! `--telegram` runs the same bot as a real Telegram bot: teloxide's `Dispatcher` with
//! long polling (build with `--features teloxide`). It reads the token from
//! `TELOXIDE_TOKEN`; `TELOXIDE_API_URL` points it to another Bot API server (a local
//! `telegram-bot-api`, or a test double). Ctrl-C stops it.
//! `--webhook ADDR` (build with `--features teloxide,webhook`) runs it on webhooks
//! instead: stagecraft's webhook route listens on ADDR (it prints the address it got,
//! e.g. for `127.0.0.1:0`), answers each post after the update's session is committed,
//! and checks `X-Telegram-Bot-Api-Secret-Token` when `WEBHOOK_SECRET_TOKEN` is set. It
//! does not call `setWebhook`: point Telegram (or a test double) at it. Several replicas
//! on one shared store may take the posts.
//!
//! ```text
//! $ TELOXIDE_TOKEN=123:ABC cargo run --example demo --features teloxide,rustls -- --telegram --store memory
//! ```

#[path = "shared/demo_bot.rs"]
mod demo_bot;
#[path = "shared/stores.rs"]
mod stores;

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;

use async_trait::async_trait;
use stagecraft::clock::{ManualClock, SystemClock};
use stagecraft::replay::{REPLAY_EPOCH_S, ReplaySummary, error_chain, replay};
use stagecraft::store::redact_url;
use stagecraft::transport::{JsonLinesTransport, Outgoing, Transport};
use stagecraft::update::TelegramUpdate;
use stagecraft::{BoxError, Pipeline};

struct Args {
    replay: Option<String>,
    telegram: bool,
    /// `--webhook ADDR`: the address to take Telegram's webhook posts on.
    webhook: Option<String>,
    diagram: bool,
    help: bool,
    /// `None`: the default (a fresh memory store for `--replay`, else `DEFAULT_STORE`).
    store: Option<String>,
    user: i64,
    chat: i64,
    attempts: usize,
    namespace: Option<String>,
    remind: bool,
}

/// Every flag, one line each (`--help`).
const HELP: &str = "\
demo: the reference bot as a console chat, a replay, or a Telegram bot

usage: demo [options]

  --replay FILE|-     replay the updates in FILE (or stdin) and print the transcript
  --telegram          run as a Telegram bot with long polling (feature teloxide, TELOXIDE_TOKEN)
  --webhook ADDR      run as a Telegram bot taking webhook posts on ADDR (features teloxide,webhook)
  --diagram           print the bot's scenes as a Mermaid flowchart and exit
  --store URL         memory, sqlite:PATH, redis://..., redis-cluster://HOST:PORT,...,
                      postgres://..., mysql://..., mongodb://...
                      (default: sqlite:demo.db; a fresh memory store with --replay)
  --namespace NAME    the table (SQL stores) or key prefix (Redis) to use
  --user N            the console's user id (default 1001)
  --chat N            the console's chat id (default 1001)
  --attempts N        runs of an update whose write conflicted (default: until its deadline)
  --remind            signup reminds a user silent for 600 s, once (a durable timeout)
  -h, --help          print this help and exit

In the console, type /quit (or end the input with Ctrl-D) to leave.";

/// How often a running demo looks for timeouts that fell due.
const TIMER_TICK: std::time::Duration = std::time::Duration::from_secs(1);

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        replay: None,
        telegram: false,
        webhook: None,
        diagram: false,
        help: false,
        store: None,
        user: 1001,
        chat: 1001,
        attempts: usize::MAX,
        namespace: None,
        remind: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--replay" => args.replay = Some(value()?),
            "--telegram" => args.telegram = true,
            "--webhook" => {
                args.webhook = Some(value()?);
                args.telegram = true;
            }
            "--diagram" => args.diagram = true,
            "--store" => args.store = Some(value()?),
            "--user" => args.user = value()?.parse().map_err(|e| format!("--user: {e}"))?,
            "--chat" => args.chat = value()?.parse().map_err(|e| format!("--chat: {e}"))?,
            "--namespace" => args.namespace = Some(value()?),
            "--remind" => args.remind = true,
            "--attempts" => {
                args.attempts = value()?.parse().map_err(|e| format!("--attempts: {e}"))?
            }
            "-h" | "--help" => args.help = true,
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(args)
}

impl Args {
    /// The store to open: as given, else a fresh memory store for a replay (the same
    /// file gives the same transcript every time), else the default.
    fn store(&self) -> &str {
        match (&self.store, &self.replay) {
            (Some(store), _) => store,
            (None, Some(_)) => "memory",
            (None, None) => stores::DEFAULT_STORE,
        }
    }
}

/// Prints each reply's text on its own line.
#[derive(Debug)]
struct Console;

#[async_trait]
impl Transport for Console {
    async fn send(&self, msg: &Outgoing) -> Result<(), BoxError> {
        if let Outgoing::Text { text, .. } = msg {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}")?;
            out.flush()?;
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STAGECRAFT_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.help {
        println!("{HELP}");
        return ExitCode::SUCCESS;
    }
    if args.diagram {
        return match demo_bot::stage::<TelegramUpdate>() {
            Ok(stage) => {
                print!("{}", stage.to_mermaid());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}", error_chain(&e));
                ExitCode::FAILURE
            }
        };
    }
    if args.telegram {
        if let Err(e) = telegram::check() {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), BoxError> {
    let store = stores::open(args.store(), args.namespace.as_deref()).await?;
    // A store that cannot work (unreachable, refused credentials, read-only, corrupt)
    // stops the bot here, with the reason, instead of failing every update.
    stagecraft::store::check(store.as_ref()).await?;
    let options = demo_bot::Options {
        remind: args.remind,
    };
    if args.telegram {
        return telegram::run(store, args.attempts, options, args.webhook.as_deref()).await;
    }
    let builder = Pipeline::<demo_bot::Demo>::builder()
        .store_arc(store)
        .max_attempts(args.attempts);
    if let Some(path) = args.replay {
        let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
        let bot = demo_bot::build_with(
            builder
                .clock(clock.clone())
                .transport(JsonLinesTransport::stdout()),
            options,
        )?;
        let summary = if path == "-" {
            replay(&bot, &clock, std::io::stdin().lock()).await
        } else {
            let file =
                std::fs::File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
            replay(&bot, &clock, std::io::BufReader::new(file)).await
        }
        .map_err(|e| format!("cannot read {path}: {e}"))?;
        return report_bad_lines(&summary);
    }
    let bot = demo_bot::build_with(builder.clock(SystemClock).transport(Console), options)?;
    // Deadlines that passed while the bot was down fire now; then every second.
    let _timers = bot.has_timers().then(|| bot.spawn_timers(TIMER_TICK));
    eprintln!(
        "stagecraft demo: you are user {} in chat {} (store: {}). Try /start, /profile, /poll.\n\
         Type /quit (or Ctrl-D) to leave.",
        args.user,
        args.chat,
        redact_url(args.store())
    );
    let stdin = std::io::stdin();
    let bot = Arc::new(bot);
    // Each console line is a new update: its id is unique across runs too (the session
    // remembers recent update ids, to skip an update delivered twice).
    let mut id: i64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
        .saturating_mul(1000);
    for line in stdin.lock().lines() {
        let text = line?;
        if text.trim() == "/quit" {
            // The console's own command, taken before the bot sees it (in a wizard too,
            // where every other text is an answer).
            break;
        }
        id = id.saturating_add(1);
        let update = TelegramUpdate::from_value(serde_json::json!({
            "update_id": id,
            "message": {
                "message_id": id,
                "date": 0,
                "chat": {"id": args.chat, "type": "private"},
                "from": {"id": args.user, "is_bot": false, "first_name": "You"},
                "text": text,
            }
        }))?;
        if let Err(e) = bot.handle(update).await {
            eprintln!("error: {}", error_chain(&e));
        }
    }
    Ok(())
}

/// Prints the replay's bad lines on stderr (stdout is the transcript's); an error when
/// there was any.
fn report_bad_lines(summary: &ReplaySummary) -> Result<(), BoxError> {
    if summary.is_clean() {
        return Ok(());
    }
    let mut err = std::io::stderr().lock();
    for bad in &summary.bad_lines {
        let _ = writeln!(err, "{}", error_chain(bad));
    }
    let unlisted = summary
        .bad_lines_total
        .saturating_sub(summary.bad_lines.len());
    if unlisted > 0 {
        let _ = writeln!(err, "... and {unlisted} more bad lines");
    }
    Err(format!(
        "{} of {} lines were bad and skipped ({} updates handled)",
        summary.bad_lines_total, summary.lines, summary.updates
    )
    .into())
}

/// `--telegram`: the bot on teloxide's `Dispatcher` with long polling.
#[cfg(feature = "teloxide")]
mod telegram {
    use std::sync::Arc;

    use stagecraft::adapters::teloxide::{TeloxideBuilderExt, enter_stage};
    use stagecraft::replay::error_chain;
    use stagecraft::store::SessionStore;
    use stagecraft::{BoxError, Pipeline};
    use teloxide::dispatching::{Dispatcher, UpdateHandler};
    use teloxide::prelude::*;
    use teloxide::types::Update;

    use crate::demo_bot;

    /// Fails with a message when the bot cannot start.
    pub(crate) fn check() -> Result<(), String> {
        if std::env::var_os("TELOXIDE_TOKEN").is_none_or(|t| t.is_empty()) {
            return Err("--telegram needs the bot token in TELOXIDE_TOKEN \
                 (and optionally TELOXIDE_API_URL for another Bot API server)"
                .to_owned());
        }
        if let Ok(url) = std::env::var("TELOXIDE_API_URL") {
            // `Bot::from_env` panics on a bad URL: check it first, with the URL type
            // teloxide itself uses.
            if !parses_as(&Bot::new("-").api_url(), url.trim_end_matches('/')) {
                return Err(format!(
                    "TELOXIDE_API_URL is not a URL: {}",
                    stagecraft::store::redact_url(&url)
                ));
            }
        }
        Ok(())
    }

    /// `text` without the bot token or a password of the Bot API server's URL.
    /// teloxide already hides the token in its errors, but they show the URL a request
    /// went to, with its user information.
    fn scrub(bot: &Bot, text: &str) -> String {
        let mut text = text.to_owned();
        let token = bot.token();
        if !token.is_empty() {
            text = text.replace(token, "***");
        }
        if let Some(password) = bot.api_url().password().filter(|p| !p.is_empty()) {
            text = text.replace(password, "***");
        }
        text
    }

    /// Why `getMe` failed, in words that tell a rejected token from a Bot API server
    /// that could not be reached (the network, or TLS: a build without a TLS feature
    /// cannot speak `https://`).
    fn get_me_failed(bot: &Bot, e: &teloxide::RequestError) -> String {
        use teloxide::{ApiError, RequestError};
        let url = bot.api_url();
        match e {
            RequestError::Api(ApiError::InvalidToken) => format!(
                "the Bot API server rejected the token (is TELOXIDE_TOKEN right?): {}",
                error_chain(e)
            ),
            RequestError::Network(_) | RequestError::Io(_) => {
                let tls = if url.scheme() == "https"
                    && !cfg!(any(feature = "rustls", feature = "native-tls"))
                {
                    " (this build has no TLS: rebuild with `--features teloxide,rustls` or \
                     `--features teloxide,native-tls` to reach an https:// server)"
                } else {
                    " (a network or TLS failure: the token was not checked)"
                };
                format!(
                    "could not reach the Bot API server at {}{tls}: {}",
                    stagecraft::store::redact_url(url.as_str()),
                    error_chain(e)
                )
            }
            _ => format!("getMe failed: {}", error_chain(e)),
        }
    }

    fn parses_as<T: std::str::FromStr>(_like: &T, s: &str) -> bool {
        s.parse::<T>().is_ok()
    }

    pub(crate) async fn run(
        store: Arc<dyn SessionStore>,
        attempts: usize,
        options: demo_bot::Options,
        webhook: Option<&str>,
    ) -> Result<(), BoxError> {
        let bot = Bot::from_env();
        let me = bot
            .get_me()
            .await
            .map_err(|e| scrub(&bot, &get_me_failed(&bot, &e)))?;
        let pipeline = demo_bot::build_with(
            Pipeline::<demo_bot::Demo, Update>::builder()
                .store_arc(store)
                .max_attempts(attempts)
                .bot_username(me.username())
                .teloxide_bot(bot.clone()),
            options,
        )?;
        // Deadlines that passed while the bot was down fire now; then every second.
        let _timers = pipeline
            .has_timers()
            .then(|| pipeline.spawn_timers(super::TIMER_TICK));
        if let Some(addr) = webhook {
            return crate::webhook::serve(pipeline, addr).await;
        }
        let handler: UpdateHandler<BoxError> = dptree::entry().branch(enter_stage(pipeline));
        let shown = bot.clone();
        let mut dispatcher = Dispatcher::builder(bot, handler)
            .default_handler(|_| async {})
            .error_handler(Arc::new(move |e: BoxError| {
                let text = scrub(&shown, &error_chain(e.as_ref()));
                async move { eprintln!("error: {text}") }
            }))
            .build();
        let token = dispatcher.shutdown_token();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                if let Ok(stopped) = token.shutdown() {
                    stopped.await;
                }
            }
        });
        eprintln!(
            "stagecraft demo: running as @{} with long polling. Ctrl-C stops.",
            me.username()
        );
        dispatcher.dispatch().await;
        Ok(())
    }
}

/// `--webhook ADDR`: the pipeline behind stagecraft's webhook route, answering each post
/// after the update's session is committed (so Telegram posts again what a crash or a
/// failure interrupted). Several replicas on one shared store may take the posts.
#[cfg(all(feature = "teloxide", feature = "webhook"))]
mod webhook {
    use stagecraft::adapters::webhook::{WebhookOptions, router};
    use stagecraft::{BoxError, Pipeline};
    use teloxide::types::Update;

    use crate::demo_bot;

    pub(crate) async fn serve(
        pipeline: Pipeline<demo_bot::Demo, Update>,
        addr: &str,
    ) -> Result<(), BoxError> {
        let mut options = WebhookOptions::new("/");
        if let Ok(token) = std::env::var("WEBHOOK_SECRET_TOKEN") {
            options = options.secret_token(token);
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr()?;
        eprintln!("stagecraft demo: webhook listening on http://{local}/ (Ctrl-C stops)");
        axum::serve(listener, router(pipeline, options))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    }
}

/// `--webhook` without the `webhook` feature.
#[cfg(all(feature = "teloxide", not(feature = "webhook")))]
mod webhook {
    use stagecraft::{BoxError, Pipeline};
    use teloxide::types::Update;

    use crate::demo_bot;

    pub(crate) async fn serve(
        _pipeline: Pipeline<demo_bot::Demo, Update>,
        _addr: &str,
    ) -> Result<(), BoxError> {
        Err("--webhook needs the webhook route: rebuild with `--features teloxide,webhook`".into())
    }
}

/// `--telegram` without the `teloxide` feature.
#[cfg(not(feature = "teloxide"))]
mod telegram {
    use std::sync::Arc;

    use stagecraft::BoxError;
    use stagecraft::store::SessionStore;

    pub(crate) fn check() -> Result<(), String> {
        Err(
            "--telegram needs the teloxide adapter: rebuild with `--features teloxide` \
             (e.g. `cargo run --example demo --features teloxide -- --telegram`)"
                .to_owned(),
        )
    }

    pub(crate) async fn run(
        _store: Arc<dyn SessionStore>,
        _attempts: usize,
        _options: crate::demo_bot::Options,
        _webhook: Option<&str>,
    ) -> Result<(), BoxError> {
        Err(check().unwrap_err().into())
    }
}
