//! How an update maps to a session key.

use std::fmt;
use std::sync::Arc;

use crate::update::Update;

/// A custom key function, for [`KeyStrategy::Custom`].
pub type KeyFn<U> = Arc<dyn Fn(&U) -> Option<String> + Send + Sync>;

/// Which session an update belongs to: how a key is derived from an update.
///
/// An update that lacks what the strategy needs (a channel post has no user, an inline
/// query has no chat) gets **no session**: never a shared key such as `"undefined"`.
/// The rest of the chain still runs; see [`Cx::has_session`](crate::Cx::has_session).
///
/// ```
/// use stagecraft::session::KeyStrategy;
/// use stagecraft::update::TelegramUpdate;
///
/// let u = TelegramUpdate::from_json(r#"{"update_id":1,"message":{"chat":{"id":-100},
///     "from":{"id":7},"message_thread_id":3,"text":"hi"}}"#).unwrap();
/// assert_eq!(KeyStrategy::<TelegramUpdate>::UserInChat.key(&u).as_deref(), Some("7:-100"));
/// assert_eq!(KeyStrategy::<TelegramUpdate>::Chat.key(&u).as_deref(), Some("-100"));
/// assert_eq!(KeyStrategy::<TelegramUpdate>::User.key(&u).as_deref(), Some("7"));
/// assert_eq!(KeyStrategy::<TelegramUpdate>::ChatThread.key(&u).as_deref(), Some("-100:3"));
/// let custom = KeyStrategy::custom(|u: &TelegramUpdate| u.message.as_ref().map(|_| "all".to_owned()));
/// assert_eq!(custom.key(&u).as_deref(), Some("all"));
/// ```
#[non_exhaustive]
pub enum KeyStrategy<U> {
    /// `"{user}:{chat}"`: each user has their own session in each chat (Telegraf's default).
    ///
    /// A message sent on behalf of a chat is keyed by that chat instead of its `from`
    /// ([`Update::sender_id`]): a user posting as their channel gets
    /// `"{channel}:{chat}"`, the anonymous administrators of a group
    /// `"{group}:{group}"`. (Their `from` is a placeholder shared by everyone who does
    /// so, which Telegraf keys as one user.) A callback query is always keyed by the
    /// user who pressed the button: Telegram names them, anonymous or not.
    UserInChat,
    /// `"{chat}"`: one session per chat, shared by its members.
    Chat,
    /// `"{user}"`: one session per user, across chats; a message sent on behalf of a
    /// chat is keyed by that chat, as in [`UserInChat`](Self::UserInChat).
    User,
    /// `"{chat}:{thread}"` in forum topics, `"{chat}"` elsewhere.
    ChatThread,
    /// Your own function; `None` means no session.
    Custom(KeyFn<U>),
}

impl<U> KeyStrategy<U> {
    /// A key from your own function.
    pub fn custom(f: impl Fn(&U) -> Option<String> + Send + Sync + 'static) -> Self {
        Self::Custom(Arc::new(f))
    }
}

impl<U: Update> KeyStrategy<U> {
    /// The key of `update`, or `None` when it has no session under this strategy.
    #[must_use]
    pub fn key(&self, update: &U) -> Option<String> {
        if let Self::Custom(f) = self {
            return f(update);
        }
        self.with_key(update, str::to_owned)
    }

    /// Calls `f` with the key of `update` (built-in keys are built on the stack), or
    /// returns `None` when the update has no session.
    pub(crate) fn with_key<R>(&self, update: &U, f: impl FnOnce(&str) -> R) -> Option<R> {
        if let Self::Custom(g) = self {
            return g(update).map(|k| f(&k));
        }
        let mut buf = KeyBuf::default();
        match self {
            Self::UserInChat => {
                let (user, chat) = (update.sender_id()?, update.chat_id()?);
                buf.int(user);
                buf.push(b":");
                buf.int(chat);
            }
            Self::Chat => buf.int(update.chat_id()?),
            Self::User => buf.int(update.sender_id()?),
            Self::ChatThread => {
                buf.int(update.chat_id()?);
                if let Some(t) = update.thread_id() {
                    buf.push(b":");
                    buf.int(t);
                }
            }
            Self::Custom(_) => return None,
        }
        Some(f(buf.as_str()))
    }
}

/// Room for two `i64`s in decimal and a separator: every built-in key fits.
struct KeyBuf {
    bytes: [u8; 48],
    len: usize,
}

impl Default for KeyBuf {
    fn default() -> Self {
        Self {
            bytes: [0; 48],
            len: 0,
        }
    }
}

impl KeyBuf {
    fn push(&mut self, s: &[u8]) {
        self.bytes[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
    }

    /// Appends the decimal form of `n`.
    fn int(&mut self, n: i64) {
        self.push(itoa::Buffer::new().format(n).as_bytes());
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits, '-' and ':' were written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

#[allow(clippy::derivable_impls)] // a derive would demand `U: Default`
impl<U> Default for KeyStrategy<U> {
    fn default() -> Self {
        Self::UserInChat
    }
}

impl<U> Clone for KeyStrategy<U> {
    fn clone(&self) -> Self {
        match self {
            Self::UserInChat => Self::UserInChat,
            Self::Chat => Self::Chat,
            Self::User => Self::User,
            Self::ChatThread => Self::ChatThread,
            Self::Custom(f) => Self::Custom(Arc::clone(f)),
        }
    }
}

impl<U> fmt::Debug for KeyStrategy<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UserInChat => "UserInChat",
            Self::Chat => "Chat",
            Self::User => "User",
            Self::ChatThread => "ChatThread",
            Self::Custom(_) => "Custom(..)",
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn integers_format_like_display() {
        for n in [0, 1, -1, 9, 10, -100_500, 1001, i64::MAX, i64::MIN] {
            let mut buf = super::KeyBuf::default();
            buf.int(n);
            buf.push(b":");
            buf.int(n);
            assert_eq!(buf.as_str(), format!("{n}:{n}"));
        }
    }
}
