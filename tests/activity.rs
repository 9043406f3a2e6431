//! Each record says when its session last changed (`RecordInfo::last_active`), for the
//! operator's `list`: stamped by the writes that change the session, not by updates that
//! change nothing.

use std::sync::Arc;
use std::time::Duration;

use stagecraft::admin;
use stagecraft::clock::ManualClock;
use stagecraft::prelude::*;
use stagecraft::store::{MemoryStore, SessionStore};

fn text(id: i64, text: &str) -> TelegramUpdate {
    TelegramUpdate::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"chat":{{"id":5}},"from":{{"id":5}},"text":"{text}"}}}}"#
    ))
    .unwrap()
}

#[tokio::test]
async fn a_record_says_when_its_session_last_changed() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_secs(1_700_000_000);
    let bot = Pipeline::<u32>::builder()
        .store_arc(Arc::clone(&store))
        .clock(clock.clone())
        .dedup_window(0)
        .on_text(|cx: Cx<u32>| async move {
            if cx.update().text() == Some("count") {
                cx.session_mut(|n| *n += 1)?;
            } else {
                let _ = cx.session(|n| *n)?;
            }
            Ok(Outcome::Handled)
        })
        .build();
    let last_active = || async {
        let rec = store.load("5:5").await.unwrap().unwrap();
        stagecraft::record::inspect(&rec.bytes).unwrap().last_active
    };
    bot.handle(text(1, "count")).await.unwrap();
    assert_eq!(last_active().await, Some(1_700_000_000));
    // An update that changes nothing writes nothing: the stamp stays.
    clock.advance(Duration::from_secs(60));
    bot.handle(text(2, "look")).await.unwrap();
    assert_eq!(last_active().await, Some(1_700_000_000));
    clock.advance(Duration::from_secs(60));
    bot.handle(text(3, "count")).await.unwrap();
    assert_eq!(last_active().await, Some(1_700_000_120));
    // The operator's list shows it.
    let list = admin::conversations(store.as_ref(), &admin::ListOptions::new().all(true))
        .await
        .unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].last_active, Some(1_700_000_120));
}
