//! How an update maps to a session key.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use crate::update::Update;

/// A custom key function, for [`Key::Custom`].
pub type KeyFn<U> = Arc<dyn Fn(&U) -> Option<String> + Send + Sync>;

/// Which session an update belongs to.
///
/// An update that lacks what the strategy needs (a channel post has no user, an inline
/// query has no chat) gets **no session**: never a shared key such as `"undefined"`.
/// The rest of the chain still runs; see [`Cx::has_session`](crate::Cx::has_session).
///
/// ```
/// use stagecraft::session::Key;
/// use stagecraft::update::TelegramUpdate;
///
/// let u = TelegramUpdate::from_json(r#"{"update_id":1,"message":{"chat":{"id":-100},
///     "from":{"id":7},"message_thread_id":3,"text":"hi"}}"#).unwrap();
/// assert_eq!(Key::<TelegramUpdate>::UserInChat.key(&u).as_deref(), Some("7:-100"));
/// assert_eq!(Key::<TelegramUpdate>::Chat.key(&u).as_deref(), Some("-100"));
/// assert_eq!(Key::<TelegramUpdate>::User.key(&u).as_deref(), Some("7"));
/// assert_eq!(Key::<TelegramUpdate>::ChatThread.key(&u).as_deref(), Some("-100:3"));
/// let custom = Key::custom(|u: &TelegramUpdate| u.message.as_ref().map(|_| "all".to_owned()));
/// assert_eq!(custom.key(&u).as_deref(), Some("all"));
/// ```
#[non_exhaustive]
pub enum Key<U> {
    /// `"{user}:{chat}"`: each user has their own session in each chat (Telegraf's default).
    UserInChat,
    /// `"{chat}"`: one session per chat, shared by its members.
    Chat,
    /// `"{user}"`: one session per user, across chats.
    User,
    /// `"{chat}:{thread}"` in forum topics, `"{chat}"` elsewhere.
    ChatThread,
    /// Your own function; `None` means no session.
    Custom(KeyFn<U>),
}

impl<U> Key<U> {
    /// A key from your own function.
    pub fn custom(f: impl Fn(&U) -> Option<String> + Send + Sync + 'static) -> Self {
        Self::Custom(Arc::new(f))
    }
}

impl<U: Update> Key<U> {
    /// The key of `update`, or `None` when it has no session under this strategy.
    #[must_use]
    pub fn key(&self, update: &U) -> Option<String> {
        if let Self::Custom(f) = self {
            return f(update);
        }
        let mut key = String::with_capacity(24);
        self.write_builtin(update, &mut key)?;
        Some(key)
    }

    /// The key as shared text, built in a reused buffer (the per-update path: one
    /// allocation, the `Arc` itself).
    pub(crate) fn key_arc(&self, update: &U) -> Option<Arc<str>> {
        thread_local! {
            static BUF: RefCell<String> = const { RefCell::new(String::new()) };
        }
        if let Self::Custom(f) = self {
            return f(update).map(Arc::from);
        }
        BUF.with(|buf| match buf.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                self.write_builtin(update, &mut buf)?;
                Some(Arc::from(buf.as_str()))
            }
            Err(_) => self.key(update).map(Arc::from),
        })
    }

    /// Writes a built-in strategy's key; `None` when the update lacks a part it needs.
    fn write_builtin(&self, update: &U, key: &mut String) -> Option<()> {
        match self {
            Self::UserInChat => {
                let (user, chat) = (update.user_id()?, update.chat_id()?);
                push_int(key, user);
                key.push(':');
                push_int(key, chat);
            }
            Self::Chat => push_int(key, update.chat_id()?),
            Self::User => push_int(key, update.user_id()?),
            Self::ChatThread => {
                push_int(key, update.chat_id()?);
                if let Some(t) = update.thread_id() {
                    key.push(':');
                    push_int(key, t);
                }
            }
            Self::Custom(_) => return None,
        }
        Some(())
    }
}

/// Appends the decimal form of `n` (the hot path of every update: no `fmt` machinery).
fn push_int(s: &mut String, n: i64) {
    if n < 0 {
        s.push('-');
    }
    let mut v = n.unsigned_abs();
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        s.push(char::from(b));
    }
}

#[allow(clippy::derivable_impls)] // a derive would demand `U: Default`
impl<U> Default for Key<U> {
    fn default() -> Self {
        Self::UserInChat
    }
}

impl<U> Clone for Key<U> {
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

impl<U> fmt::Debug for Key<U> {
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
            let mut s = String::new();
            super::push_int(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }
}
