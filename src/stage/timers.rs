//! Durable timeouts and expiry hooks: arming the active frame's timer after each
//! update, and firing it as an event of the session when it falls due.
//!
//! The timer is part of the frame ([`Frame::timer`]), so it is stored with the session
//! and written in the same compare-and-set as the step that armed it; the pipeline puts
//! the record in the store's index of due work at the timer's time. Only the top frame
//! is ever armed: a scene waiting beneath a sub-scene is not waiting for the user.

use std::sync::Arc;

use super::Stage;
use crate::context::Cx;
use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::outcome::Outcome;
use crate::record::{Frame, SessionData, Timer};
use crate::scene::Scene;
use crate::update::Update;

impl<S: SessionData, U: Update> Stage<S, U> {
    /// Whether any scene declares a timeout or an expiry hook.
    pub(crate) fn has_timers(&self) -> bool {
        self.inner.timers
    }

    /// When `frame`, active from `now`, falls due: its timeout (from now) or, for a
    /// scene with expiry hooks, the second after its TTL runs out, whichever is first.
    fn due_of(&self, frame: &Frame, now: i64, timeout: bool) -> Option<i64> {
        let scene = self.inner.scenes.get(&frame.scene)?;
        let timeout = timeout
            .then(|| scene.timeout_at(frame.cursor))
            .flatten()
            .map(|t| now.saturating_add(i64::from(t.secs)));
        let expiry = scene
            .hooks_expiry()
            .then_some(frame.expires)
            .flatten()
            .map(|e| e.saturating_add(1));
        match (timeout, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Arms the top frame's timer from now (the user was just heard from) and disarms
    /// every other frame's; changes the session only when a timer changes.
    pub(crate) fn arm(&self, cx: &Cx<S, U>) -> Result<()> {
        self.set_timers(cx, true)
    }

    /// As [`arm`](Self::arm), `timeout`: whether the top frame's timeout counts (not
    /// after it fired at the same place: it fires once per silence).
    fn set_timers(&self, cx: &Cx<S, U>, timeout: bool) -> Result<()> {
        if !self.inner.timers {
            return Ok(());
        }
        let now = cx.now_s();
        let u = cx.update();
        let (chat, thread, user) = (u.chat_id(), u.thread_id(), u.user_id());
        let mut st = cx.state();
        if !st.is_loaded() {
            return Ok(());
        }
        let stack = st.stack();
        let top = stack.len().checked_sub(1);
        let want = stack
            .last()
            .and_then(|f| self.due_of(f, now, timeout))
            .map(|at| Timer::new(at, chat, thread, user));
        let same = stack.iter().enumerate().all(|(i, f)| {
            if Some(i) == top {
                f.timer == want
            } else {
                f.timer.is_none()
            }
        });
        if same {
            return Ok(());
        }
        for (i, f) in st.stack_mut()?.iter_mut().enumerate() {
            f.timer = if Some(i) == top { want } else { None };
        }
        Ok(())
    }

    /// Runs the expiry of the top frames whose TTL ran out and whose scene has expiry
    /// hooks: its `on_expire` hooks, its leave hooks when it asks for them, then drops
    /// it (the next one may have run out too). Frames without hooks are left to the
    /// silent expiry of [`settle`](Self::settle).
    pub(crate) async fn expire_with_hooks(&self, cx: &Cx<S, U>) -> Result<()> {
        if !self.inner.timers {
            return Ok(());
        }
        loop {
            let now = cx.now_s();
            let scene = {
                let st = cx.state();
                match st.stack().last() {
                    Some(top) if top.is_expired(now) && self.is_resumable(top) => {
                        self.inner.scenes.get(&top.scene).cloned()
                    }
                    _ => None,
                }
            };
            let Some(scene) = scene.filter(|s| s.hooks_expiry()) else {
                return Ok(());
            };
            self.expire_top(cx, &scene).await?;
        }
    }

    /// Runs `scene`'s expiry hooks for the top frame, then drops it.
    async fn expire_top(&self, cx: &Cx<S, U>, scene: &Scene<S, U>) -> Result<()> {
        tracing::info!(target: "stagecraft::stage", event = "expire", key = ?cx.key(),
            scene = %scene.id, hooks = true, "scene expired");
        crate::observe::expiry(&scene.id);
        for hook in &scene.on_expire {
            hook.call(cx.clone()).await.map_err(Error::handler)?;
        }
        if scene.leave_on_expire {
            self.run_leave_hooks(scene, cx).await?;
        }
        cx.state().stack_mut()?.pop();
        Ok(())
    }

    /// The handler of a timer event (see [`Pipeline::wake_due`](crate::Pipeline::wake_due)).
    pub(crate) fn timer_event(&self) -> Arc<dyn Handler<S, U>> {
        let stage = self.clone();
        Arc::new(move |cx: Cx<S, U>| {
            let stage = stage.clone();
            async move {
                // `Pass`: nothing was due any more (another replica fired it first).
                Ok(if stage.fire(&cx).await? {
                    Outcome::Handled
                } else {
                    Outcome::Pass
                })
            }
        })
    }

    /// Fires the top frame's timer if it is due: the scene's expiry (hooks, then the
    /// frame is dropped) when its TTL ran out, else its timeout hook, once, whose
    /// transition applies. A timer that is not due is left alone; one whose scene no
    /// longer declares anything is disarmed. Returns whether a hook ran.
    async fn fire(&self, cx: &Cx<S, U>) -> Result<bool> {
        cx.ensure_loaded().await?;
        let now = cx.now_s();
        let place = |cx: &Cx<S, U>| {
            let st = cx.state();
            st.stack()
                .last()
                .map(|f| (f.scene.clone(), f.cursor, f.entered_at, f.expires, f.timer))
        };
        let Some((id, cursor, entered, expires, timer)) = place(cx) else {
            return Ok(false);
        };
        if timer.is_none_or(|t| t.at > now) {
            return Ok(false);
        }
        let Some(scene) = self.inner.scenes.get(&id).cloned() else {
            // Unregistered (a deploy removed it): the next update recovers it.
            self.set_timers(cx, false)?;
            return Ok(false);
        };
        if scene.hooks_expiry() && expires.is_some_and(|e| e < now) {
            self.expire_with_hooks(cx).await?;
            self.arm(cx)?;
            return Ok(true);
        }
        let Some(timeout) = scene.timeout_at(cursor).cloned() else {
            self.set_timers(cx, false)?;
            return Ok(false);
        };
        let span = tracing::Span::current();
        span.record("scene", id.as_str());
        if let Some(c) = cursor {
            span.record("step", c);
        }
        tracing::info!(target: "stagecraft::stage", event = "timeout", key = ?cx.key(),
            scene = %id, step = ?cursor, "no update in time; running the timeout hook");
        crate::observe::timeout(&id);
        let o = timeout
            .hook
            .call(cx.clone())
            .await
            .map_err(Error::handler)?;
        self.apply_outcome(cx.clone(), o).await?;
        let moved = place(cx).is_none_or(|(s, c, e, ..)| (s, c, e) != (id, cursor, entered));
        // Once per silence at the same place; a new place starts its own.
        self.set_timers(cx, moved)?;
        Ok(true)
    }
}
