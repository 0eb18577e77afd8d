//! go-carbon's `GET /admin/info` answer, as far as the throttle reads it: `{"cache": {"size": N, "limit": L},
//! …}` (go-carbon's `cache.GetInfo`; `limit` is `[cache] max-size`, 0 when the cache has no limit).

use serde::Deserialize;

/// The cache's fill as `/admin/info` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheInfo {
    /// Points in the cache.
    pub(crate) size: u64,
    /// `[cache] max-size`; 0: no limit.
    pub(crate) limit: u64,
}

/// Why an `/admin/info` body says nothing usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum InfoError {
    /// Not JSON, or no `cache.size` / `cache.limit` numbers.
    #[error("not go-carbon's /admin/info (want {{\"cache\":{{\"size\":N,\"limit\":L}}}}): {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct Info {
    cache: Cache,
}

#[derive(Deserialize)]
struct Cache {
    size: f64,
    limit: f64,
}

impl CacheInfo {
    /// Parses an `/admin/info` body. Numbers are read as JSON numbers of any form (go-carbon writes
    /// integers); negative or fractional ones are refused.
    pub(crate) fn parse(body: &[u8]) -> Result<CacheInfo, InfoError> {
        let info: Info = serde_json::from_slice(body).map_err(|e| InfoError::Malformed(e.to_string()))?;
        let count = |what: &str, v: f64| {
            if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64 {
                Ok(v as u64)
            } else {
                Err(InfoError::Malformed(format!("cache.{what} is {v}, not a count")))
            }
        };
        Ok(CacheInfo { size: count("size", info.cache.size)?, limit: count("limit", info.cache.limit)? })
    }

    /// `size / limit`, or `None` when the cache has no limit (nothing to judge the pressure by).
    pub(crate) fn fill(self) -> Option<f64> {
        (self.limit > 0).then(|| self.size as f64 / self.limit as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_carbons_answer() {
        // As go-carbon 0.17.1 answers (cache and config scopes).
        let body = br#"{"cache":{"limit":1000,"size":812},"config":{"file-list-cache":""}}"#;
        let info = CacheInfo::parse(body).unwrap();
        assert_eq!(info, CacheInfo { size: 812, limit: 1000 });
        assert_eq!(info.fill(), Some(0.812));
        assert_eq!(CacheInfo::parse(br#"{"cache":{"size":5,"limit":0}}"#).unwrap().fill(), None);
    }

    #[test]
    fn refuses_what_is_not_it() {
        for body in [
            &b"<html>404</html>"[..],
            br#"{"cache":{"size":5}}"#,
            br#"{"config":{}}"#,
            br#"{"cache":{"size":-1,"limit":10}}"#,
            br#"{"cache":{"size":1.5,"limit":10}}"#,
            br#"{"cache":{"size":"5","limit":10}}"#,
            b"",
        ] {
            let err = CacheInfo::parse(body).expect_err(&String::from_utf8_lossy(body));
            assert!(err.to_string().starts_with("not go-carbon's /admin/info"), "{err}");
        }
    }
}
