//! Log set-up for the functions: the function's `LoggingConfig` (the template's `LogFormat` and
//! `ApplicationLogLevel`, which Lambda passes as `AWS_LAMBDA_LOG_FORMAT` and
//! `AWS_LAMBDA_LOG_LEVEL`) decides the format and the level.
//!
//! Unlike the runtime's default subscriber, every JSON line carries an RFC 3339 `timestamp`:
//! Lambda's log-level filtering treats a line without a valid timestamp as INFO whatever its
//! `level` says, so with an `ApplicationLogLevel` of WARN it would drop every WARN and ERROR.

use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;

/// How to log, as read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub json: bool,
    /// `EnvFilter` directives: `AWS_LAMBDA_LOG_LEVEL` (set by Lambda from the template) wins,
    /// then `RUST_LOG`, then `info`.
    pub directives: String,
}

impl LogSettings {
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let json = var("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
        let directives = var("AWS_LAMBDA_LOG_LEVEL")
            // Lambda's levels include FATAL, which tracing has not: the nearest is ERROR.
            .map(|level| match level.to_ascii_lowercase().as_str() {
                "fatal" => "error".to_string(),
                other => other
                    .parse::<LevelFilter>()
                    .map_or("info".to_string(), |_| other.into()),
            })
            .or_else(|| var("RUST_LOG").filter(|v| !v.trim().is_empty()))
            .unwrap_or_else(|| "info".to_string());
        Self { json, directives }
    }
}

/// Installs the global subscriber writing to stdout, as Lambda reads it.
pub fn init() {
    init_with_writer(&LogSettings::from_env(), std::io::stdout);
}

pub fn init_with_writer<W>(settings: &LogSettings, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .parse_lossy(&settings.directives);
    let builder = tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(false)
        .with_env_filter(filter)
        .with_writer(writer);
    if settings.json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    fn settings(pairs: &[(&str, &str)]) -> LogSettings {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LogSettings::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn lambda_log_level_wins_over_rust_log() {
        let s = settings(&[
            ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
            ("AWS_LAMBDA_LOG_LEVEL", "WARN"),
            ("RUST_LOG", "debug"),
        ]);
        assert_eq!(
            s,
            LogSettings {
                json: true,
                directives: "warn".into()
            }
        );
        assert_eq!(
            settings(&[("RUST_LOG", "shared=debug")]).directives,
            "shared=debug"
        );
        assert_eq!(settings(&[]).directives, "info");
        assert_eq!(
            settings(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]).directives,
            "error"
        );
        assert_eq!(
            settings(&[("AWS_LAMBDA_LOG_LEVEL", "loud")]).directives,
            "info"
        );
        assert!(!settings(&[("AWS_LAMBDA_LOG_FORMAT", "Text")]).json);
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The only test in this crate that installs a global subscriber.
    #[test]
    fn json_lines_carry_level_and_an_rfc3339_timestamp_for_lambdas_filter() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        init_with_writer(
            &settings(&[
                ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
                ("AWS_LAMBDA_LOG_LEVEL", "WARN"),
            ]),
            move || sink.clone(),
        );
        tracing::info!("filtered out");
        tracing::error!(decision = "store_failed", "callback not stored");
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert_eq!(lines[0]["level"], "ERROR");
        assert_eq!(lines[0]["fields"]["decision"], "store_failed");
        let timestamp = lines[0]["timestamp"].as_str().expect("a timestamp");
        chrono::DateTime::parse_from_rfc3339(timestamp).expect("RFC 3339");
    }
}
