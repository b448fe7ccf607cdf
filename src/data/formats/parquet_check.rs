//! A Parquet file's claims, checked before the parquet crate acts on them. The crate
//! allocates what the footer and the page headers say (metadata length, Thrift list
//! lengths, schema child counts, column chunk sizes, uncompressed page sizes) before it
//! finds out that the bytes are not there, and panics on some values (a negative child
//! count or column offset). So the reader first walks the Thrift itself: the metadata
//! fits the file and a bound, every list holds the elements it claims, the schema is a
//! tree of bounded depth, every column chunk lies between the magic and the footer, and
//! every page's uncompressed size is one its codec can produce from the bytes it has.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// The most footer metadata accepted. Instruction datasets have kilobytes; the parquet
/// crate reads the whole claim into memory.
const MAX_METADATA: u64 = 64 << 20;
/// Thrift structs and lists nested deeper than any parquet.thrift type nests them.
const MAX_THRIFT_DEPTH: usize = 32;
/// Schema groups nested deeper than this are refused (the crate and the Arrow conversion
/// recurse once per level).
const MAX_SCHEMA_DEPTH: usize = 64;
/// A page may always claim this much uncompressed, whatever its compressed size.
const MIN_PAGE_BOUND: u64 = 1 << 20;

/// Checks the file's footer, schema, column chunks and page headers.
pub(crate) fn check(file: &File, len: u64) -> Result<(), String> {
    if len < 12 {
        return Err(format!(
            "{len} bytes is too short for a Parquet file (its magic and footer take 12)"
        ));
    }
    let mut head = [0u8; 4];
    read_at(file, 0, &mut head)?;
    let mut foot = [0u8; 8];
    read_at(file, len - 8, &mut foot)?;
    if &foot[4..] == b"PARE" {
        return Err("the file is encrypted (footer magic PARE), which is not supported".into());
    }
    if &head != b"PAR1" || &foot[4..] != b"PAR1" {
        return Err("not a Parquet file (no PAR1 magic at its start and end)".into());
    }
    let meta_len = u64::from(u32::from_le_bytes([foot[0], foot[1], foot[2], foot[3]]));
    if meta_len > len - 12 {
        return Err(format!(
            "the footer claims {meta_len} bytes of metadata, but the file has {} bytes between its magic and footer",
            len - 12
        ));
    }
    if meta_len > MAX_METADATA {
        return Err(format!(
            "the footer claims {meta_len} bytes of metadata, more than the {} MiB accepted",
            MAX_METADATA >> 20
        ));
    }
    let meta_start = len - 8 - meta_len;
    let mut meta = vec![0u8; meta_len as usize];
    read_at(file, meta_start, &mut meta)?;
    let info = file_metadata(&meta).map_err(|e| format!("file metadata: {}", e.text()))?;
    check_schema(&info.num_children)?;
    for c in &info.chunks {
        check_chunk(file, c, meta_start)
            .map_err(|e| format!("row group {}, column {}: {e}", c.row_group, c.column))?;
    }
    Ok(())
}

fn read_at(file: &File, at: u64, buf: &mut [u8]) -> Result<(), String> {
    let mut f = file;
    f.seek(SeekFrom::Start(at))
        .and_then(|_| f.read_exact(buf))
        .map_err(|e| format!("reading {} bytes at offset {at}: {e}", buf.len()))
}

// ---- compact Thrift ----

#[derive(Debug)]
enum ThriftError {
    /// The bytes end before the value does.
    Short,
    Bad(String),
}

impl ThriftError {
    fn text(&self) -> String {
        match self {
            ThriftError::Short => "the Thrift data ends in the middle of a value".into(),
            ThriftError::Bad(s) => s.clone(),
        }
    }
}

type TResult<T> = Result<T, ThriftError>;

fn bad<T>(s: String) -> TResult<T> {
    Err(ThriftError::Bad(s))
}

/// Compact-protocol types.
const T_BOOL_TRUE: u8 = 1;
const T_BOOL_FALSE: u8 = 2;
const T_BYTE: u8 = 3;
const T_I64: u8 = 6;
const T_LIST: u8 = 9;
const T_SET: u8 = 10;
const T_STRUCT: u8 = 12;

/// A cursor over compact-protocol Thrift that checks every length and count against the
/// bytes left.
struct Thrift<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Thrift<'a> {
    fn new(b: &'a [u8]) -> Self {
        Thrift { b, at: 0 }
    }

    fn left(&self) -> usize {
        self.b.len() - self.at
    }

    fn byte(&mut self) -> TResult<u8> {
        let c = *self.b.get(self.at).ok_or(ThriftError::Short)?;
        self.at += 1;
        Ok(c)
    }

    fn varint(&mut self) -> TResult<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let c = self.byte()?;
            v |= u64::from(c & 0x7f) << shift;
            if c & 0x80 == 0 {
                return Ok(v);
            }
        }
        bad("a varint longer than 10 bytes".into())
    }

    fn zigzag(&mut self) -> TResult<i64> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// An integer field of any width.
    fn int(&mut self, ty: u8) -> TResult<i64> {
        if ty == T_BYTE {
            Ok(i64::from(self.byte()? as i8))
        } else {
            self.zigzag()
        }
    }

    fn skip_bytes(&mut self, n: u64) -> TResult<()> {
        if n > self.left() as u64 {
            return Err(ThriftError::Short);
        }
        self.at += n as usize;
        Ok(())
    }

    /// A list or set header: the element count (checked against the bytes left, as every
    /// element takes at least one) and the element type.
    fn list_header(&mut self) -> TResult<(usize, u8)> {
        let h = self.byte()?;
        if h == 0 {
            // Some writers give an empty list element type 0.
            return Ok((0, T_BYTE));
        }
        let ty = h & 0x0f;
        let n = match h >> 4 {
            15 => self.varint()?,
            n => u64::from(n),
        };
        if !(T_BOOL_TRUE..=T_STRUCT).contains(&ty) {
            return bad(format!("a list of unknown element type {ty}"));
        }
        if n > self.left() as u64 {
            return bad(format!(
                "a list claims {n} elements with {} bytes left",
                self.left()
            ));
        }
        Ok((n as usize, ty))
    }

    /// Skips one list, set or map element (a boolean element takes a byte).
    fn skip_element(&mut self, ty: u8, depth: usize) -> TResult<()> {
        match ty {
            T_BOOL_TRUE | T_BOOL_FALSE => self.byte().map(drop),
            _ => self.skip(ty, depth),
        }
    }

    /// Skips a field value of type `ty`.
    fn skip(&mut self, ty: u8, depth: usize) -> TResult<()> {
        if depth > MAX_THRIFT_DEPTH {
            return bad(format!("values nested more than {MAX_THRIFT_DEPTH} deep"));
        }
        match ty {
            T_BOOL_TRUE | T_BOOL_FALSE => Ok(()),
            T_BYTE => self.byte().map(drop),
            4..=T_I64 => self.varint().map(drop),
            7 => self.skip_bytes(8),
            8 => {
                let n = self.varint()?;
                self.skip_bytes(n)
            }
            T_LIST | T_SET => {
                let (n, et) = self.list_header()?;
                for _ in 0..n {
                    self.skip_element(et, depth + 1)?;
                }
                Ok(())
            }
            11 => {
                let n = self.varint()?;
                if n == 0 {
                    return Ok(());
                }
                let kv = self.byte()?;
                if n > self.left() as u64 / 2 {
                    return bad(format!(
                        "a map claims {n} entries with {} bytes left",
                        self.left()
                    ));
                }
                for _ in 0..n {
                    self.skip_element(kv >> 4, depth + 1)?;
                    self.skip_element(kv & 0x0f, depth + 1)?;
                }
                Ok(())
            }
            T_STRUCT => self.fields(depth + 1, |_, _, _| Ok(false)),
            _ => bad(format!("unknown Thrift type {ty}")),
        }
    }

    /// Reads a struct: each field's id and type go to `f`, which reads the value and
    /// returns true, or returns false to have it skipped.
    fn fields(
        &mut self,
        depth: usize,
        mut f: impl FnMut(&mut Self, i16, u8) -> TResult<bool>,
    ) -> TResult<()> {
        if depth > MAX_THRIFT_DEPTH {
            return bad(format!("structs nested more than {MAX_THRIFT_DEPTH} deep"));
        }
        let mut last: i16 = 0;
        loop {
            let h = self.byte()?;
            if h == 0 {
                return Ok(());
            }
            let ty = h & 0x0f;
            let id = match h >> 4 {
                0 => {
                    let v = self.zigzag()?;
                    i16::try_from(v)
                        .or_else(|_| bad(format!("field id {v} does not fit 16 bits")))?
                }
                d => last.wrapping_add(i16::from(d)),
            };
            last = id;
            if !f(self, id, ty)? {
                self.skip(ty, depth)?;
            }
        }
    }

    /// Reads a list of structs, handing each to `f` (which reads it with [`Thrift::fields`]).
    fn struct_list(
        &mut self,
        depth: usize,
        mut f: impl FnMut(&mut Self, usize) -> TResult<()>,
    ) -> TResult<()> {
        let (n, et) = self.list_header()?;
        for i in 0..n {
            if et == T_STRUCT {
                f(self, i)?;
            } else {
                self.skip_element(et, depth + 1)?;
            }
        }
        Ok(())
    }
}

fn is_int(ty: u8) -> bool {
    (T_BYTE..=T_I64).contains(&ty)
}

// ---- what is checked ----

/// A column chunk's codec and byte range as the metadata gives them.
#[derive(Debug, Default)]
struct Chunk {
    row_group: usize,
    column: usize,
    codec: Option<i64>,
    compressed: Option<i64>,
    data_page: Option<i64>,
    dictionary_page: Option<i64>,
}

#[derive(Debug, Default)]
struct Metadata {
    /// `num_children` of each schema element, in file order.
    num_children: Vec<Option<i64>>,
    chunks: Vec<Chunk>,
}

/// Walks a FileMetaData (all of it, so every list is checked), keeping the schema's child
/// counts and the column chunks' ranges.
fn file_metadata(b: &[u8]) -> TResult<Metadata> {
    let mut t = Thrift::new(b);
    let mut meta = Metadata::default();
    t.fields(0, |t, id, ty| match (id, ty) {
        // 2: list<SchemaElement>; 5: num_children.
        (2, T_LIST) => {
            t.struct_list(1, |t, _| {
                let mut kids = None;
                t.fields(2, |t, id, ty| {
                    if id == 5 && is_int(ty) {
                        kids = Some(t.int(ty)?);
                        return Ok(true);
                    }
                    Ok(false)
                })?;
                meta.num_children.push(kids);
                Ok(())
            })?;
            Ok(true)
        }
        // 4: list<RowGroup>; RowGroup 1: list<ColumnChunk>; ColumnChunk 3: ColumnMetaData.
        (4, T_LIST) => {
            t.struct_list(1, |t, row_group| {
                t.fields(2, |t, id, ty| {
                    if (id, ty) != (1, T_LIST) {
                        return Ok(false);
                    }
                    t.struct_list(3, |t, column| {
                        let mut c = Chunk {
                            row_group,
                            column,
                            ..Chunk::default()
                        };
                        t.fields(4, |t, id, ty| {
                            if (id, ty) != (3, T_STRUCT) {
                                return Ok(false);
                            }
                            t.fields(5, |t, id, ty| {
                                if !is_int(ty) {
                                    return Ok(false);
                                }
                                let slot = match id {
                                    4 => &mut c.codec,
                                    7 => &mut c.compressed,
                                    9 => &mut c.data_page,
                                    11 => &mut c.dictionary_page,
                                    _ => return Ok(false),
                                };
                                *slot = Some(t.int(ty)?);
                                Ok(true)
                            })?;
                            Ok(true)
                        })?;
                        meta.chunks.push(c);
                        Ok(())
                    })?;
                    Ok(true)
                })
            })?;
            Ok(true)
        }
        _ => Ok(false),
    })?;
    Ok(meta)
}

/// The schema's elements, depth first, form trees whose child counts are not negative,
/// do not exceed the elements that follow, and do not nest too deep.
fn check_schema(num_children: &[Option<i64>]) -> Result<(), String> {
    let total = num_children.len();
    // Children still to come of each open group, innermost last.
    let mut open: Vec<u64> = Vec::new();
    for (i, n) in num_children.iter().enumerate() {
        if let Some(left) = open.last_mut() {
            *left -= 1;
        }
        let n = n.unwrap_or(0);
        let after = (total - i - 1) as i64;
        if !(0..=after).contains(&n) {
            return Err(format!(
                "schema element {i} claims {n} children, with {after} elements after it"
            ));
        }
        if n > 0 {
            open.push(n as u64);
            if open.len() > MAX_SCHEMA_DEPTH {
                return Err(format!(
                    "the schema nests groups more than {MAX_SCHEMA_DEPTH} deep"
                ));
            }
        }
        while open.last() == Some(&0) {
            open.pop();
        }
    }
    Ok(())
}

/// The most a page of `compressed` bytes can decompress to: a page the codec could not
/// have produced from its bytes is refused rather than allocated.
fn max_uncompressed(codec: i64, compressed: u64) -> u64 {
    let ratio = match codec {
        // Uncompressed.
        0 => 1,
        // Snappy: a 3-byte copy yields at most 64 bytes.
        1 => 32,
        // Deflate: 258 bytes per (at best) 2 bits.
        2 => 1032,
        // LZ4: a run costs one byte per 255.
        5 | 7 => 255,
        // Zstandard: a 4-byte RLE block yields 128 KiB.
        6 => 32 << 10,
        _ => 64 << 10,
    };
    compressed.saturating_mul(ratio).max(MIN_PAGE_BOUND)
}

/// The chunk lies between the leading magic and the metadata, and its pages' sizes fit it
/// and their codec.
fn check_chunk(file: &File, c: &Chunk, meta_start: u64) -> Result<(), String> {
    // The crate reads what it needs and fails on what is missing.
    let (Some(compressed), Some(data_page)) = (c.compressed, c.data_page) else {
        return Ok(());
    };
    let start = c.dictionary_page.unwrap_or(data_page);
    let in_file = |v: i64| v >= 4 && v as u64 <= meta_start;
    if !in_file(start) || compressed < 0 || !in_file(start.saturating_add(compressed)) {
        return Err(format!(
            "the chunk claims {compressed} bytes at offset {start}, outside the file's data (bytes 4 to {meta_start})"
        ));
    }
    let codec = c.codec.unwrap_or(0);
    let end = (start + compressed) as u64;
    let mut at = start as u64;
    let mut page = 0;
    while at < end {
        let (header_len, uncompressed, size) =
            page_header(file, at, end).map_err(|e| format!("page {page} at offset {at}: {e}"))?;
        if size < 0 || size as u64 > end - at - header_len {
            return Err(format!(
                "page {page} at offset {at} claims {size} bytes, with {} left in the chunk",
                end - at - header_len
            ));
        }
        let bound = max_uncompressed(codec, size as u64);
        if uncompressed < 0 || uncompressed as u64 > bound {
            return Err(format!(
                "page {page} at offset {at} claims {uncompressed} bytes uncompressed from {size} bytes (codec {codec} gives at most {bound})"
            ));
        }
        at += header_len + size as u64;
        page += 1;
    }
    Ok(())
}

/// The page header at `at`: its length, uncompressed_page_size and compressed_page_size.
/// Reads a kilobyte and more as needed (statistics can make a header long), never past
/// `end`.
fn page_header(file: &File, at: u64, end: u64) -> Result<(u64, i64, i64), String> {
    let mut want = 1024u64;
    loop {
        let n = want.min(end - at);
        let mut buf = vec![0u8; n as usize];
        read_at(file, at, &mut buf)?;
        let mut t = Thrift::new(&buf);
        let (mut uncompressed, mut compressed) = (None, None);
        let r = t.fields(0, |t, id, ty| {
            if !is_int(ty) {
                return Ok(false);
            }
            match id {
                2 => uncompressed = Some(t.int(ty)?),
                3 => compressed = Some(t.int(ty)?),
                _ => return Ok(false),
            }
            Ok(true)
        });
        match r {
            Ok(()) => {
                let (Some(u), Some(c)) = (uncompressed, compressed) else {
                    return Err("the page header lacks its sizes".into());
                };
                return Ok((t.at as u64, u, c));
            }
            Err(ThriftError::Short) if n < end - at => want *= 4,
            Err(e) => return Err(format!("page header: {}", e.text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_cannot_claim_more_elements_than_bytes() {
        // A struct whose field 1 is a list of 2^31 - 1 structs, in six bytes.
        let b = [0x19, 0xFC, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00];
        let e = Thrift::new(&b).skip(T_STRUCT, 0).unwrap_err();
        assert!(
            e.text().contains("claims 2147483647 elements"),
            "{}",
            e.text()
        );
        // A list of three i32s, then the struct's end.
        let b = [0x19, 0x35, 0x02, 0x04, 0x06, 0x00];
        Thrift::new(&b).skip(T_STRUCT, 0).unwrap();
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut b = vec![0x1C; 100];
        b.extend([0u8; 101]);
        let e = Thrift::new(&b).skip(T_STRUCT, 0).unwrap_err();
        assert!(e.text().contains("nested"), "{}", e.text());
    }

    #[test]
    fn schema_child_counts() {
        // root(2) { a, b(1) { c } }
        check_schema(&[Some(2), None, Some(1), None]).unwrap();
        assert!(check_schema(&[Some(-1), None]).is_err());
        assert!(check_schema(&[Some(5), None]).is_err());
        let chain: Vec<Option<i64>> = (0..200)
            .map(|i| Some(if i < 199 { 1 } else { 0 }))
            .collect();
        assert!(check_schema(&chain).unwrap_err().contains("deep"));
    }

    #[test]
    fn page_bounds_follow_the_codec() {
        assert_eq!(max_uncompressed(0, 10), MIN_PAGE_BOUND);
        assert_eq!(max_uncompressed(1, 1 << 20), 32 << 20);
        assert_eq!(max_uncompressed(6, u64::MAX), u64::MAX);
    }
}
