//! A fault proxy between the functions and the DynamoDB emulator: every request is forwarded;
//! chosen writes of the push path (every `TransactWriteItems`, `PutItem`, `UpdateItem` and
//! `DeleteItem` but the shared OAuth token's) are answered with a 500 `InternalServerError`,
//! which the SDK and the push function both retry.

// Not every test file uses every helper.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Between the functions and moto: forwards every request, and answers the writes whose
/// number (1-based, counted across all callers; the shared token's writes are not counted) is
/// in `fail` with a 500 `InternalServerError`, which the SDK and the push function both retry.
/// The shared OAuth token's item: its writes are no part of a push's record.
const TOKEN_KEY: &[u8] = b"TOKEN#daraja";

#[derive(Default)]
pub struct FaultyDynamo {
    target: String,
    writes: AtomicUsize,
    fail: std::sync::Mutex<std::ops::Range<usize>>,
    /// While set, every counted write fails: a DynamoDB outage on the push path.
    outage: AtomicBool,
    /// When set, faults hit only requests signed with this access key id (one function's).
    only_from: std::sync::Mutex<Option<String>>,
    /// While set, every request fails.
    down: AtomicBool,
    failed: AtomicUsize,
    /// Every request forwarded: the access key id it was signed with, and its JSON.
    seen: std::sync::Mutex<Vec<SeenRequest>>,
}

/// One DynamoDB request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// From the SigV4 `Credential=` of its `Authorization` header.
    pub access_key_id: String,
    /// The operation, e.g. `GetItem` (from `X-Amz-Target`).
    pub operation: String,
    pub body: serde_json::Value,
}

impl FaultyDynamo {
    pub async fn start(target: String, fail: std::ops::Range<usize>) -> (Arc<Self>, String) {
        use axum::body::Bytes;
        use axum::extract::State;
        use axum::http::{HeaderMap, Method, StatusCode, Uri};
        use axum::response::IntoResponse;

        let faults = Arc::new(Self {
            target,
            fail: std::sync::Mutex::new(fail),
            ..Self::default()
        });
        async fn forward(
            State((faults, http)): State<(Arc<FaultyDynamo>, reqwest::Client)>,
            method: Method,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> axum::response::Response {
            let access_key_id = headers
                .get("authorization")
                .and_then(|a| a.to_str().ok())
                .and_then(|a| a.split("Credential=").nth(1))
                .and_then(|c| c.split('/').next())
                .unwrap_or_default()
                .to_owned();
            let operation = headers
                .get("x-amz-target")
                .and_then(|t| t.to_str().ok())
                .and_then(|t| t.rsplit('.').next())
                .unwrap_or_default()
                .to_owned();
            faults.seen.lock().unwrap().push(SeenRequest {
                access_key_id: access_key_id.clone(),
                operation: operation.clone(),
                body: serde_json::from_slice(&body).unwrap_or_default(),
            });
            let targeted = faults
                .only_from
                .lock()
                .unwrap()
                .as_ref()
                .is_none_or(|key| *key == access_key_id);
            let is_write = targeted
                && matches!(
                    operation.as_str(),
                    "TransactWriteItems" | "PutItem" | "UpdateItem" | "DeleteItem"
                )
                && !body.windows(TOKEN_KEY.len()).any(|w| w == TOKEN_KEY);
            // Down: every request fails, and no write is counted.
            let fails = faults.down.load(Ordering::SeqCst)
                || (is_write && {
                    let n = faults.writes.fetch_add(1, Ordering::SeqCst) + 1;
                    faults.outage.load(Ordering::SeqCst) || faults.fail.lock().unwrap().contains(&n)
                });
            if fails {
                faults.failed.fetch_add(1, Ordering::SeqCst);
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [("content-type", "application/x-amz-json-1.0")],
                    r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected fault"}"#,
                )
                    .into_response();
            }
            let mut request = http.request(method, format!("{}{}", faults.target, uri.path()));
            for (name, value) in &headers {
                if name != "host" && name != "content-length" {
                    request = request.header(name, value);
                }
            }
            match request.body(body).send().await {
                Ok(answer) => {
                    let status = answer.status();
                    let headers = answer.headers().clone();
                    let body = answer.bytes().await.unwrap_or_default();
                    let mut response = (status, body).into_response();
                    for (name, value) in &headers {
                        if name != "content-length" && name != "transfer-encoding" {
                            response.headers_mut().insert(name, value.clone());
                        }
                    }
                    response
                }
                Err(_) => StatusCode::BAD_GATEWAY.into_response(),
            }
        }
        let app = axum::Router::new()
            .fallback(forward)
            .with_state((faults.clone(), reqwest::Client::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (faults, url)
    }

    /// Every request forwarded so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }

    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// No more faults from now on.
    pub fn heal(&self) {
        *self.fail.lock().unwrap() = 0..0;
        self.outage.store(false, Ordering::SeqCst);
        self.down.store(false, Ordering::SeqCst);
    }

    /// From now on, faults hit only the requests of the function built from `binary` (the
    /// local stack signs each function's requests with the access key id `local-<binary>`).
    pub fn only_for(&self, binary: &str) {
        *self.only_from.lock().unwrap() = Some(format!("local-{binary}"));
    }

    /// Starts or ends an outage of every counted write.
    pub fn outage(&self, on: bool) {
        self.outage.store(on, Ordering::SeqCst);
    }

    /// Starts or ends an outage of every request.
    pub fn down(&self, on: bool) {
        self.down.store(on, Ordering::SeqCst);
    }
}
