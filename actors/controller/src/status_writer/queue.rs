//! The status writer's queue: every node waiting for a write, once, by
//! tier and then by when it is due, and the budget that spreads the lazy
//! writes of a large cluster over time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use vpblu_messages::NodeName;

/// Lazy writes allowed per second, all nodes together, once the burst is
/// spent. One change acked by 1000 daemons would otherwise be 1000 status
/// writes at once, each a server-side apply the API server has to merge
/// and every watcher has to decode: at this rate they take 20 s and leave
/// the API server (and the next change) room. Acks that come meanwhile for
/// a node already queued ride along with its one write.
pub(super) const LAZY_WRITES_PER_SECOND: f64 = 50.0;

/// Lazy writes allowed at once after a quiet spell: a small cluster never
/// waits for the budget.
pub(super) const LAZY_BURST: f64 = 50.0;

/// How a queued write is due: changes people and peers wait on first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Tier {
    /// The key, the backend, the MTU or the connection changed: written at
    /// once (a new node's key is how its peers learn of it).
    Urgent = 0,
    /// Only the applied generation or the peer health changed: written
    /// [`LAZY_DELAY`](super::LAZY_DELAY) later, with whatever else came
    /// meanwhile, within the lazy budget.
    Lazy = 1,
}

/// A token bucket for lazy writes.
#[derive(Debug)]
struct Budget {
    tokens: f64,
    at: Instant,
}

impl Budget {
    fn full(now: Instant) -> Self {
        Budget { tokens: LAZY_BURST, at: now }
    }

    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * LAZY_WRITES_PER_SECOND;
        self.tokens = (self.tokens + earned).min(LAZY_BURST);
        self.at = self.at.max(now);
    }

    /// When the next token is there (now, if one is).
    fn next_token(&self) -> Instant {
        if self.tokens >= 1.0 {
            return self.at;
        }
        self.at + Duration::from_secs_f64((1.0 - self.tokens) / LAZY_WRITES_PER_SECOND)
    }
}

/// Nodes waiting for a write, each once, by tier and then by when due.
#[derive(Debug)]
pub(super) struct WriteQueue {
    due: BTreeMap<NodeName, (Tier, Instant)>,
    order: [BTreeSet<(Instant, NodeName)>; 2],
    budget: Budget,
}

impl Default for WriteQueue {
    fn default() -> Self {
        WriteQueue { due: BTreeMap::new(), order: Default::default(), budget: Budget::full(Instant::now()) }
    }
}

impl WriteQueue {
    /// Queues `node`, or keeps it where it is when it is already queued
    /// as urgently and as early.
    pub(super) fn schedule(&mut self, node: &NodeName, tier: Tier, at: Instant) {
        if let Some(&(queued_tier, queued_at)) = self.due.get(node) {
            if (queued_tier, queued_at) <= (tier, at) {
                return;
            }
            self.order[queued_tier as usize].remove(&(queued_at, node.clone()));
        }
        self.due.insert(node.clone(), (tier, at));
        self.order[tier as usize].insert((at, node.clone()));
    }

    /// Nodes queued.
    pub(super) fn len(&self) -> usize {
        self.due.len()
    }

    pub(super) fn remove(&mut self, node: &NodeName) {
        if let Some((tier, at)) = self.due.remove(node) {
            self.order[tier as usize].remove(&(at, node.clone()));
        }
    }

    /// The most urgent node due by `now`, with its tier; a lazy one only
    /// while the budget allows (taking from it).
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(NodeName, Tier)> {
        self.budget.refill(now);
        let lazy_allowed = self.budget.tokens >= 1.0;
        let tier = [Tier::Urgent, Tier::Lazy].into_iter().find(|tier| {
            (*tier == Tier::Urgent || lazy_allowed)
                && self.order[*tier as usize].first().is_some_and(|(at, _)| *at <= now)
        })?;
        let (_, node) = self.order[tier as usize].pop_first()?;
        self.due.remove(&node);
        if tier == Tier::Lazy {
            self.budget.tokens -= 1.0;
        }
        Some((node, tier))
    }

    /// When the next queued write may start: when it is due and, for a
    /// lazy one, when the budget has room.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let urgent = self.order[Tier::Urgent as usize].first().map(|(at, _)| *at);
        let lazy = self.order[Tier::Lazy as usize].first().map(|(at, _)| (*at).max(self.budget.next_token()));
        urgent.into_iter().chain(lazy).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> NodeName {
        NodeName::new(n).expect("a valid node name")
    }

    #[test]
    fn the_queue_holds_each_node_once_and_puts_urgent_writes_first() {
        let later = super::super::LAZY_DELAY;
        let now = Instant::now();
        let mut queue = WriteQueue::default();
        queue.schedule(&name("a"), Tier::Lazy, now);
        queue.schedule(&name("b"), Tier::Lazy, now + later);
        queue.schedule(&name("c"), Tier::Urgent, now);
        // A later lazy change keeps the node where it was.
        queue.schedule(&name("a"), Tier::Lazy, now + later);
        // An urgent change overtakes a lazy one.
        queue.schedule(&name("b"), Tier::Urgent, now);
        assert_eq!(queue.pop_due(now), Some((name("b"), Tier::Urgent)));
        assert_eq!(queue.pop_due(now), Some((name("c"), Tier::Urgent)));
        assert_eq!(queue.pop_due(now), Some((name("a"), Tier::Lazy)));
        assert_eq!(queue.pop_due(now + later), None);
        assert_eq!(queue.next_due(), None);

        queue.schedule(&name("d"), Tier::Lazy, now + later);
        assert_eq!(queue.pop_due(now), None, "not due yet");
        assert_eq!(queue.next_due(), Some(now + later));
        queue.remove(&name("d"));
        assert_eq!(queue.next_due(), None);
    }

    #[test]
    fn lazy_writes_beyond_the_burst_wait_for_the_budget_and_urgent_ones_do_not() {
        let now = Instant::now();
        let mut queue = WriteQueue { budget: Budget::full(now), ..WriteQueue::default() };
        let lazy = LAZY_BURST as usize + 10;
        for i in 0..lazy {
            queue.schedule(&name(&format!("lazy-{i}")), Tier::Lazy, now);
        }
        let mut written = 0;
        while queue.pop_due(now).is_some() {
            written += 1;
        }
        assert_eq!(written, LAZY_BURST as usize, "the burst goes at once, no more");

        // The next lazy write waits for one token; an urgent one does not.
        let token = Duration::from_secs_f64(1.0 / LAZY_WRITES_PER_SECOND);
        assert_eq!(queue.next_due(), Some(now + token));
        queue.schedule(&name("urgent"), Tier::Urgent, now);
        assert_eq!(queue.next_due(), Some(now));
        assert_eq!(queue.pop_due(now), Some((name("urgent"), Tier::Urgent)));
        assert_eq!(queue.pop_due(now), None);

        // A second later the budget has earned a second's worth.
        let second = now + Duration::from_secs(1);
        let mut more = 0;
        while queue.pop_due(second).is_some() {
            more += 1;
        }
        assert_eq!(more, 10, "the rest, within the {LAZY_WRITES_PER_SECOND}/s earned");
    }
}
