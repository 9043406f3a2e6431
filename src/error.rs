//! The crate's one error type.

use std::fmt;

/// A boxed error that can cross threads: how handler and backend errors enter [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in stagecraft.
///
/// `Display` says what failed at this layer; the cause is kept as the
/// [`source`](std::error::Error::source), never flattened into a string.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A session store failed (connection down, query failed, ...).
    #[error("session store `{backend}` failed")]
    Store {
        /// Which backend (`"memory"`, `"sqlite"`, `"redis"`, ...).
        backend: &'static str,
        /// The backend's own error.
        #[source]
        source: BoxError,
    },
    /// A store failed its start-up check ([`store::check`](crate::store::check)): it
    /// cannot be used as configured (unreachable, wrong credentials, read-only, corrupt).
    #[error("session store `{backend}` is not usable: {step} failed")]
    Unusable {
        /// Which backend.
        backend: &'static str,
        /// The step that failed: `"reading a probe record"`, `"writing a probe record"`,
        /// `"reading the probe record back"`, `"deleting the probe record"`, `"taking a
        /// probe lease"` or `"giving back the probe lease"`.
        step: &'static str,
        /// The store's own error (or that it did not answer in time).
        #[source]
        source: BoxError,
    },
    /// A compare-and-set write found that the stored record moved on since it was read.
    #[error("session `{key}` was changed by someone else (compare-and-set conflict)")]
    Conflict {
        /// The session key.
        key: String,
    },
    /// The session could not be encoded.
    #[error("could not encode session `{key}`")]
    Encode {
        /// The session key.
        key: String,
        /// The codec's error.
        #[source]
        source: BoxError,
    },
    /// Stored bytes could not be decoded into the session type (schema change, corruption,
    /// a scene state whose tag is not registered). The stored record is left untouched.
    #[error("could not decode session `{key}`")]
    Decode {
        /// The session key.
        key: String,
        /// The codec's error.
        #[source]
        source: BoxError,
    },
    /// A transition named a scene that is not registered with the stage.
    #[error("scene `{0}` is not registered")]
    UnknownScene(String),
    /// The update has no session (no key could be derived from it), but the handler needed one.
    #[error("this update has no session (no chat or user to derive a key from)")]
    NoSession,
    /// No scene is active, but the operation needs one.
    #[error("no scene is active")]
    NoActiveScene,
    /// The active frame's state is not of the type the handler asked for.
    #[error("scene `{scene}` state is not a `{expected}`")]
    StateType {
        /// The active scene.
        scene: String,
        /// The Rust type that was asked for.
        expected: &'static str,
    },
    /// A child scene's result ([`Cx::take_result`](crate::Cx::take_result)) was read as
    /// another type than the one it left with.
    #[error("the scene's result is a `{found}`, not a `{expected}`")]
    ResultType {
        /// The Rust type that was asked for.
        expected: &'static str,
        /// The Rust type the child scene left with.
        found: &'static str,
    },
    /// A transition is not allowed here (e.g. changing scenes inside a leave hook).
    #[error("transition not allowed: {0}")]
    Transition(&'static str),
    /// Transitions kept triggering each other within one update.
    #[error("more than {0} scene transitions in one update; is there an enter loop?")]
    TransitionLoop(usize),
    /// A user handler failed.
    #[error("handler failed")]
    Handler(#[source] BoxError),
    /// Sending a reply failed.
    #[error("sending a reply failed")]
    Transport(#[source] BoxError),
    /// A reply cannot be made as asked ([`Cx::send`](crate::Cx::send)): the update has
    /// no chat, there is no such message to edit, a button's callback data does not fit
    /// Telegram's 64 bytes. Says which.
    #[error("cannot make this reply: {0}")]
    Reply(String),
    /// An incoming update could not be parsed.
    #[error("could not parse the update")]
    Update(#[source] BoxError),
    /// Too many updates of one key are waiting in this process.
    #[error("too many updates queued for session `{key}`")]
    Overloaded {
        /// The session key.
        key: String,
    },
    /// The session's stored record would be larger than the pipeline's limit
    /// ([`PipelineBuilder::max_session_size`](crate::pipeline::PipelineBuilder::max_session_size)).
    /// Nothing was written (the stored record is as it was before the update) and the
    /// update's held-back replies were dropped.
    #[error(
        "session `{key}` would be stored as {size} bytes, over the limit of {limit} bytes; not stored"
    )]
    SessionTooLarge {
        /// The session key.
        key: String,
        /// The size of the encoded record, in bytes.
        size: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The session was used after its update had been committed (a context kept beyond
    /// its handler, e.g. in a spawned task).
    #[error("this update is finished: its session was already committed")]
    Finished,
    /// The per-key lease stayed held by another process (or another update) for longer
    /// than the pipeline's lease wait limit ([`LeaseConfig::wait`](crate::pipeline::LeaseConfig::wait)).
    /// The update was not handled.
    #[error("session `{key}` stayed leased by another process for {waited:?}; update not handled")]
    LeaseTimeout {
        /// The session key.
        key: String,
        /// How long the update waited.
        waited: std::time::Duration,
    },
    /// The update ran past the pipeline's per-update deadline
    /// ([`PipelineBuilder::deadline`](crate::pipeline::PipelineBuilder::deadline)): its
    /// handler was stopped, the session followed the
    /// [`ErrorPolicy`](crate::session::ErrorPolicy), and its key was released so the next
    /// update of the key runs.
    #[error("the update of session `{}` ran past its deadline of {after:?}", key.as_deref().unwrap_or("-"))]
    Deadline {
        /// The session key, if the update has one.
        key: Option<String>,
        /// The deadline.
        after: std::time::Duration,
    },
    /// The update was not handled: its attempts ran out (every one lost its
    /// compare-and-set to another writer, up to the attempt limit or the deadline).
    /// Nothing of it was written or sent. The update is kept here
    /// ([`take_update`](Self::take_update)), so the caller can retry it or set it aside.
    #[error("update of session `{key}` not handled after {attempts} attempts")]
    NotHandled {
        /// The session key.
        key: String,
        /// How many attempts ran.
        attempts: usize,
        /// The update, for the caller to retry or set aside.
        update: ReturnedUpdate,
        /// Why the last attempt failed.
        #[source]
        source: Box<Error>,
    },
    /// A configuration value was rejected.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A store URL names no store of this build: an unknown scheme, or a store whose
    /// feature is off ([`store::open`](crate::store::open)).
    #[error("unsupported store `{url}`: this build opens {known} (store features add more)")]
    UnknownStore {
        /// The URL, its password hidden ([`redact_url`](crate::store::redact_url)).
        url: String,
        /// The URL forms this build opens, comma-separated.
        known: String,
    },
}

/// An update handed back inside [`Error::NotHandled`]; [`Error::take_update`] takes it
/// out with its type.
pub struct ReturnedUpdate(std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>);

impl ReturnedUpdate {
    pub(crate) fn new<U: Send + 'static>(update: U) -> Self {
        Self(std::sync::Mutex::new(Some(Box::new(update))))
    }
}

impl fmt::Debug for ReturnedUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReturnedUpdate")
    }
}

impl Error {
    /// The error with its session key filled in, where it has an empty one (errors of
    /// record helpers that do not know the key).
    pub(crate) fn with_key(mut self, at: &str) -> Self {
        if let Self::Decode { key, .. } | Self::Encode { key, .. } = &mut self {
            if key.is_empty() {
                at.clone_into(key);
            }
        }
        self
    }

    /// The update of an [`Error::NotHandled`], taken out (once) as the pipeline's update
    /// type `U`: `None` for other errors, a second call, or another type.
    ///
    /// ```
    /// # use stagecraft::Error;
    /// fn set_aside(mut e: Error) {
    ///     if let Some(update) = e.take_update::<stagecraft::prelude::TelegramUpdate>() {
    ///         // queue it again, or write it to a dead-letter file
    ///         # let _ = update;
    ///     }
    /// }
    /// ```
    pub fn take_update<U: 'static>(&mut self) -> Option<U> {
        let Self::NotHandled { update, .. } = self else {
            return None;
        };
        let mut slot = update
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match slot.take()?.downcast::<U>() {
            Ok(u) => Some(*u),
            Err(other) => {
                *slot = Some(other);
                None
            }
        }
    }

    /// Wraps any error as a handler error: `.map_err(Error::handler)?`.
    pub fn handler(e: impl Into<BoxError>) -> Self {
        let e = e.into();
        match e.downcast::<Self>() {
            Ok(ours) => *ours,
            Err(other) => Self::Handler(other),
        }
    }

    /// Wraps a backend error of the store `backend`.
    pub fn store(backend: &'static str, e: impl Into<BoxError>) -> Self {
        Self::Store {
            backend,
            source: e.into(),
        }
    }

    /// Is this a compare-and-set conflict (another writer moved the record on)?
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        match self {
            Self::Conflict { .. } => true,
            Self::NotHandled { source, .. } => source.is_conflict(),
            _ => false,
        }
    }

    /// Is this a store failure (the backend is down or failed a query)?
    #[must_use]
    pub fn is_store(&self) -> bool {
        matches!(self, Self::Store { .. })
    }
}

impl From<BoxError> for Error {
    fn from(e: BoxError) -> Self {
        Self::handler(e)
    }
}

/// A plain message as an error source, for places that have no richer cause.
#[derive(Debug)]
pub(crate) struct Message(pub(crate) String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

/// An error and its sources on one line: `a: b: c`. A source whose text the line
/// already ends with (an error that prints its cause itself) is not repeated.
///
/// ```
/// let e = stagecraft::Error::Handler("disk full".into());
/// assert_eq!(stagecraft::error::error_chain(&e), "handler failed: disk full");
/// ```
#[must_use]
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !text.is_empty() && !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
