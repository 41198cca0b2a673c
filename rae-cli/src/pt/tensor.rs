//! Turning a checked tensor view into what the caller asked for: decoded values
//! ([`Decode`]), only the dtype and shape ([`Layout`]) or the stored bytes in their own dtype
//! ([`Raw`]). Every output buffer is allocated fallibly.

use super::value::{PtData, PtDtype, PtLayout, PtRawTensor, PtTensor};

/// A view whose every element lies inside `storage` (checked by the converter).
#[derive(Debug)]
pub(super) struct View<'s> {
    /// Element type.
    pub dtype: PtDtype,
    /// Sizes, outermost first.
    pub shape: &'s [usize],
    /// Strides in elements, one per dimension.
    pub stride: &'s [usize],
    /// First element, in elements.
    pub offset: usize,
    /// `shape.iter().product()`.
    pub numel: usize,
    /// The storage's bytes (exactly the elements it declares).
    pub storage: &'s [u8],
    /// Whether the archive's elements are big-endian.
    pub big_endian: bool,
}

/// How the converter materialises a tensor.
pub(super) trait Materialise {
    /// What a tensor becomes.
    type Tensor;
    /// Bytes of output per element of `dtype` (charged to the budget before [`make`]).
    ///
    /// [`make`]: Materialise::make
    fn bytes_per_element(dtype: PtDtype) -> usize;
    /// The tensor of `view`.
    fn make(view: &View<'_>) -> Result<Self::Tensor, String>;
}

/// Values decoded to f32 (floating types) or i64 (integer and bool types): [`PtTensor`].
#[derive(Debug)]
pub(super) struct Decode;

/// Dtype and shape only, nothing read: [`PtLayout`].
#[derive(Debug)]
pub(super) struct Layout;

/// Stored bytes, contiguous and little-endian, in their own dtype: [`PtRawTensor`].
#[derive(Debug)]
pub(super) struct Raw;

impl Materialise for Decode {
    type Tensor = PtTensor;

    fn bytes_per_element(dtype: PtDtype) -> usize {
        if dtype.is_float() {
            4
        } else {
            8
        }
    }

    fn make(view: &View<'_>) -> Result<PtTensor, String> {
        let (dtype, be) = (view.dtype, view.big_endian);
        let data = if dtype.is_float() {
            let mut out = with_capacity::<f32>(view.numel)?;
            gather(view, |b| out.push(decode_f32(dtype, b, be)));
            PtData::F32(out)
        } else {
            let mut out = with_capacity::<i64>(view.numel)?;
            gather(view, |b| out.push(decode_i64(dtype, b, be)));
            PtData::I64(out)
        };
        Ok(PtTensor {
            dtype,
            shape: view.shape.to_vec(),
            data,
        })
    }
}

impl Materialise for Layout {
    type Tensor = PtLayout;

    fn bytes_per_element(_: PtDtype) -> usize {
        0
    }

    fn make(view: &View<'_>) -> Result<PtLayout, String> {
        Ok(PtLayout {
            dtype: view.dtype,
            shape: view.shape.to_vec(),
        })
    }
}

impl Materialise for Raw {
    type Tensor = PtRawTensor;

    fn bytes_per_element(dtype: PtDtype) -> usize {
        dtype.size()
    }

    fn make(view: &View<'_>) -> Result<PtRawTensor, String> {
        let size = view.dtype.size();
        let mut out = with_capacity::<u8>(view.numel.saturating_mul(size))?;
        match (view.dtype, contiguous(view)) {
            (PtDtype::Bool, _) => gather(view, |b| out.push(u8::from(b[0] != 0))),
            (_, Some(run)) if !view.big_endian || size == 1 => out.extend_from_slice(run),
            _ if !view.big_endian || size == 1 => gather(view, |b| out.extend_from_slice(b)),
            _ => gather(view, |b| out.extend(b.iter().rev())),
        }
        Ok(PtRawTensor {
            dtype: view.dtype,
            shape: view.shape.to_vec(),
            data: out,
        })
    }
}

impl PtRawTensor {
    /// The values of a floating tensor as f32 (f16 and bf16 exactly, f64 rounded); an error
    /// for other dtypes or when memory runs out.
    pub fn to_f32(&self) -> Result<Vec<f32>, String> {
        if !self.dtype.is_float() {
            return Err(format!("{} is not a floating type", self.dtype.name()));
        }
        let size = self.dtype.size();
        let mut out = with_capacity::<f32>(self.data.len() / size)?;
        out.extend(
            self.data
                .chunks_exact(size)
                .map(|b| decode_f32(self.dtype, b, false)),
        );
        Ok(out)
    }
}

/// An empty vector with room for `n` elements, or an error (not an abort) when memory runs
/// out.
fn with_capacity<T>(n: usize) -> Result<Vec<T>, String> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        format!(
            "out of memory for its {n} values ({} bytes)",
            n.saturating_mul(std::mem::size_of::<T>())
        )
    })?;
    Ok(v)
}

/// The bytes of `view` when its elements are one contiguous row-major run of the storage.
fn contiguous<'s>(view: &View<'s>) -> Option<&'s [u8]> {
    let mut expected = 1usize;
    for (&d, &s) in view.shape.iter().zip(view.stride).rev() {
        if d != 1 && s != expected {
            return None;
        }
        expected = expected.saturating_mul(d);
    }
    let size = view.dtype.size();
    let start = view.offset.checked_mul(size)?;
    let len = view.numel.checked_mul(size)?;
    view.storage.get(start..start.checked_add(len)?)
}

/// Calls `emit` with the bytes of every element of `view`, in row-major order. The caller
/// has checked that every index the view reaches lies inside the storage; an element that
/// does not (a bug) is given as zero bytes rather than panicking.
fn gather(view: &View<'_>, mut emit: impl FnMut(&[u8])) {
    const ZERO: [u8; 8] = [0; 8];
    if view.numel == 0 {
        return;
    }
    let size = view.dtype.size();
    if let Some(run) = contiguous(view) {
        run.chunks_exact(size).for_each(emit);
        return;
    }
    let storage = view.storage;
    let mut element = |i: usize| {
        let at = i.saturating_mul(size);
        emit(
            storage
                .get(at..at.saturating_add(size))
                .unwrap_or(&ZERO[..size]),
        );
    };
    let (shape, stride) = (view.shape, view.stride);
    let rank = shape.len();
    if rank == 0 {
        element(view.offset);
        return;
    }
    // Odometer over the outer dimensions, a strided run along the last one.
    let inner = shape[rank - 1];
    let inner_stride = stride[rank - 1];
    let mut index = vec![0usize; rank - 1];
    let mut base = view.offset;
    loop {
        for j in 0..inner {
            element(base + j * inner_stride);
        }
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            index[d] += 1;
            base += stride[d];
            if index[d] < shape[d] {
                break;
            }
            base -= stride[d] * shape[d];
            index[d] = 0;
        }
    }
}

fn array<const N: usize>(b: &[u8], big_endian: bool) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    if big_endian {
        a.reverse();
    }
    a
}

/// One element of a floating storage as f32 (`b` holds exactly `dtype.size()` bytes).
fn decode_f32(dtype: PtDtype, b: &[u8], big_endian: bool) -> f32 {
    match dtype {
        PtDtype::F32 => f32::from_le_bytes(array(b, big_endian)),
        PtDtype::F16 => half::f16::from_le_bytes(array(b, big_endian)).to_f32(),
        PtDtype::BF16 => half::bf16::from_le_bytes(array(b, big_endian)).to_f32(),
        PtDtype::F64 => f64::from_le_bytes(array(b, big_endian)) as f32,
        _ => decode_i64(dtype, b, big_endian) as f32,
    }
}

/// One element of an integer or bool storage as i64.
fn decode_i64(dtype: PtDtype, b: &[u8], big_endian: bool) -> i64 {
    match dtype {
        PtDtype::I64 => i64::from_le_bytes(array(b, big_endian)),
        PtDtype::I32 => i64::from(i32::from_le_bytes(array(b, big_endian))),
        PtDtype::I16 => i64::from(i16::from_le_bytes(array(b, big_endian))),
        PtDtype::I8 => i64::from(b[0] as i8),
        PtDtype::U8 => i64::from(b[0]),
        PtDtype::Bool => i64::from(b[0] != 0),
        _ => decode_f32(dtype, b, big_endian) as i64,
    }
}
