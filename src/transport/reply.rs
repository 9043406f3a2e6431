//! Rich replies: parse modes, keyboards, media, edits and callback answers ([`Reply`]),
//! and the step tag of callback buttons.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::Outgoing;
use crate::error::{Error, Result};

/// The most bytes of callback data Telegram accepts on a button.
pub(crate) const MAX_CALLBACK_DATA: usize = 64;

/// The bytes of the step tag before a bound button's payload: `~`, six hex digits, `:`.
pub(crate) const TAG_LEN: usize = 8;

/// How Telegram reads the markup of a text or caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ParseMode {
    /// `HTML`.
    #[serde(rename = "HTML")]
    Html,
    /// `MarkdownV2`.
    #[serde(rename = "MarkdownV2")]
    MarkdownV2,
    /// `Markdown` (Telegram's legacy flavour).
    #[serde(rename = "Markdown")]
    Markdown,
}

/// A keyboard sent with a message: inline buttons under it, a reply keyboard in place of
/// the user's keyboard, or the removal of the reply keyboard. Serialised as the Bot
/// API's `reply_markup` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum ReplyMarkup {
    /// `{"inline_keyboard": [[button, ...], ...]}`.
    Inline(InlineKeyboard),
    /// `{"keyboard": [[{"text": ...}, ...], ...]}`.
    Keyboard(ReplyKeyboard),
    /// `{"remove_keyboard": true}`.
    Remove(RemoveKeyboard),
}

impl ReplyMarkup {
    /// An inline keyboard of `rows` of buttons.
    pub fn inline<R, B>(rows: R) -> Self
    where
        R: IntoIterator<Item = B>,
        B: IntoIterator<Item = Button>,
    {
        Self::Inline(InlineKeyboard {
            inline_keyboard: rows.into_iter().map(|r| r.into_iter().collect()).collect(),
        })
    }

    /// A reply keyboard of `rows` of button texts, fitted to its buttons
    /// (`resize_keyboard`).
    pub fn keyboard<R, B, T>(rows: R) -> Self
    where
        R: IntoIterator<Item = B>,
        B: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self::Keyboard(ReplyKeyboard {
            keyboard: rows
                .into_iter()
                .map(|r| {
                    r.into_iter()
                        .map(|t| KeyboardButton { text: t.into() })
                        .collect()
                })
                .collect(),
            resize_keyboard: true,
            one_time_keyboard: false,
        })
    }

    /// Removes the reply keyboard.
    #[must_use]
    pub fn remove() -> Self {
        Self::Remove(RemoveKeyboard {
            remove_keyboard: true,
        })
    }

    /// The inline buttons, row by row (empty for other keyboards).
    #[must_use]
    pub fn buttons(&self) -> Vec<&Button> {
        match self {
            Self::Inline(k) => k.inline_keyboard.iter().flatten().collect(),
            _ => Vec::new(),
        }
    }
}

/// An inline keyboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InlineKeyboard {
    /// Rows of buttons.
    pub inline_keyboard: Vec<Vec<Button>>,
}

/// A button of an inline keyboard: a callback button ([`Button::callback`]) or a link
/// ([`Button::url`]).
///
/// A callback button made here is **bound to its step**: when the reply is committed,
/// stagecraft puts a short tag of the active frame and step before its data
/// (`~` + 6 hex digits + `:`, 8 bytes), and a press whose tag does not match the step
/// the user is at is answered and goes no further (see `docs/replies.md`). Handlers see
/// the data without the tag ([`Update::callback_payload`](crate::update::Update::callback_payload)).
/// [`unbound`](Self::unbound) opts a button out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Button {
    /// The label (a `&'static str` label is kept without a copy).
    pub text: Cow<'static, str>,
    /// The data sent back when pressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_data: Option<String>,
    /// The link it opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Still to be tagged with its step (cleared once tagged).
    #[serde(skip)]
    pub(crate) bound: bool,
}

impl Button {
    /// A callback button sending `data` back when pressed, bound to the step that
    /// sends it. `data` may take up to 56 bytes (64 minus the tag), checked by
    /// [`Cx::send`](crate::Cx::send).
    pub fn callback(text: impl Into<Cow<'static, str>>, data: impl AsRef<str>) -> Self {
        // Room for the tag from the start: tagging then moves the bytes, no new buffer.
        let data = data.as_ref();
        let mut tagged = String::with_capacity(TAG_LEN + data.len());
        tagged.push_str(data);
        Self {
            text: text.into(),
            callback_data: Some(tagged),
            url: None,
            bound: true,
        }
    }

    /// A button opening `url`.
    pub fn url(text: impl Into<Cow<'static, str>>, url: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            callback_data: None,
            url: Some(url.into()),
            bound: false,
        }
    }

    /// Sends its data exactly as given, without the step tag: every press reaches the
    /// handlers, whatever step the user is at (up to 64 bytes).
    #[must_use]
    pub fn unbound(mut self) -> Self {
        self.bound = false;
        self
    }

    /// The data of a callback button without its step tag.
    #[must_use]
    pub fn payload(&self) -> Option<&str> {
        self.callback_data.as_deref().map(callback_payload)
    }
}

/// A reply keyboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplyKeyboard {
    /// Rows of buttons.
    pub keyboard: Vec<Vec<KeyboardButton>>,
    /// Fit the keyboard to its buttons.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resize_keyboard: bool,
    /// Hide the keyboard once a button was pressed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_time_keyboard: bool,
}

/// A button of a reply keyboard: pressing it sends its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyboardButton {
    /// The text sent.
    pub text: String,
}

/// The removal of the reply keyboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RemoveKeyboard {
    /// Always `true`.
    pub remove_keyboard: bool,
}

/// The step tag and the payload of callback data made by [`Button::callback`]:
/// `Some(("1a2b3c", "yes"))` for `"~1a2b3c:yes"`, `None` for data without a tag.
///
/// ```
/// use stagecraft::transport::split_callback_tag;
///
/// assert_eq!(split_callback_tag("~1a2b3c:yes"), Some(("1a2b3c", "yes")));
/// assert_eq!(split_callback_tag("yes"), None);
/// assert_eq!(split_callback_tag("~xyz:yes"), None);
/// ```
#[must_use]
pub fn split_callback_tag(data: &str) -> Option<(&str, &str)> {
    let b = data.as_bytes();
    if b.len() < TAG_LEN || b[0] != b'~' || b[TAG_LEN - 1] != b':' {
        return None;
    }
    let tag = &b[1..TAG_LEN - 1];
    if !tag
        .iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    {
        return None;
    }
    // ASCII up to here: both splits fall on character boundaries.
    Some((&data[1..TAG_LEN - 1], &data[TAG_LEN..]))
}

/// Callback data without its step tag (data without a tag as it is).
#[must_use]
pub fn callback_payload(data: &str) -> &str {
    split_callback_tag(data).map_or(data, |(_, payload)| payload)
}

/// Tags the bound buttons of `markup` with `tag` (six hex digits).
pub(crate) fn bind_markup(markup: &mut ReplyMarkup, tag: [u8; TAG_LEN - 2]) {
    let ReplyMarkup::Inline(k) = markup else {
        return;
    };
    for b in k.inline_keyboard.iter_mut().flatten() {
        if !b.bound {
            continue;
        }
        b.bound = false;
        if let Some(data) = &mut b.callback_data {
            let mut head = [0u8; TAG_LEN];
            head[0] = b'~';
            head[1..TAG_LEN - 1].copy_from_slice(&tag);
            head[TAG_LEN - 1] = b':';
            // ASCII only: a valid string.
            data.insert_str(0, std::str::from_utf8(&head).unwrap_or_default());
        }
    }
}

/// The message a [`Reply`] edits or deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageRef {
    /// The message with this id, in the update's chat.
    Id(i64),
    /// The message whose button was pressed (the update is a callback query).
    Callback,
    /// The message sent earlier by a reply made with [`Reply::remember`] under this
    /// name (see [`Cx::sent_message`](crate::Cx::sent_message)).
    Sent(String),
}

impl From<i64> for MessageRef {
    fn from(id: i64) -> Self {
        Self::Id(id)
    }
}

impl From<&str> for MessageRef {
    fn from(name: &str) -> Self {
        Self::Sent(name.to_owned())
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Text(String),
    Photo(String),
    Document(String),
    EditText(MessageRef, String),
    EditMarkup(MessageRef),
    Delete(MessageRef),
    Answer(Option<String>),
}

/// A reply of any kind, held back like [`Cx::reply`](crate::Cx::reply) and queued with
/// [`Cx::send`](crate::Cx::send).
///
/// ```
/// use stagecraft::prelude::*;
/// use stagecraft::transport::{Button, ParseMode, Reply};
/// use stagecraft::testing::TestBot;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let bot = TestBot::<()>::new(|b| b
///     .on_text(|cx: Cx<()>| async move {
///         cx.send(Reply::text("<b>Sure?</b>")
///             .parse_mode(ParseMode::Html)
///             .inline_keyboard([[Button::callback("Yes", "yes"), Button::callback("No", "no")]]))?;
///         Ok(Outcome::Handled)
///     })
///     .build());
/// bot.send("hi").await.unwrap();
/// let sent = bot.last_call().unwrap();
/// assert_eq!(sent.method(), "sendMessage");
/// let buttons = sent.reply_markup().unwrap().buttons();
/// assert_eq!(buttons[0].payload(), Some("yes"));
/// # });
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Reply {
    kind: Kind,
    caption: Option<String>,
    parse_mode: Option<ParseMode>,
    markup: Option<ReplyMarkup>,
    remember: Option<String>,
    alert: bool,
}

impl Reply {
    fn of(kind: Kind) -> Self {
        Self {
            kind,
            caption: None,
            parse_mode: None,
            markup: None,
            remember: None,
            alert: false,
        }
    }

    /// A text message to the update's chat (`sendMessage`).
    pub fn text(text: impl Into<String>) -> Self {
        Self::of(Kind::Text(text.into()))
    }

    /// A photo (`sendPhoto`), by `file_id` or HTTP URL.
    pub fn photo(file: impl Into<String>) -> Self {
        Self::of(Kind::Photo(file.into()))
    }

    /// A document (`sendDocument`), by `file_id` or HTTP URL.
    pub fn document(file: impl Into<String>) -> Self {
        Self::of(Kind::Document(file.into()))
    }

    /// Replaces the text of a message the bot sent (`editMessageText`); an inline
    /// keyboard given with it replaces the message's.
    pub fn edit_text(message: impl Into<MessageRef>, text: impl Into<String>) -> Self {
        Self::of(Kind::EditText(message.into(), text.into()))
    }

    /// Replaces the inline keyboard of a message the bot sent
    /// (`editMessageReplyMarkup`): the one given with
    /// [`inline_keyboard`](Self::inline_keyboard), or none.
    pub fn edit_markup(message: impl Into<MessageRef>) -> Self {
        Self::of(Kind::EditMarkup(message.into()))
    }

    /// Deletes a message (`deleteMessage`).
    pub fn delete(message: impl Into<MessageRef>) -> Self {
        Self::of(Kind::Delete(message.into()))
    }

    /// Answers the update's callback query (`answerCallbackQuery`), with an optional
    /// notice; [`alert`](Self::alert) shows it as an alert.
    pub fn answer_callback(notice: Option<String>) -> Self {
        Self::of(Kind::Answer(notice))
    }

    /// The caption of a photo or document.
    pub fn caption(mut self, caption: impl Into<String>) -> Self {
        self.caption = Some(caption.into());
        self
    }

    /// How Telegram reads the text's (or caption's) markup.
    pub fn parse_mode(mut self, mode: ParseMode) -> Self {
        self.parse_mode = Some(mode);
        self
    }

    /// An inline keyboard of `rows` of buttons.
    pub fn inline_keyboard<R, B>(self, rows: R) -> Self
    where
        R: IntoIterator<Item = B>,
        B: IntoIterator<Item = Button>,
    {
        self.markup(ReplyMarkup::inline(rows))
    }

    /// A reply keyboard of `rows` of button texts.
    pub fn reply_keyboard<R, B, T>(self, rows: R) -> Self
    where
        R: IntoIterator<Item = B>,
        B: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.markup(ReplyMarkup::keyboard(rows))
    }

    /// Removes the reply keyboard.
    pub fn remove_keyboard(self) -> Self {
        self.markup(ReplyMarkup::remove())
    }

    /// Any keyboard.
    pub fn markup(mut self, markup: ReplyMarkup) -> Self {
        self.markup = Some(markup);
        self
    }

    /// Keeps the id of the sent message in the session under `name`, once it is
    /// delivered, for a later step to edit or delete it ([`MessageRef::Sent`],
    /// [`Cx::sent_message`](crate::Cx::sent_message)). For messages sent (text, photo,
    /// document); ignored on other calls.
    pub fn remember(mut self, name: impl Into<String>) -> Self {
        self.remember = Some(name.into());
        self
    }

    /// Shows a callback answer's notice as an alert.
    pub fn alert(mut self) -> Self {
        self.alert = true;
        self
    }

    /// The call this reply makes in the context `at`.
    pub(crate) fn resolve(self, at: &Resolve<'_>) -> Result<Outgoing> {
        if let Some(markup) = &self.markup {
            check_markup(markup)?;
        }
        let chat = || at.chat_id.ok_or_else(|| refuse("the update has no chat"));
        let message = |m: MessageRef| {
            match m {
            MessageRef::Id(id) => Ok(id),
            MessageRef::Callback => at.callback_message.ok_or_else(|| {
                refuse("the update is not a press of a button on a message")
            }),
            MessageRef::Sent(name) => (at.sent)(&name).ok_or_else(|| {
                Error::Reply(format!(
                    "no message is known as `{name}` (not sent with remember, or its delivery is not confirmed yet)"
                ))
            }),
        }
        };
        if self.caption.is_some() && !matches!(self.kind, Kind::Photo(_) | Kind::Document(_)) {
            return Err(refuse("a caption goes with a photo or a document"));
        }
        if self.markup.is_some() && matches!(self.kind, Kind::Delete(_) | Kind::Answer(_)) {
            return Err(refuse(
                "a deletion or a callback answer carries no keyboard",
            ));
        }
        let inline_only = |m: &Option<ReplyMarkup>| match m {
            None | Some(ReplyMarkup::Inline(_)) => Ok(()),
            Some(_) => Err(refuse(
                "an edited message can only carry an inline keyboard",
            )),
        };
        Ok(match self.kind {
            Kind::Text(text) => Outgoing::Text {
                chat_id: chat()?,
                thread_id: at.thread_id,
                text,
                parse_mode: self.parse_mode,
                reply_markup: self.markup,
                remember: self.remember,
            },
            Kind::Photo(photo) => Outgoing::Photo {
                chat_id: chat()?,
                thread_id: at.thread_id,
                photo,
                caption: self.caption,
                parse_mode: self.parse_mode,
                reply_markup: self.markup,
                remember: self.remember,
            },
            Kind::Document(document) => Outgoing::Document {
                chat_id: chat()?,
                thread_id: at.thread_id,
                document,
                caption: self.caption,
                parse_mode: self.parse_mode,
                reply_markup: self.markup,
                remember: self.remember,
            },
            Kind::EditText(m, text) => {
                inline_only(&self.markup)?;
                Outgoing::EditText {
                    chat_id: chat()?,
                    message_id: message(m)?,
                    text,
                    parse_mode: self.parse_mode,
                    reply_markup: self.markup,
                }
            }
            Kind::EditMarkup(m) => {
                inline_only(&self.markup)?;
                Outgoing::EditMarkup {
                    chat_id: chat()?,
                    message_id: message(m)?,
                    reply_markup: self.markup,
                }
            }
            Kind::Delete(m) => Outgoing::Delete {
                chat_id: chat()?,
                message_id: message(m)?,
            },
            Kind::Answer(text) => Outgoing::AnswerCallback {
                id: at
                    .callback_id
                    .ok_or_else(|| refuse("the update is not a callback query"))?
                    .to_owned(),
                text,
                show_alert: self.alert,
            },
        })
    }
}

/// What a [`Reply`] is resolved against: the update's chat, topic and callback, and the
/// messages the session remembers.
pub(crate) struct Resolve<'a> {
    pub(crate) chat_id: Option<i64>,
    pub(crate) thread_id: Option<i64>,
    pub(crate) callback_id: Option<&'a str>,
    pub(crate) callback_message: Option<i64>,
    pub(crate) sent: &'a dyn Fn(&str) -> Option<i64>,
}

fn refuse(why: &str) -> Error {
    Error::Reply(why.to_owned())
}

/// Every callback button's data fits Telegram's 64 bytes (with the tag, when bound).
fn check_markup(markup: &ReplyMarkup) -> Result<()> {
    let ReplyMarkup::Inline(k) = markup else {
        return Ok(());
    };
    for b in k.inline_keyboard.iter().flatten() {
        match (&b.callback_data, &b.url) {
            (Some(data), _) => {
                let room = if b.bound {
                    MAX_CALLBACK_DATA - TAG_LEN
                } else {
                    MAX_CALLBACK_DATA
                };
                if data.len() > room || (data.is_empty() && !b.bound) {
                    return Err(Error::Reply(format!(
                        "the callback data of button `{}` is {} bytes; {} fit{} (Telegram takes 1 to {MAX_CALLBACK_DATA})",
                        b.text,
                        data.len(),
                        room,
                        if b.bound { " beside the step tag" } else { "" },
                    )));
                }
            }
            (None, None) => {
                return Err(Error::Reply(format!(
                    "button `{}` has neither callback data nor a URL",
                    b.text
                )));
            }
            (None, Some(_)) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at<'a>(sent: &'a dyn Fn(&str) -> Option<i64>) -> Resolve<'a> {
        Resolve {
            chat_id: Some(5),
            thread_id: None,
            callback_id: Some("q"),
            callback_message: Some(9),
            sent,
        }
    }

    #[test]
    fn markup_serialises_as_the_bot_api_reads_it() {
        let m = ReplyMarkup::inline([[
            Button::callback("Yes", "yes"),
            Button::url("Go", "https://e.x"),
        ]]);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"inline_keyboard":[[{"text":"Yes","callback_data":"yes"},{"text":"Go","url":"https://e.x"}]]}"#
        );
        let k = ReplyMarkup::keyboard([["a", "b"]]);
        assert_eq!(
            serde_json::to_string(&k).unwrap(),
            r#"{"keyboard":[[{"text":"a"},{"text":"b"}]],"resize_keyboard":true}"#
        );
        assert_eq!(
            serde_json::to_string(&ReplyMarkup::remove()).unwrap(),
            r#"{"remove_keyboard":true}"#
        );
        for m in [m, k, ReplyMarkup::remove()] {
            let back: ReplyMarkup =
                serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            // The binding mark is not serialised: compare the Bot API form.
            assert_eq!(
                serde_json::to_value(&back).unwrap(),
                serde_json::to_value(&m).unwrap()
            );
        }
    }

    #[test]
    fn bound_buttons_get_the_tag_once_and_unbound_ones_never() {
        let mut m = ReplyMarkup::inline([[
            Button::callback("Yes", "yes"),
            Button::callback("Raw", "raw").unbound(),
        ]]);
        bind_markup(&mut m, *b"00ff10");
        bind_markup(&mut m, *b"abcdef");
        let data: Vec<_> = m
            .buttons()
            .iter()
            .map(|b| b.callback_data.clone().unwrap())
            .collect();
        assert_eq!(data, ["~00ff10:yes", "raw"]);
        assert_eq!(m.buttons()[0].payload(), Some("yes"));
        assert_eq!(split_callback_tag("~00ff10:"), Some(("00ff10", "")));
        assert_eq!(split_callback_tag("~00FF10:x"), None, "lower-case hex only");
        assert_eq!(split_callback_tag("~00ff1"), None);
        assert_eq!(callback_payload("~é0ff10:x"), "~é0ff10:x");
    }

    #[test]
    fn callback_data_that_does_not_fit_is_refused_clearly() {
        let none = |_: &str| None;
        let fits = "x".repeat(56);
        let ok = Reply::text("t").inline_keyboard([[Button::callback("A", fits.clone())]]);
        assert!(ok.resolve(&at(&none)).is_ok());
        let long = Reply::text("t").inline_keyboard([[Button::callback("A", format!("{fits}y"))]]);
        let e = long.resolve(&at(&none)).unwrap_err().to_string();
        assert!(
            e.contains("button `A` is 57 bytes; 56 fit beside the step tag"),
            "{e}"
        );
        let raw =
            Reply::text("t").inline_keyboard([[Button::callback("B", "z".repeat(64)).unbound()]]);
        assert!(raw.resolve(&at(&none)).is_ok());
        let raw =
            Reply::text("t").inline_keyboard([[Button::callback("B", "z".repeat(65)).unbound()]]);
        assert!(matches!(raw.resolve(&at(&none)), Err(Error::Reply(_))));
        let empty = Reply::text("t").inline_keyboard([[Button::callback("E", "").unbound()]]);
        assert!(matches!(empty.resolve(&at(&none)), Err(Error::Reply(_))));
    }

    #[test]
    fn targets_resolve_or_are_refused() {
        let sent = |n: &str| (n == "q").then_some(42);
        let o = Reply::edit_text(MessageRef::Callback, "new")
            .resolve(&at(&sent))
            .unwrap();
        assert_eq!(
            o.to_json_line(),
            r#"{"method":"editMessageText","chat_id":5,"message_id":9,"text":"new"}"#
        );
        let o = Reply::delete("q").resolve(&at(&sent)).unwrap();
        assert_eq!(
            o.to_json_line(),
            r#"{"method":"deleteMessage","chat_id":5,"message_id":42}"#
        );
        let e = Reply::edit_markup("other").resolve(&at(&sent)).unwrap_err();
        assert!(
            e.to_string().contains("no message is known as `other`"),
            "{e}"
        );
        let e = Reply::edit_text(7, "x")
            .reply_keyboard([["a"]])
            .resolve(&at(&sent))
            .unwrap_err();
        assert!(
            e.to_string().contains("only carry an inline keyboard"),
            "{e}"
        );
        let e = Reply::text("t")
            .caption("c")
            .resolve(&at(&sent))
            .unwrap_err();
        assert!(e.to_string().contains("a caption goes with a photo"), "{e}");
        let e = Reply::delete(3)
            .remove_keyboard()
            .resolve(&at(&sent))
            .unwrap_err();
        assert!(e.to_string().contains("carries no keyboard"), "{e}");
        let o = Reply::answer_callback(Some("Done".into()))
            .alert()
            .resolve(&at(&sent))
            .unwrap();
        assert_eq!(
            o.to_json_line(),
            r#"{"method":"answerCallbackQuery","callback_query_id":"q","text":"Done","show_alert":true}"#
        );
        let o = Reply::photo("AgAD")
            .caption("<i>c</i>")
            .parse_mode(ParseMode::Html)
            .remember("pic")
            .resolve(&at(&sent))
            .unwrap();
        assert_eq!(o.remember(), Some("pic"));
        assert_eq!(
            o.to_json_line(),
            r#"{"method":"sendPhoto","chat_id":5,"photo":"AgAD","caption":"<i>c</i>","parse_mode":"HTML"}"#
        );
        // The outbox keeps the name.
        let stored = serde_json::to_string(&o).unwrap();
        assert!(stored.ends_with(r#""remember":"pic"}"#), "{stored}");
        assert_eq!(serde_json::from_str::<Outgoing>(&stored).unwrap(), o);
    }
}
