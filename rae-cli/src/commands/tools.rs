//! `inspect` and `convert`.
//!
//! Neither goes through [`crate::store::load_tensor_file`], which decodes every tensor to
//! f32 or i64: `inspect` reads only a safetensors header (or lists a `.pt` file without
//! reading its tensors), and `convert` copies integer tensors in their own dtype, so a 256
//! MiB U8 tensor costs 256 MiB, not 2 GiB.

use std::io::Read;
use std::path::Path;

use rae_core::safetensors::{Dtype, Header, TensorOut};

use crate::errors::{io_error, CliError, CliResult};
use crate::pt::{into_tensors, looks_like_pt, read_pt_layout, read_pt_raw, PtDtype};
use crate::store::{read_bytes, write_atomic};

/// What `inspect` lists: format, `(name, dtype, shape)` of each tensor, metadata.
type Listing = (
    &'static str,
    Vec<(String, String, Vec<usize>)>,
    Vec<(String, String)>,
);

/// What a file failing both readers is told.
const NEITHER: &str = "not a valid safetensors or PyTorch checkpoint file";

/// Lines describing every tensor of a file (`name  dtype  [shape]`) and its metadata.
pub fn inspect(path: &Path) -> CliResult<Vec<String>> {
    let (format, listing, metadata) = list(path)?;
    let mut lines = vec![format!(
        "{} ({format}, {} tensors)",
        path.display(),
        listing.len()
    )];
    let width = listing.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
    let mut total = 0usize;
    for (name, dtype, shape) in &listing {
        total = total.saturating_add(shape.iter().product::<usize>());
        lines.push(format!("  {name:<width$}  {dtype:<8}  {shape:?}"));
    }
    lines.push(format!("  total elements: {total}"));
    for (k, v) in &metadata {
        let v = if v.len() > 120 {
            format!(
                "{}…",
                &v[..v.char_indices().nth(120).map_or(v.len(), |c| c.0)]
            )
        } else {
            v.clone()
        };
        lines.push(format!("  metadata {k}: {v}"));
    }
    Ok(lines)
}

/// The listing of a safetensors file (from its header alone) or a `.pt` file (read without
/// its tensor values).
fn list(path: &Path) -> CliResult<Listing> {
    let source = path.display().to_string();
    regular_file(path)?;
    let mut file =
        std::fs::File::open(path).map_err(|e| io_error("cannot read the tensor file", path, &e))?;
    let file_len = file
        .metadata()
        .map_err(|e| io_error("cannot read the tensor file", path, &e))?
        .len();
    let mut start = Vec::new();
    (&mut file)
        .take(16)
        .read_to_end(&mut start)
        .map_err(|e| io_error("cannot read the tensor file", path, &e))?;
    if looks_like_pt(&start) {
        drop(file);
        let bytes = read_bytes(path, "the tensor file")?;
        let value = read_pt_layout(&bytes, &source)?;
        let listing = into_tensors(value)
            .into_iter()
            .map(|(name, t)| (name, t.dtype.name().to_string(), t.shape))
            .collect();
        return Ok(("PyTorch zip checkpoint", listing, Vec::new()));
    }
    let context = |e: rae_core::Error| CliError::from(e).context(NEITHER);
    let n = Header::declared_len(&start, file_len, &source).map_err(context)?;
    let mut header = Vec::new();
    header
        .try_reserve_exact(n)
        .map_err(|_| CliError::new(format!("{source}: out of memory for a {n}-byte header")))?;
    header.extend_from_slice(&start[8.min(start.len())..]);
    header.truncate(n);
    (&mut file)
        .take((n - header.len()) as u64)
        .read_to_end(&mut header)
        .map_err(|e| io_error("cannot read the tensor file", path, &e))?;
    let data_len = file_len - 8 - n as u64;
    let header = Header::parse(&header, data_len, &source).map_err(context)?;
    let listing = header
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.dtype.name().to_string(), t.shape.clone()))
        .collect();
    Ok(("safetensors", listing, header.metadata().to_vec()))
}

/// An error unless `path` is a regular file (after following links): a FIFO or a device
/// would block or never end.
fn regular_file(path: &Path) -> CliResult<()> {
    let meta =
        std::fs::metadata(path).map_err(|e| io_error("cannot read the tensor file", path, &e))?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(CliError::new(format!(
            "{} is not a regular file (a tensor file is needed)",
            path.display()
        )))
    }
}

/// Converts any supported tensor file to safetensors: floating tensors as f32, integer and
/// bool tensors in their own dtype (a U8 tensor stays U8), FP8 tensors copied as they are.
/// Returns the number of tensors written.
pub fn convert(input: &Path, output: &Path) -> CliResult<usize> {
    regular_file(input)?;
    let bytes = read_bytes(input, "the tensor file")?;
    let source = input.display().to_string();
    let converted_from = ("converted_from".to_string(), source.clone());
    if looks_like_pt(&bytes) {
        let value = read_pt_raw(&bytes, &source)?;
        drop(bytes);
        let mut tensors = Vec::new();
        for (name, t) in into_tensors(value) {
            let out = if t.dtype.is_float() {
                let v = t
                    .to_f32()
                    .map_err(|e| CliError::new(format!("{source}: tensor {name}: {e}")))?;
                Out::F32(v)
            } else {
                Out::Raw(st_dtype(t.dtype), t.data)
            };
            tensors.push((name, t.shape, out));
        }
        let outs: Vec<TensorOut<'_>> = tensors
            .iter()
            .map(|(name, shape, out)| match out {
                Out::F32(v) => TensorOut::f32(name, shape, v),
                Out::Raw(dtype, b) => TensorOut::raw(name, shape, *dtype, b),
            })
            .collect();
        return write(&outs, &[converted_from], output, &source);
    }
    let st = rae_core::safetensors::SafeTensors::parse(&bytes, &source)
        .map_err(|e| CliError::from(e).context(NEITHER))?;
    let floats = st
        .tensors()
        .iter()
        .filter(|v| v.dtype.is_float())
        .map(|v| v.to_f32())
        .collect::<Result<Vec<_>, _>>()?;
    let mut floats = floats.iter();
    let mut outs = Vec::with_capacity(st.len());
    for view in st.tensors() {
        let decoded = if view.dtype.is_float() {
            floats.next()
        } else {
            None
        };
        outs.push(match decoded {
            Some(v) => TensorOut::f32(&view.name, &view.shape, v),
            None => TensorOut::raw(&view.name, &view.shape, view.dtype, view.data),
        });
    }
    let mut meta = st.metadata().to_vec();
    meta.push(converted_from);
    write(&outs, &meta, output, &source)
}

/// A `.pt` tensor to write: f32 values, or stored bytes in their own dtype.
enum Out {
    F32(Vec<f32>),
    Raw(Dtype, Vec<u8>),
}

/// The safetensors dtype of a `.pt` dtype.
fn st_dtype(d: PtDtype) -> Dtype {
    match d {
        PtDtype::F32 => Dtype::F32,
        PtDtype::F16 => Dtype::F16,
        PtDtype::BF16 => Dtype::Bf16,
        PtDtype::F64 => Dtype::F64,
        PtDtype::I64 => Dtype::I64,
        PtDtype::I32 => Dtype::I32,
        PtDtype::I16 => Dtype::I16,
        PtDtype::I8 => Dtype::I8,
        PtDtype::U8 => Dtype::U8,
        PtDtype::Bool => Dtype::Bool,
    }
}

/// Serialises `outs` with `meta` to `output`; returns the number of tensors.
fn write(
    outs: &[TensorOut<'_>],
    meta: &[(String, String)],
    output: &Path,
    source: &str,
) -> CliResult<usize> {
    let bytes = rae_core::safetensors::serialize(outs, meta)
        .map_err(|e| CliError::from(e).context(format!("converting {source}")))?;
    write_atomic(output, &bytes)?;
    Ok(outs.len())
}

/// Writes `per_class` images of each built-in class as `out/<class>/<i>.png`.
pub fn export_builtin(out: &Path, per_class: usize, size: usize) -> CliResult<usize> {
    use crate::data::{Dataset, Shapes};
    let ds = Shapes::new(size, per_class * 10, crate::data::BUILTIN_DATA_SEED);
    for i in 0..ds.len() {
        let img = crate::image_io::from_chw(&ds.image(i, false)?, ds.image_size(), ds.image_size());
        let class = &ds.classes()[ds.label(i) as usize];
        crate::image_io::save_png(&out.join(class).join(format!("{:05}.png", i / 10)), &img)?;
    }
    Ok(ds.len())
}
