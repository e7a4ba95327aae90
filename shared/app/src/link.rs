//! Counting and logging what linking an orphan result to a push in doubt did: the callback
//! links at once, reconciliation the results that came while their push still ran.

use payments::intent::log_id;
use payments::link::Link;
use payments::{PendingWrite, StoreError};

use crate::metrics::{self, Metric};

/// Counts and logs what linking an orphan result to a push in doubt did (the callback links at
/// once, reconciliation later).
pub fn log_link(id: &str, linked: Result<Link, StoreError>) {
    match linked {
        Ok(Link::Linked { intent, written }) => {
            metrics::count(Metric::PushInDoubtLinked);
            if matches!(*written, PendingWrite::FlaggedForReview(_)) {
                metrics::count(Metric::PaymentNeedsReview);
            }
            tracing::warn!(
                decision = "linked",
                checkout_request_id = %id,
                intent = %log_id(&intent.pk),
                status = written.record().status.as_str(),
                amount = intent.amount,
                "the result of a push in doubt, linked to its intent"
            );
        }
        Ok(Link::Nothing) => {}
        Ok(Link::BadIntent(intent)) => {
            tracing::error!(checkout_request_id = %id, intent = %log_id(&intent.pk), "an intent in doubt holds a charge that no longer validates; not linked")
        }
        Err(e) => {
            tracing::warn!(checkout_request_id = %id, error = %e, "the orphan could not be linked to a push in doubt; reconciliation tries again")
        }
    }
}
