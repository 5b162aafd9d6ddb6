//! PostgreSQL's binary COPY format, both ways: the window's rows arrive as COPY tuples, parsed
//! here field by field straight from the received bytes, and result rows leave as COPY tuples,
//! encoded here.
//!
//! The format (<https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4>): an
//! 11-byte signature, flags and a header extension, then per tuple a 16-bit field count and
//! per field a 32-bit length (-1 for NULL) and the value in the type's binary send format;
//! a field count of -1 ends the stream. Everything is big-endian.

use std::ops::Range;

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, Utc};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Signature, flags, header-extension length.
const HEADER_LEN: usize = 11 + 4 + 4;
/// PostgreSQL counts time from 2000-01-01 UTC, in microseconds.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// One tuple: its fields as byte ranges of the data it was parsed from.
pub struct Tuple<'a> {
    data: &'a [u8],
    fields: &'a [Option<Range<usize>>],
}

impl Tuple<'_> {
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// The raw value of field `i`, `None` for NULL.
    pub fn raw(&self, i: usize) -> Option<&[u8]> {
        self.fields[i].clone().map(|range| &self.data[range])
    }

    pub fn int8(&self, i: usize) -> anyhow::Result<Option<i64>> {
        self.raw(i)
            .map(|v| Ok(i64::from_be_bytes(fixed(v)?)))
            .transpose()
    }

    pub fn float8(&self, i: usize) -> anyhow::Result<Option<f64>> {
        self.raw(i)
            .map(|v| Ok(f64::from_be_bytes(fixed(v)?)))
            .transpose()
    }

    pub fn boolean(&self, i: usize) -> anyhow::Result<Option<bool>> {
        self.raw(i)
            .map(|v| Ok(u8::from_be_bytes(fixed(v)?) != 0))
            .transpose()
    }

    pub fn text(&self, i: usize) -> anyhow::Result<Option<&str>> {
        self.raw(i)
            .map(|v| std::str::from_utf8(v).context("a text value is not UTF-8"))
            .transpose()
    }
}

fn fixed<const N: usize>(value: &[u8]) -> anyhow::Result<[u8; N]> {
    value
        .try_into()
        .with_context(|| format!("a field of {} bytes where {N} were expected", value.len()))
}

/// Parses a binary COPY stream that arrives in pieces of any size (the server sends one
/// message per tuple, but nothing promises it).
#[derive(Default)]
pub struct TupleReader {
    /// The start of a tuple (or the header) that the last piece cut off.
    pending: Vec<u8>,
    header_read: bool,
    finished: bool,
    fields: Vec<Option<Range<usize>>>,
}

impl TupleReader {
    /// Parse `piece`, calling `on_tuple` for every tuple it completes.
    pub fn feed(
        &mut self,
        piece: &[u8],
        mut on_tuple: impl FnMut(&Tuple<'_>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            let used = self.parse(piece, &mut on_tuple)?;
            self.pending.extend_from_slice(&piece[used..]);
        } else {
            let mut data = std::mem::take(&mut self.pending);
            data.extend_from_slice(piece);
            let used = self.parse(&data, &mut on_tuple)?;
            data.drain(..used);
            self.pending = data;
        }
        Ok(())
    }

    /// Check that the stream ended where a COPY stream ends.
    pub fn finish(&self) -> anyhow::Result<()> {
        ensure!(
            self.finished && self.pending.is_empty(),
            "the binary COPY stream ended in the middle of a tuple"
        );
        Ok(())
    }

    /// Parse whole tuples from the start of `data`; returns how many bytes they took.
    fn parse(
        &mut self,
        data: &[u8],
        on_tuple: &mut impl FnMut(&Tuple<'_>) -> anyhow::Result<()>,
    ) -> anyhow::Result<usize> {
        let mut at = 0;
        if !self.header_read {
            if data.len() < HEADER_LEN {
                return Ok(0);
            }
            ensure!(
                &data[..11] == SIGNATURE,
                "not a binary COPY stream (bad signature)"
            );
            let extension = be_u32(&data[15..19]) as usize;
            if data.len() < HEADER_LEN + extension {
                return Ok(0);
            }
            at = HEADER_LEN + extension;
            self.header_read = true;
        }
        loop {
            if self.finished {
                ensure!(at == data.len(), "data after the end of the COPY stream");
                return Ok(at);
            }
            let Some(count) = data.get(at..at + 2) else {
                return Ok(at);
            };
            let count = i16::from_be_bytes([count[0], count[1]]);
            if count == -1 {
                self.finished = true;
                at += 2;
                continue;
            }
            if count < 0 {
                bail!("a tuple with {count} fields in the COPY stream");
            }
            let mut p = at + 2;
            self.fields.clear();
            for _ in 0..count {
                let Some(len) = data.get(p..p + 4) else {
                    return Ok(at);
                };
                let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
                p += 4;
                if len < 0 {
                    self.fields.push(None);
                    continue;
                }
                let end = p + len as usize;
                if end > data.len() {
                    return Ok(at);
                }
                self.fields.push(Some(p..end));
                p = end;
            }
            on_tuple(&Tuple {
                data,
                fields: &self.fields,
            })?;
            at = p;
        }
    }
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Encodes a COPY stream into a buffer that is sent and cleared piece by piece: the header
/// first, then tuples, then [`TupleWriter::end`] adds the trailer.
pub struct TupleWriter {
    buf: Vec<u8>,
}

impl TupleWriter {
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes + HEADER_LEN + 2);
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&0u32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0u32.to_be_bytes()); // no header extension
        TupleWriter { buf }
    }

    pub fn tuple(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    fn field(&mut self, value: &[u8]) {
        self.buf
            .extend_from_slice(&(value.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(value);
    }

    pub fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    /// `value` written by `write`, or NULL.
    pub fn nullable<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            Some(value) => write(self, value),
            None => self.null(),
        }
    }

    pub fn int8(&mut self, value: i64) {
        self.field(&value.to_be_bytes());
    }

    pub fn float8(&mut self, value: f64) {
        self.field(&value.to_be_bytes());
    }

    pub fn boolean(&mut self, value: bool) {
        self.field(&[u8::from(value)]);
    }

    pub fn text(&mut self, value: &str) {
        self.field(value.as_bytes());
    }

    pub fn timestamptz(&mut self, value: DateTime<Utc>) {
        self.int8(value.timestamp_micros() - PG_EPOCH_UNIX_MICROS);
    }

    /// End the stream (after the last tuple).
    pub fn end(&mut self) {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
    }

    /// What was encoded since the last [`TupleWriter::clear`].
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Forget what was sent, keeping the buffer's capacity.
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = TupleWriter::with_capacity(0);
        w.tuple(3);
        w.int8(42);
        w.float8(-1.5);
        w.null();
        w.tuple(3);
        w.int8(i64::MIN);
        w.null();
        w.text("héllo");
        w.end();
        w.buf
    }

    type Row = (Option<i64>, Option<f64>, Option<String>);

    fn read(pieces: &[&[u8]]) -> anyhow::Result<Vec<Row>> {
        let mut reader = TupleReader::default();
        let mut rows = Vec::new();
        for piece in pieces {
            reader.feed(piece, |t| {
                assert_eq!(t.len(), 3);
                rows.push((t.int8(0)?, t.float8(1)?, t.text(2)?.map(str::to_owned)));
                Ok(())
            })?;
        }
        reader.finish()?;
        Ok(rows)
    }

    #[test]
    fn round_trips_in_one_piece() {
        let rows = read(&[&sample()]).unwrap();
        assert_eq!(
            rows,
            vec![
                (Some(42), Some(-1.5), None),
                (Some(i64::MIN), None, Some("héllo".to_owned())),
            ]
        );
    }

    #[test]
    fn any_split_of_the_stream_parses_the_same() {
        let data = sample();
        let whole = read(&[&data]).unwrap();
        for cut in 0..=data.len() {
            assert_eq!(
                read(&[&data[..cut], &data[cut..]]).unwrap(),
                whole,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(read(&bytes).unwrap(), whole);
    }

    #[test]
    fn a_cut_off_stream_is_an_error() {
        let data = sample();
        let err = read(&[&data[..data.len() - 3]]).unwrap_err();
        assert!(err.to_string().contains("middle of a tuple"), "{err}");
        assert!(read(&[b"PGCOPY\n\xff\r\n\x01 and more"]).is_err());
    }

    #[test]
    fn wrong_widths_are_errors() {
        let mut w = TupleWriter::with_capacity(0);
        w.tuple(3);
        w.boolean(true); // one byte where int8 expects eight
        w.null();
        w.null();
        w.end();
        let err = read(&[w.bytes()]).unwrap_err();
        assert!(err.to_string().contains("1 bytes where 8"), "{err}");
    }

    #[test]
    fn timestamps_count_from_2000() {
        let mut w = TupleWriter::with_capacity(0);
        w.timestamptz("2000-01-01T00:00:01Z".parse().unwrap());
        assert_eq!(
            &w.buf[HEADER_LEN..],
            &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40]
        );
    }
}
