//! The event hub behind `GET /client/events`: numbers each published
//! `Notice`, keeps the last `RING_CAPACITY` for resuming (`?since=`,
//! `Last-Event-ID`), and hands each to every subscriber's bounded queue.
//!
//! Owned by `run` on the state thread, which must never wait on a client:
//! a notice goes to each queue with `try_send`, and a subscriber whose queue
//! is full is dropped (its stream ends once it has written what was queued;
//! it may resume from the ring). At most `MAX_SUBSCRIBERS` streams at once:
//! a dropped subscriber keeps its place until its stream lets go of the feed. Sequence numbers start at 1 in
//! each process: they are not persisted, and a `since` above the last one
//! (from an earlier process) is answered with a gap and the whole ring.

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::scheduler::notice::Notice;

/// Notices kept for resuming.
pub const RING_CAPACITY: usize = 4096;

/// Streams served at once; one more is answered 503. Each holds one
/// `events-N` thread (not a REST worker) and one connection.
pub const MAX_SUBSCRIBERS: usize = 16;

/// Notices waiting for one subscriber; when full, it is dropped.
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// One notice as published: its number and the notice, shared by the ring
/// and every queue.
#[derive(Debug, PartialEq)]
pub struct Published {
    pub seq: u64,
    pub notice: Notice,
}

/// Notices after a resume point that are gone from the ring: the client
/// asked for what follows `from`; the oldest kept is `oldest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub from: u64,
    pub oldest: u64,
}

/// The live part of a subscription: what the hub publishes from now on.
/// Dropping it ends the subscription (the hub notices at its next publish
/// or subscribe).
#[derive(Debug)]
pub struct Feed {
    pub receiver: Receiver<Arc<Published>>,
    /// The hub holds the other half: a count of one means the feed is gone.
    _alive: Arc<()>,
}

/// What a subscriber gets: a gap to report first (if any), the notices from
/// the ring it asked for, then the live feed, in sequence order with no
/// notice missing or repeated between backlog and feed.
#[derive(Debug)]
pub struct Subscription {
    pub gap: Option<Gap>,
    pub backlog: Vec<Arc<Published>>,
    pub feed: Feed,
}

struct Subscriber {
    /// `None` once the queue overflowed: the feed ends after what it holds,
    /// but the stream still writes that out and keeps its place.
    queue: Option<Sender<Arc<Published>>>,
    alive: Arc<()>,
}

impl Subscriber {
    /// Whether its stream still holds the feed (and so its place).
    fn is_live(&self) -> bool {
        Arc::strong_count(&self.alive) > 1
    }
}

/// See the module doc.
pub struct Hub {
    ring: VecDeque<Arc<Published>>,
    next_seq: u64,
    subscribers: Vec<Subscriber>,
    ring_capacity: usize,
    queue_capacity: usize,
    max_subscribers: usize,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub::with_bounds(RING_CAPACITY, SUBSCRIBER_QUEUE, MAX_SUBSCRIBERS)
    }
}

impl Hub {
    /// A hub with other bounds than the defaults (tests).
    pub fn with_bounds(ring: usize, queue: usize, subscribers: usize) -> Hub {
        Hub {
            ring: VecDeque::with_capacity(ring.min(RING_CAPACITY)),
            next_seq: 1,
            subscribers: Vec::new(),
            ring_capacity: ring.max(1),
            queue_capacity: queue.max(1),
            max_subscribers: subscribers,
        }
    }

    /// Numbers `notice`, keeps it in the ring and offers it to every
    /// subscriber without waiting: a full queue drops its subscriber.
    pub fn publish(&mut self, notice: Notice) {
        let published = Arc::new(Published {
            seq: self.next_seq,
            notice,
        });
        self.next_seq += 1;
        if self.ring.len() >= self.ring_capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(Arc::clone(&published));
        self.subscribers.retain_mut(|subscriber| {
            if !subscriber.is_live() {
                return false;
            }
            let Some(queue) = &subscriber.queue else {
                return true;
            };
            match queue.try_send(Arc::clone(&published)) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    log::warn!("event subscriber too slow, dropped queued={}", queue.len());
                    // Dropping the sender ends the feed once it is drained.
                    subscriber.queue = None;
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }

    /// A new subscription resuming after `since` (None: live only), or the
    /// reason there is none (at `MAX_SUBSCRIBERS`).
    pub fn subscribe(&mut self, since: Option<u64>) -> Result<Subscription, String> {
        self.subscribers.retain(Subscriber::is_live);
        if self.subscribers.len() >= self.max_subscribers {
            return Err(format!(
                "too many event streams (at most {}); try again later",
                self.max_subscribers
            ));
        }
        let (gap, backlog) = match since {
            None => (None, Vec::new()),
            Some(since) => self.after(since),
        };
        let (queue, receiver) = crossbeam_channel::bounded(self.queue_capacity);
        let alive = Arc::new(());
        self.subscribers.push(Subscriber {
            queue: Some(queue),
            alive: Arc::clone(&alive),
        });
        Ok(Subscription {
            gap,
            backlog,
            feed: Feed {
                receiver,
                _alive: alive,
            },
        })
    }

    /// Subscribers holding a place: their stream still holds the feed,
    /// whether it is fed or was dropped and writes out what it holds.
    #[cfg(test)]
    pub fn subscriber_count(&self) -> usize {
        self.subscribers
            .iter()
            .filter(|subscriber| subscriber.is_live())
            .count()
    }

    /// The last sequence number handed out (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The ring after `since`, and the gap when some of it is gone (or
    /// `since` is from another process: above every number handed out).
    fn after(&self, since: u64) -> (Option<Gap>, Vec<Arc<Published>>) {
        let oldest = self.ring.front().map_or(self.next_seq, |first| first.seq);
        let all = || self.ring.iter().cloned().collect();
        if since > self.last_seq() || since.saturating_add(1) < oldest {
            return (
                Some(Gap {
                    from: since,
                    oldest,
                }),
                all(),
            );
        }
        // Sequence numbers in the ring are consecutive.
        let skip = usize::try_from(since + 1 - oldest).unwrap_or(usize::MAX);
        (None, self.ring.iter().skip(skip).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::notice::NoticeKind;

    fn notice(reason: &str) -> Notice {
        Notice {
            time_ms: 0,
            kind: NoticeKind::Disconnected {
                reason: reason.to_string(),
            },
        }
    }

    fn seqs(items: &[Arc<Published>]) -> Vec<u64> {
        items.iter().map(|item| item.seq).collect()
    }

    fn drain(feed: &Feed) -> Vec<u64> {
        feed.receiver.try_iter().map(|item| item.seq).collect()
    }

    /// A ring of 4 after publishing `published`: what `since` gets.
    #[track_caller]
    fn check(published: u64, since: Option<u64>, gap: Option<(u64, u64)>, backlog: &[u64]) {
        let mut hub = Hub::with_bounds(4, 8, 2);
        for _ in 0..published {
            hub.publish(notice("x"));
        }
        let subscription = hub.subscribe(since).expect("room");
        assert_eq!(
            subscription.gap.map(|gap| (gap.from, gap.oldest)),
            gap,
            "published={published} since={since:?}"
        );
        assert_eq!(
            seqs(&subscription.backlog),
            backlog,
            "published={published} since={since:?}"
        );
    }

    #[test]
    fn since_resumes_from_the_ring_or_reports_the_gap() {
        check(0, None, None, &[]);
        check(3, None, None, &[]);
        check(3, Some(0), None, &[1, 2, 3]);
        check(3, Some(1), None, &[2, 3]);
        check(3, Some(3), None, &[]);
        // 1 and 2 fell out of the ring: say so, then send what is left.
        check(6, Some(0), Some((0, 3)), &[3, 4, 5, 6]);
        check(6, Some(1), Some((1, 3)), &[3, 4, 5, 6]);
        check(6, Some(2), None, &[3, 4, 5, 6]);
        check(6, Some(4), None, &[5, 6]);
        // From an earlier process (numbers start again at 1): all of it.
        check(6, Some(99), Some((99, 3)), &[3, 4, 5, 6]);
        check(0, Some(5), Some((5, 1)), &[]);
    }

    #[test]
    fn the_feed_follows_the_backlog_without_a_hole_or_a_repeat() {
        let mut hub = Hub::with_bounds(4, 8, 2);
        hub.publish(notice("a"));
        hub.publish(notice("b"));
        let subscription = hub.subscribe(Some(1)).expect("room");
        hub.publish(notice("c"));
        assert_eq!(seqs(&subscription.backlog), [2]);
        assert_eq!(drain(&subscription.feed), [3]);
    }

    #[test]
    fn a_full_queue_drops_its_subscriber_and_never_blocks() {
        let mut hub = Hub::with_bounds(16, 2, 4);
        let slow = hub.subscribe(None).expect("room");
        let fast = hub.subscribe(None).expect("room");
        for round in 0..5 {
            hub.publish(notice("x"));
            // The fast one reads as it goes.
            assert_eq!(drain(&fast.feed), [round + 1]);
        }
        // The slow one keeps what was queued, then its feed ends.
        assert_eq!(drain(&slow.feed), [1, 2]);
        assert!(slow.feed.receiver.recv().is_err(), "dropped: disconnected");
        // It holds its place until its stream lets go of the feed.
        assert_eq!(hub.subscriber_count(), 2);
        drop(slow);
        hub.publish(notice("x"));
        assert_eq!(hub.subscriber_count(), 1);
    }

    /// See: review of issue 10. A dropped subscriber's stream still writes
    /// out up to a queue of events; its place stays taken until it ends, so
    /// slow readers cannot hold more than `MAX_SUBSCRIBERS` streams.
    #[test]
    fn an_overflowed_subscriber_holds_its_place_until_its_stream_ends() {
        let mut hub = Hub::with_bounds(16, 2, 3);
        let mut streams: Vec<Subscription> =
            (0..3).map(|_| hub.subscribe(None).expect("room")).collect();
        // None of them reads: every queue overflows.
        for _ in 0..5 {
            hub.publish(notice("x"));
        }
        let refused = hub.subscribe(None).expect_err("their streams still write");
        assert!(refused.contains("at most 3"), "{refused}");
        // Draining its queue is not the end of a stream; letting go is.
        assert_eq!(drain(&streams[0].feed), [1, 2]);
        hub.subscribe(None).expect_err("still writing");
        drop(streams.remove(0));
        let _fresh = hub.subscribe(None).expect("a place was freed");
        hub.subscribe(None).expect_err("at the cap again");
    }

    #[test]
    fn subscribers_are_capped_and_a_gone_one_frees_its_place() {
        let mut hub = Hub::with_bounds(4, 4, 2);
        let first = hub.subscribe(None).expect("room");
        let _second = hub.subscribe(None).expect("room");
        let refused = hub.subscribe(None).expect_err("at the cap");
        assert!(refused.contains("at most 2"), "{refused}");
        drop(first.feed);
        // Without any publish in between: the count is of live feeds.
        assert_eq!(hub.subscriber_count(), 1);
        hub.subscribe(None).expect("a place was freed");
    }
}
