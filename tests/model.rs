//! Model-based tests of the stage: random sequences of updates from several users of one
//! group chat, each a transition (enter, push, replace, leave, pop with a result,
//! reenter, clear), a wizard cursor move (next, back, select step), a failing handler,
//! or a text for the active step, run against the pipeline and against `Model`, a plain
//! struct with a `Vec` stack per user. After every update the stored stack and data of
//! every user, the replies and whether the update failed agree with the model. On the
//! memory store and SQLite, under both error policies.
//!
//! 48 cases per store by default, a few seconds; more with `PROPTEST_CASES`:
//!
//! ```sh
//! PROPTEST_CASES=5000 cargo test --release --test model
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use stagecraft::outcome::Enter;
use stagecraft::prelude::*;
use stagecraft::session::ErrorPolicy;
use stagecraft::store::SessionStore;
use stagecraft::transport::RecordingTransport;

const CHAT: i64 = -100;
const SCENES: [&str; 3] = ["a", "b", "c"];
const STEPS: i64 = 3;
const USERS: usize = 3;

type Data = Vec<String>;
type C = Cx<Data>;

/// What one update asks for.
#[derive(Debug, Clone)]
enum Op {
    Enter(usize),
    Push(usize),
    Replace(usize),
    Leave,
    Pop(u8),
    Reenter,
    Clear,
    Next,
    Back,
    Goto(i64),
    Fail,
    Text(u8),
}

impl Op {
    /// The message text that asks for it.
    fn text(&self) -> String {
        match self {
            Self::Enter(s) => format!("/enter {}", SCENES[*s]),
            Self::Push(s) => format!("/push {}", SCENES[*s]),
            Self::Replace(s) => format!("/replace {}", SCENES[*s]),
            Self::Leave => "/leave".into(),
            Self::Pop(r) => format!("/pop r{r}"),
            Self::Reenter => "/reenter".into(),
            Self::Clear => "/clear".into(),
            Self::Next => "/next".into(),
            Self::Back => "/back".into(),
            Self::Goto(n) => format!("/goto {n}"),
            Self::Fail => "/fail".into(),
            Self::Text(t) => format!("t{t}"),
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let scene = 0..SCENES.len();
    prop_oneof![
        2 => scene.clone().prop_map(Op::Enter),
        2 => scene.clone().prop_map(Op::Push),
        1 => scene.prop_map(Op::Replace),
        1 => Just(Op::Leave),
        2 => (0..4_u8).prop_map(Op::Pop),
        1 => Just(Op::Reenter),
        1 => Just(Op::Clear),
        2 => Just(Op::Next),
        1 => Just(Op::Back),
        1 => (-2..5_i64).prop_map(Op::Goto),
        1 => Just(Op::Fail),
        4 => (0..10_u8).prop_map(Op::Text),
    ]
}

/// A user's session as the reference model sees it.
#[derive(Debug, Clone, Default, PartialEq)]
struct Session {
    /// Bottom first: scene and wizard cursor.
    stack: Vec<(String, i64)>,
    data: Data,
}

/// The reference: what the stage should do, written out plainly.
#[derive(Debug, Default)]
struct Model {
    sessions: BTreeMap<usize, Session>,
}

impl Model {
    /// Applies `op` from `user`; returns the replies and whether the update fails.
    fn apply(&mut self, user: usize, op: &Op, policy: ErrorPolicy) -> (Vec<String>, bool) {
        let s = self.sessions.entry(user).or_default();
        let text = op.text();
        let mut out = Vec::new();
        let step0 = |out: &mut Vec<String>, scene: &str| {
            out.push(format!("{scene} step 0 got {text}"));
        };
        // Leaves the top scene; the one beneath resumes with `result`.
        let pop = |s: &mut Session, out: &mut Vec<String>, result: Option<String>| {
            if let Some((top, _)) = s.stack.pop() {
                out.push(format!("left {top}"));
                if let Some((parent, _)) = s.stack.last() {
                    out.push(format!("{parent} resumed with {result:?}"));
                }
            }
        };
        match op {
            Op::Enter(i) => {
                if let Some((top, _)) = s.stack.pop() {
                    out.push(format!("left {top}"));
                }
                s.stack.push((SCENES[*i].into(), 0));
                step0(&mut out, SCENES[*i]);
            }
            Op::Push(i) => {
                s.stack.push((SCENES[*i].into(), 0));
                step0(&mut out, SCENES[*i]);
            }
            Op::Replace(i) => {
                while let Some((top, _)) = s.stack.pop() {
                    out.push(format!("left {top}"));
                }
                s.stack.push((SCENES[*i].into(), 0));
                step0(&mut out, SCENES[*i]);
            }
            Op::Leave => pop(s, &mut out, None),
            Op::Pop(r) => pop(s, &mut out, Some(format!("r{r}"))),
            Op::Reenter => {
                if let Some((top, cursor)) = s.stack.last_mut() {
                    let top = top.clone();
                    out.push(format!("left {top}"));
                    *cursor = 0;
                    step0(&mut out, &top);
                }
            }
            Op::Clear => {
                while let Some((top, _)) = s.stack.pop() {
                    out.push(format!("left {top}"));
                }
            }
            Op::Next | Op::Back | Op::Goto(_) => {
                let Some((_, cursor)) = s.stack.last_mut() else {
                    return (out, true); // no scene is active
                };
                *cursor = match op {
                    Op::Next => *cursor + 1,
                    Op::Back => *cursor - 1,
                    Op::Goto(n) => *n,
                    _ => unreachable!(),
                };
            }
            Op::Fail => {
                if policy == ErrorPolicy::WriteAnyway {
                    s.data.push("fail".into());
                    out.push("failing".into());
                }
                return (out, true);
            }
            Op::Text(_) => match s.stack.last() {
                None => out.push("outside".into()),
                Some((top, cursor)) if (0..STEPS).contains(cursor) => {
                    out.push(format!("{top} step {cursor} got {text}"));
                }
                // A cursor out of range: the update leaves the scene and is consumed.
                Some(_) => pop(s, &mut out, None),
            },
        }
        (out, false)
    }
}

fn wizard(id: &'static str) -> Scene<Data, TelegramUpdate> {
    let mut w = Wizard::builder(id)
        .on_leave(move |cx: C| async move {
            cx.reply(format!("left {id}"));
            Ok(())
        })
        .on_resume(move |cx: C| async move {
            let result = cx.take_result::<String>()?;
            cx.reply(format!("{id} resumed with {result:?}"));
            Ok(Outcome::Handled)
        });
    for i in 0..STEPS {
        w = w.step(move |cx: C| async move {
            let text = cx.update().message_text().unwrap_or_default().to_owned();
            cx.reply(format!("{id} step {i} got {text}"));
            Ok(Outcome::Handled)
        });
    }
    w.build()
}

/// The word after the command.
fn arg(cx: &C) -> String {
    let text = cx.update().message_text().unwrap_or_default();
    text.split(' ').nth(1).unwrap_or_default().to_owned()
}

/// The bot under test: every transition is a stage-level command, so it works in any
/// scene (and outside); texts go to the active wizard step, or outside.
fn bot(store: Arc<dyn SessionStore>, policy: ErrorPolicy) -> (Pipeline<Data>, RecordingTransport) {
    let replies = RecordingTransport::new();
    let mut stage = Stage::builder()
        .command("enter", |cx: C| async move { Ok(Outcome::enter(arg(&cx))) })
        .command("push", |cx: C| async move { Ok(Outcome::push(arg(&cx))) })
        .command("replace", |cx: C| async move {
            Ok(Outcome::Replace(Enter::new(arg(&cx))))
        })
        .command("leave", |_cx: C| async move { Ok(Outcome::leave()) })
        .command(
            "pop",
            |cx: C| async move { Ok(Outcome::leave_with(arg(&cx))) },
        )
        .command("reenter", |_cx: C| async move { Ok(Outcome::Reenter) })
        .command("clear", |_cx: C| async move { Ok(Outcome::Clear) })
        .command("next", |_cx: C| async move { Ok(Outcome::Next) })
        .command("back", |_cx: C| async move { Ok(Outcome::Back) })
        .command("goto", |cx: C| async move {
            let n = arg(&cx).parse().map_err(Error::handler)?;
            Ok(Outcome::Goto(n))
        })
        .command("fail", |cx: C| async move {
            cx.session_mut(|d| d.push("fail".into()))?;
            cx.reply("failing");
            Err("the handler failed".into())
        });
    for id in SCENES {
        stage = stage.scene(wizard(id));
    }
    let bot = Pipeline::<Data>::builder()
        .store_arc(store)
        .transport(replies.clone())
        .error_policy(policy)
        .stage(stage.build().unwrap())
        .on_text(|cx: C| async move {
            cx.reply("outside");
            Ok(Outcome::Handled)
        })
        .build();
    (bot, replies)
}

fn message(id: usize, user: usize, text: &str) -> TelegramUpdate {
    let json = serde_json::json!({"update_id": id, "message": {"message_id": id,
        "chat": {"id": CHAT, "type": "group"}, "from": {"id": user}, "text": text}});
    TelegramUpdate::from_json(&json.to_string()).unwrap()
}

/// A user's stored session: no record is an empty one.
async fn stored(store: &dyn SessionStore, user: usize) -> Session {
    let Some(record) = store.load(&format!("{user}:{CHAT}")).await.unwrap() else {
        return Session::default();
    };
    let info = stagecraft::session::inspect(&record.bytes).unwrap();
    Session {
        stack: info
            .scenes
            .iter()
            .map(|f| (f.scene.clone(), f.cursor.unwrap_or(i64::MIN)))
            .collect(),
        data: serde_json::from_value(info.data).unwrap(),
    }
}

/// Runs `steps` on the pipeline and the model, comparing after each.
async fn run(
    store: Arc<dyn SessionStore>,
    policy: ErrorPolicy,
    steps: &[(usize, Op)],
) -> Result<(), TestCaseError> {
    let (bot, replies) = bot(Arc::clone(&store), policy);
    let mut model = Model::default();
    for (i, (user, op)) in steps.iter().enumerate() {
        let user = user + 1;
        let before = replies.texts().len();
        let result = bot.handle(message(i + 1, user, &op.text())).await;
        let (want, fails) = model.apply(user, op, policy);
        let got = replies.texts()[before..].to_vec();
        prop_assert_eq!(&got, &want, "step {} ({:?} from {}): replies", i, op, user);
        prop_assert_eq!(
            result.is_err(),
            fails,
            "step {} ({:?}): {:?}",
            i,
            op,
            result
        );
        for u in 1..=USERS {
            let want = model.sessions.get(&u).cloned().unwrap_or_default();
            let got = stored(store.as_ref(), u).await;
            prop_assert_eq!(got, want, "step {} ({:?} from {}): user {}", i, op, user, u);
        }
        prop_assert_eq!(bot.keys_in_flight(), 0);
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(48)
}

fn steps() -> impl Strategy<Value = Vec<(usize, Op)>> {
    prop::collection::vec((0..USERS, op()), 1..28)
}

fn policy() -> impl Strategy<Value = ErrorPolicy> {
    prop_oneof![Just(ErrorPolicy::WriteAnyway), Just(ErrorPolicy::RollBack)]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn the_stage_agrees_with_the_model_on_the_memory_store(steps in steps(), policy in policy()) {
        runtime().block_on(run(Arc::new(stagecraft::store::MemoryStore::new()), policy, &steps))?;
    }

    #[test]
    fn the_stage_agrees_with_the_model_on_sqlite(steps in steps(), policy in policy()) {
        runtime().block_on(async {
            let store = stagecraft::store::SqliteStore::open("sqlite::memory:").await.unwrap();
            run(Arc::new(store), policy, &steps).await
        })?;
    }
}

/// The model's own check: a fixed sequence with every kind of step, whose replies are
/// written out by hand (so the model is not only compared with itself).
#[test]
fn the_model_matches_a_conversation_written_by_hand() {
    let mut m = Model::default();
    let p = ErrorPolicy::WriteAnyway;
    let mut say = |op: Op| m.apply(1, &op, p);
    assert_eq!(say(Op::Next), (vec![], true));
    assert_eq!(say(Op::Enter(0)).0, ["a step 0 got /enter a"]);
    assert_eq!(say(Op::Next).0, Vec::<String>::new());
    assert_eq!(say(Op::Text(1)).0, ["a step 1 got t1"]);
    assert_eq!(say(Op::Push(1)).0, ["b step 0 got /push b"]);
    assert_eq!(say(Op::Pop(2)).0, ["left b", "a resumed with Some(\"r2\")"]);
    assert_eq!(say(Op::Goto(7)).0, Vec::<String>::new());
    assert_eq!(say(Op::Text(0)).0, ["left a"]);
    assert_eq!(say(Op::Text(0)).0, ["outside"]);
    assert_eq!(say(Op::Fail), (vec!["failing".to_owned()], true));
    assert_eq!(m.sessions[&1].data, ["fail"]);
}
