//! The swarming download's decisions, as a pure state machine: no I/O, no
//! clock (time is an input), no network types. A real node drives it over
//! libp2p (`node::download`); a unit test or a discrete-event simulator
//! drives it with a model of the network.
//!
//! ```text
//! let mut core = SwarmCore::new(params, providers, now, seed);
//! core.handle(now, Event::Answered { id, answer });  // facts in, with their time
//! while let Some(action) = core.poll_action(now) {   // decisions out
//!     driver.execute(action);                        // Request, Cancel, Discover, Ban, ...
//! }
//! let wake_at = core.next_timeout();                 // the driver owns the clock
//! ```
//!
//! The policy ([`SwarmCore`]):
//! * Providers come from DHT lookups (asked for again with a growing
//!   interval while fewer than half of `max_providers` are useful) and from
//!   peer exchange (hints in answers). Hints take at most half the places and
//!   only ever displace other hints, so a peer cannot crowd out providers
//!   found in the DHT or ones that delivered.
//! * A provider whose holdings are unknown, or whose last bitmap offered
//!   nothing still needed, gets a `Want`: "any of these blocks", the
//!   provider choosing the chunk it has uploaded least ([`choose_for_want`]).
//!   Concurrent `Want`s offer disjoint blocks; at most `max_wants` at once,
//!   to the providers that failed least.
//! * A provider with a known bitmap is asked for the rarest chunk (an
//!   aligned run of blocks) it can contribute, random among equally rare
//!   ones. A chunk is `blocks_per_request` blocks at first; per provider it
//!   doubles while answers of new data take under `fast_answer` and halves
//!   back when they take over four times that, so a fast path carries a
//!   component in a few round trips and a slow uplink keeps chunks small. At most `parallel` requests are in flight, one
//!   per provider. When every missing block is requested, idle providers
//!   duplicate slow requests (end game, at most `end_game_copies` copies).
//! * Every request has a deadline that doubles with the provider's failures;
//!   a missed deadline is a failure. A failed provider is left alone for a
//!   while and dropped after `attempt_budget` failures if it never delivered;
//!   found again, it keeps its failures (and its long deadlines).
//!   `Busy` is not a failure: the provider is backed off, longer each time.
//! * A provider that sends data that does not verify, or data outside what
//!   was asked, is banned at once; one that claims blocks and then does not
//!   send them is banned after `max_useless` such answers in a row.
//! * The download gives up at its deadline.

mod pick;
mod scheduler;
pub mod upload;

#[cfg(test)]
mod tests;

pub use pick::lowest;
pub use scheduler::{
    Action, Answer, Ask, Event, Holdings, MAX_OUTCOMES, Origin, Params, Peer, RequestId, SwarmCore,
};
pub use upload::{SlotGrant, Slots, Uplink, choose_for_want};
