//! Both HTTPS clients a function builds, the AWS SDK's (`app::aws::https_client`) and the
//! Daraja client, over real TLS to a loopback server whose certificate a test authority signed
//! (`tests/data`): trusted when the roots hold that authority, refused (no request reaches the
//! server) when they do not.
#![cfg(feature = "push")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use app::tls::TrustRoots;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::AttributeValue;
use daraja::time::SystemClock;
use daraja::{
    DarajaClient, DarajaConfig, NoSharedTokens, QueryAnswer, Secret, ShortCode, TransactionKind,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

const CA: &[u8] = include_bytes!("data/test-ca.pem");
const CERT: &[u8] = include_bytes!("data/localhost.pem");
const KEY: &[u8] = include_bytes!("data/localhost.key");

/// An HTTPS server on loopback answering Daraja's token and query paths and, for any other path,
/// an empty DynamoDB answer (`GetItem` finding nothing). Counts the requests it answered.
struct Server {
    url: String,
    requests: Arc<AtomicUsize>,
}

async fn https_server() -> Server {
    let certs = vec![CertificateDer::from_pem_slice(CERT).expect("test certificate")];
    let key = PrivateKeyDer::from_pem_slice(KEY).expect("test key");
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    while let Some(path) = read_request(&mut tls).await {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let body = answer(&path);
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if tls.write_all(head.as_bytes()).await.is_err()
                            || tls.write_all(body.as_bytes()).await.is_err()
                        {
                            break;
                        }
                    }
                }
            });
        }
    });
    Server { url, requests }
}

fn answer(path: &str) -> String {
    if path.starts_with("/oauth/v1/generate") {
        r#"{"access_token":"tls-test-token","expires_in":"3599"}"#.into()
    } else if path.starts_with("/mpesa/stkpushquery/v1/query") {
        r#"{"ResponseCode":"0","ResponseDescription":"The service request has been accepted successsfully",
            "MerchantRequestID":"m-1","CheckoutRequestID":"ws_CO_1","ResultCode":"0",
            "ResultDesc":"The service request is processed successfully."}"#
            .into()
    } else {
        "{}".into()
    }
}

/// One HTTP/1.1 request's path, its body read and dropped; `None` at the end of the connection.
async fn read_request<S: AsyncReadExt + Unpin>(stream: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    head.split_whitespace().nth(1).map(str::to_string)
}

fn test_roots() -> TrustRoots {
    TrustRoots::from_pem(CA)
}

fn dynamodb(server: &Server, roots: &TrustRoots) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tls-test"))
        .endpoint_url(&server.url)
        .http_client(app::aws::https_client(roots))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

fn daraja(server: &Server, roots: &TrustRoots) -> DarajaClient {
    let config = DarajaConfig::new(
        server.url.clone(),
        ShortCode::parse("174379").unwrap(),
        TransactionKind::PayBill,
        Secret::from("key"),
        Secret::from("secret"),
        Secret::from("passkey"),
    );
    DarajaClient::new(
        config,
        Arc::new(SystemClock),
        Arc::new(NoSharedTokens),
        roots.certs(),
    )
    .expect("client")
}

async fn get_item(client: &aws_sdk_dynamodb::Client) -> Result<bool, String> {
    client
        .get_item()
        .table_name("payments")
        .key("pk", AttributeValue::S("PAY#ws_CO_1".into()))
        .send()
        .await
        .map(|out| out.item.is_some())
        .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
}

#[tokio::test]
async fn the_sdk_client_trusts_exactly_the_roots_it_is_given() {
    let server = https_server().await;

    assert_eq!(get_item(&dynamodb(&server, &test_roots())).await, Ok(false));
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);

    let refused = get_item(&dynamodb(&server, &TrustRoots::default())).await;
    let error = refused.expect_err("no root signs the server's certificate");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        1,
        "no request got through"
    );
}

#[tokio::test]
async fn the_daraja_client_trusts_exactly_the_roots_it_is_given() {
    let server = https_server().await;

    let answer = daraja(&server, &test_roots())
        .stk_query(
            "ws_CO_1",
            daraja::Deadline::after(std::time::Duration::from_secs(30)),
        )
        .await;
    assert!(
        matches!(answer, Ok(QueryAnswer::Final { ref merchant_request_id, .. }) if merchant_request_id == "m-1"),
        "{answer:?}"
    );
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        2,
        "token, then query"
    );

    let refused = daraja(&server, &TrustRoots::default())
        .stk_query(
            "ws_CO_1",
            daraja::Deadline::after(std::time::Duration::from_secs(30)),
        )
        .await
        .expect_err("no root signs the server's certificate");
    assert!(!refused.is_outcome_unknown(), "{refused:?}");
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        2,
        "no request got through"
    );
}

#[test]
fn the_system_roots_are_found_on_this_machine() {
    // Debian's ca-certificates (CI) and Amazon Linux (Lambda) both ship a bundle.
    assert!(app::tls::system_roots().len() > 50);
}
