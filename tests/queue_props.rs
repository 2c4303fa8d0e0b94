//! Property test of the durable queue: whatever interleaving of push, hand-off (single
//! and batched), retry, dead letter and replay runs, every pushed item is still there
//! exactly once — in a queue, in the dead letter or in the "delivered" sink of the state
//! area — before and after reopening the database.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use btic::queue::{Changes, DeadLetterFilter, Queue};
use proptest::prelude::*;

const QUEUES: [&str; 3] = ["fetched", "deliver/db", "deliver/files"];
const SINK: &str = "delivered/";

#[derive(Debug, Clone)]
enum Op {
    Push { queue: usize, count: u64 },
    HandOff { from: usize, to: usize },
    HandOffTwo { from: usize, to: usize },
    Deliver { from: usize },
    Retry { from: usize },
    DeadLetter { from: usize },
    ReplayAll,
    ReplayQueue { queue: usize },
    ReplayOldest,
}

fn op() -> impl Strategy<Value = Op> {
    let q = 0..QUEUES.len();
    prop_oneof![
        3 => (q.clone(), 1..4u64).prop_map(|(queue, count)| Op::Push { queue, count }),
        3 => (q.clone(), q.clone()).prop_map(|(from, to)| Op::HandOff { from, to }),
        1 => (q.clone(), q.clone()).prop_map(|(from, to)| Op::HandOffTwo { from, to }),
        2 => q.clone().prop_map(|from| Op::Deliver { from }),
        2 => q.clone().prop_map(|from| Op::Retry { from }),
        2 => q.clone().prop_map(|from| Op::DeadLetter { from }),
        1 => Just(Op::ReplayAll),
        1 => q.prop_map(|queue| Op::ReplayQueue { queue }),
        1 => Just(Op::ReplayOldest),
    ]
}

/// Every tag present, with how often, across queues, dead letter and sink.
async fn census(queue: &Queue) -> BTreeMap<u64, u32> {
    let seen: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    let report = {
        let seen = seen.clone();
        queue
            .verify(move |entry| {
                let tag: u64 = entry.decode().map_err(|e| e.to_string())?;
                *seen.lock().unwrap().entry(tag).or_default() += 1;
                Ok(())
            })
            .await
            .unwrap()
    };
    assert!(report.is_ok(), "{:?}", report.problems);
    let mut seen = std::mem::take(&mut *seen.lock().unwrap());
    for (_, tag) in queue.state_list::<u64>(SINK).await.unwrap() {
        *seen.entry(tag).or_default() += 1;
    }
    seen
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue");
    let queue = Queue::open(&path).unwrap();
    let mut next_tag = 0u64;
    for op in ops {
        match op {
            Op::Push { queue: q, count } => {
                let tags: Vec<u64> = (next_tag..next_tag + count).collect();
                next_tag += count;
                queue.push_many(QUEUES[q], &tags).await.unwrap();
            }
            Op::HandOff { from, to } => {
                if let Some(c) = queue.next_ready::<u64>(QUEUES[from]).await.unwrap() {
                    let mut changes = Changes::new();
                    changes.push(QUEUES[to], &c.item).unwrap();
                    queue.hand_off(c.ticket, changes).await.unwrap();
                }
            }
            Op::HandOffTwo { from, to } => {
                let mut tickets = Vec::new();
                let mut changes = Changes::new();
                for _ in 0..2 {
                    if let Some(c) = queue.next_ready::<u64>(QUEUES[from]).await.unwrap() {
                        changes.push(QUEUES[to], &c.item).unwrap();
                        tickets.push(c.ticket);
                    }
                }
                queue.hand_off_many(tickets, changes).await.unwrap();
            }
            Op::Deliver { from } => {
                if let Some(c) = queue.next_ready::<u64>(QUEUES[from]).await.unwrap() {
                    let mut changes = Changes::new();
                    changes
                        .put_state(&format!("{SINK}{:020}", c.item), &c.item)
                        .unwrap();
                    queue.hand_off(c.ticket, changes).await.unwrap();
                }
            }
            Op::Retry { from } => {
                if let Some(c) = queue.next_ready::<u64>(QUEUES[from]).await.unwrap() {
                    queue
                        .retry_later(c.ticket, "try again", Duration::ZERO)
                        .await
                        .unwrap();
                }
            }
            Op::DeadLetter { from } => {
                if let Some(c) = queue.next_ready::<u64>(QUEUES[from]).await.unwrap() {
                    queue
                        .dead_letter(c.ticket, "give up", &[("stage", "test")])
                        .await
                        .unwrap();
                }
            }
            Op::ReplayAll => {
                queue.replay(DeadLetterFilter::All).await.unwrap();
            }
            Op::ReplayQueue { queue: q } => {
                let filter = DeadLetterFilter::Queue(QUEUES[q].to_owned());
                queue.replay(filter).await.unwrap();
            }
            Op::ReplayOldest => {
                let letters = queue.dead_letters(DeadLetterFilter::All).await.unwrap();
                if let Some(first) = letters.first() {
                    let replayed = queue.replay(DeadLetterFilter::Id(first.id)).await.unwrap();
                    assert_eq!(replayed, 1);
                }
            }
        }
    }
    let expected: BTreeMap<u64, u32> = (0..next_tag).map(|tag| (tag, 1)).collect();
    assert_eq!(census(&queue).await, expected);
    let depth: u64 = queue.queues().await.unwrap().iter().map(|q| q.depth).sum();
    let dead = queue
        .dead_letters(DeadLetterFilter::All)
        .await
        .unwrap()
        .len() as u64;
    let delivered = queue.state_list::<u64>(SINK).await.unwrap().len() as u64;
    assert_eq!(depth + dead + delivered, next_tag);
    queue.close().await.unwrap();

    let queue = Queue::open(&path).unwrap();
    assert_eq!(census(&queue).await, expected, "after reopening");
    queue.close().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_of_operations_keeps_every_item_exactly_once(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(ops));
    }
}
