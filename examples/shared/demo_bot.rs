#![allow(unreachable_pub, dead_code)]
//! The reference bot: session, an update counter, a stage with `signup`, `profile` and
//! `poll`, and bot-level commands. Shared by the demo, the benchmark and the tests, and
//! generic over the update type, so the same bot runs on `TelegramUpdate` and on
//! teloxide's `Update`.

use serde::{Deserialize, Serialize};
use stagecraft::prelude::*;
use stagecraft::update::Update;

/// The bot's session data.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Demo {
    /// Updates seen in this session.
    pub updates: u64,
    /// The saved profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
}

/// A saved signup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    /// Name.
    pub name: String,
    /// Age.
    pub age: u32,
}

/// The signup wizard's state.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Signup {
    /// The name given at step 1.
    #[serde(default)]
    pub name: String,
    /// The age given at step 2.
    #[serde(default)]
    pub age: u32,
}

#[typetag::serde(name = "demo.signup.v1")]
impl SceneState for Signup {}

type C<U> = Cx<Demo, U>;

/// What the signup wizard says after [`REMIND_AFTER_S`] seconds of silence, with
/// [`Options::remind`].
pub const REMINDER: &str = "Still there? Send /cancel to stop.";

/// How long the signup wizard waits for the user before [`REMINDER`].
pub const REMIND_AFTER_S: u32 = 600;

/// The demo's switches.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The signup wizard reminds a silent user once ([`REMINDER`]).
    pub remind: bool,
}

fn signup<U: Update>(options: Options) -> Scene<Demo, U> {
    let wizard = Wizard::builder("signup");
    let wizard = if options.remind {
        wizard.timeout(REMIND_AFTER_S, |cx: C<U>| async move {
            cx.reply(REMINDER);
            Ok(Outcome::Handled)
        })
    } else {
        wizard
    };
    wizard
        .state::<Signup>()
        .command("cancel", |cx: C<U>| async move {
            cx.reply("Cancelled.");
            Ok(Outcome::leave())
        })
        .on_leave(|cx: C<U>| async move {
            cx.reply("Left signup.");
            Ok(())
        })
        .step(|cx: C<U>| async move {
            cx.reply("What is your name?");
            Ok(Outcome::Next)
        })
        .step(|cx: C<U>| async move {
            let Some(name) = cx.update().message_text().map(str::to_owned) else {
                cx.reply("Please send your name as text.");
                return Ok(Outcome::Handled);
            };
            cx.reply(format!("How old are you, {name}?"));
            cx.scene_state_mut(|s: &mut Signup| s.name = name)?;
            Ok(Outcome::Next)
        })
        .step(|cx: C<U>| async move {
            let text = cx.update().message_text().unwrap_or_default();
            let age = (1..=3).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
            let age = if age {
                text.parse::<u32>().ok().filter(|a| (1..=150).contains(a))
            } else {
                None
            };
            let Some(age) = age else {
                cx.reply("Age must be a whole number between 1 and 150. How old are you?");
                return Ok(Outcome::Handled);
            };
            let name = cx.scene_state_mut(|s: &mut Signup| {
                s.age = age;
                s.name.clone()
            })?;
            cx.reply(format!("Confirm: {name}, {age}. Reply yes or no."));
            Ok(Outcome::Next)
        })
        .step(|cx: C<U>| async move {
            let answer = cx
                .update()
                .message_text()
                .unwrap_or_default()
                .to_lowercase();
            match answer.as_str() {
                "yes" => {
                    let s: Signup = cx.scene_state(Signup::clone)?;
                    cx.reply(format!("Saved {}, {}.", s.name, s.age));
                    cx.session_mut(|d| {
                        d.profile = Some(Profile {
                            name: s.name,
                            age: s.age,
                        })
                    })?;
                    Ok(Outcome::leave())
                }
                "no" => {
                    cx.reply("Discarded.");
                    Ok(Outcome::leave())
                }
                _ => {
                    cx.reply("Please reply yes or no.");
                    Ok(Outcome::Handled)
                }
            }
        })
        .build()
}

fn profile<U: Update>() -> Scene<Demo, U> {
    Scene::builder("profile")
        .ttl(300)
        .goes_to("signup")
        .on_enter(|cx: C<U>| async move {
            let name = cx.session(|d| d.profile.as_ref().map(|p| p.name.clone()))?;
            let name = name.unwrap_or_else(|| "no profile".to_owned());
            cx.reply(format!(
                "Profile scene ({name}). Commands: /whoami /signup /back"
            ));
            Ok(Outcome::Handled)
        })
        .on_leave(|cx: C<U>| async move {
            cx.reply("Left profile.");
            Ok(())
        })
        .command("whoami", |cx: C<U>| async move {
            let text = cx.session(|d| match &d.profile {
                Some(p) => format!("You are {} ({}).", p.name, p.age),
                None => "No profile yet.".to_owned(),
            })?;
            cx.reply(text);
            Ok(Outcome::Handled)
        })
        .command(
            "signup",
            |_cx: C<U>| async move { Ok(Outcome::enter("signup")) },
        )
        .command("back", |_cx: C<U>| async move { Ok(Outcome::leave()) })
        .on_text(|cx: C<U>| async move {
            let text = cx.update().message_text().unwrap_or_default();
            cx.reply(format!("profile echo: {text}"));
            Ok(Outcome::Handled)
        })
        .build()
}

fn poll<U: Update>() -> Scene<Demo, U> {
    Wizard::builder("poll")
        .on_leave(|cx: C<U>| async move {
            cx.reply("Left poll.");
            Ok(())
        })
        .step(|cx: C<U>| async move {
            cx.reply("Pick a or b.");
            Ok(Outcome::Next)
        })
        .step(|cx: C<U>| async move {
            let text = cx.update().message_text().unwrap_or_default().to_owned();
            match text.as_str() {
                "back" => {
                    cx.wizard().back()?;
                    let cursor = cx.wizard().cursor().unwrap_or_default();
                    cx.reply(format!("cursor now {cursor}"));
                    Ok(Outcome::Handled)
                }
                "jump" => {
                    cx.wizard().select_step(5)?;
                    cx.reply("cursor now 5");
                    Ok(Outcome::Handled)
                }
                _ => {
                    cx.reply(format!("You picked {text}."));
                    Ok(Outcome::Next)
                }
            }
        })
        .build()
}

/// The stage with the three scenes and the stage-level `/where`.
///
/// # Errors
/// Never in practice (no default scene is set).
pub fn stage<U: Update>() -> stagecraft::Result<Stage<Demo, U>> {
    stage_with(Options::default())
}

/// [`stage`] with `options`.
///
/// # Errors
/// Never in practice (no default scene is set).
pub fn stage_with<U: Update>(options: Options) -> stagecraft::Result<Stage<Demo, U>> {
    Stage::builder()
        // For the diagram: the bot's /start, /profile and /poll enter these.
        .entry("signup")
        .entry("profile")
        .entry("poll")
        .scene(signup(options))
        .scene(profile())
        .scene(poll())
        .command("where", |cx: C<U>| async move {
            let scene = cx.current_scene().unwrap_or_else(|| "none".to_owned());
            let cursor = cx
                .cursor()
                .map_or_else(|| "-".to_owned(), |c| c.to_string());
            cx.reply(format!("scene={scene} cursor={cursor}"));
            Ok(Outcome::Handled)
        })
        .build()
}

/// The whole bot on `builder` (which carries the store, clock and transport).
///
/// # Errors
/// Never in practice.
pub fn build<U: Update>(
    builder: stagecraft::pipeline::PipelineBuilder<Demo, U>,
) -> stagecraft::Result<Pipeline<Demo, U>> {
    build_with(builder, Options::default())
}

/// [`build`] with `options`.
///
/// # Errors
/// Never in practice.
pub fn build_with<U: Update>(
    builder: stagecraft::pipeline::PipelineBuilder<Demo, U>,
    options: Options,
) -> stagecraft::Result<Pipeline<Demo, U>> {
    Ok(builder
        .middleware(|cx: C<U>, next: Next<Demo, U>| async move {
            if cx.has_session() {
                // Saturates: a session that has seen u64::MAX updates stays there.
                cx.session_mut(|d| d.updates = d.updates.saturating_add(1))?;
            }
            next.run(cx).await
        })
        .stage(stage_with(options)?)
        .command(
            "start",
            |_cx: C<U>| async move { Ok(Outcome::enter("signup")) },
        )
        .command("profile", |_cx: C<U>| async move {
            Ok(Outcome::enter("profile"))
        })
        .command(
            "poll",
            |_cx: C<U>| async move { Ok(Outcome::enter("poll")) },
        )
        .command("cancel", |cx: C<U>| async move {
            cx.reply("Nothing to cancel.");
            Ok(Outcome::Handled)
        })
        .on_message(|cx: C<U>| async move {
            let n = cx.session(|d| d.updates).unwrap_or_default();
            cx.reply(format!(
                "Outside scenes ({n} updates). Send /start or /profile."
            ));
            Ok(Outcome::Handled)
        })
        .build())
}
