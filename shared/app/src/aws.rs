//! The AWS SDK configuration a function loads at start.

use aws_config::environment::{
    EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
};
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider, TlsContext, TrustStore};
use aws_smithy_http_client::Builder;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

use crate::tls::TrustRoots;

/// Region and credentials from the variables Lambda sets (`AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`; `sam local invoke` and the local stack set them
/// too), endpoints from `AWS_ENDPOINT_URL*` as usual, and an HTTPS client trusting the roots the
/// Daraja client also uses ([`crate::tls::system_roots`]), read once.
///
/// Only the environment is asked for credentials: no profile files, no container or instance
/// metadata, no STS, so a cold start makes no request before the first real one.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(EnvironmentVariableRegionProvider::new())
        .credentials_provider(EnvironmentVariableCredentialsProvider::new())
        .http_client(https_client(crate::tls::system_roots()))
        .load()
        .await
}

/// The SDK's hyper + rustls client, trusting `roots` only, its TLS set up at the first request.
pub fn https_client(roots: &TrustRoots) -> SharedHttpClient {
    let trust = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(roots.to_pem());
    let client = Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        // Building a context cannot fail today; should it ever, the SDK's default (the system
        // store, read by the SDK itself) is still correct, only slower to start.
        .tls_context(
            TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .unwrap_or_default(),
        )
        .build_https();
    SharedHttpClient::new(ConnectOnFirstRequest(client))
}

/// The SDK's client without its start-up check. Creating a service client makes the SDK build a
/// TLS connector and drop it ("so that native certs load at client initialization time"), then
/// build the one it uses at the first request: with the roots already read, the first build only
/// parses them a second time (~2 ms per cold start here).
#[derive(Debug)]
struct ConnectOnFirstRequest(SharedHttpClient);

impl HttpClient for ConnectOnFirstRequest {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}
