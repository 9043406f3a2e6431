//! What a running bot tells the outside: one `tracing` span per update with its key,
//! scene, step, update id and outcome; the events of entering, leaving, expiry,
//! conflicts, reruns and duplicates, inside that span; and (feature `metrics`) the
//! counters of the `metrics` facade. A subscriber layer records every span and event
//! field; a recorder counts the counters.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use stagecraft::prelude::*;
use stagecraft::store::{MemoryStore, SessionStore};
use stagecraft::testing::TestBot;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

type Fields = BTreeMap<String, String>;

/// Field values as text (strings without their quotes).
struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// A finished `update` span, or an event with the update id of the span it was in.
#[derive(Debug, Clone)]
struct Captured {
    fields: Fields,
    /// For events: the `update_id` of the enclosing `update` span.
    in_update: Option<String>,
}

#[derive(Default, Clone)]
struct Capture {
    open: Arc<Mutex<HashMap<u64, (String, Fields)>>>,
    spans: Arc<Mutex<Vec<Captured>>>,
    events: Arc<Mutex<Vec<Captured>>>,
    /// Finished `event` spans (events of a session without an update).
    event_spans: Arc<Mutex<Vec<Captured>>>,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut Visitor(&mut fields));
        let name = attrs.metadata().name().to_owned();
        self.open
            .lock()
            .unwrap()
            .insert(id.into_u64(), (name, fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some((_, fields)) = self.open.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Visitor(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        fields.insert("target".to_owned(), event.metadata().target().to_owned());
        let open = self.open.lock().unwrap();
        let in_update = ctx.event_scope(event).and_then(|scope| {
            scope
                .filter(|s| s.name() == "update")
                .find_map(|s| open.get(&s.id().into_u64())?.1.get("update_id").cloned())
        });
        self.events
            .lock()
            .unwrap()
            .push(Captured { fields, in_update });
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        let Some((name, fields)) = self.open.lock().unwrap().remove(&id.into_u64()) else {
            return;
        };
        let captured = Captured {
            fields,
            in_update: None,
        };
        match name.as_str() {
            "update" => self.spans.lock().unwrap().push(captured),
            "event" => self.event_spans.lock().unwrap().push(captured),
            _ => {}
        }
    }
}

impl Capture {
    /// The fields of the `update` span of update `id`.
    fn span(&self, id: i64) -> Fields {
        let spans = self.spans.lock().unwrap();
        let found: Vec<&Captured> = spans
            .iter()
            .filter(|s| s.fields.get("update_id") == Some(&id.to_string()))
            .collect();
        assert_eq!(found.len(), 1, "one span for update {id}: {spans:?}");
        found[0].fields.clone()
    }

    /// The events named `name` (their `event` field).
    fn events(&self, name: &str) -> Vec<Captured> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.fields.get("event").map(String::as_str) == Some(name))
            .cloned()
            .collect()
    }
}

/// The tests of this file, one at a time. Each sets a subscriber of its own for its
/// thread; a callsite that another test's thread registers while this one rebuilds the
/// interest cache can still cache "off" for every thread, and lose this test's events.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields.get(name).map(String::as_str)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

type C = Cx<u32>;

fn bot() -> TestBot<u32> {
    TestBot::<u32>::new(|builder| {
        let stage = Stage::builder()
            .scene(
                Wizard::builder("signup")
                    .step(|cx: C| async move {
                        cx.reply("name?");
                        Ok(Outcome::Next)
                    })
                    .step(|cx: C| async move {
                        cx.reply("thanks");
                        Ok(Outcome::leave())
                    })
                    .build(),
            )
            .scene(Scene::builder("timed").ttl(10).build())
            .scene(
                Wizard::builder("quiet")
                    .step(|_cx: C| async move { Ok(Outcome::Next) })
                    .step(|_cx: C| async move { Ok(Outcome::Handled) })
                    .step_timeout(30, |cx: C| async move {
                        cx.reply("still there?");
                        Ok(Outcome::Handled)
                    })
                    .build(),
            )
            .command("where", |cx: C| async move {
                cx.reply(cx.current_scene().unwrap_or_default());
                Ok(Outcome::Handled)
            })
            .build()
            .unwrap();
        builder
            .stage(stage)
            .command(
                "start",
                |_cx: C| async move { Ok(Outcome::enter("signup")) },
            )
            .command("timed", |_cx: C| async move { Ok(Outcome::enter("timed")) })
            .command("quiet", |_cx: C| async move { Ok(Outcome::enter("quiet")) })
            .command("boom", |_cx: C| async move {
                Err::<Outcome, BoxError>("the handler failed".into())
            })
            .build()
    })
}

fn message(id: i64, text: &str) -> TelegramUpdate {
    TelegramUpdate::from_value(
        serde_json::json!({"update_id": id, "message": {"message_id": id,
        "date": 0, "chat": {"id": 1, "type": "private"}, "from": {"id": 1, "is_bot": false},
        "text": text}}),
    )
    .unwrap()
}

#[test]
fn one_span_per_update_with_key_scene_step_and_outcome() {
    let _serial = one_at_a_time();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    // Make every callsite ask this subscriber too (one first hit by another test's
    // thread, before this subscriber existed, may have cached that it is off).
    tracing::callsite::rebuild_interest_cache();
    rt().block_on(async {
        let bot = bot();
        let p = bot.pipeline();
        p.handle(message(1, "/start")).await.unwrap();
        p.handle(message(2, "Ann")).await.unwrap();
        p.handle(message(3, "/timed")).await.unwrap();
        bot.advance(60);
        assert_eq!(
            p.handle(message(4, "hello")).await.unwrap(),
            Dispatch::Unhandled
        );
        assert!(p.handle(message(5, "/boom")).await.is_err());
        p.handle(message(6, "/start")).await.unwrap();
        // Delivered twice (an update that wrote its session is remembered).
        assert_eq!(
            p.handle(message(6, "/start")).await.unwrap(),
            Dispatch::Duplicate
        );
        p.handle(message(7, "/where")).await.unwrap();
    });

    // Outside any scene: no scene, no step.
    let s = capture.span(1);
    assert_eq!(field(&s, "key"), Some("1:1"));
    assert_eq!(field(&s, "outcome"), Some("handled"));
    assert_eq!((field(&s, "scene"), field(&s, "step")), (None, None));
    // In the wizard, on step 1.
    let s = capture.span(2);
    assert_eq!(
        (field(&s, "scene"), field(&s, "step"), field(&s, "outcome")),
        (Some("signup"), Some("1"), Some("handled"))
    );
    // A stage-level command in a scene still says where the user was.
    let s = capture.span(7);
    assert_eq!(
        (field(&s, "scene"), field(&s, "step"), field(&s, "outcome")),
        (Some("signup"), Some("1"), Some("handled"))
    );
    // The same update twice: the second is a duplicate.
    let outcomes: Vec<String> = capture
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| field(&s.fields, "update_id") == Some("6"))
        .filter_map(|s| s.fields.get("outcome").cloned())
        .collect();
    assert_eq!(outcomes, ["handled", "duplicate"]);
    let duplicates = capture.events("duplicate");
    assert_eq!(duplicates.len(), 1);
    assert_eq!(duplicates[0].in_update.as_deref(), Some("6"));
    // The expired scene is dropped (an `expire` event) and nothing takes the update.
    assert_eq!(field(&capture.span(4), "outcome"), Some("unhandled"));
    let expired = capture.events("expire");
    assert_eq!(expired.len(), 1);
    assert_eq!(field(&expired[0].fields, "scene"), Some("timed"));
    assert_eq!(expired[0].in_update.as_deref(), Some("4"));
    assert_eq!(field(&capture.span(5), "outcome"), Some("failed"));

    // Entering and leaving, each inside its update's span.
    let enters: Vec<(Option<String>, String)> = capture
        .events("enter")
        .into_iter()
        .map(|e| (e.in_update, e.fields["scene"].clone()))
        .collect();
    assert_eq!(
        enters,
        [
            (Some("1".to_owned()), "signup".to_owned()),
            (Some("3".to_owned()), "timed".to_owned()),
            (Some("6".to_owned()), "signup".to_owned()),
        ]
    );
    let leaves = capture.events("leave");
    assert_eq!(leaves.len(), 1);
    assert_eq!(leaves[0].in_update.as_deref(), Some("2"));
    for e in capture
        .events("enter")
        .iter()
        .chain(&leaves)
        .chain(&expired)
    {
        assert_eq!(field(&e.fields, "target"), Some("stagecraft::stage"));
        assert_eq!(field(&e.fields, "key"), Some("Some(\"1:1\")"));
    }
}

/// A bot whose handler, on its first run only, writes the session itself (as another
/// replica would): the update's write conflicts and the update runs again.
fn racing_bot() -> (TestBot<u32>, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let other: Arc<dyn SessionStore> = store.clone();
    let raced = Arc::new(AtomicBool::new(false));
    let bot = TestBot::<u32>::with_store(store.clone(), move |builder| {
        builder
            .on_message(move |cx: C| {
                let (other, raced) = (Arc::clone(&other), Arc::clone(&raced));
                async move {
                    if !raced.swap(true, Ordering::SeqCst) {
                        other.save("1:1", br#"{"v":1,"data":40}"#, None).await?;
                    }
                    cx.session_mut(|n| *n += 1)?;
                    Ok(Outcome::Handled)
                }
            })
            .build()
    });
    (bot, store)
}

#[test]
fn conflicts_and_reruns_are_events_of_the_update() {
    let _serial = one_at_a_time();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    // Make every callsite ask this subscriber too (one first hit by another test's
    // thread, before this subscriber existed, may have cached that it is off).
    tracing::callsite::rebuild_interest_cache();
    rt().block_on(async {
        let (bot, store) = racing_bot();
        bot.pipeline().handle(message(9, "hi")).await.unwrap();
        let stored = store.load("1:1").await.unwrap().unwrap();
        assert_eq!(
            stagecraft::session::inspect(&stored.bytes).unwrap().data,
            41
        );
    });
    for name in ["conflict", "retry"] {
        let events = capture.events(name);
        assert_eq!(events.len(), 1, "{name}");
        assert_eq!(events[0].in_update.as_deref(), Some("9"), "{name}");
        assert_eq!(
            field(&events[0].fields, "target"),
            Some("stagecraft::session")
        );
        assert_eq!(field(&events[0].fields, "attempt"), Some("1"));
    }
    assert_eq!(field(&capture.span(9), "outcome"), Some("handled"));
}

#[cfg(feature = "metrics")]
mod counters {
    use std::sync::atomic::AtomicU64;

    use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
    use stagecraft::observe;

    use super::*;

    /// Counts every counter by name and labels (`name{label=value}`).
    #[derive(Default)]
    struct Counts(Mutex<BTreeMap<String, Arc<AtomicU64>>>);

    impl Counts {
        fn get(&self, name: &str) -> u64 {
            self.0
                .lock()
                .unwrap()
                .get(name)
                .map_or(0, |c| c.load(Ordering::SeqCst))
        }
    }

    impl metrics::Recorder for Counts {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = if labels.is_empty() {
                key.name().to_owned()
            } else {
                format!("{}{{{}}}", key.name(), labels.join(","))
            };
            let counter = Arc::clone(self.0.lock().unwrap().entry(name).or_default());
            Counter::from_arc(counter)
        }

        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }

        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn updates_conflicts_retries_and_expiries_are_counted() {
        let _serial = one_at_a_time();
        let counts = Counts::default();
        metrics::with_local_recorder(&counts, || {
            rt().block_on(async {
                let bot = bot();
                let p = bot.pipeline();
                p.handle(message(1, "/timed")).await.unwrap();
                bot.advance(60);
                p.handle(message(2, "hello")).await.unwrap();
                assert!(p.handle(message(3, "/boom")).await.is_err());
                p.handle(message(4, "/start")).await.unwrap();
                p.handle(message(4, "/start")).await.unwrap();
                let (racing, _) = racing_bot();
                racing.pipeline().handle(message(5, "hi")).await.unwrap();
            });
        });
        let outcome = |o: &str| counts.get(&format!("{}{{outcome={o}}}", observe::UPDATES));
        assert_eq!(outcome("handled"), 3);
        assert_eq!(outcome("duplicate"), 1);
        assert_eq!(outcome("unhandled"), 1);
        assert_eq!(outcome("failed"), 1);
        assert_eq!(counts.get(observe::CONFLICTS), 1);
        assert_eq!(counts.get(observe::RETRIES), 1);
        assert_eq!(
            counts.get(&format!("{}{{scene=timed}}", observe::EXPIRIES)),
            1
        );
        assert_eq!(
            counts.get(&format!("{}{{scene=signup}}", observe::ENTERS)),
            1
        );
    }
}

#[test]
fn a_timer_firing_runs_in_an_event_span_with_its_scene_step_and_outcome() {
    let _serial = one_at_a_time();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    // Make every callsite ask this subscriber too (one first hit by another test's
    // thread, before this subscriber existed, may have cached that it is off).
    tracing::callsite::rebuild_interest_cache();
    rt().block_on(async {
        let bot = bot();
        let p = bot.pipeline();
        p.handle(message(1, "/quiet")).await.unwrap();
        bot.advance(30);
        assert_eq!(p.wake_due().await.unwrap().timers, 1);
    });
    let spans = capture.event_spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 1, "{spans:?}");
    let span = &spans[0].fields;
    assert_eq!(field(span, "kind"), Some("timer"));
    assert_eq!(field(span, "key"), Some("1:1"));
    assert_eq!(field(span, "scene"), Some("quiet"));
    assert_eq!(field(span, "step"), Some("1"));
    assert_eq!(field(span, "outcome"), Some("handled"));
    let timeouts = capture.events("timeout");
    assert_eq!(timeouts.len(), 1, "{timeouts:?}");
    assert_eq!(field(&timeouts[0].fields, "scene"), Some("quiet"));
}
