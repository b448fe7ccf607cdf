//! Reading a JSON array or JSON-lines file block by block. A small scanner (strings and
//! nesting only, no parsing) cuts the bytes read so far into one byte range per complete
//! record, and the incomplete tail waits for the next block. The reader parses one block's
//! records before it reads the next, so the file's bytes are never all in memory beside the
//! records made from them (at 100K Alpaca rows that was a third of the peak).

use std::io::{self, Read};

/// Bytes read at a time.
const BLOCK: usize = 8 << 20;

/// How records sit in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// A top-level JSON array.
    Array,
    /// One record per non-blank line.
    Lines,
}

/// Records cut from the file: their bytes, the byte range of each record in them and each
/// record's 1-based line.
pub(crate) struct Block {
    pub bytes: Vec<u8>,
    pub spans: Vec<(usize, usize)>,
    pub lines: Vec<Option<usize>>,
}

/// Where a scan stopped.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// Everything was used (or the array closed): no more records.
    Done,
    /// The record starting at this offset is incomplete: read more.
    More(usize),
}

/// A file's records, block by block.
pub(crate) struct Blocks<R> {
    src: R,
    /// Unscanned bytes; they start between two records.
    buf: Vec<u8>,
    /// 1-based line of `buf[0]`.
    line: usize,
    eof: bool,
    layout: Option<Layout>,
    done: bool,
    /// Bytes read at a time.
    block: usize,
}

impl<R: Read> Blocks<R> {
    /// Reads the first block and drops a UTF-8 byte-order mark.
    pub fn new(src: R) -> io::Result<Self> {
        Self::with_block_size(src, BLOCK)
    }

    fn with_block_size(src: R, block: usize) -> io::Result<Self> {
        let mut b = Blocks {
            src,
            buf: Vec::new(),
            line: 1,
            eof: false,
            layout: None,
            done: false,
            block: block.max(1),
        };
        b.fill()?;
        while b.buf.len() < 3 && !b.eof {
            b.fill()?;
        }
        if b.buf.starts_with(b"\xEF\xBB\xBF") {
            b.buf.drain(..3);
        }
        Ok(b)
    }

    fn fill(&mut self) -> io::Result<()> {
        let n = self
            .src
            .by_ref()
            .take(self.block as u64)
            .read_to_end(&mut self.buf)?;
        self.eof = n == 0;
        Ok(())
    }

    /// The first byte that is not whitespace (`None` for a blank file).
    pub fn first_byte(&mut self) -> io::Result<Option<u8>> {
        loop {
            if let Some(&c) = self.buf.iter().find(|c| !c.is_ascii_whitespace()) {
                return Ok(Some(c));
            }
            if self.eof {
                return Ok(None);
            }
            self.fill()?;
        }
    }

    /// Starts cutting records. For an array, the bytes up to its `[` are skipped (the
    /// caller has seen that the first byte is `[`).
    pub fn start(&mut self, layout: Layout) -> io::Result<()> {
        if layout == Layout::Array && self.first_byte()? == Some(b'[') {
            if let Some(open) = self.buf.iter().position(|&c| c == b'[') {
                self.line += memchr::memchr_iter(b'\n', &self.buf[..open]).count();
                self.buf.drain(..=open);
            }
        }
        self.layout = Some(layout);
        Ok(())
    }

    /// The next block of at least `min_records` records (fewer at the end of the file);
    /// `None` when there are no more.
    pub fn next_block(&mut self, min_records: usize) -> io::Result<Option<Block>> {
        let Some(layout) = self.layout else {
            return Ok(None);
        };
        if self.done {
            return Ok(None);
        }
        loop {
            let (spans, stop) = match layout {
                Layout::Array => scan_array(&self.buf, 0, self.eof),
                Layout::Lines => scan_lines(&self.buf, self.eof),
            };
            let used = match stop {
                Stop::More(_) if spans.len() < min_records.max(1) => {
                    self.fill()?;
                    continue;
                }
                Stop::More(at) => at,
                Stop::Done => {
                    self.done = true;
                    self.buf.len()
                }
            };
            let rest = self.buf.split_off(used);
            let bytes = std::mem::replace(&mut self.buf, rest);
            let lines = lines_of(&bytes, &spans)
                .into_iter()
                .map(|l| l.map(|l| l + self.line - 1))
                .collect();
            self.line += memchr::memchr_iter(b'\n', &bytes).count();
            return Ok(Some(Block {
                bytes,
                spans,
                lines,
            }));
        }
    }
}

/// Byte ranges of the records of a whole top-level JSON array. A truncated file yields the
/// records up to the cut, the last one partial (its parse then fails with a position).
#[cfg(test)]
pub(crate) fn split_array(b: &[u8]) -> Result<Vec<(usize, usize)>, String> {
    let i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return Err("expected `[` at the start of a JSON array".into());
    }
    Ok(scan_array(b, i + 1, true).0)
}

/// Cuts array records from `i` (between two records). With `eof`, an incomplete last
/// record runs to the end of `b`; without, the scan stops before it.
fn scan_array(b: &[u8], mut i: usize, eof: bool) -> (Vec<(usize, usize)>, Stop) {
    let mut spans = Vec::new();
    let cut = |spans: &mut Vec<(usize, usize)>, start: usize| {
        if eof {
            spans.push((start, b.len()));
            Stop::Done
        } else {
            Stop::More(start)
        }
    };
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            None if eof => return (spans, Stop::Done),
            None => return (spans, Stop::More(i)),
            Some(b']') => return (spans, Stop::Done),
            _ => {}
        }
        let start = i;
        let mut depth = 0usize;
        loop {
            let Some(&c) = b.get(i) else {
                let stop = cut(&mut spans, start);
                return (spans, stop);
            };
            match c {
                b'"' => {
                    // Jump to the closing quote, skipping escapes.
                    i += 1;
                    loop {
                        match memchr::memchr2(b'"', b'\\', &b[i.min(b.len())..]) {
                            None => {
                                let stop = cut(&mut spans, start);
                                return (spans, stop);
                            }
                            Some(k) => {
                                i += k;
                                if b[i] == b'\\' {
                                    i += 2;
                                } else {
                                    i += 1;
                                    break;
                                }
                            }
                        }
                    }
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    if depth == 0 {
                        // The closing bracket of the array.
                        push_trimmed(b, &mut spans, start, i);
                        return (spans, Stop::Done);
                    }
                    depth -= 1;
                }
                b',' if depth == 0 => {
                    push_trimmed(b, &mut spans, start, i);
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

fn push_trimmed(b: &[u8], spans: &mut Vec<(usize, usize)>, start: usize, mut end: usize) {
    while end > start && b[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    spans.push((start, end));
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Byte ranges of the non-blank lines of JSON-lines bytes; without `eof`, a last line with
/// no line break waits for more bytes.
fn scan_lines(b: &[u8], eof: bool) -> (Vec<(usize, usize)>, Stop) {
    let blank = |s: &[u8]| s.iter().all(u8::is_ascii_whitespace);
    let mut spans = Vec::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', b) {
        if !blank(&b[start..end]) {
            spans.push((start, end));
        }
        start = end + 1;
    }
    if !eof {
        return (spans, Stop::More(start));
    }
    if !blank(&b[start..]) {
        spans.push((start, b.len()));
    }
    (spans, Stop::Done)
}

/// 1-based line of each span start (spans sorted by start).
fn lines_of(b: &[u8], spans: &[(usize, usize)]) -> Vec<Option<usize>> {
    let mut out = Vec::with_capacity(spans.len());
    let mut line = 1;
    let mut pos = 0;
    for &(s, _) in spans {
        line += memchr::memchr_iter(b'\n', &b[pos..s]).count();
        pos = s;
        out.push(Some(line));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_arrays_with_tricky_strings() {
        let b = br#" [ {"a": "x,]\"}"}, {"b": [1, {"c": "]"}]} ,{} ] "#;
        let spans = split_array(b).unwrap();
        let parts: Vec<&str> = spans
            .iter()
            .map(|&(s, e)| std::str::from_utf8(&b[s..e]).unwrap())
            .collect();
        assert_eq!(
            parts,
            vec![r#"{"a": "x,]\"}"}"#, r#"{"b": [1, {"c": "]"}]}"#, "{}"]
        );
        assert!(split_array(b"[]").unwrap().is_empty());
        assert_eq!(split_array(br#"[{"a": 1}, {"b": "#).unwrap().len(), 2);
        assert!(split_array(b"{}").is_err());
    }

    #[test]
    fn lines_are_counted() {
        let b = b"{\"a\":1}\n\n{\"b\":2}\n";
        let (spans, stop) = scan_lines(b, true);
        assert_eq!(stop, Stop::Done);
        assert_eq!(spans.len(), 2);
        assert_eq!(lines_of(b, &spans), vec![Some(1), Some(3)]);
    }

    /// The records and lines `Blocks` cuts with every block size from 1 byte to the whole
    /// text, checked to be the same for all of them.
    fn all_records(text: &[u8], layout: Layout) -> Vec<(String, usize)> {
        let cut = |block: usize| {
            let mut blocks = Blocks::with_block_size(text, block).unwrap();
            blocks.start(layout).unwrap();
            let mut out = Vec::new();
            while let Some(b) = blocks.next_block(1).unwrap() {
                for (&(s, e), l) in b.spans.iter().zip(&b.lines) {
                    out.push((
                        String::from_utf8(b.bytes[s..e].to_vec()).unwrap(),
                        l.unwrap(),
                    ));
                }
            }
            out
        };
        let whole = cut(text.len() + 1);
        for block in 1..=text.len() {
            assert_eq!(cut(block), whole, "block size {block}");
        }
        whole
    }

    #[test]
    fn blocks_cut_the_same_records_as_one_buffer() {
        let array =
            "\u{feff}\n[\n {\"a\": \"x,]\\\"}\"},\n\n {\"b\": [1, {\"c\": \"]\"}]} ,{}\n] trailing";
        assert_eq!(
            all_records(array.as_bytes(), Layout::Array),
            vec![
                ("{\"a\": \"x,]\\\"}\"}".to_string(), 3),
                ("{\"b\": [1, {\"c\": \"]\"}]}".to_string(), 5),
                ("{}".to_string(), 5),
            ]
        );
        let truncated = "[{\"a\": 1},\n{\"b\": \"un";
        assert_eq!(
            all_records(truncated.as_bytes(), Layout::Array),
            vec![
                ("{\"a\": 1}".to_string(), 1),
                ("{\"b\": \"un".to_string(), 2)
            ]
        );
        let lines = "{\"a\":1}\r\n\n  \n{\"b\":2}\n{\"c\":";
        assert_eq!(
            all_records(lines.as_bytes(), Layout::Lines),
            vec![
                ("{\"a\":1}\r".to_string(), 1),
                ("{\"b\":2}".to_string(), 4),
                ("{\"c\":".to_string(), 5),
            ]
        );
    }
}
