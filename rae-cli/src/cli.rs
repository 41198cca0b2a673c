//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Representation autoencoders + DiT-DH: train and sample on CPU, WGPU or CUDA.
#[derive(Debug, Parser)]
#[command(name = "rae-cli", version, about, long_about = None)]
pub struct Cli {
    /// Compute backend: cpu, wgpu, cuda, or auto (the best one present).
    #[arg(long, global = true, default_value = "auto")]
    pub backend: String,
    /// Device index for GPU backends.
    #[arg(long, global = true)]
    pub device: Option<usize>,
    /// Matrix-product precision: fp32, tf32 (tensor cores on f32 data; the default on CUDA,
    /// like the reference's allow_tf32) or bf16 (operands in bfloat16, f32 accumulation,
    /// as autocast). Storage stays f32. Without tensor cores: fp32, with a note; the CPU
    /// backend emulates the rounding. YAML: `misc.precision`.
    #[arg(long, global = true)]
    pub precision: Option<String>,
    /// Data-parallel training: auto (MPI when started by mpirun, mpiexec or srun), off, mpi
    /// (reduce through host memory, any backend) or nccl (CUDA device buffers). Needs a
    /// rae-cli built with `--features mpi`. `--batch-size` is the global batch.
    #[arg(long, global = true, default_value = "auto")]
    pub dist: String,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train: with no data and no weights, the built-in tiny pipeline (encoder, decoder,
    /// statistics, DiT-DH) on the built-in dataset; else stage 2 (or --stage 1). Every image
    /// of --data is checked before the first step (--check-data: only check; --skip-check).
    Train(TrainArgs),
    /// Draw class-conditional samples from a trained DiT-DH and write PNGs and a grid;
    /// --eval-ref REF --inception W scores them on the fly (FID, sFID, IS, precision,
    /// recall), --no-save writes no images.
    Sample(SampleArgs),
    /// Encode images to latents (safetensors).
    Encode(EncodeArgs),
    /// Decode latents (safetensors) to PNG images.
    Decode(DecodeArgs),
    /// Encode then decode images (reconstructions), printing PSNR.
    Reconstruct(ReconstructArgs),
    /// Latent mean and variance per element over a dataset.
    Stats(StatsArgs),
    /// Fréchet distance between two image sets on RAE-encoder features, or Inception
    /// metrics (--inception: FID, sFID, IS, KID, precision, recall); PSNR/SSIM of
    /// reconstructions (--reconstruct; with --inception and no second set, the rFID of §6.2
    /// with PSNR and SSIM in one pass).
    Eval(EvalArgs),
    /// List the tensors of a safetensors or PyTorch file.
    Inspect {
        /// The file.
        file: PathBuf,
    },
    /// Write the built-in dataset as an image folder (one subfolder per class).
    BuiltinData {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Images per class.
        #[arg(long, default_value_t = 10)]
        per_class: usize,
        /// Image side.
        #[arg(long, default_value_t = 32)]
        size: usize,
    },
    /// Write a RAE (--rae DIR, ...) as a diffusers AutoencoderRAE folder (--diffusers OUT)
    /// that `AutoencoderRAE.from_pretrained(OUT)` loads.
    Export {
        /// Output folder in diffusers' AutoencoderRAE layout.
        #[arg(long)]
        diffusers: PathBuf,
        /// The RAE to export.
        #[command(flatten)]
        rae: RaeArgs,
    },
    /// Convert a PyTorch checkpoint (or safetensors) to safetensors.
    Convert {
        /// Input file.
        input: PathBuf,
        /// Output safetensors file.
        output: PathBuf,
    },
}

/// Where a RAE comes from.
#[derive(Debug, Clone, Default, Args)]
pub struct RaeArgs {
    /// A RAE folder (encoder/, decoder.safetensors, stats.safetensors), or a Hugging Face
    /// hub id of one: org/name[@revision][/sub/folder].
    ///
    /// Hub ids (here and in --encoder, --decoder, --stats, sample --ckpt, --guidance-model):
    /// a path that exists on disk always wins; otherwise a relative argument with at least
    /// two '/'-separated parts that does not start with '.' or '~' is a hub id (hf://org/name
    /// forces one, ./org/name forces a path). The revision is a branch, tag or 40-hex commit
    /// (default main). Ids are read from the HF cache (HF_HUB_CACHE, else HF_HOME/hub, else
    /// ~/.cache/huggingface/hub); with the `hub` feature what is missing is downloaded there
    /// (HF_ENDPOINT, HF_TOKEN; never with HF_HUB_OFFLINE=1). A folder id fetches its *.json,
    /// *.safetensors, *.pt and *.bin files (not a .pt/.bin with a .safetensors twin).
    #[arg(long)]
    pub rae: Option<PathBuf>,
    /// HuggingFace encoder folder (overrides the RAE folder's), or a hub id such as
    /// facebook/dinov2-with-registers-base (see --rae).
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    /// Decoder weights (.safetensors or .pt), or a hub id of the file:
    /// org/name[@revision]/path/to/model.pt (see --rae).
    #[arg(long)]
    pub decoder: Option<PathBuf>,
    /// Decoder configuration: a config.json, a preset (B, L, XL), or the JSON itself.
    #[arg(long)]
    pub decoder_config: Option<String>,
    /// Latent statistics (.safetensors or the reference stat.pt), or a hub id of the file
    /// (see --rae).
    #[arg(long)]
    pub stats: Option<PathBuf>,
    /// Encoder input size (default: decoder grid × encoder patch, e.g. 224).
    #[arg(long)]
    pub encoder_input_size: Option<usize>,
}

impl RaeArgs {
    /// Whether any RAE location was given.
    pub fn given(&self) -> bool {
        self.rae.is_some() || self.encoder.is_some() || self.decoder.is_some()
    }
}

/// Data options.
#[derive(Debug, Clone, Default, Args)]
pub struct DataArgs {
    /// Image folder with one subfolder per class (PNG/JPEG). Default: the built-in dataset.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Image side for --data (ADM centre crop). Default: the decoder's output size.
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Number of images of the built-in dataset.
    #[arg(long, default_value_t = 2000)]
    pub builtin_size: usize,
    /// Threads that decode --data images (or read --latents shards) ahead of the step, in a
    /// bounded queue; the batches are the same whatever the number. Default: the machine's
    /// parallelism; 0 decodes on the training thread.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Labels of the class folders of --data: torchvision/Keras `imagenet_class_index.json`
    /// (`{"0": ["n01440764", "tench"], ...}`) or a plain `{"n01440764": 0, ...}` map. Every
    /// folder must be in it. Default: the sorted folder names (torchvision's ImageFolder).
    #[arg(long)]
    pub class_index: Option<PathBuf>,
}

/// `train` options.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    // [config hook] --config and what it sets beyond the flags (see the config module).
    /// A reference YAML config (stage_1, stage_2, transport, sampler, guidance, misc,
    /// training, gan); flags given on the command line override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Settings of --config that no flag expresses (filled in by `config::apply_config`).
    #[arg(skip)]
    pub plan: Option<crate::config::plan::TrainPlan>,
    /// 1 trains the decoder, 2 the DiT-DH. Default: the whole tiny pipeline when no RAE is
    /// given, else stage 2.
    #[arg(long)]
    pub stage: Option<u8>,
    /// RAE location.
    #[command(flatten)]
    pub rae: RaeArgs,
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Latents written by `encode` (stage 2 without on-the-fly encoding): a `.safetensors`
    /// file (read into memory) or a sharded cache folder (memory-mapped, read as needed;
    /// do not rewrite it while training reads it).
    #[arg(long)]
    pub latents: Option<PathBuf>,
    /// DiT preset: tiny, S, B, L, XL.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Optimiser steps of this stage (stage 2 in the pipeline).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Decoder steps of the pipeline's stage 1.
    #[arg(long)]
    pub stage1_steps: Option<u64>,
    /// Batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Base learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Final learning rate of the decay.
    #[arg(long)]
    pub final_lr: Option<f64>,
    /// Warm-up steps.
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    /// EMA decay.
    #[arg(long)]
    pub ema_decay: Option<f32>,
    /// Gradient-norm clip (0 disables).
    #[arg(long)]
    pub clip: Option<f32>,
    /// Seed of everything random in the run.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output folder.
    #[arg(long, default_value = "runs/default")]
    pub out: PathBuf,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Stop (with a checkpoint) once this step is reached, as if interrupted; the schedule
    /// still runs to --max-steps, so a later --resume continues the same run.
    #[arg(long)]
    pub stop_at: Option<u64>,
    /// Start over even if --out holds a checkpoint.
    #[arg(long)]
    pub fresh: bool,
    /// Checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 500)]
    pub ckpt_every: u64,
    /// Write a sample grid every N steps (stage 2; 0 = only at the end).
    #[arg(long, default_value_t = 0)]
    pub sample_every: u64,
    /// Log a line every N steps.
    #[arg(long, default_value_t = 50)]
    pub log_every: u64,
    /// Stage 1's LPIPS and discriminator (§2.7).
    #[command(flatten)]
    pub gan: Box<crate::config::gan_args::GanArgs>,
    /// Noise scale τ of decoder training (stage 1).
    #[arg(long, default_value_t = 0.8)]
    pub noise_tau: f32,
    /// Noise level rule of decoder training: uniform (reference code) or half-normal (paper).
    #[arg(long, default_value = "uniform")]
    pub noise_rule: String,
    /// Training time distribution: uniform or logit-normal_MU_SIGMA.
    #[arg(long, default_value = "logit-normal_0_1")]
    pub time_dist: String,
    /// Shift base dimension: s = sqrt(latent values / base) (§4.3; 0 disables the shift).
    /// Default 4096 (the reference), 43 for the tiny preset (s ≈ 6.9 as at ImageNet 256²).
    #[arg(long)]
    pub shift_base: Option<usize>,
    /// Sampling steps of the preview grids.
    #[arg(long, default_value_t = 25)]
    pub sample_steps: usize,
    /// Guidance scale of the preview grids (default 1, 3 for the tiny preset); recorded in the
    /// checkpoint as the default of `sample`.
    #[arg(long)]
    pub sample_cfg: Option<f32>,
    /// Only check --data and exit: read every image's header and decode it once, and name
    /// every file that is unreadable, too large or too elongated (no training, no output).
    #[arg(long)]
    pub check_data: bool,
    /// Skip the check of every image of --data that training runs before its first step
    /// (a bad image then stops the run when its batch comes up).
    #[arg(long, conflicts_with = "check_data")]
    pub skip_check: bool,
}

/// `sample` options.
#[derive(Debug, Clone, Args)]
pub struct SampleArgs {
    // [config hook] --config and what it sets beyond the flags (see the config module).
    /// A reference YAML config (stage_1, stage_2, sampler, guidance, misc); flags given on
    /// the command line override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Settings of --config that no flag expresses (filled in by `config::apply_config`).
    #[arg(skip)]
    pub plan: Option<crate::config::plan::SamplePlan>,
    /// DiT-DH checkpoint (its EMA weights are used when present), or a hub id of the file,
    /// org/name[@revision]/path/to/ckpt.pt (see --rae). Default:
    /// runs/default/dit-train.safetensors.
    #[arg(long)]
    pub ckpt: Option<PathBuf>,
    /// DiT configuration (JSON) or preset when the checkpoint carries none.
    #[arg(long)]
    pub model: Option<String>,
    /// RAE location (default: the `rae` folder beside the checkpoint).
    #[command(flatten)]
    pub rae: RaeArgs,
    /// euler, heun, sde or sde-heun.
    #[arg(long, default_value = "euler")]
    pub sampler: String,
    /// Grid points (N points, N − 1 steps).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Guidance scale (classifier-free, or AutoGuidance with --guidance-model). Default: the
    /// preview scale recorded by the training run, else 1.
    #[arg(long)]
    pub cfg_scale: Option<f32>,
    /// Guidance interval in flow time, "MIN,MAX".
    #[arg(long, default_value = "0,1")]
    pub cfg_interval: String,
    /// Guide model for AutoGuidance (a DiT-DH checkpoint, or a hub id of one as for --ckpt).
    #[arg(long)]
    pub guidance_model: Option<PathBuf>,
    /// One class to sample.
    #[arg(long)]
    pub class: Option<u32>,
    /// Classes to sample, comma-separated (default: every class).
    #[arg(long)]
    pub classes: Option<String>,
    /// Samples per class.
    #[arg(long, default_value_t = 4)]
    pub num: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder.
    #[arg(long, default_value = "runs/default/samples")]
    pub out: PathBuf,
    /// Start from noise stored in a safetensors file (tensor `noise`, [n, C, H, W]).
    #[arg(long)]
    pub init_noise: Option<PathBuf>,
    /// Write the final latents to this safetensors file.
    #[arg(long)]
    pub save_latents: Option<PathBuf>,
    /// Shift base dimension (0 disables the shift). Default: the one the checkpoint was
    /// trained with, else 4096.
    #[arg(long)]
    pub shift_base: Option<usize>,
    /// Evaluate the samples as they are made against this reference (an ADM .npz, an
    /// `eval --save-stats` file, or an image folder): each decoded batch goes straight to
    /// Inception-v3 (needs --inception) and the metrics are printed at the end.
    #[arg(long)]
    pub eval_ref: Option<PathBuf>,
    /// torch-fidelity's Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth) for
    /// --eval-ref.
    #[arg(long, requires = "eval_ref")]
    pub inception: Option<PathBuf>,
    /// Metrics of --eval-ref, comma-separated: fid, is, sfid, kid, prec, recall. Default:
    /// fid,sfid,is,prec,recall.
    #[arg(long, requires = "eval_ref")]
    pub metrics: Option<String>,
    /// Also write the --eval-ref results to this JSON file.
    #[arg(long, requires = "eval_ref")]
    pub eval_json: Option<PathBuf>,
    /// Images per Inception batch of --eval-ref.
    #[arg(long, default_value_t = 32)]
    pub eval_batch_size: usize,
    /// Write no PNGs and no grid (with --eval-ref: score many samples without storing them).
    #[arg(long)]
    pub no_save: bool,
}

/// `encode` options.
#[derive(Debug, Clone, Args)]
pub struct EncodeArgs {
    /// RAE location (default runs/default/rae).
    #[command(flatten)]
    pub rae: RaeArgs,
    /// Images: a class folder tree (--data), or image files.
    #[command(flatten)]
    pub data: DataArgs,
    /// Image files to encode (instead of --data).
    pub images: Vec<PathBuf>,
    /// Output: a `.safetensors` file (latents [N, C, h, w] and labels, in memory until
    /// written), or any other path, a folder: a sharded cache (`shard-NNNNN.safetensors`
    /// files, then `index.json`) streamed to disk, for ImageNet-scale data.
    #[arg(long)]
    pub out: PathBuf,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Latents per shard of a sharded cache (--out DIR). Default 1024.
    #[arg(long)]
    pub shard_size: Option<usize>,
    /// Storage of a sharded cache's latents: f32, or bf16 (half the size; 8 bits of
    /// mantissa).
    #[arg(long, default_value = "f32")]
    pub latent_dtype: String,
}

/// `decode` options.
#[derive(Debug, Clone, Args)]
pub struct DecodeArgs {
    /// RAE location.
    #[command(flatten)]
    pub rae: RaeArgs,
    /// Latents file (tensor `latents`).
    pub latents: PathBuf,
    /// Output folder for PNGs.
    #[arg(long)]
    pub out: PathBuf,
}

/// `reconstruct` options.
#[derive(Debug, Clone, Args)]
pub struct ReconstructArgs {
    /// RAE location.
    #[command(flatten)]
    pub rae: RaeArgs,
    /// Image files.
    pub images: Vec<PathBuf>,
    /// Output folder for PNGs.
    #[arg(long)]
    pub out: PathBuf,
}

/// `stats` options.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// RAE location (its statistics are ignored).
    #[command(flatten)]
    pub rae: RaeArgs,
    /// Data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Use the reference's running-average rule (momentum 0.1 per batch, §2.4.1) instead of
    /// exact moments.
    #[arg(long)]
    pub running: bool,
    /// Random horizontal flips (the reference computes its statistics with them).
    #[arg(long)]
    pub flip: bool,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Seed of the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output safetensors with `mean` and `var`.
    #[arg(long)]
    pub out: PathBuf,
}

/// `eval` options.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// RAE whose encoder gives the features (default runs/default/rae; its statistics are
    /// optional).
    #[command(flatten)]
    pub rae: RaeArgs,
    /// The images to score: a folder searched recursively for PNG/JPEG (samples, or
    /// reconstructions with --reconstruct).
    pub images: PathBuf,
    /// The reference images (a data folder, or the originals of the reconstructions).
    pub reference: Option<PathBuf>,
    /// Reconstruction metrics: PSNR and SSIM of each image of the first set against its
    /// original in the second (paired by file name, else by order); without a second set,
    /// the images are first reconstructed through the RAE.
    #[arg(long)]
    pub reconstruct: bool,
    /// Image side (ADM centre crop). Default: the decoder's output size.
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Images per encoder batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Also write the results to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Metrics, comma-separated: fid, is, sfid, kid, prec, recall (Inception-v3 features,
    /// need --inception), rae-fd (RAE encoder features), psnr, ssim (with --reconstruct;
    /// with --inception and no second set they combine with the Inception metrics: rFID).
    /// Default: fid,sfid,is,prec,recall with --inception (fid,psnr,ssim with --reconstruct
    /// and no second set), else rae-fd.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Reference of the Inception metrics: an ADM reference batch (.npz: its mu/sigma/mu_s/
    /// sigma_s when present, its arr_0 images otherwise), a --save-stats file, or an image
    /// folder.
    #[arg(long = "ref")]
    pub reference_stats: Option<PathBuf>,
    /// torch-fidelity's Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth).
    #[arg(long)]
    pub inception: Option<PathBuf>,
    /// Write the Inception statistics of the scored images here (safetensors: mu, sigma,
    /// mu_s, sigma_s, pool), to pass later as --ref.
    #[arg(long)]
    pub save_stats: Option<PathBuf>,
}
