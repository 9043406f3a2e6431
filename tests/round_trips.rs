//! Round trips per update on the server stores, counted from the servers' own statistics:
//! Redis `total_reads_processed` (the requests it read: commands sent together in one
//! pipeline are one), with the commands `MONITOR` reports beside it; MySQL `Questions` (less the one `SET` each new connection sends as it
//! starts); PostgreSQL's transaction count in `pg_stat_database` for a database created
//! for the test (each autocommit statement is one transaction), less the connections'
//! start-up transactions and the migration, with the statements sqlx prepares (once per
//! statement and connection, read from `pg_prepared_statements`) reported apart; MongoDB
//! `network.numRequests` of `serverStatus` (every request the server read), with the
//! commands the driver's command monitoring saw the store's client send beside it. One test
//! per binary run, so no other test's traffic is counted; the Redis and MySQL servers must
//! not be serving anything else meanwhile.
//!
//! Not counted by any statistic here: the ping sqlx sends on a connection as it goes back
//! to the pool (one round trip per SQL statement, after it and off the update's path;
//! sqlx's pool has no option to skip it), nor, on MySQL, statement preparations
//! (`Questions` leaves them out). The stores' `connect` does not ping before every
//! statement as sqlx does by default (`test_before_acquire`), only a connection that was
//! idle for a second or more.

#[path = "../examples/shared/demo_bot.rs"]
mod demo_bot;

mod common;

use std::sync::Arc;

use stagecraft::Pipeline;
use stagecraft::pipeline::LeaseConfig;
use stagecraft::store::SessionStore;
use stagecraft::transport::RecordingTransport;
use stagecraft::update::TelegramUpdate;

const CYCLE: [&str; 10] = [
    "/start", "Alice", "abc", "30", "yes", "/profile", "/whoami", "hello", "/back", "outside",
];
const ROUNDS: usize = 5;

fn updates() -> Vec<TelegramUpdate> {
    (0..ROUNDS)
        .flat_map(|_| CYCLE.iter())
        .enumerate()
        .map(|(i, t)| {
            TelegramUpdate::from_json(&format!(
                r#"{{"update_id":{i},"message":{{"message_id":{i},"chat":{{"id":42}},"from":{{"id":42}},"text":"{t}"}}}}"#
            ))
            .unwrap()
        })
        .collect()
}

/// How a run goes: with or without leases (and how they are held), one update after
/// another or all queued at once, replies through the outbox or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// No leases.
    Plain,
    /// Leases, released by the save.
    Leases,
    /// Leases, all updates queued at once (a burst of one key).
    Burst,
    /// Leases held until the replies are delivered.
    Hold,
    /// Leases and the outbox.
    Outbox,
    /// The outbox without leases.
    OutboxPlain,
}

const RUNS: [Run; 6] = [
    Run::Plain,
    Run::Leases,
    Run::Burst,
    Run::Hold,
    Run::Outbox,
    Run::OutboxPlain,
];

impl Run {
    fn leases(self) -> bool {
        !matches!(self, Run::Plain | Run::OutboxPlain)
    }

    fn config(self) -> LeaseConfig {
        if !self.leases() {
            return LeaseConfig::off();
        }
        // No renewal (every ttl / 3) and no fair-share release within the run.
        LeaseConfig::new()
            .ttl(std::time::Duration::from_secs(60))
            .fair_share(std::time::Duration::from_secs(600))
            .hold_through_delivery(self == Run::Hold)
    }

    /// The most round trips per update a run may cost: a load and a save without leases
    /// (the first update of a key inserts; an update that changes nothing saves
    /// nothing); with leases, the lease is taken with the read and given back by the
    /// save; in a burst, a save each plus one take (with the first read) and one
    /// release; held through the delivery, a release of its own after it; with the
    /// outbox, the write that marks the replies delivered (which gives the lease back).
    fn limit(self) -> f64 {
        let n = (ROUNDS * CYCLE.len()) as f64;
        match self {
            Run::Plain | Run::Leases => 2.0,
            Run::Burst => 1.0 + 2.0 / n,
            Run::Hold | Run::Outbox | Run::OutboxPlain => 3.0,
        }
    }
}

/// Runs the reference conversation on `store` as `run` says; returns the number of
/// updates.
async fn converse(store: Arc<dyn SessionStore>, run: Run) -> usize {
    let burst = run == Run::Burst;
    let bot = demo_bot::build(
        Pipeline::<demo_bot::Demo>::builder()
            .store_arc(store)
            .leases(run.config())
            .outbox(matches!(run, Run::Outbox | Run::OutboxPlain))
            .transport(RecordingTransport::new()),
    )
    .unwrap();
    let updates = updates();
    let n = updates.len();
    if burst {
        let queued: Vec<_> = updates.into_iter().map(|u| bot.handle(u)).collect();
        for r in futures_util::future::join_all(queued).await {
            r.unwrap();
        }
    } else {
        for u in updates {
            bot.handle(u).await.unwrap();
        }
    }
    n
}

/// Runs the reference conversation and returns the commands the server counted per update.
#[cfg(feature = "mysql")]
async fn per_update<F, Fut>(store: Arc<dyn SessionStore>, run: Run, count: F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let before = count().await;
    let n = converse(store, run).await;
    let after = count().await;
    // The second count's own command is not the updates'.
    (after - before - 1) as f64 / n as f64
}

/// The server's count of requests read (`total_reads_processed`, counting this one).
#[cfg(feature = "redis")]
async fn redis_reads(conn: &mut stagecraft::store::redis::aio::MultiplexedConnection) -> i64 {
    let info: String = stagecraft::store::redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_reads_processed:"))
        .expect("INFO stats has total_reads_processed")
        .trim()
        .parse()
        .unwrap()
}

/// Runs the conversation and returns the round trips (requests the server read) and the
/// commands clients sent per update, while the server's `MONITOR` reports every command
/// it runs (commands a Lua script runs come as `[n lua]`, and are not counted).
#[cfg(feature = "redis")]
async fn redis_round_trips(url: &str, store: Arc<dyn SessionStore>, run: Run) -> (f64, f64) {
    use futures_util::StreamExt;
    let client = stagecraft::store::redis::Client::open(url).unwrap();
    // The monitor sends MONITOR itself before it is handed over.
    let monitor = client.get_async_monitor().await.unwrap();
    let mut lines = monitor.into_on_message::<String>();
    let sentinel = common::unique_name("sentinel");
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let before = redis_reads(&mut conn).await;
    let n = converse(store, run).await;
    // Less the second count's own request.
    let reads = redis_reads(&mut conn).await - before - 1;
    let _: String = stagecraft::store::redis::cmd("ECHO")
        .arg(&sentinel)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut sent = 0usize;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next())
            .await
            .expect("MONITOR went quiet")
            .unwrap();
        if line.contains(&sentinel) {
            break;
        }
        if !line.contains(" lua]") && !line.contains("\"INFO\"") {
            sent += 1;
        }
    }
    (reads as f64 / n as f64, sent as f64 / n as f64)
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_two_round_trips_per_update() {
    let Some(url) = common::server_url("STAGECRAFT_REDIS_URL") else {
        return;
    };

    let ns = common::unique_name("rt");
    let base = stagecraft::store::RedisStore::connect(&url).await.unwrap();
    let mut prefixes = Vec::new();
    let mut counted = Vec::new();
    for (i, run) in RUNS.into_iter().enumerate() {
        let prefix = format!("{ns}{i}:");
        let store = base
            .clone()
            .with_prefix(&prefix)
            .unwrap()
            .with_leases(run.leases());
        let (round_trips, commands) = redis_round_trips(&url, Arc::new(store.clone()), run).await;
        counted.push((run, round_trips, commands));
        prefixes.push((store, prefix));
    }
    println!("redis round trips and commands per update: {counted:.2?}");
    for (run, per_update, _) in &counted {
        assert!(
            *per_update <= run.limit(),
            "{per_update} round trips per update in run {run:?}"
        );
    }
    let client = stagecraft::store::redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (store, prefix) in prefixes {
        let keys = store
            .list(&stagecraft::store::ListFilter::default())
            .await
            .unwrap();
        for k in keys {
            let _: () = stagecraft::store::redis::cmd("DEL")
                .arg(format!("{prefix}{k}"))
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_two_statements_per_update() {
    let Some(url) = common::server_url("STAGECRAFT_MYSQL_URL") else {
        return;
    };

    use stagecraft::store::sqlx::{self, Row};
    let ns = common::unique_name("rt");
    let store = stagecraft::store::MySqlStore::connect(&url)
        .await
        .unwrap()
        .with_table(&ns)
        .unwrap();
    store.migrate().await.unwrap();
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    // The statements the server ran less the connections it accepted: a connection the
    // store's pool opens during the run sends one `SET` (SQL mode, time zone, character
    // set) as it starts, which is no update's statement.
    let count = || {
        let pool = pool.clone();
        async move {
            let rows = sqlx::query(
                "SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Connections')",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            let value = |name: &str| -> i64 {
                let row = rows
                    .iter()
                    .find(|r| {
                        r.try_get::<String, _>(0)
                            .unwrap()
                            .eq_ignore_ascii_case(name)
                    })
                    .unwrap();
                row.try_get::<String, _>(1).unwrap().parse().unwrap()
            };
            value("Questions") - value("Connections")
        }
    };
    let mut counted = Vec::new();
    for run in RUNS {
        // A table each: every run starts without records.
        let table = format!("{ns}_{}", counted.len());
        let store = store
            .clone()
            .with_table(&table)
            .unwrap()
            .with_leases(run.leases());
        store.migrate().await.unwrap();
        counted.push((run, per_update(Arc::new(store), run, &count).await));
    }
    println!("mysql statements per update: {counted:.2?}");
    for (run, per_update) in &counted {
        assert!(
            *per_update <= run.limit(),
            "{per_update} statements per update in run {run:?}"
        );
    }
    for i in 0..=counted.len() {
        let table = if i == counted.len() {
            ns.clone()
        } else {
            format!("{ns}_{i}")
        };
        sqlx::query(&format!("DROP TABLE IF EXISTS `{table}`, `{table}_lease`"))
            .execute(&pool)
            .await
            .unwrap();
        for routine in ["take_v1", "save_v1"] {
            sqlx::query(&format!("DROP PROCEDURE IF EXISTS `{table}_{routine}`"))
                .execute(&pool)
                .await
                .unwrap();
        }
    }
}

/// `url` with its database replaced by `db` (query parameters kept).
#[cfg(feature = "postgres")]
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let host = base.find("://").map_or(0, |i| i + 3);
    let path = base[host..].find('/').map_or(base.len(), |i| host + i);
    match query {
        Some(q) => format!("{}/{db}?{q}", &base[..path]),
        None => format!("{}/{db}", &base[..path]),
    }
}

/// PostgreSQL's own counts for database `db`: transactions (committed or rolled back;
/// each autocommit statement is one) and sessions opened. Read once no backend is
/// connected to `db`: a backend reports its counts when it exits at the latest, and it
/// leaves `pg_stat_activity` only after it did.
#[cfg(feature = "postgres")]
async fn postgres_counts(admin: &stagecraft::store::sqlx::PgPool, db: &str) -> (u64, u64) {
    use stagecraft::store::sqlx::{self, Row};
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let connected: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                .bind(db)
                .fetch_one(admin)
                .await
                .unwrap();
        if connected == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT concat_ws(' / ', backend_type, state, wait_event, left(query, 120)) \
                 FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(db)
            .fetch_all(admin)
            .await
            .unwrap();
            panic!("{connected} backends still connected to {db}: {rows:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let row = sqlx::query(
        "SELECT xact_commit + xact_rollback, sessions FROM pg_stat_database WHERE datname = $1",
    )
    .bind(db)
    .fetch_one(admin)
    .await
    .unwrap();
    let xacts: i64 = row.try_get(0).unwrap();
    let sessions: i64 = row.try_get(1).unwrap();
    (xacts.try_into().unwrap(), sessions.try_into().unwrap())
}

/// What a phase cost on PostgreSQL: statements beyond the sessions' own start-up
/// transactions, and sessions opened.
#[cfg(feature = "postgres")]
fn postgres_phase(before: (u64, u64), after: (u64, u64), per_session: u64) -> (u64, u64) {
    let sessions = after.1 - before.1;
    (after.0 - before.0 - sessions * per_session, sessions)
}

/// The statements the pool's connections prepared (sqlx prepares a statement on a
/// connection the first time it runs it there, one transaction of its own), and the
/// number of connections. Runs one statement on each connection.
#[cfg(feature = "postgres")]
async fn postgres_prepared(pool: &stagecraft::store::sqlx::PgPool) -> (u64, u64) {
    use stagecraft::store::sqlx::{self, Row};
    // Every connection back in the pool, then all of them held at once.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while pool.num_idle() < pool.size() as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections not back in the pool"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let mut conns = Vec::new();
    for _ in 0..pool.size() {
        conns.push(pool.acquire().await.unwrap());
    }
    let mut prepared = 0;
    for conn in &mut conns {
        // A simple query: not prepared itself.
        let row = sqlx::raw_sql("SELECT count(*) FROM pg_prepared_statements")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        let n: i64 = row.try_get(0).unwrap();
        prepared += u64::try_from(n).unwrap();
    }
    (prepared, conns.len() as u64)
}

/// Statements per update, statements prepared per update, and the connections the store's
/// pool opened, in each run: without leases, with leases, with leases in a burst.
#[cfg(feature = "postgres")]
#[derive(Debug)]
struct PostgresCounts {
    statements: Vec<f64>,
    prepared: Vec<f64>,
    connections: Vec<u64>,
}

/// Runs the reference conversation three times (without leases, with leases, with leases
/// and all its updates queued at once) on a store connected to the database `db` at
/// `db_url`, which nothing else uses, and counts what each run cost from that database's
/// statistics.
#[cfg(feature = "postgres")]
async fn postgres_per_update(
    admin: stagecraft::store::sqlx::PgPool,
    db: String,
    db_url: String,
) -> PostgresCounts {
    use stagecraft::store::PostgresStore;
    use stagecraft::store::sqlx::{self, Connection};
    // A connection costs transactions of its own (PostgreSQL reads the catalogs in one as
    // it starts): measured on a bare connection.
    let start = postgres_counts(&admin, &db).await;
    sqlx::PgConnection::connect(&db_url)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let bare = postgres_counts(&admin, &db).await;
    assert_eq!(bare.1 - start.1, 1, "one session");
    let per_session = bare.0 - start.0;
    // Connecting the store runs its migration, which creates the tables and the lease
    // function the first time and only looks them up afterwards (as in each run below).
    // (Each store is dropped once closed: a connection sqlx is still handing back to
    // the pool as `close` runs can stay open until the pool itself is gone.)
    let store = PostgresStore::connect(&db_url).await.unwrap();
    store.pool().close().await;
    drop(store);
    let created = postgres_counts(&admin, &db).await;
    let store = PostgresStore::connect(&db_url).await.unwrap();
    store.pool().close().await;
    drop(store);
    let migrated = postgres_counts(&admin, &db).await;
    let (migration, _) = postgres_phase(created, migrated, per_session);

    let mut counts = PostgresCounts {
        statements: Vec::new(),
        prepared: Vec::new(),
        connections: Vec::new(),
    };
    for run in RUNS {
        let before = postgres_counts(&admin, &db).await;
        let store = PostgresStore::connect(&db_url)
            .await
            .unwrap()
            .with_leases(run.leases());
        let n = converse(Arc::new(store.clone()), run).await as f64;
        let (prepared, connections) = postgres_prepared(store.pool()).await;
        store.pool().close().await;
        drop(store);
        let after = postgres_counts(&admin, &db).await;
        let (counted, sessions) = postgres_phase(before, after, per_session);
        // Every connection of the run was still in the pool, so all its prepares were
        // seen; `connect` opened one more first, on its own, to check the server.
        assert_eq!(
            connections + 1,
            sessions,
            "connections closed during the run"
        );
        // Less the migration and the count of prepares itself (one query per connection).
        let statements = counted - migration - prepared - connections;
        counts.statements.push(statements as f64 / n);
        counts.prepared.push(prepared as f64 / n);
        counts.connections.push(connections);
    }
    counts
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_two_statements_per_update() {
    let Some(url) = common::server_url("STAGECRAFT_POSTGRES_URL") else {
        return;
    };

    use stagecraft::store::sqlx;
    // A database of its own: nothing else runs statements in it, so its statistics count
    // this test's statements only (an autovacuum worker visiting it meanwhile would be
    // counted too: a worker visits each database once per `autovacuum_naptime`, a minute
    // by default, and this one lives for about a second).
    let db = common::unique_name("stagecraft_rt");
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    sqlx::raw_sql(&format!(r#"CREATE DATABASE "{db}""#))
        .execute(&admin)
        .await
        .unwrap();
    // In a task of its own, so that the database is dropped even when the count panics.
    let local = tokio::task::LocalSet::new();
    let task = local.spawn_local(postgres_per_update(
        admin.clone(),
        db.clone(),
        with_database(&url, &db),
    ));
    let counted = local.run_until(task).await;
    sqlx::raw_sql(&format!(r#"DROP DATABASE "{db}" WITH (FORCE)"#))
        .execute(&admin)
        .await
        .unwrap();
    let counts = counted.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let runs: Vec<_> = RUNS
        .iter()
        .zip(&counts.statements)
        .zip(counts.prepared.iter().zip(&counts.connections))
        .map(|((run, statements), (prepared, connections))| {
            format!("{run:?}: {statements:.2} (+{prepared:.2} prepares, {connections} connections)")
        })
        .collect();
    println!("postgres statements per update: {}", runs.join(", "));
    for (run, per_update) in RUNS.iter().zip(&counts.statements) {
        assert!(
            *per_update <= run.limit(),
            "{per_update} statements per update in run {run:?}"
        );
    }
}

/// The requests the MongoDB-compatible server read, from its own statistics
/// (`network.numRequests` of `serverStatus`, counting this one).
#[cfg(feature = "mongodb")]
async fn mongodb_requests(db: &stagecraft::store::mongodb::Database) -> i64 {
    use stagecraft::store::mongodb::bson::{Bson, doc};
    let status = db.run_command(doc! { "serverStatus": 1 }).await.unwrap();
    let network = status
        .get_document("network")
        .expect("serverStatus has network statistics");
    match network.get("numRequests") {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        other => panic!("serverStatus network.numRequests: {other:?}"),
    }
}

/// Round trips per update on MongoDB, counted from the server's statistics
/// (`serverStatus` `network.numRequests`: every request it read, counting the client's
/// connection handshakes too), with the commands the store's client sent beside them
/// (the driver's command monitoring, which leaves the handshakes and the monitoring
/// `hello`s out). The runs of [`RUNS`], then the leases and the burst again with
/// `findAndModify` switched off (the fallback: the lease taken by `update_one`, the
/// record read by `find`). The clients' monitoring checks the server every ten minutes,
/// so none runs during the count; the server must not be serving anything else
/// meanwhile.
#[cfg(feature = "mongodb")]
#[tokio::test]
async fn mongodb_two_round_trips_per_update() {
    let Some(url) = common::server_url("STAGECRAFT_MONGODB_URL") else {
        return;
    };

    use stagecraft::store::MongoStore;
    use stagecraft::store::mongodb::Client;
    use stagecraft::store::mongodb::bson::Document;
    use stagecraft::store::mongodb::event::EventHandler;
    use stagecraft::store::mongodb::event::command::CommandEvent;
    use stagecraft::store::mongodb::options::ClientOptions;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let mut options = ClientOptions::parse(&url).await.unwrap();
    options.heartbeat_freq = Some(std::time::Duration::from_secs(600));
    let counter = Client::with_options(options.clone()).unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    options.command_event_handler = Some(EventHandler::callback({
        let sent = Arc::clone(&sent);
        move |event| {
            if let CommandEvent::Started(_) = event {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }));
    let client = Client::with_options(options).unwrap();
    let db_name = client
        .default_database()
        .map_or_else(|| "stagecraft".to_owned(), |d| d.name().to_owned());
    let db = client.database(&db_name);
    let counter_db = counter.database(&db_name);
    let ns = common::unique_name("rt");

    let runs: Vec<(Run, bool)> = RUNS
        .into_iter()
        .map(|run| (run, true))
        .chain([(Run::Leases, false), (Run::Burst, false)])
        .collect();
    let mut counted = Vec::new();
    let mut collections = Vec::new();
    for (i, (run, find_and_modify)) in runs.into_iter().enumerate() {
        let collection = format!("{ns}_{i}");
        let store = MongoStore::new(db.clone())
            .with_collection(&collection)
            .unwrap()
            .with_leases(run.leases())
            .with_find_and_modify(find_and_modify);
        store.migrate().await.unwrap();
        collections.push(collection);
        let before = mongodb_requests(&counter_db).await;
        let sent_before = sent.load(Ordering::Relaxed);
        let n = converse(Arc::new(store), run).await as f64;
        let sent_after = sent.load(Ordering::Relaxed);
        // Less the second count's own request.
        let requests = mongodb_requests(&counter_db).await - before - 1;
        counted.push((
            run,
            find_and_modify,
            requests as f64 / n,
            (sent_after - sent_before) as f64 / n,
        ));
    }
    let report: Vec<_> = counted
        .iter()
        .map(|(run, fam, requests, commands)| {
            let how = if *fam { "" } else { " without findAndModify" };
            format!("{run:?}{how}: {requests:.2} ({commands:.2} commands)")
        })
        .collect();
    println!("mongodb round trips per update: {}", report.join(", "));
    for collection in &collections {
        db.collection::<Document>(collection).drop().await.unwrap();
    }
    for (run, find_and_modify, per_update, commands) in &counted {
        // Without `findAndModify`, taking the lease and reading the record are two.
        let limit = if *find_and_modify || *run == Run::Burst {
            run.limit()
        } else {
            run.limit() + 1.0
        };
        assert!(
            *per_update <= limit,
            "{per_update} round trips per update in run {run:?} (findAndModify: {find_and_modify})"
        );
        assert!(
            *commands <= *per_update,
            "{commands} commands but {per_update} round trips per update in run {run:?}"
        );
    }
}
