//! `Stage::to_mermaid`: the whole chart of a small stage (escaped labels, hooks, routes,
//! an idle TTL, the default scene, a sub-scene call and its return, targets that are not
//! registered).

use stagecraft::prelude::*;

type C = Cx<()>;

#[test]
fn scenes_steps_hooks_and_declared_links_are_drawn() {
    let stage: Stage<(), TelegramUpdate> = Stage::builder()
        .default_scene("menu")
        .entry("ghost")
        .scene(
            Scene::builder("menu")
                .idle_ttl(60)
                .calls("ask \"name\"")
                .goes_to("nowhere")
                .on_resume(|_cx: C| async move { Ok(Outcome::Handled) })
                .command(
                    "ask",
                    |_cx: C| async move { Ok(Outcome::push("ask \"name\"")) },
                )
                .on_text(|_cx: C| async move { Ok(Outcome::Handled) })
                .build(),
        )
        .scene(
            Wizard::builder("ask \"name\"")
                .on_enter(|_cx: C| async move { Ok(Outcome::Handled) })
                .command("cancel", |_cx: C| async move { Ok(Outcome::leave()) })
                .step(|_cx: C| async move { Ok(Outcome::Next) })
                .build(),
        )
        .scene(Wizard::builder("empty").build())
        .build()
        .unwrap();
    let chart = stage.to_mermaid();
    let want = r#"flowchart TD
    outside(("outside any scene"))
    subgraph s0["ask #quot;name#quot; (wizard)"]
        direction TB
        s0_enter(["on enter"]) --> s0_step0["step 0"]
        s0_routes["before each step: /cancel"]
    end
    subgraph s1["empty (wizard)"]
        direction TB
        s1_steps["no steps"]
    end
    subgraph s2["menu, idle ttl 60 s"]
        direction TB
        s2_resume(["on resume"])
        s2_routes["/ask, any text"]
    end
    missing0["ghost (not registered)"]
    missing1["nowhere (not registered)"]
    outside -->|default| s2
    outside -->|enter| missing0
    s2 -->|calls| s0
    s0 -.->|returns| s2
    s2 -->|enter| missing1
"#;
    assert_eq!(chart, want);
}
