//! Time as Daraja wants it: a Nairobi wall-clock timestamp, and the password derived from it.

use std::sync::Mutex;

use base64::Engine as _;
use chrono::{DateTime, Duration, FixedOffset, Utc};

/// Where the client reads the time. Injected so tests can fix it.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct FixedClock(Mutex<DateTime<Utc>>);

impl FixedClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.lock() = at;
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        *now += by;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // A poisoned lock still holds a valid time; a panic elsewhere must not stop the clock.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

/// East Africa Time: UTC+3 all year (Kenya has no daylight saving).
const EAT_OFFSET_SECONDS: i32 = 3 * 3600;

/// `YYYYMMDDHHmmss` in Africa/Nairobi. Daraja documents no zone, but requests stamped in any
/// other zone fail with "Invalid Timestamp" or "Wrong credentials". The offset is fixed here,
/// never read from the host (Lambda runs in UTC).
pub fn daraja_timestamp(at: DateTime<Utc>) -> String {
    let eat = FixedOffset::east_opt(EAT_OFFSET_SECONDS).expect("UTC+3 is a valid offset");
    at.with_timezone(&eat).format("%Y%m%d%H%M%S").to_string()
}

/// `base64(shortcode + passkey + timestamp)`. Pass the same `timestamp` string that goes in the
/// request's `Timestamp` field: two clock reads can straddle a second and give "Wrong credentials".
pub fn password(shortcode: &str, passkey: &str, timestamp: &str) -> String {
    let mut raw = String::with_capacity(shortcode.len() + passkey.len() + timestamp.len());
    raw.push_str(shortcode);
    raw.push_str(passkey);
    raw.push_str(timestamp);
    base64::engine::general_purpose::STANDARD.encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const SANDBOX_PASSKEY: &str =
        "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919";

    #[test]
    fn password_is_base64_of_the_concatenation() {
        let expected = base64::engine::general_purpose::STANDARD.encode(
            "174379bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c91920191219102115",
        );
        assert_eq!(
            password("174379", SANDBOX_PASSKEY, "20191219102115"),
            expected
        );
        // Cross-check one well-known published value prefix: "MTc0Mzc5" is base64 of "174379".
        assert!(expected.starts_with("MTc0Mzc5"));
    }

    #[test]
    fn timestamp_is_nairobi_time() {
        let at = Utc.with_ymd_and_hms(2019, 12, 19, 7, 21, 15).unwrap();
        assert_eq!(daraja_timestamp(at), "20191219102115");
    }

    /// Runs `timestamp_is_nairobi_time` in a child process under several host zones (UTC as on
    /// Lambda first). A child, because changing `TZ` inside a multi-threaded test run races
    /// with every other thread that reads the environment.
    #[test]
    fn timestamp_ignores_the_host_time_zone() {
        let exe = std::env::current_exe().expect("test binary path");
        for tz in ["UTC", "Pacific/Kiritimati", "America/Los_Angeles"] {
            let out = std::process::Command::new(&exe)
                .args(["--exact", "time::tests::timestamp_is_nairobi_time"])
                .env("TZ", tz)
                .output()
                .expect("run test binary");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "TZ={tz}: {stdout}");
            assert!(stdout.contains("1 passed"), "TZ={tz} ran no test: {stdout}");
        }
    }

    #[test]
    fn timestamp_rolls_over_the_date_at_nairobi_midnight() {
        let before = Utc.with_ymd_and_hms(2024, 12, 31, 20, 59, 59).unwrap();
        let after = Utc.with_ymd_and_hms(2024, 12, 31, 21, 0, 0).unwrap();
        assert_eq!(daraja_timestamp(before), "20241231235959");
        assert_eq!(daraja_timestamp(after), "20250101000000");
    }

    #[test]
    fn fixed_clock_moves_only_when_told() {
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let clock = FixedClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::seconds(90));
        assert_eq!(clock.now(), start + Duration::seconds(90));
        clock.set(start);
        assert_eq!(clock.now(), start);
    }
}
