//! Serde helpers that read config values straight into typed ones at the boundary: durations
//! from the `_ms` / `_secs` numbers the keys are named after, socket addresses from strings.
//! Each writes the same number or string back, so `check-config` prints what was read.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// A `*_ms` key as a [`Duration`].
pub(crate) mod millis {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// A `*_secs` key as a [`Duration`].
pub(crate) mod secs {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

/// A listen address (`0.0.0.0:8080`) as a [`SocketAddr`].
pub(crate) mod addr {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(a)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|_| {
            serde::de::Error::custom(format!("'{s}' is not an address like 0.0.0.0:8080"))
        })
    }
}
