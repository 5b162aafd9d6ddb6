//! Shards: a job split by key into `[source] shards = N` parts that run, advance and fail
//! independently, each with its own watermark, claim and ledger rows.
//!
//! Shard `i` owns the rows whose key hashes to `i` modulo N. The hash is computed in SQL, so a
//! shard reads only its own rows, and it is the same on every database (and easy to reproduce
//! anywhere, to find which shard a key belongs to):
//!
//! - integer keys: `k mod p * 48271 mod p` with `p = 2^31 - 1` (the Park–Miller step, in plain
//!   integer arithmetic: no product exceeds 2^47, so it never overflows a 64-bit integer);
//! - text keys: the first 32 bits of the MD5 of the key's UTF-8 text, big-endian.
//!
//! In Python: `(k % 2147483647) * 48271 % 2147483647 % N` and
//! `int(hashlib.md5(key.encode()).hexdigest()[:8], 16) % N`. A NULL key belongs to shard 0, which
//! reports it as a bad key as an unsharded job would.

use std::fmt;

use md5::{Digest, Md5};

use crate::source::KeyKind;

/// `p` of the integer hash: the Mersenne prime 2^31 - 1.
const PRIME: i64 = 2_147_483_647;
/// The Park–Miller multiplier.
const MULTIPLIER: i64 = 48_271;

/// One shard of a job: `index` of `count` (`0/1` for a job that is not sharded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Every shard of a job with `count` shards, in order.
    pub fn all(count: u32) -> impl Iterator<Item = Shard> {
        (0..count).map(move |index| Shard { index, count })
    }

    /// The shards of a job with `count` shards that `only` asks for: every one, or the one
    /// `--shard` names, or why that one does not exist.
    pub fn select(count: u32, only: Option<u32>) -> Result<Vec<Shard>, String> {
        match only {
            Some(index) if index >= count => Err(format!(
                "--shard {index} is out of range: the job has shards = {count}, numbered 0 to {}",
                count - 1
            )),
            Some(index) => Ok(vec![Shard { index, count }]),
            None => Ok(Shard::all(count).collect()),
        }
    }

    /// Whether this shard is the whole job (no filter on keys).
    pub fn is_whole(self) -> bool {
        self.count == 1
    }

    /// The SQL condition on `key` (quoted) that keeps this shard's rows, or `None` for the whole
    /// job, in the backend's SQL for the key (`sql`).
    pub fn predicate(self, key: &str, kind: KeyKind, sql: &KeySql) -> Option<String> {
        if self.is_whole() {
            return None;
        }
        let hash = match kind {
            KeyKind::Integer => format!(
                "({} % {PRIME} + {PRIME}) % {PRIME} * {MULTIPLIER} % {PRIME}",
                (sql.integer)(key)
            ),
            KeyKind::Text => (sql.text_hash)(key),
        };
        Some(format!(
            "COALESCE(({hash}) % {count}, 0) = {index}",
            count = self.count,
            index = self.index
        ))
    }
}

/// How messages name a job's shard: the job's name alone when it is not sharded.
pub fn job_label(job: &str, shard: Shard) -> String {
    match shard.is_whole() {
        true => job.to_owned(),
        false => format!("{job} (shard {shard})"),
    }
}

/// How a backend writes the two expressions of a key that a shard's condition is made of.
pub struct KeySql {
    /// The key as a 64-bit integer (`CAST(key AS BIGINT)`).
    pub integer: fn(&str) -> String,
    /// [`text_hash`] of the key as text.
    pub text_hash: fn(&str) -> String,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The hash of a text key: the first 32 bits of its MD5, big-endian. SQLite computes it through
/// this function, registered on every connection; PostgreSQL with `md5()`.
pub fn text_hash(key: &[u8]) -> i64 {
    let digest = Md5::digest(key);
    i64::from(u32::from_be_bytes([
        digest[0], digest[1], digest[2], digest[3],
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the SQL of [`Shard::predicate`] computes for an integer key.
    fn integer_hash(key: i64) -> i64 {
        key.rem_euclid(PRIME) * MULTIPLIER % PRIME
    }

    /// Reference values from Python: `(k % 2147483647) * 48271 % 2147483647` and
    /// `int(hashlib.md5(s.encode()).hexdigest()[:8], 16)`.
    #[test]
    fn hashes_match_the_python_formulas() {
        for (key, hash) in [
            (0, 0),
            (1, 48271),
            (2, 96542),
            (41, 1979111),
            (-1, 2147435376),
            (-7, 2147145750),
            (i64::MAX, 48271),
            (i64::MIN, 2147387105),
            (2147483647, 0),
            (123456789, 115541394),
        ] {
            assert_eq!(integer_hash(key), hash, "key {key}");
        }
        for (key, hash) in [
            ("", 3558706393),
            ("a", 214005177),
            ("machine-0042", 4076758906),
            ("ünïcødé", 658105544),
            ("12", 3255489751),
        ] {
            assert_eq!(text_hash(key.as_bytes()), hash, "key {key:?}");
        }
    }

    #[test]
    fn a_whole_job_has_no_predicate() {
        let sql = KeySql {
            integer: |k| format!("int({k})"),
            text_hash: |k| format!("h({k})"),
        };
        let whole = Shard { index: 0, count: 1 };
        assert_eq!(whole.predicate("\"k\"", KeyKind::Integer, &sql), None);
        let shard = Shard { index: 2, count: 3 };
        assert_eq!(
            shard.predicate("\"k\"", KeyKind::Text, &sql).as_deref(),
            Some("COALESCE((h(\"k\")) % 3, 0) = 2")
        );
        assert_eq!(
            shard.predicate("\"k\"", KeyKind::Integer, &sql).as_deref(),
            Some(
                "COALESCE(((int(\"k\") % 2147483647 + 2147483647) % 2147483647 * 48271 % 2147483647) % 3, 0) = 2"
            )
        );
        assert_eq!(
            Shard::all(3).map(|s| s.to_string()).collect::<Vec<_>>(),
            ["0/3", "1/3", "2/3"]
        );
    }
}
