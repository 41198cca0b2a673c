//! A minimal reader for the ZIP container that `torch.save` writes.
//!
//! torch writes every entry with the STORED method (no compression), data aligned to 64
//! bytes through padding in the local header's extra field, sizes in the central directory
//! (the local headers carry the "data descriptor" flag and zero sizes), and ZIP64 records
//! once the archive passes 4 GiB. So the central directory is the truth: entries are listed
//! from it, and an entry's bytes are found through its local header only to skip that
//! header's variable part. `read` refuses compressed or encrypted entries by name; `read_any`
//! (for numpy's `.npz`) also inflates DEFLATE entries, within a size limit. Nothing is
//! guessed. Every offset is checked, so a truncated or corrupt archive is an error, never a
//! panic.

use std::collections::HashMap;

/// A reason an archive cannot be read; the caller adds the file name.
pub(crate) type ZipResult<T> = Result<T, String>;

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD_LEN: usize = 22;
const EOCD64_LOCATOR_SIG: u32 = 0x0706_4b50;
const EOCD64_LOCATOR_LEN: usize = 20;
const EOCD64_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const CENTRAL_LEN: usize = 46;
const LOCAL_SIG: u32 = 0x0403_4b50;
const LOCAL_LEN: usize = 30;
const ZIP64_EXTRA_ID: u16 = 0x0001;

/// One entry of the central directory.
#[derive(Debug, Clone)]
struct Entry {
    method: u16,
    flags: u16,
    crc32: u32,
    compressed_size: u64,
    size: u64,
    local_offset: u64,
}

/// An archive held in memory: the central directory, parsed; entry data read on demand.
#[derive(Debug)]
pub(crate) struct Archive<'a> {
    bytes: &'a [u8],
    /// Entry names in directory order.
    names: Vec<String>,
    entries: HashMap<String, Entry>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

fn to_usize(v: u64, what: &str) -> ZipResult<usize> {
    usize::try_from(v).map_err(|_| format!("{what} {v} does not fit in memory addresses"))
}

impl<'a> Archive<'a> {
    /// Parses the end-of-central-directory record (ZIP64 when present) and the central
    /// directory of `bytes`.
    pub(crate) fn parse(bytes: &'a [u8]) -> ZipResult<Self> {
        let eocd = find_eocd(bytes)
            .ok_or_else(|| "not a zip archive (no end-of-central-directory record)".to_string())?;
        let short = |at: usize| u16_at(bytes, eocd + at).unwrap_or(0);
        let long = |at: usize| u32_at(bytes, eocd + at).unwrap_or(0);
        if short(4) != 0 || short(6) != 0 {
            return Err("multi-disk zip archives are not supported".into());
        }
        let mut count = u64::from(short(10));
        let mut cd_size = u64::from(long(12));
        let mut cd_offset = u64::from(long(16));
        if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
            // ZIP64: the locator sits right before the classic record.
            let located = eocd
                .checked_sub(EOCD64_LOCATOR_LEN)
                .filter(|&at| u32_at(bytes, at) == Some(EOCD64_LOCATOR_SIG));
            if let Some(loc) = located {
                let rec = u64_at(bytes, loc + 8).ok_or("truncated ZIP64 locator")?;
                let rec = to_usize(rec, "ZIP64 record offset")?;
                if u32_at(bytes, rec) != Some(EOCD64_SIG) {
                    return Err(format!("no ZIP64 end-of-central-directory record at {rec}"));
                }
                let field = |at: usize| {
                    u64_at(bytes, rec.saturating_add(at)).ok_or_else(|| {
                        "truncated ZIP64 end-of-central-directory record".to_string()
                    })
                };
                count = field(32)?;
                cd_size = field(40)?;
                cd_offset = field(48)?;
            }
        }
        let cd_offset = to_usize(cd_offset, "central directory offset")?;
        let cd_size = to_usize(cd_size, "central directory size")?;
        let cd = cd_offset
            .checked_add(cd_size)
            .and_then(|end| bytes.get(cd_offset..end))
            .ok_or_else(|| {
                format!(
                    "central directory ({cd_size} bytes at {cd_offset}) lies outside the \
                     {}-byte file (truncated?)",
                    bytes.len()
                )
            })?;
        if count > (cd.len() / CENTRAL_LEN) as u64 {
            return Err(format!(
                "the directory claims {count} entries, more than its {} bytes can hold",
                cd.len()
            ));
        }
        let mut names = Vec::new();
        let mut entries = HashMap::new();
        let mut at = 0usize;
        for index in 0..count {
            let (name, entry, next) = parse_central(cd, at)
                .map_err(|e| format!("central directory entry {index}: {e}"))?;
            at = next;
            if entries.insert(name.clone(), entry).is_some() {
                return Err(format!("duplicate entry {name}"));
            }
            names.push(name);
        }
        Ok(Archive {
            bytes,
            names,
            entries,
        })
    }

    /// Entry names, in directory order.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// The bytes of entry `name`, stored or DEFLATE-compressed (as `np.savez_compressed`
    /// writes them): stored entries are borrowed, compressed ones inflated into memory after
    /// their declared size is checked against `max_size` and against the deflate bound of
    /// 1032 output bytes per input byte. `Ok(None)` when there is no such entry.
    pub(crate) fn read_any(
        &self,
        name: &str,
        max_size: u64,
    ) -> ZipResult<Option<std::borrow::Cow<'a, [u8]>>> {
        let Some(e) = self.entries.get(name) else {
            return Ok(None);
        };
        if e.method != 8 {
            return Ok(self.read(name)?.map(std::borrow::Cow::Borrowed));
        }
        let fail = |why: String| format!("entry {name}: {why}");
        if e.flags & 1 != 0 {
            return Err(fail("is encrypted".into()));
        }
        if e.size > max_size {
            return Err(fail(format!(
                "declares {} uncompressed bytes, over the limit of {max_size}",
                e.size
            )));
        }
        if e.size > e.compressed_size.saturating_mul(1032).saturating_add(64) {
            return Err(fail(format!(
                "declares {} bytes from {} compressed ones, more than DEFLATE can produce",
                e.size, e.compressed_size
            )));
        }
        let raw = self.span(name, e, e.compressed_size)?;
        let size = to_usize(e.size, "entry size").map_err(fail)?;
        let out = miniz_oxide::inflate::decompress_to_vec_with_limit(raw, size)
            .map_err(|err| fail(format!("corrupt DEFLATE data ({:?})", err.status)))?;
        if out.len() != size {
            return Err(fail(format!(
                "inflates to {} bytes, the directory says {size}",
                out.len()
            )));
        }
        if e.crc32 != crc32(&out) {
            return Err(fail("CRC-32 mismatch: the file is corrupt".into()));
        }
        Ok(Some(std::borrow::Cow::Owned(out)))
    }

    /// The `len` bytes of entry `name` after its local header.
    fn span(&self, name: &str, e: &Entry, len: u64) -> ZipResult<&'a [u8]> {
        let fail = |why: String| format!("entry {name}: {why}");
        let local = to_usize(e.local_offset, "local header offset").map_err(fail)?;
        if u32_at(self.bytes, local) != Some(LOCAL_SIG) {
            return Err(fail(format!("no local header at offset {local}")));
        }
        let name_len = u16_at(self.bytes, local + 26).unwrap_or(0) as usize;
        let extra_len = u16_at(self.bytes, local + 28).unwrap_or(0) as usize;
        let size = to_usize(len, "entry size").map_err(fail)?;
        let start = local + LOCAL_LEN + name_len + extra_len;
        start
            .checked_add(size)
            .and_then(|end| self.bytes.get(start..end))
            .ok_or_else(|| {
                fail(format!(
                    "its {size} bytes at offset {start} lie outside the {}-byte file",
                    self.bytes.len()
                ))
            })
    }

    /// The bytes of entry `name`: `Ok(None)` when there is no such entry; an error when it is
    /// compressed, encrypted, out of bounds or fails its CRC-32 check.
    pub(crate) fn read(&self, name: &str) -> ZipResult<Option<&'a [u8]>> {
        let Some(e) = self.entries.get(name) else {
            return Ok(None);
        };
        let fail = |why: String| format!("entry {name}: {why}");
        if e.flags & 1 != 0 {
            return Err(fail("is encrypted".into()));
        }
        if e.method != 0 {
            let method = match e.method {
                8 => "deflate".to_string(),
                m => format!("method {m}"),
            };
            return Err(fail(format!(
                "is compressed ({method}); only stored (uncompressed) entries are supported, \
                 as torch.save writes them — re-save the file with torch.save"
            )));
        }
        if e.compressed_size != e.size {
            return Err(fail(format!(
                "stored entry with compressed size {} != size {}",
                e.compressed_size, e.size
            )));
        }
        let data = self.span(name, e, e.size)?;
        // A zero CRC is what torch writes when asked not to compute checksums.
        if e.crc32 != 0 {
            let got = crc32(data);
            if got != e.crc32 {
                return Err(fail(format!(
                    "CRC-32 mismatch (stored {:08x}, computed {got:08x}): the file is corrupt",
                    e.crc32
                )));
            }
        }
        Ok(Some(data))
    }
}

/// Finds the end-of-central-directory record: scanning back from the end, the first
/// signature whose comment length reaches exactly the end of the file.
fn find_eocd(bytes: &[u8]) -> Option<usize> {
    let last = bytes.len().checked_sub(EOCD_LEN)?;
    let first = last.saturating_sub(0xFFFF);
    (first..=last).rev().find(|&at| {
        u32_at(bytes, at) == Some(EOCD_SIG)
            && u16_at(bytes, at + 20).map(usize::from) == Some(bytes.len() - at - EOCD_LEN)
    })
}

/// Parses the central-directory header at `at` in `cd`: (name, entry, offset of the next).
fn parse_central(cd: &[u8], at: usize) -> ZipResult<(String, Entry, usize)> {
    let truncated = || "truncated".to_string();
    if u32_at(cd, at) != Some(CENTRAL_SIG) {
        return Err("bad signature".into());
    }
    let short = |o: usize| u16_at(cd, at + o).ok_or_else(truncated);
    let long = |o: usize| u32_at(cd, at + o).ok_or_else(truncated);
    let flags = short(8)?;
    let method = short(10)?;
    let crc32 = long(16)?;
    let mut compressed_size = u64::from(long(20)?);
    let mut size = u64::from(long(24)?);
    let name_len = short(28)? as usize;
    let extra_len = short(30)? as usize;
    let comment_len = short(32)? as usize;
    let mut local_offset = u64::from(long(42)?);
    let name_start = at + CENTRAL_LEN;
    let name = cd
        .get(name_start..name_start + name_len)
        .ok_or_else(truncated)?;
    let name = String::from_utf8(name.to_vec()).map_err(|_| "name is not UTF-8".to_string())?;
    let extra_start = name_start + name_len;
    let extra = cd
        .get(extra_start..extra_start + extra_len)
        .ok_or_else(truncated)?;
    let next = extra_start + extra_len + comment_len;
    if next > cd.len() {
        return Err(truncated());
    }
    // ZIP64 extra field: the 64-bit values of exactly the fields saturated in the header,
    // in the order size, compressed size, local header offset.
    let mut o = 0usize;
    while o + 4 <= extra.len() {
        let id = u16_at(extra, o).unwrap_or(0);
        let len = u16_at(extra, o + 2).unwrap_or(0) as usize;
        let body = extra
            .get(o + 4..o + 4 + len)
            .ok_or_else(|| format!("{name}: truncated extra field"))?;
        if id == ZIP64_EXTRA_ID {
            let mut p = 0usize;
            let mut take = |field: &mut u64, what: &str| -> ZipResult<()> {
                if *field == 0xFFFF_FFFF {
                    *field = u64_at(body, p)
                        .ok_or_else(|| format!("{name}: ZIP64 field lacks the {what}"))?;
                    p += 8;
                }
                Ok(())
            };
            take(&mut size, "size")?;
            take(&mut compressed_size, "compressed size")?;
            take(&mut local_offset, "local header offset")?;
        }
        o += 4 + len;
    }
    Ok((
        name,
        Entry {
            method,
            flags,
            crc32,
            compressed_size,
            size,
            local_offset,
        },
        next,
    ))
}

/// CRC-32 (IEEE 802.3, reflected, as ZIP uses), slicing by 8 bytes.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = CRC_TABLES[7][(lo & 0xFF) as usize]
            ^ CRC_TABLES[6][((lo >> 8) & 0xFF) as usize]
            ^ CRC_TABLES[5][((lo >> 16) & 0xFF) as usize]
            ^ CRC_TABLES[4][(lo >> 24) as usize]
            ^ CRC_TABLES[3][c[4] as usize]
            ^ CRC_TABLES[2][c[5] as usize]
            ^ CRC_TABLES[1][c[6] as usize]
            ^ CRC_TABLES[0][c[7] as usize];
    }
    for &b in chunks.remainder() {
        crc = CRC_TABLES[0][((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

static CRC_TABLES: [[u32; 256]; 8] = crc_tables();

const fn crc_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-at-a-time CRC-32, the textbook definition, as an independent check.
    fn crc32_bitwise(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn crc32_matches_bitwise_on_all_lengths() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 131 + 7) as u8).collect();
        for len in 0..data.len() {
            assert_eq!(
                crc32(&data[..len]),
                crc32_bitwise(&data[..len]),
                "len {len}"
            );
        }
    }

    #[test]
    fn not_a_zip() {
        assert!(Archive::parse(b"").is_err());
        assert!(Archive::parse(b"hello world, this is not a zip archive").is_err());
    }
}
