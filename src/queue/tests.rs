//! The queue's unit tests: every guarantee of `mod.rs`, one test each, on real sled files.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Job {
    name: String,
    size: u64,
}

fn job(name: &str) -> Job {
    Job {
        name: name.to_owned(),
        size: name.len() as u64,
    }
}

fn open() -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path().join("queue")).unwrap();
    (dir, queue)
}

async fn take(queue: &Queue, name: &str) -> Claimed<Job> {
    queue
        .next_ready(name)
        .await
        .unwrap()
        .expect("an item is ready")
}

async fn names(queue: &Queue, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut held = Vec::new();
    while let Some(claimed) = queue.next_ready::<Job>(name).await.unwrap() {
        out.push(claimed.item.name.clone());
        held.push(claimed);
    }
    out
}

#[tokio::test]
async fn items_come_out_in_push_order() {
    let (_dir, queue) = open();
    queue.push("fetched", &job("a")).await.unwrap();
    queue
        .push_many("fetched", &[job("b"), job("c")])
        .await
        .unwrap();
    assert_eq!(names(&queue, "fetched").await, ["a", "b", "c"]);
    assert!(queue.next_ready::<Job>("other").await.unwrap().is_none());
}

#[tokio::test]
async fn next_ready_many_takes_what_repeated_next_ready_would_and_skips_held_items() {
    let (_dir, queue) = open();
    let jobs: Vec<Job> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|n| job(n))
        .collect();
    queue.push_many("q", &jobs).await.unwrap();
    let first = take(&queue, "q").await;
    queue
        .retry_later(first.ticket, "try again", Duration::ZERO)
        .await
        .unwrap();
    let held = take(&queue, "q").await;
    assert_eq!(held.item.name, "a", "a due retry goes first");
    let batch: Vec<Claimed<Job>> = queue.next_ready_many("q", 3).await.unwrap();
    let taken: Vec<&str> = batch.iter().map(|c| c.item.name.as_str()).collect();
    assert_eq!(taken, ["b", "c", "d"]);
    let rest: Vec<Claimed<Job>> = queue.next_ready_many("q", 10).await.unwrap();
    let taken: Vec<&str> = rest.iter().map(|c| c.item.name.as_str()).collect();
    assert_eq!(taken, ["e", "f"]);
    assert!(
        queue
            .next_ready_many::<Job>("q", 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Released claims make their items available again, in order.
    drop(batch);
    let again: Vec<Claimed<Job>> = queue.next_ready_many("q", 10).await.unwrap();
    let taken: Vec<&str> = again.iter().map(|c| c.item.name.as_str()).collect();
    assert_eq!(taken, ["b", "c", "d"]);
    let tickets = again.into_iter().map(|c| c.ticket).collect();
    queue.hand_off_many(tickets, Changes::new()).await.unwrap();
    assert_eq!(queue.depth("q").await.unwrap(), 3);
}

#[tokio::test]
async fn packed_items_decode_when_asked_and_an_undecodable_one_goes_to_the_dead_letter() {
    let (_dir, queue) = open();
    queue.push("q", &job("a")).await.unwrap();
    queue.push("q", &7u8).await.unwrap();
    queue.push("q", &job("c")).await.unwrap();
    let batch = queue.next_ready_many_packed("q", 10).await.unwrap();
    assert_eq!(batch.len(), 3);
    let first = &batch[0].item;
    assert_eq!(first.decode::<Job>().unwrap(), job("a"));
    assert_eq!(first.decode::<Job>().unwrap(), job("a"), "decoding again");
    let error = batch[1].item.decode::<Job>().unwrap_err();
    assert!(
        matches!(&error, QueueError::Decode { place, .. } if place.contains("\"q\"")),
        "{error}"
    );
    assert!(
        error.to_string().contains(&batch[1].id().to_string()),
        "{error}"
    );
    // Held while packed: nothing else is ready.
    assert!(queue.next_ready::<Job>("q").await.unwrap().is_none());
    let mut batch = batch.into_iter();
    let (a, bad, c) = (
        batch.next().unwrap(),
        batch.next().unwrap(),
        batch.next().unwrap(),
    );
    let bad_id = bad.id();
    queue
        .dead_letter_undecodable(bad.ticket, &error)
        .await
        .unwrap();
    let letters = queue.dead_letters(DeadLetterFilter::All).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id, bad_id);
    assert_eq!(letters[0].queue, "q");
    assert_eq!(letters[0].last_error, error.to_string());
    queue
        .hand_off_many(vec![a.ticket, c.ticket], Changes::new())
        .await
        .unwrap();
    assert_eq!(queue.depth("q").await.unwrap(), 0);

    // `next_ready_many` decodes as it takes, and buries what does not decode.
    queue.push("q", &job("d")).await.unwrap();
    queue.push("q", &7u8).await.unwrap();
    let taken: Vec<Claimed<Job>> = queue.next_ready_many("q", 10).await.unwrap();
    let names: Vec<&str> = taken.iter().map(|c| c.item.name.as_str()).collect();
    assert_eq!(names, ["d"]);
    let letters = queue.dead_letters(DeadLetterFilter::All).await.unwrap();
    assert_eq!(letters.len(), 2);
}

#[tokio::test]
async fn hand_off_moves_the_item_and_writes_state_in_one_step() {
    let (_dir, queue) = open();
    queue.push("fetched", &job("a")).await.unwrap();
    let claimed = take(&queue, "fetched").await;
    let mut changes = Changes::new();
    changes
        .push("deliver/db", &job("a1"))
        .unwrap()
        .push("deliver/files", &job("a2"))
        .unwrap()
        .put_state("watermark/support", &42u64)
        .unwrap();
    let ids = queue.hand_off(claimed.ticket, changes).await.unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1]);
    assert_eq!(queue.depth("fetched").await.unwrap(), 0);
    assert_eq!(queue.depth("deliver/db").await.unwrap(), 1);
    assert_eq!(names(&queue, "deliver/files").await, ["a2"]);
    assert_eq!(
        queue.state_get::<u64>("watermark/support").await.unwrap(),
        Some(42)
    );
}

#[tokio::test]
async fn handing_off_an_item_twice_fails_and_changes_nothing() {
    let (_dir, queue) = open();
    queue.push("fetched", &job("a")).await.unwrap();
    let first = take(&queue, "fetched").await;
    // A forged second ticket for the same item, as a replayed admin command might hold.
    let second = Ticket {
        queue: "fetched".to_owned(),
        id: first.id(),
        attempts: 0,
        first_seen: SystemTime::now(),
        last_error: None,
        _claim: Claim {
            claims: Arc::default(),
            id: first.id().0,
            notify: Arc::default(),
        },
    };
    queue.hand_off(first.ticket, Changes::new()).await.unwrap();
    let mut changes = Changes::new();
    changes.push("next", &job("dup")).unwrap();
    let err = queue.hand_off(second, changes).await.unwrap_err();
    assert!(matches!(err, QueueError::ItemGone { .. }), "{err}");
    assert_eq!(queue.depth("next").await.unwrap(), 0);
}

#[tokio::test]
async fn retry_later_counts_attempts_keeps_errors_and_delays_the_item() {
    let (_dir, queue) = open();
    queue.push("q", &job("a")).await.unwrap();
    let claimed = take(&queue, "q").await;
    queue
        .retry_later(claimed.ticket, "HTTP 503", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(queue.next_ready::<Job>("q").await.unwrap().is_none());
    let later = SystemTime::now() + Duration::from_secs(61);
    let again: Claimed<Job> = queue.next_ready_at("q", later).await.unwrap().unwrap();
    assert_eq!(again.attempts(), 1);
    assert_eq!(again.ticket.last_error(), Some("HTTP 503"));
    queue
        .retry_later(again.ticket, "timeout", Duration::ZERO)
        .await
        .unwrap();
    let third = take(&queue, "q").await;
    assert_eq!(third.attempts(), 2);
    queue
        .dead_letter(third.ticket, "still failing", &[("stage", "deliver")])
        .await
        .unwrap();
    let letters = queue.dead_letters(DeadLetterFilter::All).await.unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.queue, "q");
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.first_error, "HTTP 503");
    assert_eq!(letter.last_error, "still failing");
    assert_eq!(
        letter.metadata,
        [("stage".to_owned(), "deliver".to_owned())]
    );
    assert!(letter.first_seen <= letter.last_tried);
    assert_eq!(queue.depth("q").await.unwrap(), 0);
}

#[tokio::test]
async fn a_due_retry_goes_before_fresh_items() {
    let (_dir, queue) = open();
    queue.push_many("q", &[job("a"), job("b")]).await.unwrap();
    let a = take(&queue, "q").await;
    queue
        .retry_later(a.ticket, "busy", Duration::ZERO)
        .await
        .unwrap();
    queue.push("q", &job("c")).await.unwrap();
    assert_eq!(names(&queue, "q").await, ["a", "b", "c"]);
}

#[tokio::test]
async fn replay_puts_dead_letters_back_in_front_in_their_order_with_attempts_reset() {
    let (_dir, queue) = open();
    queue
        .push_many("q", &[job("a"), job("b"), job("c"), job("d")])
        .await
        .unwrap();
    for _ in 0..2 {
        let claimed = take(&queue, "q").await;
        queue.dead_letter(claimed.ticket, "bad", &[]).await.unwrap();
    }
    queue.push("other", &job("x")).await.unwrap();
    let x = take(&queue, "other").await;
    queue.dead_letter(x.ticket, "bad", &[]).await.unwrap();

    let replayed = queue
        .replay(DeadLetterFilter::Queue("q".to_owned()))
        .await
        .unwrap();
    assert_eq!(replayed, 2);
    let first = take(&queue, "q").await;
    assert_eq!(first.item.name, "a");
    assert_eq!(first.attempts(), 0);
    drop(first);
    assert_eq!(names(&queue, "q").await, ["a", "b", "c", "d"]);
    let left = queue.dead_letters(DeadLetterFilter::All).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].queue, "other");
    let counts = queue.dead_letter_counts().await.unwrap();
    assert_eq!(counts, BTreeMap::from([("other".to_owned(), 1)]));
}

#[tokio::test]
async fn visit_items_reads_only_the_chosen_queues_and_their_dead_letters() {
    let (_dir, queue) = open();
    queue
        .push_many("keep", &[job("a"), job("b")])
        .await
        .unwrap();
    queue
        .push_many("skip", &[job("x"), job("y")])
        .await
        .unwrap();
    let dead = take(&queue, "keep").await;
    queue.dead_letter(dead.ticket, "bad", &[]).await.unwrap();
    let dead = take(&queue, "skip").await;
    queue.dead_letter(dead.ticket, "bad", &[]).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    queue
        .visit_items(
            |name| name == "keep",
            move |entry| {
                let name = entry.decode::<Job>().unwrap().name;
                into.lock()
                    .unwrap()
                    .push((entry.queue.to_owned(), entry.dead, name));
            },
        )
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            ("keep".to_owned(), false, "b".to_owned()),
            ("keep".to_owned(), true, "a".to_owned())
        ]
    );
}

#[tokio::test]
async fn dead_letter_with_writes_its_state_in_the_same_transaction_and_counts_by_queue() {
    let (_dir, queue) = open();
    queue.push_many("q", &[job("a"), job("b")]).await.unwrap();
    queue.push("r", &job("c")).await.unwrap();
    for name in ["q", "q", "r"] {
        let claimed = take(&queue, name).await;
        let mut state = Changes::new();
        state
            .put_state(&format!("why/{}", claimed.item.name), &1u8)
            .unwrap();
        queue
            .dead_letter_with(claimed.ticket, "bad", &[], state)
            .await
            .unwrap();
    }
    let keys = queue.state_keys("why/").await.unwrap();
    assert_eq!(keys, ["why/a", "why/b", "why/c"]);
    let counts = queue.dead_letter_counts().await.unwrap();
    assert_eq!(
        counts,
        BTreeMap::from([("q".to_owned(), 2), ("r".to_owned(), 1)])
    );
    // A dead letter cannot push items.
    queue.push("q", &job("d")).await.unwrap();
    let claimed = take(&queue, "q").await;
    let mut pushing = Changes::new();
    pushing.push("elsewhere", &job("e")).unwrap();
    assert!(
        queue
            .dead_letter_with(claimed.ticket, "bad", &[], pushing)
            .await
            .is_err()
    );
    assert_eq!(queue.depth("q").await.unwrap(), 1);
}

#[tokio::test]
async fn replay_and_show_by_id_and_purge() {
    let (_dir, queue) = open();
    let ids = queue.push_many("q", &[job("a"), job("b")]).await.unwrap();
    for _ in 0..2 {
        let claimed = take(&queue, "q").await;
        queue.dead_letter(claimed.ticket, "bad", &[]).await.unwrap();
    }
    let shown = queue.dead_letter_show(ids[1]).await.unwrap();
    assert_eq!(shown.decode::<Job>().unwrap(), job("b"));
    assert_eq!(queue.replay(DeadLetterFilter::Id(ids[1])).await.unwrap(), 1);
    let err = queue
        .replay(DeadLetterFilter::Id(ids[1]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, QueueError::DeadLetterNotFound { .. }),
        "{err}"
    );
    assert_eq!(names(&queue, "q").await, ["b"]);
    assert_eq!(queue.purge(DeadLetterFilter::All).await.unwrap(), 1);
    assert!(
        queue
            .dead_letters(DeadLetterFilter::All)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        queue.dead_letter_show(ids[0]).await,
        Err(QueueError::DeadLetterNotFound { .. })
    ));
}

#[tokio::test]
async fn depth_and_oldest_age_follow_the_queue() {
    let (_dir, queue) = open();
    assert_eq!(queue.depth("q").await.unwrap(), 0);
    assert_eq!(queue.oldest_age("q").await.unwrap(), None);
    queue.push_many("q", &[job("a"), job("b")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    queue.push("q", &job("c")).await.unwrap();
    assert_eq!(queue.depth("q").await.unwrap(), 3);
    let age = queue.oldest_age("q").await.unwrap().unwrap();
    assert!(age >= Duration::from_millis(20), "{age:?}");
    let listed = queue.queues().await.unwrap();
    assert_eq!(
        listed,
        [QueueDepth {
            name: "q".to_owned(),
            depth: 3
        }]
    );
}

#[tokio::test]
async fn two_workers_never_get_the_same_item_and_a_dropped_ticket_releases_it() {
    let (_dir, queue) = open();
    queue.push_many("q", &[job("a"), job("b")]).await.unwrap();
    let first = take(&queue, "q").await;
    let second = take(&queue, "q").await;
    assert_ne!(first.id(), second.id());
    assert!(queue.next_ready::<Job>("q").await.unwrap().is_none());
    drop(first);
    assert_eq!(take(&queue, "q").await.item.name, "a");
}

#[tokio::test]
async fn wait_ready_wakes_up_when_an_item_is_pushed() {
    let (_dir, queue) = open();
    let waiter = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.wait_ready::<Job>("q").await.map(|c| c.item) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    queue.push("q", &job("a")).await.unwrap();
    let item = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .unwrap()
        .unwrap();
    assert_eq!(item, job("a"));
}

#[tokio::test]
async fn wait_ready_wakes_up_when_a_retry_falls_due() {
    let (_dir, queue) = open();
    queue.push("q", &job("a")).await.unwrap();
    let claimed = take(&queue, "q").await;
    queue
        .retry_later(claimed.ticket, "busy", Duration::from_millis(100))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), queue.wait_ready::<Job>("q"))
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(got.attempts(), 1);
}

#[tokio::test]
async fn an_item_of_the_wrong_type_goes_to_the_dead_letter_and_does_not_block_the_queue() {
    let (_dir, queue) = open();
    queue.push("q", &"just a string".to_owned()).await.unwrap();
    queue.push("q", &job("good")).await.unwrap();
    let got = take(&queue, "q").await;
    assert_eq!(got.item, job("good"));
    let letters = queue.dead_letters(DeadLetterFilter::All).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0]
            .last_error
            .starts_with("decoding queue \"q\" key item"),
        "{}",
        letters[0].last_error
    );
}

#[tokio::test]
async fn state_keys_range_stops_at_its_bound_and_its_limit_and_keeps_to_its_prefix() {
    let (_dir, queue) = open();
    for key in [
        "seen/a/05/x",
        "seen/a/10/y",
        "seen/a/30/z",
        "seen/a/05/w",
        "seen/b/01/v",
    ] {
        queue.state_put(key, &1u8).await.unwrap();
    }
    let range = |below: Option<&'static str>, limit| {
        let queue = queue.clone();
        async move {
            queue
                .state_keys_range("seen/a/", below, limit)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        range(Some("seen/a/20"), 10).await,
        ["seen/a/05/w", "seen/a/05/x", "seen/a/10/y"]
    );
    assert_eq!(
        range(Some("seen/a/20"), 2).await,
        ["seen/a/05/w", "seen/a/05/x"]
    );
    assert_eq!(range(None, 10).await.len(), 4);
    assert!(range(Some("seen/a/"), 10).await.is_empty());
}

#[tokio::test]
async fn state_records_round_trip_and_a_wrong_type_is_an_error_naming_the_key() {
    let (_dir, queue) = open();
    queue
        .state_put("run/nightly", &(7u32, "ok".to_owned()))
        .await
        .unwrap();
    queue
        .state_put("run/hourly", &(1u32, "ok".to_owned()))
        .await
        .unwrap();
    queue.state_put("watermark/a", &5u64).await.unwrap();
    let runs: Vec<(String, (u32, String))> = queue.state_list("run/").await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].0, "run/hourly");
    let err = queue.state_get::<Job>("watermark/a").await.unwrap_err();
    assert!(err.to_string().contains("key watermark/a"), "{err}");
    queue.state_delete("watermark/a").await.unwrap();
    assert_eq!(queue.state_get::<u64>("watermark/a").await.unwrap(), None);
}

#[tokio::test]
async fn everything_survives_a_clean_reopen_and_ids_keep_growing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue");
    let queue = Queue::open(&path).unwrap();
    let ids = queue.push_many("q", &[job("a"), job("b")]).await.unwrap();
    let a = take(&queue, "q").await;
    queue.dead_letter(a.ticket, "bad", &[]).await.unwrap();
    queue.state_put("k", &1u8).await.unwrap();
    queue.close().await.unwrap();

    let queue = Queue::open(&path).unwrap();
    assert_eq!(names(&queue, "q").await, ["b"]);
    assert_eq!(
        queue
            .dead_letters(DeadLetterFilter::All)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(queue.state_get::<u8>("k").await.unwrap(), Some(1));
    let next = queue.push("q", &job("c")).await.unwrap();
    assert!(next > ids[1]);
    assert!(queue.verify(|_| Ok(())).await.unwrap().is_ok());
}

#[tokio::test]
async fn verify_counts_items_and_reports_what_the_hook_finds() {
    let (_dir, queue) = open();
    queue
        .push_many("q", &[job("a"), job("missing")])
        .await
        .unwrap();
    let a = take(&queue, "q").await;
    queue.dead_letter(a.ticket, "bad", &[]).await.unwrap();
    let report = queue
        .verify(|entry| {
            let item: Job = entry.decode().map_err(|e| e.to_string())?;
            if item.name == "missing" {
                Err("spool file missing".to_owned())
            } else {
                Ok(())
            }
        })
        .await
        .unwrap();
    assert_eq!(report.items, 1);
    assert_eq!(report.dead_letters, 1);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("spool file missing"));
}

#[tokio::test]
async fn bad_queue_names_are_refused() {
    let (_dir, queue) = open();
    assert!(matches!(
        queue.push("", &1u8).await,
        Err(QueueError::InvalidName { .. })
    ));
}

#[tokio::test]
async fn a_snapshot_left_unfinished_by_a_killed_process_does_not_stop_the_queue_opening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue");
    let queue = Queue::open(&path).unwrap();
    queue.push_many("q", &[job("a"), job("b")]).await.unwrap();
    queue.close().await.unwrap();
    // What a kill in the middle of sled's snapshot write leaves: a partial file that
    // sorts after every complete snapshot.
    let unfinished = path.join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&unfinished, b"half a snapshot, no checksum").unwrap();

    let queue = Queue::open(&path).unwrap();
    assert!(!unfinished.exists());
    assert_eq!(names(&queue, "q").await, ["a", "b"]);
    assert!(queue.verify(|_| Ok(())).await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_waits_for_a_brief_holder_and_fails_after_the_lock_wait() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue");
    let holder = Queue::open(&path).unwrap();
    holder.push("q", &job("a")).await.unwrap();

    // Held longer than the wait: a clear error naming the directory.
    let short = QueueOptions {
        lock_wait: Duration::from_millis(300),
        ..QueueOptions::default()
    };
    let err = Queue::open_with(&path, short).unwrap_err();
    assert!(err.to_string().contains("queue"), "{err}");

    // Held for a moment (as `btic status` does): the second opener waits and gets in.
    let opener = std::thread::spawn({
        let path = path.clone();
        move || Queue::open(&path)
    });
    std::thread::sleep(Duration::from_millis(500));
    holder.close().await.unwrap();
    let queue = opener.join().unwrap().unwrap();
    assert_eq!(names(&queue, "q").await, ["a"]);
}

#[tokio::test]
async fn a_buried_output_is_a_dead_letter_written_with_the_rest_and_replays_to_its_queue() {
    let (_dir, queue) = open();
    queue.push("in", &job("a")).await.unwrap();
    let claimed = take(&queue, "in").await;
    let mut changes = Changes::new();
    changes
        .push("out", &job("b"))
        .unwrap()
        .bury("later", &job("c"), "refused: no", 3, &[("stage", "fetch")])
        .unwrap()
        .put_state("progress", &7u64)
        .unwrap();
    queue.hand_off(claimed.ticket, changes).await.unwrap();
    assert_eq!(queue.depth("in").await.unwrap(), 0);
    assert_eq!(queue.depth("out").await.unwrap(), 1);
    assert_eq!(queue.depth("later").await.unwrap(), 0, "buried, not queued");
    assert_eq!(queue.state_get::<u64>("progress").await.unwrap(), Some(7));

    let letters = queue.dead_letters(DeadLetterFilter::All).await.unwrap();
    let [letter] = letters.as_slice() else {
        panic!("one dead letter, not {letters:?}");
    };
    assert_eq!(letter.queue, "later");
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.first_error, "refused: no");
    assert_eq!(letter.last_error, "refused: no");
    assert_eq!(letter.metadata, [("stage".to_owned(), "fetch".to_owned())]);
    let shown = queue.dead_letter_show(letter.id).await.unwrap();
    assert_eq!(shown.decode::<Job>().unwrap(), job("c"));

    // Replay moves it to the queue it was buried for, with a fresh budget.
    assert_eq!(queue.replay(DeadLetterFilter::All).await.unwrap(), 1);
    let claimed = take(&queue, "later").await;
    assert_eq!(claimed.item, job("c"));
    assert_eq!(claimed.id(), letter.id);

    // A dead letter's own state changes cannot bury anything either.
    let mut burying = Changes::new();
    burying.bury("x", &job("d"), "no", 1, &[]).unwrap();
    assert!(
        queue
            .dead_letter_with(claimed.ticket, "bad", &[], burying)
            .await
            .is_err()
    );
}
