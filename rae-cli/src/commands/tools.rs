//! `inspect` and `convert`.

use std::path::Path;

use rae_core::safetensors::TensorOut;

use crate::ckpt::write_atomic;
use crate::errors::CliResult;
use crate::files::{load_tensor_file, Format};

/// Lines describing every tensor of a file (`name  dtype  [shape]`) and its metadata.
pub fn inspect(path: &Path) -> CliResult<Vec<String>> {
    let f = load_tensor_file(path)?;
    let mut lines = vec![format!(
        "{} ({}, {} tensors)",
        path.display(),
        match f.format {
            Format::SafeTensors => "safetensors",
            Format::PyTorch => "PyTorch zip checkpoint",
        },
        f.listing.len()
    )];
    let width = f.listing.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
    let mut total = 0usize;
    for (name, dtype, shape) in &f.listing {
        total += shape.iter().product::<usize>();
        lines.push(format!("  {name:<width$}  {dtype:<8}  {shape:?}"));
    }
    lines.push(format!("  total elements: {total}"));
    for (k, v) in &f.metadata {
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

/// Converts any supported tensor file to safetensors (floats as f32, integers as i64).
pub fn convert(input: &Path, output: &Path) -> CliResult<usize> {
    let f = load_tensor_file(input)?;
    let mut outs: Vec<TensorOut<'_>> = f
        .tensors
        .iter()
        .map(|(n, t)| TensorOut::f32(n, &t.shape, &t.data))
        .collect();
    for (n, t) in &f.ints {
        outs.push(TensorOut::i64(n, &t.shape, &t.data));
    }
    let mut meta = f.metadata.clone();
    meta.push(("converted_from".into(), input.display().to_string()));
    let bytes = rae_core::safetensors::serialize(&outs, &meta)?;
    write_atomic(output, &bytes)?;
    Ok(outs.len())
}

/// Writes `per_class` images of each built-in class as `out/<class>/<i>.png`.
pub fn export_builtin(out: &Path, per_class: usize, size: usize) -> CliResult<usize> {
    use crate::data::{Dataset, Shapes};
    let ds = Shapes::new(size, per_class * 10, super::train::BUILTIN_DATA_SEED);
    for i in 0..ds.len() {
        let img = crate::image_io::from_chw(&ds.image(i, false)?, ds.image_size(), ds.image_size());
        let class = &ds.classes()[ds.label(i) as usize];
        crate::image_io::save_png(&out.join(class).join(format!("{:05}.png", i / 10)), &img)?;
    }
    Ok(ds.len())
}
