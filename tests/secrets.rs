//! Passwords in store URLs and bot tokens are never printed: not by the demo (banner,
//! errors, logs) and not by the library's `Debug` impls or connection errors.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

const PASSWORD: &str = "hunter2-Xq9v";

/// A TCP server on a free local port that accepts each connection and closes it at
/// once: a database "server" that cannot be used, and fails fast (a refused connection
/// would be retried by sqlx until its acquire timeout). It accepts until the test
/// process ends.
fn closing_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    port
}

/// Runs the demo with `args` (stdin: `input`) and returns (status, stdout + stderr),
/// killing it after 60 s.
fn demo(args: &[&str], envs: &[(&str, &str)], input: &str) -> (Option<i32>, String) {
    let mut child = Command::new(common::example_binary("demo"))
        .args(args)
        .envs(envs.iter().copied())
        .env("STAGECRAFT_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().unwrap();
    let mut out = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.stderr.take().unwrap().read_to_string(&mut out);
    (status.code(), out)
}

#[test]
fn the_demo_never_prints_a_store_password() {
    let port = closing_server();
    let mut urls = vec![
        // Unsupported by every build.
        format!("ftp://bot:{PASSWORD}@127.0.0.1:{port}/x"),
        format!("bogus://bot:{PASSWORD}@127.0.0.1/x?password={PASSWORD}"),
        format!("https://tok:{PASSWORD}@127.0.0.1/x?token={PASSWORD}"),
    ];
    // Supported with the server features (the tests and examples share their features),
    // unsupported without: the password must not show either way.
    for scheme in ["postgres", "postgresql", "mysql", "mariadb", "redis"] {
        urls.push(format!("{scheme}://bot:{PASSWORD}@127.0.0.1:{port}/x"));
        urls.push(format!(
            "{scheme}://bot@127.0.0.1:{port}/x?password={PASSWORD}"
        ));
        urls.push(format!("{scheme}://bot:{PASSWORD}@127.0.0.1:notaport/x"));
        // An `@` left unescaped in the password.
        urls.push(format!("{scheme}://bot:p@ss{PASSWORD}@127.0.0.1:{port}/x"));
    }
    for (i, url) in urls.iter().enumerate() {
        // The console and the replay open the store the same way: both are tried on
        // the URLs no build supports, the replay on the rest.
        let modes: &[&[&str]] = if i < 3 {
            &[&["--replay", "-"], &[]]
        } else {
            &[&["--replay", "-"]]
        };
        for mode in modes {
            let mut args = vec!["--store", url.as_str()];
            args.extend_from_slice(mode);
            let (status, out) = demo(&args, &[], "/where\n");
            assert_ne!(status, Some(0), "{url}: {out}");
            assert!(out.contains("error"), "{url}: {out}");
            assert!(
                !out.contains(PASSWORD),
                "{url} {mode:?}: the password is shown: {out}"
            );
        }
    }
}

/// The messages name the store without its password: the unsupported-store error, and
/// the console banner (on a real server when `STAGECRAFT_POSTGRES_URL` is set).
#[test]
fn messages_show_the_store_url_masked() {
    let url = format!("nope://u:{PASSWORD}@h/db");
    let (status, out) = demo(&["--store", &url], &[], "");
    assert_eq!(status, Some(1), "{out}");
    assert!(
        out.contains("unsupported store `nope://u:***@h/db`"),
        "{out}"
    );
    assert!(!out.contains(PASSWORD), "{out}");

    let (status, out) = demo(&["--store", "memory"], &[], "/where\n");
    assert_eq!(status, Some(0), "{out}");
    assert!(out.contains("(store: memory)"), "{out}");

    #[cfg(feature = "postgres")]
    if let Some(server) = common::server_url("STAGECRAFT_POSTGRES_URL") {
        // The CI server trusts local connections: a password in the URL is not checked.
        let Some(rest) = server.strip_prefix("postgres://") else {
            return;
        };
        let (user, host) = rest.split_once('@').unwrap_or(("postgres", rest));
        let user = user.split(':').next().unwrap_or(user);
        let url = format!("postgres://{user}:{PASSWORD}@{host}");
        let table = common::unique_name("secrets");
        let (status, out) = demo(&["--store", &url, "--namespace", &table], &[], "/where\n");
        if status == Some(0) {
            assert!(
                out.contains(&format!("postgres://{user}:***@{host}")),
                "{out}"
            );
        }
        assert!(!out.contains(PASSWORD), "{out}");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                use stagecraft::store::sqlx;
                if let Ok(pool) = sqlx::PgPool::connect(&server).await {
                    let drop = format!(
                        "DROP TABLE IF EXISTS \"{table}\", \"{table}_lease\"; \
         DROP FUNCTION IF EXISTS \"{table}_take_v1\"(text, text, bigint)"
                    );
                    let _ = sqlx::raw_sql(&drop).execute(&pool).await;
                }
            });
    }
}

/// `--telegram` with a token and a Bot API server that cannot be used: the error says
/// so without the token (nor a password in `TELOXIDE_API_URL`).
#[cfg(feature = "teloxide")]
#[test]
fn the_demo_never_prints_the_bot_token() {
    let port = closing_server();
    let token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
    for api in [
        format!("http://127.0.0.1:{port}"),
        format!("http://proxy:{PASSWORD}@127.0.0.1:{port}/"),
        format!("http://proxy:{PASSWORD}@127.0.0.1:notaport/"),
    ] {
        let (status, out) = demo(
            &["--telegram", "--store", "memory"],
            &[("TELOXIDE_TOKEN", token), ("TELOXIDE_API_URL", &api)],
            "",
        );
        assert_ne!(status, Some(0), "{api}: {out}");
        assert!(
            out.contains("error") || out.contains("not a URL"),
            "{api}: {out}"
        );
        assert!(
            !out.contains("AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"),
            "{api}: {out}"
        );
        assert!(!out.contains(PASSWORD), "{api}: {out}");
    }
}

/// The SQL stores' `Debug` (which `Pipeline`'s `Debug` shows) and connection errors
/// hold no password.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_debug_and_errors_hide_the_password() {
    use stagecraft::store::PostgresStore;
    use stagecraft::store::sqlx::postgres::PgPoolOptions;

    let port = closing_server();
    let url = format!("postgres://bot:{PASSWORD}@127.0.0.1:{port}/x");
    let pool = PgPoolOptions::new().connect_lazy(&url).unwrap();
    let store = PostgresStore::new(pool);
    let shown = format!("{store:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    let pipeline = stagecraft::Pipeline::<()>::builder().store(store).build();
    let shown = format!("{pipeline:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    for url in [
        url.clone(),
        format!("postgres://bot:{PASSWORD}@127.0.0.1:x/x"),
    ] {
        let err = PostgresStore::connect(&url).await.unwrap_err();
        let text = format!("{} / {err:?}", stagecraft::error::error_chain(&err));
        assert!(!text.contains(PASSWORD), "{text}");
    }
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_debug_and_errors_hide_the_password() {
    use stagecraft::store::MySqlStore;
    use stagecraft::store::sqlx::mysql::MySqlPoolOptions;

    let port = closing_server();
    let url = format!("mysql://bot:{PASSWORD}@127.0.0.1:{port}/x");
    let pool = MySqlPoolOptions::new().connect_lazy(&url).unwrap();
    let shown = format!("{:?}", MySqlStore::new(pool));
    assert!(!shown.contains(PASSWORD), "{shown}");
    for url in [url.clone(), format!("mysql://bot:{PASSWORD}@127.0.0.1:x/x")] {
        let err = MySqlStore::connect(&url).await.unwrap_err();
        let text = format!("{} / {err:?}", stagecraft::error::error_chain(&err));
        assert!(!text.contains(PASSWORD), "{text}");
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_errors_hide_the_password() {
    use stagecraft::store::RedisStore;

    let port = closing_server();
    for url in [
        format!("redis://:{PASSWORD}@127.0.0.1:{port}"),
        format!("redis://:{PASSWORD}@127.0.0.1:x"),
        format!("redis://u:{PASSWORD}@"),
    ] {
        let err = RedisStore::connect(&url).await.unwrap_err();
        let text = format!("{} / {err:?}", stagecraft::error::error_chain(&err));
        assert!(!text.contains(PASSWORD), "{text}");
    }
}

/// A Bot API server that answers every request with `401 Unauthorized`, as Telegram
/// does for a revoked or mistyped token.
#[cfg(feature = "teloxide")]
fn rejecting_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let body = r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// `--telegram` tells a rejected token from a Bot API server it could not reach (the
/// network, or TLS: here an `https://` URL to a server that speaks no TLS).
#[cfg(feature = "teloxide")]
#[test]
fn the_demo_tells_a_rejected_token_from_an_unreachable_server() {
    let token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
    let run = |api: String| {
        demo(
            &["--telegram", "--store", "memory"],
            &[("TELOXIDE_TOKEN", token), ("TELOXIDE_API_URL", &api)],
            "",
        )
    };
    let (status, out) = run(format!("http://127.0.0.1:{}", rejecting_server()));
    assert_eq!(status, Some(1), "{out}");
    assert!(out.contains("rejected the token"), "{out}");
    assert!(!out.contains("could not reach"), "{out}");
    let closing = closing_server();
    for api in [
        format!("http://127.0.0.1:{closing}"),
        format!("https://127.0.0.1:{closing}"),
    ] {
        let (status, out) = run(api.clone());
        assert_eq!(status, Some(1), "{api}: {out}");
        assert!(
            out.contains("could not reach the Bot API server"),
            "{api}: {out}"
        );
        assert!(!out.contains("rejected the token"), "{api}: {out}");
        assert!(!out.contains("AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"), "{out}");
    }
}
