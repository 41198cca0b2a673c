//! `--precision` numerics (spec §7.5). CpuBackend emulates the operand rounding of `tf32`
//! and `bf16` tensor cores; a DiT-DH-S forward under it is compared with the reference run
//! in float32 and under PyTorch's bfloat16 autocast on the CPU
//! (`tools/make_precision_fixtures.py`). The WGPU backend rounds with a kernel that must
//! agree with the CPU bit for bit, and falls back to f32 where it has no tensor cores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rae_core::models::{DitConfig, DitDh, Mode};
use rae_core::nn::{labels_from_i64, save_module, HostTensors, Init};
use rae_core::safetensors::SafeTensors;
use rae_core::{Backend, CpuBackend, Precision};
use rae_tests::conformance::{wgpu_or_skip, Gen};
use rae_tests::synthetic::fill_like;
use rae_tests::util::{fixture, max_abs, rel_l2};

/// The fixture's frozen tensors, under their model names.
fn frozen(st: &SafeTensors) -> HostTensors {
    let mut out = HostTensors::new();
    for name in st.names() {
        if let Some(n) = name.strip_prefix("frozen.") {
            let t = st.tensor(name).unwrap();
            let h = rae_core::nn::HostTensor::new(
                t.to_shape().unwrap().dims().to_vec(),
                t.to_f32().unwrap(),
            );
            out.insert(n, h.unwrap());
        }
    }
    out
}

#[test]
fn dit_dh_s_under_bf16_stays_within_the_error_of_pytorch_bf16_autocast() {
    let bytes = fixture("precision_dit_s.safetensors");
    let st = SafeTensors::parse(&bytes, "precision_dit_s.safetensors").unwrap();
    let mut cfg = DitConfig::dh_s();
    cfg.input_size = 16;
    cfg.in_channels = 768;
    cfg.num_classes = 1000;
    let cpu = CpuBackend::new();
    let mut m = DitDh::new(&cpu, &mut Init::new(1), cfg).unwrap();
    let weights = fill_like(&save_module(&cpu, &m).unwrap(), &frozen(&st)).unwrap();
    let report = m.load(&cpu, &weights).unwrap();
    assert!(report.kept_buffers.is_empty(), "{:?}", report.kept_buffers);

    let x = st.read_f32("x").unwrap();
    let t = st.read_f32("t").unwrap();
    let y = labels_from_i64(&st.read_i64("y").unwrap()).unwrap();
    let v32 = st.read_f32("v_fp32").unwrap();
    let v16 = st.read_f32("v_bf16").unwrap();
    let run = |p: Precision| {
        let b = CpuBackend::with_precision(p);
        assert_eq!(b.precision(), p);
        let xs = b.upload(&x, &[2, 768, 16, 16]).unwrap();
        let (v, _) = m.forward(&b, &xs, &t, &y, Mode::Infer).unwrap();
        b.download(&v).unwrap()
    };

    let ours32 = run(Precision::Fp32);
    let parity = max_abs(&ours32, &v32);
    let ours16 = run(Precision::Bf16);
    let ours_tf32 = run(Precision::Tf32);
    let e_torch16 = rel_l2(&v16, &v32);
    let e_ours16 = rel_l2(&ours16, &v32);
    let e_tf32 = rel_l2(&ours_tf32, &v32);
    eprintln!(
        "DiT-DH-S vs reference fp32: fp32 max abs {parity:.3e}; rel-L2 bf16 {e_ours16:.3e} \
         (PyTorch bf16 autocast {e_torch16:.3e}), tf32 {e_tf32:.3e}"
    );
    assert!(parity <= 1e-4, "fp32 parity {parity}");
    // The rounding is real: bf16 operands move the output by far more than f32 noise.
    assert!(e_ours16 > 1e-4, "bf16 changed nothing: {e_ours16}");
    // And within what the reference's own bf16 run shows (ours keeps f32 storage between
    // ops, autocast rounds every product's result to bf16 as well).
    assert!(
        e_ours16 <= e_torch16,
        "bf16 {e_ours16} vs autocast {e_torch16}"
    );
    // tf32 keeps three more mantissa bits than bf16: about 8x less error.
    assert!(e_tf32 > 1e-6 && e_tf32 < e_ours16 / 4.0, "tf32 {e_tf32}");
}

#[test]
fn the_wgpu_rounding_kernel_agrees_with_the_cpu_bit_for_bit() {
    let Some(b) = wgpu_or_skip() else { return };
    let mut s = 0x2545_f491_u32;
    let mut bits: Vec<u32> = (0..4099)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        })
        .collect();
    // Ties, specials and the edges of the range.
    bits.extend([
        0x3f80_8000,
        0x3f81_8000,
        0x3f80_1000,
        0x3f80_3000,
        0x7f7f_ffff,
        0xff7f_ffff,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0001,
        0x0000_0001,
        0x8000_0000,
        0,
    ]);
    let xs: Vec<f32> = bits.iter().map(|&u| f32::from_bits(u)).collect();
    let x = b.upload(&xs, &[xs.len()]).unwrap();
    for p in Precision::ALL {
        let got = b.download(&b.rounded(&x, p).unwrap()).unwrap();
        for (i, (&g, &v)) in got.iter().zip(&xs).enumerate() {
            let want = p.round(v);
            let same = g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan());
            assert!(
                same,
                "{p} of {:#010x} (#{i}): got {:#010x}, want {:#010x}",
                v.to_bits(),
                g.to_bits(),
                want.to_bits()
            );
        }
    }
}

#[test]
fn without_tensor_cores_the_gpu_falls_back_to_f32_and_emulation_matches_the_cpu() {
    let Some(b) = wgpu_or_skip() else { return };
    for p in Precision::ALL {
        let chosen = b.clone().with_precision(p);
        if b.tensor_cores(p) {
            assert_eq!(chosen.precision(), p);
        } else {
            assert_eq!(
                chosen.precision(),
                Precision::Fp32,
                "{p} without tensor cores"
            );
        }
    }
    // Emulated precisions on the GPU compute what the CPU computes (same rounded operands,
    // f32 products).
    for p in [Precision::Tf32, Precision::Bf16] {
        let (same, off) = against_cpu(&b.clone().with_emulated_precision(p), p);
        eprintln!("{p} emulated: gpu vs cpu {same:.3e}, vs f32 {off:.3e}");
        assert!(same < 1e-6 && off > 20.0 * same, "{p}: {same} {off}");
    }
}

/// A product of random matrices on `g` and on the CPU emulating `p`: the relative L2
/// difference between the two, and between the CPU's `p` and f32 results.
fn against_cpu<B: Backend>(g: &B, p: Precision) -> (f64, f64) {
    let (m, k, n) = (67, 300, 45);
    let mut gen = Gen::new(1);
    let (a, w) = (gen.vec(m * k, -1.0, 1.0), gen.vec(n * k, -1.0, 1.0));
    fn product<B: Backend>(
        be: &B,
        a: &[f32],
        w: &[f32],
        (m, k, n): (usize, usize, usize),
    ) -> Vec<f32> {
        let (a, w) = (
            be.upload(a, &[m, k]).unwrap(),
            be.upload(w, &[n, k]).unwrap(),
        );
        be.download(&be.matmul(&a, &w, false, true).unwrap())
            .unwrap()
    }
    let gpu = product(g, &a, &w, (m, k, n));
    let cpu = product(&CpuBackend::with_precision(p), &a, &w, (m, k, n));
    let f32_ref = product(&CpuBackend::new(), &a, &w, (m, k, n));
    (rel_l2(&gpu, &cpu), rel_l2(&cpu, &f32_ref))
}

/// On a GPU with tensor cores (CUDA sm_80+, or a WGPU adapter with cooperative matrices),
/// `tf32` and `bf16` run there and agree with the CPU's emulation to within the format's
/// error (the sums are ordered differently, and the hardware's conversion may differ).
#[test]
fn tensor_cores_agree_with_the_emulated_rounding() {
    fn check<R: rae_kernels::cubecl::Runtime>(b: &rae_kernels::CubeBackend<R>) {
        for p in [Precision::Tf32, Precision::Bf16] {
            if !b.tensor_cores(p) {
                eprintln!("{}: no tensor cores for {p}", b.name());
                continue;
            }
            let g = b.clone().with_precision(p);
            assert!(g.tensor_core_matmul() && g.precision() == p);
            let (same, off) = against_cpu(&g, p);
            eprintln!(
                "{} {p} tensor cores: vs cpu emulation {same:.3e}, vs f32 {off:.3e}",
                b.name()
            );
            // Right to within the format's own error (the hardware may round ties away or
            // truncate where we round to even; the printed numbers tell which).
            assert!(same < 2.0 * off && off > 0.0, "{p}: {same} vs {off}");
        }
    }
    if let Some(b) = rae_tests::conformance::cuda_or_skip() {
        check(b);
    }
    if let Some(b) = wgpu_or_skip() {
        check(b);
    }
}
