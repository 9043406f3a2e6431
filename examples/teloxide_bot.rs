//! A teloxide bot with a stagecraft wizard: the minimal integration.
//!
//! ```text
//! You: /start
//! Bot: What is your name?
//! You: Ann
//! Bot: How old are you, Ann?
//! You: thirty
//! Bot: Send your age as a number.
//! You: 30
//! Bot: Nice to meet you, Ann (30).
//! You: /start
//! Bot: I already know you, Ann.
//! You: hello
//! Bot: Send /start to begin.
//! ```
//!
//! `/cancel` leaves the wizard at any step. Run it with a token from @BotFather:
//!
//! ```text
//! $ TELOXIDE_TOKEN=123:ABC cargo run --example teloxide_bot --features teloxide,teloxide/native-tls
//! ```
//!
//! (`TELOXIDE_API_URL=http://127.0.0.1:8081` points it to a local Bot API server; then
//! no TLS feature is needed.)

use serde::{Deserialize, Serialize};
use stagecraft::adapters::teloxide::{StageHandlerExt, TeloxideBuilderExt};
use stagecraft::prelude::*;
use teloxide::dispatching::UpdateHandler;
use teloxide::prelude::*;

/// The session: what we know about the user in this chat.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Profile {
    name: Option<String>,
    age: Option<u32>,
}

/// The wizard's own state, dropped when it is left.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Signup {
    name: String,
}

#[typetag::serde(name = "teloxide_bot.signup.v1")]
impl SceneState for Signup {}

type C = Cx<Profile, teloxide::types::Update>;

fn pipeline(bot: Bot) -> stagecraft::Result<Pipeline<Profile, teloxide::types::Update>> {
    let signup = Wizard::builder("signup")
        .state::<Signup>()
        .command("cancel", |cx: C| async move {
            cx.reply("Cancelled.");
            Ok(Outcome::leave())
        })
        .step(|cx: C| async move {
            cx.reply("What is your name?");
            Ok(Outcome::Next)
        })
        .step(|cx: C| async move {
            let name = cx.update().message_text().unwrap_or_default().to_owned();
            cx.reply(format!("How old are you, {name}?"));
            cx.scene_state_mut(|s: &mut Signup| s.name = name)?;
            Ok(Outcome::Next)
        })
        .step(|cx: C| async move {
            let Some(age) = cx.update().message_text().and_then(|t| t.parse().ok()) else {
                cx.reply("Send your age as a number.");
                return Ok(Outcome::Handled);
            };
            let name = cx.scene_state(Signup::clone)?.name;
            cx.reply(format!("Nice to meet you, {name} ({age})."));
            cx.session_mut(|p| {
                p.name = Some(name);
                p.age = Some(age);
            })?;
            Ok(Outcome::leave())
        })
        .build();
    let stage = Stage::builder().scene(signup).build()?;
    Ok(Pipeline::builder()
        // Replies go through `bot`; handlers reach it with `cx.extension::<Bot>()`.
        .teloxide_bot(bot)
        .stage(stage)
        .command("start", |cx: C| async move {
            match cx.session(|p| p.name.clone())? {
                Some(name) => {
                    cx.reply(format!("I already know you, {name}."));
                    Ok(Outcome::Handled)
                }
                None => Ok(Outcome::enter("signup")),
            }
        })
        .build())
}

fn handler(
    pipeline: Pipeline<Profile, teloxide::types::Update>,
) -> UpdateHandler<stagecraft::BoxError> {
    Update::filter_message()
        .enter_stage(pipeline)
        // Messages the pipeline did not take: plain teloxide from here on.
        .endpoint(|bot: Bot, msg: Message| async move {
            bot.send_message(msg.chat.id, "Send /start to begin.")
                .await?;
            Ok(())
        })
}

#[tokio::main]
async fn main() -> Result<(), stagecraft::BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if std::env::var_os("TELOXIDE_TOKEN").is_none() {
        return Err("set TELOXIDE_TOKEN to your bot's token".into());
    }
    let bot = Bot::from_env();
    let handler = handler(pipeline(bot.clone())?);
    Dispatcher::builder(bot, handler).build().dispatch().await;
    Ok(())
}
