//! What the DynamoDB client reports about each request, for whoever keeps metrics: an SDK
//! interceptor times every operation (its retries included, as the caller waits for them) and
//! tells an [`Observer`]. This crate knows no metrics system.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::interceptors::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::Client;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Told about every DynamoDB operation the client runs, answered or not: the API's name
/// (`GetItem`, `TransactWriteItems`, …) and how long the caller waited.
pub type Observer = fn(operation: &str, latency: Duration);

/// A client for `sdk` whose every operation is timed for `observer`.
pub fn observed_client(sdk: &aws_config::SdkConfig, observer: Observer) -> Client {
    let config = aws_sdk_dynamodb::config::Builder::from(sdk)
        .interceptor(Timed(observer))
        .build();
    Client::from_conf(config)
}

#[derive(Debug)]
struct Timed(Observer);

/// When the operation started, kept in the operation's own config bag.
#[derive(Debug, Clone)]
struct Started(Instant);

impl Storable for Started {
    type Storer = StoreReplace<Self>;
}

impl Intercept for Timed {
    fn name(&self) -> &'static str {
        "Timed"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().store_put(Started(Instant::now()));
        Ok(())
    }

    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Started(at)) = cfg.load::<Started>() {
            let operation = cfg.load::<Metadata>().map_or("unknown", Metadata::name);
            (self.0)(operation, at.elapsed());
        }
        Ok(())
    }
}
