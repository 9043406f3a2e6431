//! A group upgraded to a supergroup: its sessions move to the new chat id.

use crate::error::Result;
use crate::record::SessionData;
use crate::session::KeyStrategy;
use crate::store::ListFilter;
use crate::update::Update;

use super::Pipeline;

/// What [`Pipeline::migrate_chat`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChatMoved {
    /// Sessions moved to the new chat id.
    pub moved: usize,
    /// Sessions left under the old chat id because the member already had one in the
    /// new chat (both are kept; see the warning logged for each).
    pub kept: usize,
}

impl<S: SessionData, U: Update> Pipeline<S, U> {
    /// Moves the sessions of chat `from` to chat `to`: what a group's upgrade to a
    /// supergroup needs, since Telegram gives the supergroup a new chat id. The
    /// pipeline calls it itself for the service messages that announce the upgrade
    /// ([`Update::chat_migration`]); call it yourself for an upgrade it did not see.
    ///
    /// Which keys belong to the chat follows the pipeline's
    /// [`KeyStrategy`]: `"{user}:{from}"` for
    /// `UserInChat` (found by listing the store's keys), `"{from}"` for `Chat`,
    /// `"{from}"` and `"{from}:{thread}"` for `ChatThread`. `User` keys do not name the
    /// chat and a custom strategy's are unknown: nothing moves for them.
    ///
    /// Each session moves under its old and its new key's queue places and leases, as
    /// an update would take them: a compare-and-set insert under the new key, then a
    /// compare-and-set delete of the old one. Armed timers and pending replies are
    /// addressed to the new chat. A member who already has a session in the new chat
    /// keeps it (the old one is kept too, and counted in [`ChatMoved::kept`]). Running
    /// it again is harmless: Telegram sends two service messages, and the second
    /// finishes a move the first left half done.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = Pipeline::<u32>::builder()
    ///     .on_text(|cx: Cx<u32>| async move {
    ///         let n = cx.session_mut(|n| { *n += 1; *n })?;
    ///         cx.reply(format!("#{n}"));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build();
    /// let msg = |chat: i64| TelegramUpdate::from_json(&format!(
    ///     r#"{{"update_id":{},"message":{{"chat":{{"id":{chat}}},"from":{{"id":7}},"text":"hi"}}}}"#,
    ///     -chat)).unwrap();
    /// bot.handle(msg(-5)).await.unwrap();
    /// let done = bot.migrate_chat(-5, -1005).await.unwrap();
    /// assert_eq!(done.moved, 1);
    /// let key = bot.key_of(&msg(-1005)).unwrap();
    /// assert!(bot.store().load(&key).await.unwrap().is_some());
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`Error::Store`](crate::Error::Store) when listing the keys fails; a session
    /// that fails to move stops the migration with its error (the sessions moved so
    /// far stay moved; running it again goes on).
    pub async fn migrate_chat(&self, from: i64, to: i64) -> Result<ChatMoved> {
        let mut done = ChatMoved::default();
        if from == to {
            return Ok(done);
        }
        let (old, new) = (from.to_string(), to.to_string());
        let pairs: Vec<(String, String)> = match &self.cycle.key {
            KeyStrategy::UserInChat => {
                let suffix = format!(":{old}");
                self.store()
                    .list(&ListFilter::prefix(""))
                    .await?
                    .into_iter()
                    .filter_map(|k| {
                        let user = k.strip_suffix(&suffix)?;
                        user.parse::<i64>().ok()?;
                        Some((k.clone(), format!("{user}:{new}")))
                    })
                    .collect()
            }
            KeyStrategy::Chat => vec![(old.clone(), new.clone())],
            KeyStrategy::ChatThread => {
                let prefix = format!("{old}:");
                let mut pairs = vec![(old.clone(), new.clone())];
                for k in self.store().list(&ListFilter::prefix(&prefix)).await? {
                    let Some(thread) = k.strip_prefix(&prefix) else {
                        continue;
                    };
                    if thread.parse::<i64>().is_ok() {
                        pairs.push((k.clone(), format!("{new}:{thread}")));
                    }
                }
                pairs
            }
            _ => Vec::new(),
        };
        for (old_key, new_key) in pairs {
            let exists = self.store().load(&old_key).await?.is_some();
            if !exists {
                continue;
            }
            if self.cycle.move_key(&old_key, &new_key, from, to).await? {
                done.moved += 1;
            } else if self.store().load(&old_key).await?.is_some() {
                done.kept += 1;
            }
        }
        tracing::info!(target: "stagecraft::session", event = "chat_migrated", from, to,
            moved = done.moved, kept = done.kept, "group upgraded to a supergroup; sessions moved");
        Ok(done)
    }
}
