//! `stagecraft`: look at and repair the stored sessions of a bot, on any store URL and
//! without the bot's Rust types (feature `cli`).
//!
//! ```text
//! $ cargo run --features cli --bin stagecraft -- list --store sqlite:demo.db
//! KEY        SCENE   STEP  DEPTH  ENTERED AT            EXPIRES
//! 1001:1001  signup  1     1      2026-12-03T17:26:28Z  -
//! ```
//!
//! See `stagecraft --help` and the operating guide (`docs/operating.md`).

use std::io::Write;
use std::process::ExitCode;

use stagecraft::admin::{self, Action, Conversation, ListOptions, SceneCount};
use stagecraft::error::error_chain;
use stagecraft::store::{OpenOptions, redact_url, url_forms};

const USAGE: &str = "\
stagecraft: look at and repair a bot's stored sessions (any store, no bot types needed)

usage: stagecraft COMMAND [KEY] --store URL [options]

commands:
  list          the sessions in a scene: key, scene, step, depth, entered at, expires, last active
  stats         how many users sit in each scene and step, oldest first
  show KEY      the whole stored record of KEY, as pretty JSON
  reset KEY     clear KEY's scene stack and keep its data (compare-and-set, under its lease)
  delete KEY    remove KEY's record (compare-and-set, under its lease)

options:
  --store URL       the store: memory, sqlite:PATH, redis://..., redis-cluster://HOST:PORT,...,
                    postgres://..., mysql://..., mongodb://...
                    (default: the STAGECRAFT_STORE environment variable)
  --namespace NAME  the table (SQL stores) or key prefix (Redis) the bot uses
  --scene ID        list, stats: only sessions whose active scene is ID
  --step N          list, stats: only sessions on wizard step N
  --all             list, stats: also sessions outside any scene, expired or unreadable
  --json            list, stats: print one JSON array instead of a table
  --wait SECS       reset, delete: how long to wait for a running update's lease (default 10)
  -h, --help        print this help

exit status: 0 done, 1 failed (store unreachable, no such key, ...), 2 bad arguments";

#[derive(Debug, Default)]
struct Args {
    command: String,
    key: Option<String>,
    store: Option<String>,
    namespace: Option<String>,
    scene: Option<String>,
    step: Option<i64>,
    all: bool,
    json: bool,
    wait: Option<u64>,
    help: bool,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut out = Args::default();
    let mut positional = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => out.help = true,
            "--store" => out.store = Some(value("--store")?),
            "--namespace" => out.namespace = Some(value("--namespace")?),
            "--scene" => out.scene = Some(value("--scene")?),
            "--step" => {
                let v = value("--step")?;
                out.step = Some(
                    v.parse()
                        .map_err(|_| format!("--step needs a whole number, not `{v}`"))?,
                );
            }
            "--wait" => {
                let v = value("--wait")?;
                out.wait = Some(
                    v.parse()
                        .map_err(|_| format!("--wait needs whole seconds, not `{v}`"))?,
                );
            }
            "--all" => out.all = true,
            "--json" => out.json = true,
            f if f.starts_with('-') && f.len() > 1 => {
                return Err(format!("unknown option `{f}` (try --help)"));
            }
            _ => positional.push(a),
        }
    }
    if out.help {
        return Ok(out);
    }
    let mut positional = positional.into_iter();
    out.command = positional
        .next()
        .ok_or_else(|| "no command given (try --help)".to_owned())?;
    let needs_key = match out.command.as_str() {
        "list" | "stats" => false,
        "show" | "reset" | "delete" => true,
        other => return Err(format!("unknown command `{other}` (try --help)")),
    };
    out.key = positional.next();
    if needs_key && out.key.is_none() {
        return Err(format!(
            "`{}` needs a session KEY (try --help)",
            out.command
        ));
    }
    if !needs_key && out.key.is_some() {
        return Err(format!("`{}` takes no KEY (try --help)", out.command));
    }
    if let Some(extra) = positional.next() {
        return Err(format!("unexpected argument `{extra}` (try --help)"));
    }
    if !matches!(out.command.as_str(), "reset" | "delete") && out.wait.is_some() {
        return Err(format!(
            "--wait goes with reset and delete, not `{}`",
            out.command
        ));
    }
    if needs_key && (out.scene.is_some() || out.step.is_some() || out.all || out.json) {
        return Err(format!(
            "--scene, --step, --all and --json go with list and stats, not `{}`",
            out.command
        ));
    }
    if out.store.is_none() {
        out.store = std::env::var("STAGECRAFT_STORE")
            .ok()
            .filter(|s| !s.trim().is_empty());
    }
    if out.store.is_none() {
        return Err(format!(
            "no store given: pass --store URL or set STAGECRAFT_STORE (this build opens {})",
            url_forms().join(", ")
        ));
    }
    Ok(out)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("stagecraft: {e}");
            return ExitCode::from(2);
        }
    };
    if args.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stagecraft: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("stagecraft: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let url = args.store.as_deref().unwrap_or_default();
    let mut options = OpenOptions::new().existing(true);
    if let Some(ns) = &args.namespace {
        options = options.namespace(ns);
    }
    let store = stagecraft::store::open_with(url, &options)
        .await
        .map_err(|e| match e {
            // It names the URL itself, and what this build opens.
            stagecraft::Error::UnknownStore { .. } => format!("cannot open the store: {e}"),
            e => format!(
                "cannot open the store `{}`: {}",
                redact_url(url),
                error_chain(&e)
            ),
        })?;
    let store = store.as_ref();
    let fail = |e: stagecraft::Error| match e {
        stagecraft::Error::LeaseTimeout { key, waited } => format!(
            "session `{key}` is leased by a running update (waited {}s): nothing was \
             changed; try again, or wait longer with --wait SECS",
            waited.as_secs()
        ),
        e => error_chain(&e),
    };
    let mut list = ListOptions::new().all(args.all);
    if let Some(scene) = &args.scene {
        list = list.scene(scene);
    }
    if let Some(step) = args.step {
        list = list.step(step);
    }
    let key = args.key.as_deref().unwrap_or_default();
    let wait = args
        .wait
        .map_or(admin::LEASE_WAIT, std::time::Duration::from_secs);
    let out = match args.command.as_str() {
        "list" => {
            let rows = admin::conversations(store, &list).await.map_err(fail)?;
            if args.json {
                json(&rows)?
            } else {
                list_table(&rows)
            }
        }
        "stats" => {
            let rows = admin::stats(store, &list).await.map_err(fail)?;
            if args.json {
                json(&rows)?
            } else {
                stats_table(&rows)
            }
        }
        "show" => match admin::show(store, key).await.map_err(fail)? {
            Some(record) => serde_json::to_string_pretty(&record).map_err(|e| e.to_string())?,
            None => return Err(format!("no session `{key}` in this store")),
        },
        "reset" => match admin::reset_waiting(store, key, wait).await.map_err(fail)? {
            Action::NotFound => return Err(format!("no session `{key}` in this store")),
            _ => format!("reset `{key}`: its scene stack is cleared, its data kept"),
        },
        "delete" => match admin::delete_waiting(store, key, wait)
            .await
            .map_err(fail)?
        {
            Action::NotFound => return Err(format!("no session `{key}` in this store")),
            _ => format!("deleted `{key}`"),
        },
        other => return Err(format!("unknown command `{other}`")),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{out}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write the output: {e}"))
}

/// One JSON array of objects.
fn json<T: serde::Serialize>(rows: &[T]) -> Result<String, String> {
    serde_json::to_string(rows).map_err(|e| e.to_string())
}

fn list_table(rows: &[Conversation]) -> String {
    let mut table = vec![[
        "KEY".to_owned(),
        "SCENE".to_owned(),
        "STEP".to_owned(),
        "DEPTH".to_owned(),
        "ENTERED AT".to_owned(),
        "EXPIRES".to_owned(),
        "LAST ACTIVE".to_owned(),
    ]];
    for c in rows {
        let scene = match (&c.scene, &c.unreadable) {
            (_, Some(why)) => format!("(unreadable: {why})"),
            (Some(s), None) if c.expired => format!("{s} (expired)"),
            (Some(s), None) => s.clone(),
            (None, None) => "-".to_owned(),
        };
        table.push([
            c.key.clone(),
            scene,
            opt(c.step),
            c.depth.to_string(),
            c.entered_at.map_or_else(|| "-".to_owned(), utc),
            c.expires.map_or_else(|| "-".to_owned(), utc),
            c.last_active.map_or_else(|| "-".to_owned(), utc),
        ]);
    }
    let summary = format!("{} session(s)", rows.len());
    format!("{}\n{summary}", render(&table))
}

fn stats_table(rows: &[SceneCount]) -> String {
    let mut table = vec![[
        "SCENE".to_owned(),
        "STEP".to_owned(),
        "USERS".to_owned(),
        "OLDEST ENTERED AT".to_owned(),
    ]];
    for c in rows {
        table.push([
            c.scene.clone(),
            opt(c.step),
            c.users.to_string(),
            utc(c.oldest_entered_at),
        ]);
    }
    let users: usize = rows.iter().map(|c| c.users).sum();
    format!("{}\n{users} user(s) in a scene", render(&table))
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Rows as columns padded to their widest cell.
fn render<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut line = String::new();
        for (j, (cell, w)) in row.iter().zip(widths).enumerate() {
            line.push_str(cell);
            if j + 1 < N {
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
    }
    out
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn times_print_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
        let _ = utc(i64::MAX / 1000);
    }

    #[test]
    fn arguments() {
        let a = parse(&[
            "list",
            "--store=memory",
            "--scene",
            "signup",
            "--step",
            "1",
            "--json",
        ])
        .unwrap();
        assert_eq!(
            (a.command.as_str(), a.scene.as_deref(), a.step, a.json),
            ("list", Some("signup"), Some(1), true)
        );
        let a = parse(&["reset", "1:1", "--store", "memory"]).unwrap();
        assert_eq!(a.key.as_deref(), Some("1:1"));
        assert!(parse(&["--help"]).unwrap().help);
        for bad in [
            &["frobnicate", "--store", "memory"][..],
            &["reset", "--store", "memory"],
            &["list", "k", "--store", "memory"],
            &["list", "--step", "one", "--store", "memory"],
            &["list", "--store"],
            &["show", "k", "--json", "--store", "memory"],
            &["list", "--bogus", "--store", "memory"],
            &[],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tables_line_up() {
        let t = render(&[
            ["A".to_owned(), "BB".to_owned()],
            ["ccc".to_owned(), "d".to_owned()],
        ]);
        assert_eq!(t, "A    BB\nccc  d");
    }
}
