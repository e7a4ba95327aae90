//! The payments table on DynamoDB: every store trait of `payments` and the shared Daraja token,
//! over one item codec ([`item`]), one expression builder ([`expr`]) and one error mapping
//! ([`error`]).
//!
//! The table is defined in `template.yaml`; each module's header lists the items it owns.

pub mod error;
pub mod expr;
pub mod item;
pub mod ledger;
pub mod observe;
pub mod payments;
pub mod raw;
pub mod stream;
pub mod table;
pub mod token;

pub use ledger::DynamoLedger;
pub use observe::{observed_client, Observer};
pub use payments::DynamoStore;
pub use raw::DynamoRawStore;
pub use token::DynamoTokenStore;
