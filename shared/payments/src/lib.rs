//! The payment domain: the record and its state machine, the push ledger's rules, and the
//! store traits with their in-memory implementations.
//!
//! - [`payment`]: the record, its status, and the pure rules deciding what a pending write
//!   and a result do ([`payment::plan_pending`], [`payment::plan_result`]).
//! - [`store`]: [`PaymentStore`], where payment records live.
//! - [`intent`]: [`PushLedger`], what `POST /payments` writes before and after it calls
//!   Daraja, and the rules for an existing intent.
//! - [`event`]: the event a change of a payment's status produces, for merchants.
//! - [`raw`]: [`RawCallbackStore`], callbacks kept as received when they cannot be applied.
//! - [`memory`]: every trait in memory, with the semantics of DynamoDB.
//! - [`conformance`] (feature `conformance`): the behaviour every implementation must show.
//!
//! Nothing here knows AWS, Lambda or HTTP.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod event;
pub mod intent;
pub mod link;
pub mod memory;
pub mod payment;
pub mod raw;
pub mod store;

pub use intent::PushLedger;
pub use memory::{MemoryLedger, MemoryRawStore, MemoryStore};
pub use payment::{
    timestamp, HeldCallback, NewPayment, PaymentRecord, PaymentResult, PaymentStatus, ResultSource,
    ReviewReason,
};
pub use raw::{RawCallbackStore, UnreadableCallback};
pub use store::{Applied, Hold, PaymentStore, PendingWrite, QueryQueue, Settled, StoreError};
