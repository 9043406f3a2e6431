//! The stage as a Mermaid flowchart ([`Stage::to_mermaid`]).

use std::fmt::Write as _;

use super::Stage;
use crate::handler::Matcher;
use crate::scene::{Declared, Scene};

impl<S, U> Stage<S, U> {
    /// The conversation flow as a [Mermaid](https://mermaid.js.org) flowchart: each
    /// scene a box (wizards with their steps in order, `next` between them), its enter
    /// and leave hooks, its TTL, the transitions it declares
    /// ([`goes_to`](crate::scene::SceneBuilder::goes_to)) and the sub-scenes it calls
    /// ([`calls`](crate::scene::SceneBuilder::calls), with the return drawn dashed), and
    /// the scenes entered from outside any scene ([`entry`](super::StageBuilder::entry), the
    /// default scene). GitHub renders it in a ` ```mermaid ` block.
    ///
    /// The handlers are closures, so what they do is not visible: the diagram shows what
    /// the scenes declare. Scenes are drawn sorted by id, so the text is stable.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// let stage: Stage<(), TelegramUpdate> = Stage::builder()
    ///     .entry("signup")
    ///     .scene(Wizard::builder("signup")
    ///         .on_leave(|_cx: Cx<()>| async move { Ok(()) })
    ///         .step(|_cx: Cx<()>| async move { Ok(Outcome::Next) })
    ///         .step(|_cx: Cx<()>| async move { Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let chart = stage.to_mermaid();
    /// assert!(chart.starts_with("flowchart TD\n"));
    /// assert!(chart.contains(r#"s0_step0["step 0"] -->|next| s0_step1["step 1"]"#));
    /// assert!(chart.contains("outside -->|enter| s0"));
    /// ```
    #[must_use]
    pub fn to_mermaid(&self) -> String {
        let inner = &self.inner;
        let mut scenes: Vec<&Scene<S, U>> = inner.scenes.values().map(AsRef::as_ref).collect();
        scenes.sort_by(|a, b| a.id.cmp(&b.id));
        let node = |id: &str| {
            scenes
                .iter()
                .position(|s| s.id == id)
                .map(|i| format!("s{i}"))
        };
        let mut out = String::from("flowchart TD\n");
        let target = |id: &str, missing: &mut Vec<String>| -> String {
            node(id).unwrap_or_else(|| {
                let at = missing.iter().position(|m| m == id).unwrap_or_else(|| {
                    missing.push(id.to_owned());
                    missing.len() - 1
                });
                format!("missing{at}")
            })
        };
        let mut unknown: Vec<String> = Vec::new();
        let _ = writeln!(out, "    outside((\"outside any scene\"))");
        for (i, scene) in scenes.iter().enumerate() {
            write_scene(&mut out, &format!("s{i}"), scene);
        }
        let mut edges = String::new();
        if let Some(d) = &inner.default_scene {
            let t = target(d, &mut unknown);
            let _ = writeln!(edges, "    outside -->|default| {t}");
        }
        for e in &inner.entries {
            let t = target(e, &mut unknown);
            let _ = writeln!(edges, "    outside -->|enter| {t}");
        }
        for (i, scene) in scenes.iter().enumerate() {
            for (kind, to) in &scene.declared {
                let t = target(to, &mut unknown);
                match kind {
                    Declared::GoesTo => {
                        let _ = writeln!(edges, "    s{i} -->|enter| {t}");
                    }
                    Declared::Calls => {
                        let _ = writeln!(edges, "    s{i} -->|calls| {t}");
                        let _ = writeln!(edges, "    {t} -.->|returns| s{i}");
                    }
                }
            }
        }
        for (i, id) in unknown.iter().enumerate() {
            let _ = writeln!(out, "    missing{i}[\"{} (not registered)\"]", label(id));
        }
        out.push_str(&edges);
        out
    }
}

/// One scene as a subgraph `n`: its hooks, steps (or routes) and TTL.
fn write_scene<S, U>(out: &mut String, n: &str, scene: &Scene<S, U>) {
    let mut title = label(&scene.id);
    if scene.is_wizard() {
        title.push_str(" (wizard)");
    }
    if let Some(ttl) = scene.ttl {
        let _ = write!(title, ", ttl {ttl} s");
    }
    if let Some(idle) = scene.idle_ttl {
        let _ = write!(title, ", idle ttl {idle} s");
    }
    let _ = writeln!(out, "    subgraph {n}[\"{title}\"]");
    let _ = writeln!(out, "        direction TB");
    // The nodes in order, each with whether it is a wizard step.
    let mut chain: Vec<(String, bool)> = Vec::new();
    if !scene.on_enter.is_empty() {
        chain.push((format!("{n}_enter([\"on enter\"])"), false));
    }
    let routes = scene.routes.list.len();
    match &scene.steps {
        Some(steps) => {
            for i in 0..steps.len() {
                chain.push((format!("{n}_step{i}[\"step {i}\"]"), true));
            }
            if steps.is_empty() {
                chain.push((format!("{n}_steps[\"no steps\"]"), false));
            }
        }
        None => chain.push((format!("{n}_routes[\"{}\"]", describe(scene)), false)),
    }
    if !scene.on_leave.is_empty() {
        chain.push((format!("{n}_leave([\"on leave\"])"), false));
    }
    if scene.on_resume.is_some() {
        let _ = writeln!(out, "        {n}_resume([\"on resume\"])");
    }
    let mut line = String::new();
    for (i, (link, is_step)) in chain.iter().enumerate() {
        if i > 0 {
            let step_to_step = *is_step && chain[i - 1].1;
            line.push_str(if step_to_step { " -->|next| " } else { " --> " });
        }
        line.push_str(link);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "        {line}");
    }
    if scene.is_wizard() && routes > 0 {
        let _ = writeln!(
            out,
            "        {n}_routes[\"before each step: {}\"]",
            describe(scene)
        );
    }
    let _ = writeln!(out, "    end");
}

/// Text safe inside a quoted Mermaid label.
fn label(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// What a scene's routes match, in order: `/cancel, any text`.
fn describe<S, U>(scene: &Scene<S, U>) -> String {
    if scene.routes.list.is_empty() {
        return "no handlers".to_owned();
    }
    let parts: Vec<String> = scene
        .routes
        .list
        .iter()
        .map(|(m, _)| match m {
            Matcher::Command(c) => format!("/{c}"),
            Matcher::Text(t) => format!("text {t:?}"),
            Matcher::Pattern(r) => format!("text ~ {}", r.as_str()),
            Matcher::AnyText => "any text".to_owned(),
            Matcher::Callback(d) => format!("button {d:?}"),
            Matcher::CallbackPattern(r) => format!("button ~ {}", r.as_str()),
            Matcher::Message => "any message".to_owned(),
            Matcher::Any => "any update".to_owned(),
            _ => "a custom match".to_owned(),
        })
        .collect();
    label(&parts.join(", "))
}
