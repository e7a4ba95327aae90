//! Timestamps as stored and served: RFC 3339, UTC, millisecond precision.
//!
//! One fixed width keeps the strings ordered like the instants they name, which the
//! pending index relies on (`pending_sk = created_at + "#" + id`).

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

/// Drops what the stored form cannot hold, so a value compares equal after a round trip.
pub fn truncate(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(3)
}

/// `2024-05-01T10:00:00.123Z`
pub fn format(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|at| truncate(at.with_timezone(&Utc)))
}

/// `#[serde(with = "…")]` for `DateTime<Utc>` in the stored form.
pub mod serde_millis {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format(*at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(default, with = "…")]` for `Option<DateTime<Utc>>` in the stored form.
pub mod serde_millis_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        at: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.serialize_str(&super::format(*at)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| super::parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_has_millis_and_sorts_like_time() {
        let early = parse("2024-05-01T09:59:59.9999Z").unwrap();
        let late = parse("2024-05-01T10:00:00Z").unwrap();
        assert_eq!(format(early), "2024-05-01T09:59:59.999Z");
        assert_eq!(format(late), "2024-05-01T10:00:00.000Z");
        assert!(format(early) < format(late));
    }

    #[test]
    fn offsets_are_converted_to_utc() {
        let at = parse("2024-05-01T13:00:00+03:00").unwrap();
        assert_eq!(format(at), "2024-05-01T10:00:00.000Z");
    }
}
