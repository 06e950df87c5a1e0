"""The training run: prepare (buckets, latent cache, network, optimizer), the step, the loop, the saves.

Read top to bottom it is the order of a run. The step itself fits on one screen (``_step``); the hot path
does no host synchronisation: the loss is summed on the device and read every ``sync_every`` steps, where
the NaN guard checks it; every save checks the weights again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from PIL import Image

from ..compat import autocast, grad_scaler
from ..config import TrainConfig, sanitize_name
from ..errors import Cancelled, NonFiniteLoss, UserError
from . import data as D
from .backend import ModelBackend, frozen, to_device
from .network import LoRANetwork
from .optim import build_optimizer, build_scheduler
from .saving import SAVE_DTYPES, build_metadata, save_lora, write_sidecar

log = logging.getLogger("lora_trainer")


@dataclass
class Progress:
    step: int
    total: int
    epoch: int
    loss: float
    lr: float
    it_s: float
    eta: float
    phase: str = "train"
    d_lr: Optional[float] = None


@dataclass
class Callbacks:
    """Events out of a run. A failing callback is logged and never stops the run."""

    on_progress: Optional[Callable[[Progress], None]] = None
    on_save: Optional[Callable[[Path], None]] = None
    on_log: Optional[Callable[[dict], None]] = None
    # Called with (step, epoch) at the sample points, the network attached; a front end passes its
    # Generator-backed sampler here (diffusers standalone, the WebUI's txt2img in the tab).
    on_sample: Optional[Callable[[int, int], None]] = None

    def emit(self, name: str, *args) -> None:
        fn = getattr(self, name)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - a UI or logging failure must not kill training
            log.exception("callback %s failed (ignored)", name)


@dataclass
class TrainResult:
    output: Optional[Path]
    saved: list[Path] = field(default_factory=list)
    steps: int = 0
    total_steps: int = 0
    final_loss: float = float("nan")
    cancelled: bool = False
    seconds: float = 0.0
    optimizer: str = ""
    warnings: list[str] = field(default_factory=list)
    missing_captions: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- maths

def snr_weights(alphas_cumprod_t: torch.Tensor, gamma: float, v_prediction: bool) -> torch.Tensor:
    """Min-SNR-γ loss weights (Hang et al. 2023): min(SNR, γ)/SNR for eps, min(SNR, γ)/(SNR+1) for v."""
    snr = alphas_cumprod_t / (1.0 - alphas_cumprod_t)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1.0) if v_prediction else clipped / snr


def add_noise(latents: torch.Tensor, noise: torch.Tensor, ac_t: torch.Tensor) -> torch.Tensor:
    s = ac_t.sqrt().view(-1, 1, 1, 1)
    n = (1.0 - ac_t).sqrt().view(-1, 1, 1, 1)
    return s * latents + n * noise


def v_target(latents: torch.Tensor, noise: torch.Tensor, ac_t: torch.Tensor) -> torch.Tensor:
    s = ac_t.sqrt().view(-1, 1, 1, 1)
    n = (1.0 - ac_t).sqrt().view(-1, 1, 1, 1)
    return s * noise - n * latents


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    n = math.ceil(steps_per_epoch * cfg.epochs / cfg.gradient_accumulation_steps)
    return min(n, cfg.max_steps) if cfg.max_steps > 0 else n


def save_steps(cfg: TrainConfig, total: int) -> set[int]:
    return {max(1, round(f * total)) for f in cfg.save_fractions if round(f * total) < total}


# --------------------------------------------------------------------------------------------- the run

def nan_advice(loss: float, step: int, amp_dtype: Optional[torch.dtype], model: str = "") -> tuple[str, str]:
    """(message, hint) for a non-finite loss at ``step``.

    Step 1 is judged apart: its loss is computed before the first optimizer step, with the LoRA's up weights
    still zero, so the network's output is the base model's own — a NaN there comes from the model (its
    weights, its VAE latents or its text encoder) or its precision, never from the learning rate. Later
    steps: the lr, and fp16 only when the run is in fp16.
    """
    what = f"the model {model!r}" if model else "the base model"
    stopped = "the run was stopped and nothing non-finite was saved"
    if step <= 1:
        hint = (f"{what} itself gives a non-finite output on these images before any LoRA update, so the "
                f"learning rate is not the cause: check the checkpoint and its VAE (load it in txt2img)")
        if amp_dtype == torch.float16:
            hint += "; fp16 can overflow in this model: try bf16 or fp32 (mixed_precision)"
        else:
            hint += f"; the run is in {'bf16' if amp_dtype == torch.bfloat16 else 'fp32'}, which does not overflow: " \
                    "the weights themselves are suspect"
        return f"the loss was {loss} at the first step, before any training: {what} gives NaN ({stopped})", hint
    hint = "lower the learning rate (try half)"
    if amp_dtype == torch.float16:
        hint += ", or use bf16/fp32 instead of fp16"
    return f"the loss became {loss} at step {step}; {stopped}", hint


class Trainer:
    """One training run of ``cfg`` on ``backend`` over a scanned dataset."""

    def __init__(self, backend: ModelBackend, scan: D.DatasetScan, cfg: TrainConfig, out_dir: Path,
                 callbacks: Optional[Callbacks] = None, should_stop: Callable[[], bool] = lambda: False,
                 job_dir: Optional[Path] = None, name: str = "lora", resume: bool = False,
                 generator=None):
        """``generator`` (a ``generate.Generator`` on this backend) draws the samples the config asks for,
        unless ``callbacks.on_sample`` is already set."""
        self.backend, self.scan, self.cfg = backend, scan, cfg
        self.generator = generator
        self.resume = resume
        self.out_dir, self.job_dir = Path(out_dir), job_dir
        self.cb = callbacks or Callbacks()
        self.should_stop = should_stop
        self.name = sanitize_name(cfg.name or name)
        self.device = backend.device
        self.result = TrainResult(output=None)
        self.started = time.time()
        # Noise and timesteps are drawn on the training device: a CPU draw copied to a GPU is a host
        # synchronisation every step (a copy from pageable memory waits for the stream).
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.rng = random.Random(cfg.seed)

    # ---- precision -----------------------------------------------------------------------------------
    def _autocast(self):
        cfg, dev = self.cfg, self.device
        if dev.type != "cuda":  # CPU: fp32 unless bf16 is asked for (fast on CPUs with AMX/AVX512-BF16)
            return torch.bfloat16 if cfg.mixed_precision == "bf16" else None
        wanted = cfg.mixed_precision
        if wanted == "auto":
            wanted = "bf16" if self.backend.dtype == torch.bfloat16 else "fp16"
        if wanted == "no" and self.backend.dtype == torch.float32:
            return None
        return torch.bfloat16 if wanted == "bf16" else torch.float16

    # ---- data ----------------------------------------------------------------------------------------
    def _prepare_data(self) -> None:
        cfg = self.cfg
        items = self.scan.items
        buckets = D.make_buckets(cfg.resolution, cfg.min_bucket_reso, cfg.max_bucket_reso, cfg.bucket_step)
        self.bucket_of: list[tuple[int, int]] = []
        for it in items:
            size = D.image_size(it.path)  # header only: each image is decoded once, when it is encoded
            if cfg.enable_buckets:
                b = D.assign_bucket(*size, buckets, cfg.resolution, cfg.bucket_step, cfg.bucket_no_upscale)
            else:
                b = (cfg.resolution, cfg.resolution)
            self.bucket_of.append(b)
        self.latents: list[torch.Tensor] = []
        self.latents_flip: list[torch.Tensor] = []  # the mirrored images' latents (flip_aug)
        self.masks: list[Optional[torch.Tensor]] = []
        t0 = time.time()
        n = len(items)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)  # VAE posterior samples: same latents on a resume, host RNG untouched
            self._encode_all(items, t0, n)
        self.cache_seconds = time.time() - t0
        self.repeats = [it.repeats for it in items]
        self.steps_per_epoch = D.steps_per_epoch(self.bucket_of, self.repeats, cfg.batch_size)
        self.total = total_steps(cfg, self.steps_per_epoch)

    def _encode_all(self, items, t0: float, n: int) -> None:
        cfg = self.cfg
        disk = D.LatentDiskCache(self.job_dir / "latents", self.backend.name, cfg.seed) \
            if cfg.cache_latents_to_disk and self.job_dir is not None else None
        for i, it in enumerate(items):
            if self.should_stop():
                raise Cancelled()
            img = None
            for flip in (False, True) if cfg.flip_aug else (False,):
                lat = disk.get(it.path, self.bucket_of[i], flip) if disk is not None else None
                if lat is None:
                    if img is None:
                        img = D.resize_crop(D.load_image(it.path), self.bucket_of[i])
                    # the mirrored image is encoded itself: the VAE is not exactly symmetric
                    px = D.to_tensor(img.transpose(Image.FLIP_LEFT_RIGHT) if flip else img)
                    with torch.no_grad():
                        lat = self.backend.encode_images(px[None].to(self.device, dtype=torch.float32))[0].float()
                    if disk is not None:
                        disk.put(it.path, self.bucket_of[i], lat, flip)
                lat = lat.to(self.device)
                (self.latents_flip if flip else self.latents).append(lat if cfg.cache_latents else lat.cpu())
            m = D.load_mask(it.mask, self.bucket_of[i]) if cfg.masked_loss else None
            if m is not None:
                m = F.interpolate(m[None], size=lat.shape[-2:], mode="area")[0].to(self.device)
            self.masks.append(m)
            self.cb.emit("on_progress", Progress(i + 1, n, 0, float("nan"), 0.0, (i + 1) / max(1e-9, time.time() - t0),
                                                 0.0, phase="cache"))

    # ---- network and optimizer -----------------------------------------------------------------------
    def _prepare_network(self) -> None:
        cfg, be = self.cfg, self.backend
        conv = cfg.network == "locon"
        targets = {}
        self.train_te = cfg.train_text_encoder and be.te_trainable
        if cfg.train_text_encoder and not be.te_trainable:
            self.result.warnings.append("this model's text encoder cannot carry a LoRA here; training the UNet only")
        if cfg.train_unet:
            targets.update(be.lora_targets("unet", conv=conv))
        if self.train_te:
            targets.update(be.lora_targets("te"))
        conv_rank = (cfg.conv_rank or cfg.rank) if conv else 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # the same initial LoRA for the same seed, host RNG untouched
            self.network = LoRANetwork(targets, cfg.rank, cfg.alpha, conv_rank, cfg.conv_alpha).to(self.device)
        groups = []
        unet_p = [p for m in self.network.parts("lora_unet") for p in m.parameters()]
        te_p = [p for m in self.network.parts("lora_te") for p in m.parameters()]
        if unet_p:
            groups.append({"params": unet_p, "lr": cfg.unet_lr})
        if te_p:
            groups.append({"params": te_p, "lr": cfg.te_lr()})
        if not groups:
            raise UserError("the model has no LoRA targets for this configuration", "train the UNet as well")
        self.optimizer, used, warning = build_optimizer(cfg.optimizer, groups, self.device, cfg.weight_decay)
        self.result.optimizer = used
        if warning:
            self.result.warnings.append(warning)
        warmup = round(cfg.warmup_ratio * self.total) if cfg.warmup_ratio > 0 else cfg.warmup_steps
        self.scheduler = build_scheduler(self.optimizer, cfg.lr_scheduler, self.total, warmup, cfg.lr_cycles,
                                         cfg.lr_power)
        amp = self._autocast()
        self.amp_dtype = amp
        self.scaler = None
        if amp == torch.float16:
            self.scaler = grad_scaler("cuda")
        # Text-encoder outputs can be cached only when it is frozen and captions never change.
        self.cache_text = not self.train_te and not self.cfg.shuffle_caption and self.cfg.caption_dropout_rate == 0
        self.text_cache: dict[str, torch.Tensor] = {}

    # ---- one step ------------------------------------------------------------------------------------
    def _conditioning(self, captions: list[str]) -> torch.Tensor:
        be = self.backend
        if self.cache_text:
            missing = [c for c in dict.fromkeys(captions) if c not in self.text_cache]
            if missing:
                with torch.no_grad():
                    enc = be.encode_text(missing)
                for c, e in zip(missing, enc):
                    self.text_cache[c] = e
            return torch.stack([self.text_cache[c] for c in captions])
        if self.train_te:
            return be.encode_text(captions)
        with torch.no_grad():
            return be.encode_text(captions)

    def predict(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, captions: list[str]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the model's prediction, the loss's target: eps or v) for ``latents`` noised with ``noise`` at
        timesteps ``t``: the training step's maths, also the LR range test's evaluation loss."""
        be = self.backend
        ac_t = self.alphas[t]
        noisy = add_noise(latents, noise, ac_t)
        with autocast(self.device.type, self.amp_dtype):
            cond = self._conditioning(captions)
            pred = be.denoise(noisy.to(be.dtype) if self.amp_dtype is None else noisy, t, cond)
        return pred, (v_target(latents, noise, ac_t) if self.v_pred else noise)

    def _batch(self, idxs: list[int]) -> tuple[torch.Tensor, list[Optional[torch.Tensor]]]:
        """The batch's latents (on the device) and masks; with ``flip_aug`` each item is the mirrored image
        on a coin flip (drawn from the run's seeded RNG, so a resumed run flips the same ones)."""
        flips = [self.rng.random() < 0.5 for _ in idxs] if self.cfg.flip_aug else [False] * len(idxs)
        lats = [self.latents_flip[i] if f else self.latents[i] for i, f in zip(idxs, flips)]
        masks = [m.flip(-1) if f and m is not None else m for m, f in zip((self.masks[i] for i in idxs), flips)]
        return to_device(torch.stack(lats), self.device), masks  # on the device already if cached

    def _step(self, idxs: list[int], accumulate: bool) -> torch.Tensor:
        cfg = self.cfg
        captions = [D.process_caption(self.scan.items[i].caption, self.rng, cfg.shuffle_caption, cfg.keep_tokens,
                                      cfg.caption_dropout_rate) for i in idxs]
        latents, masks = self._batch(idxs)
        b = latents.shape[0]
        dev = self.device
        noise = torch.randn(latents.shape, generator=self.gen, device=dev)
        if cfg.noise_offset > 0:
            noise = noise + cfg.noise_offset * torch.randn((b, latents.shape[1], 1, 1), generator=self.gen, device=dev)
        t = torch.randint(0, self.alphas.shape[0], (b,), generator=self.gen, device=dev)
        pred, target = self.predict(latents, noise, t, captions)
        loss = F.mse_loss(pred.float(), target.float(), reduction="none")
        if any(m is not None for m in masks):
            mk = torch.stack([m if m is not None else torch.ones_like(latents[0, :1]) for m in masks])
            loss = loss * mk
        loss = loss.mean(dim=(1, 2, 3))
        if cfg.min_snr_gamma > 0:
            loss = loss * snr_weights(self.alphas[t], cfg.min_snr_gamma, self.v_pred)
        loss = loss.mean()
        scaled = loss / cfg.gradient_accumulation_steps
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        if not accumulate:
            if cfg.max_grad_norm > 0:
                if self.scaler:
                    self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.network.parameters(), cfg.max_grad_norm)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    # ---- saving --------------------------------------------------------------------------------------
    def _save(self, path: Path, step: int, epoch: int) -> Path:
        cfg, be = self.cfg, self.backend
        if not self.network.all_finite():
            raise NonFiniteLoss("the LoRA weights became NaN/inf; nothing was saved",
                                "lower the learning rate, or use bf16/fp32 instead of fp16")
        tensors = self.network.state_dict_kohya(SAVE_DTYPES[cfg.save_precision])
        res = max(self.bucket_of, key=lambda b: b[0] * b[1]) if self.bucket_of else (cfg.resolution,) * 2
        md = build_metadata(cfg, family=be.family, model_name=be.name, output_name=path.stem,
                            prediction_type=getattr(be, "prediction_type", None),
                            resolution=(cfg.resolution, cfg.resolution), num_images=self.scan.num_images,
                            steps=step, epoch=epoch, started_at=self.started,
                            network_args={"conv_dim": cfg.conv_rank or cfg.rank, "conv_alpha": cfg.conv_alpha}
                            if cfg.network == "locon" else None,
                            extra={
                                "ss_tag_frequency": D.tag_frequency(self.scan.items),
                                "ss_dataset_dirs": self.scan.folders,
                                "ss_bucket_info": _bucket_info(self.bucket_of, self.repeats),
                                "ss_num_batches_per_epoch": str(self.steps_per_epoch),
                                "ss_max_bucket_reso_used": f"{res[0]}x{res[1]}",
                            })
        save_lora(path, tensors, md)
        self.result.saved.append(path)
        self.cb.emit("on_save", path)
        self._prune_saves(path)
        return path

    def _prune_saves(self, newest: Path) -> None:
        """``keep_last_n_saves``: delete this run's older intermediate files (never the final one)."""
        keep = self.cfg.keep_last_n_saves
        final = self.out_dir / f"{self.name}.safetensors"
        if not keep or newest == final:
            return
        inter = [p for p in self.result.saved if p != final and p.exists()]
        for old in inter[:-keep]:
            old.unlink(missing_ok=True)
            self.result.saved.remove(old)

    # ---- the loop ------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, be = self.cfg, self.backend
        self.result.missing_captions = [str(p) for p in self.scan.missing_captions]
        for p in self.scan.missing_captions:
            log.warning("no caption (.txt or .caption) for %s: training it on its folder name", p.name)
        if self.scan.left_out:
            why = D.left_out_text(self.scan.left_out) + " left out: run the prepare step on them (it writes PNG)"
            log.warning(why)
            self.result.warnings.append(why)
        self.alphas = be.alphas_cumprod().to(self.device, torch.float32)
        self.v_pred = be.prediction_type == "v_prediction"
        mods = be.modules()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tb = self._attach_run_hooks()
        try:
            with frozen(*mods.values()):
                self._prepare_data()
                self._prepare_network()
                gc_set = getattr(be, "set_gradient_checkpointing", None)
                if cfg.gradient_checkpointing and gc_set:
                    gc_set(True)
                try:
                    with self.network.applied(), self._compiled():
                        self._loop()
                finally:
                    if cfg.gradient_checkpointing and gc_set:
                        gc_set(False)
        finally:  # also when caching or building the network fails or is cancelled
            if tb is not None:
                tb.close()
        return self.result

    def _attach_run_hooks(self):
        """Samples through the front end's generator, TensorBoard events beside log.jsonl (both as the config
        asks). Returns the TensorBoard log to close, or None."""
        from .samples import sampler_for

        cfg, cb = self.cfg, self.cb
        if cb.on_sample is None and self.generator is not None:
            sampler = sampler_for(cfg, self.generator, self.job_dir)
            if sampler is not None:
                cb = dataclasses.replace(cb, on_sample=sampler)
        tb = None
        if cfg.tensorboard and self.job_dir is not None:
            from .tb import TensorBoardLog

            tb = TensorBoardLog(self.job_dir)
            if tb.enabled:
                user_log = cb.on_log
                cb = dataclasses.replace(cb, on_log=lambda rec: (tb(rec), user_log and user_log(rec)))
            else:
                self.result.warnings.append(tb.notice)
        self.cb = cb
        return tb

    def _compiled(self):
        return compiled_denoise(self.backend) if self.cfg.compile else contextlib.nullcontext()

    def _flush(self, pending: list, t_start: float, total: int) -> float:
        """The one host sync every ``sync_every`` steps: read the pending losses, check them, report them."""
        values = torch.stack([p[4] for p in pending]).tolist()
        it_s = pending[-1][0] / max(time.time() - t_start, 1e-9)
        for (step, epoch, lr, d, _), loss in zip(pending, values):
            d_lr = d * lr if d is not None else None
            self.cb.emit("on_log", {"step": step, "epoch": epoch, "loss": loss, "lr": lr, "d_lr": d_lr, "it_s": it_s})
            if not math.isfinite(loss):
                raise NonFiniteLoss(*nan_advice(loss, step, self.amp_dtype, self.backend.name))
        step, epoch, lr, d, _ = pending[-1]
        mean = sum(values) / len(values)
        self.cb.emit("on_progress", Progress(step, total, epoch, mean, lr, it_s, (total - step) / max(it_s, 1e-9),
                                             d_lr=d * lr if d is not None else None))
        return mean

    def _save_state(self, step: int, epoch: int, batch_index: int, micro: int) -> None:
        if self.job_dir is None:
            return
        from .state import save_state

        save_state(Path(self.job_dir) / "state", step=step, epoch=epoch, batch_index=batch_index, micro=micro,
                   network=self.network, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
                   gen=self.gen, rng=self.rng)

    def _restore(self) -> tuple[int, int, int, int]:
        """(step, epoch, batch_index, micro) to continue from: the job folder's latest state, or the start."""
        if not self.resume:
            return 0, 0, 0, 0
        from .state import latest_state, load_state

        path = latest_state(Path(self.job_dir) / "state") if self.job_dir else None
        if path is None:
            raise UserError(f"no saved training state in {self.job_dir}",
                            "resume needs a job folder whose run saved state (intermediate saves or "
                            "save_state_every_n_steps)")
        pos = load_state(path, network=self.network, optimizer=self.optimizer, scheduler=self.scheduler,
                         scaler=self.scaler, gen=self.gen, rng=self.rng)
        log.info("resuming at step %d (epoch %d, batch %d)", pos["step"], pos["epoch"], pos["batch_index"])
        return pos["step"], pos["epoch"], pos["batch_index"], pos["micro"]

    def _loop(self) -> None:
        cfg = self.cfg
        total, accum = self.total, cfg.gradient_accumulation_steps
        saves = save_steps(cfg, total)
        step, epoch, start_batch, micro = self._restore()
        pos = (step, epoch, start_batch, micro)
        epoch = max(0, epoch - 1)  # a resume re-enters the saved epoch and skips its finished batches
        pending: list[tuple[int, int, float, Optional[float], torch.Tensor]] = []  # per-step losses, still on device
        micro_losses: list[torch.Tensor] = []
        t_start = time.time()
        last_loss = float("nan")
        final = self.out_dir / f"{self.name}.safetensors"
        try:
            while step < total:
                epoch += 1
                rng = random.Random(cfg.seed * 1000 + epoch)
                batches = D.epoch_batches(self.bucket_of, self.repeats, cfg.batch_size, rng)
                for bi, batch in enumerate(batches):
                    if bi < start_batch:
                        continue
                    start_batch = 0
                    if self.should_stop():
                        raise Cancelled()
                    micro += 1
                    acc = micro % accum != 0
                    lr = self.scheduler.get_last_lr()[0]  # the lr this step trains with
                    micro_losses.append(self._step(batch, acc))
                    if acc:
                        continue
                    step += 1
                    pos = (step, epoch, bi + 1, micro)  # the last completed optimizer step, for state saves
                    d = self.optimizer.param_groups[0].get("d")
                    pending.append((step, epoch, lr, d, torch.stack(micro_losses).mean()))
                    micro_losses = []
                    if step % cfg.sync_every == 0 or step == total or step in saves:
                        last_loss = self._flush(pending, t_start, total)
                        pending = []
                    if step in saves:
                        self._save(self.out_dir / f"{self.name}-step{step:06d}.safetensors", step, epoch)
                    if step in saves or (cfg.save_state_every_n_steps and step % cfg.save_state_every_n_steps == 0):
                        if step < total:
                            self._save_state(*pos)
                    if cfg.sample_every_n_steps and step % cfg.sample_every_n_steps == 0:
                        self.cb.emit("on_sample", step, epoch)
                    if step >= total:
                        break
                start_batch = 0  # a state saved after an epoch's last batch resumes at the next epoch
                if cfg.save_every_n_epochs and epoch % cfg.save_every_n_epochs == 0 and step < total:
                    self._save(self.out_dir / f"{self.name}-{epoch:06d}.safetensors", step, epoch)
                if cfg.sample_every_n_epochs and epoch % cfg.sample_every_n_epochs == 0:
                    self.cb.emit("on_sample", step, epoch)
        except Cancelled:
            self.result.cancelled = True
            if pending:
                last_loss = self._flush(pending, t_start, total)
            if pos[0] > 0 and pos[0] < total:
                self._save_state(*pos)  # a cancelled run can be resumed too
        self.result.steps = step
        self.result.total_steps = total
        self.result.final_loss = last_loss
        self.result.seconds = time.time() - self.started
        if step > 0:
            self.result.output = self._save(final, step, epoch)
            write_sidecar(final, family=self.backend.family, trigger=cfg.trigger_word)
        if not self.result.cancelled and step >= total and not cfg.keep_state:
            self._drop_state()

    def _drop_state(self) -> None:
        """A finished run needs no resume: its state (optimizer moments: several times the LoRA's size) goes,
        after the final file was written. A cancelled, failed or killed run never gets here and keeps it."""
        if self.job_dir is not None:
            shutil.rmtree(Path(self.job_dir) / "state", ignore_errors=True)


def _bucket_info(bucket_of, repeats) -> dict:
    counts: dict[tuple[int, int], int] = {}
    for b, r in zip(bucket_of, repeats):
        counts[b] = counts.get(b, 0) + r
    return {"buckets": {str(i): {"resolution": [w, h], "count": c} for i, ((w, h), c) in
                        enumerate(sorted(counts.items()))}, "mean_img_ar_error": 0.0}


@contextlib.contextmanager
def compiled_denoise(backend: ModelBackend):
    """The backend's denoise call (UNet and the LoRA forwards inside it) through ``torch.compile`` while the
    context lasts (``compile``); afterwards the backend's own method is back."""
    backend.denoise = torch.compile(backend.denoise)
    try:
        yield
    finally:
        del backend.denoise  # the instance attribute goes; the class's method is back


def train(backend: ModelBackend, data_dir: str | Path, cfg: TrainConfig, out_dir: str | Path,
          callbacks: Optional[Callbacks] = None, should_stop: Callable[[], bool] = lambda: False,
          job_dir: Optional[Path] = None) -> TrainResult:
    """Scan ``data_dir``, train ``cfg`` on ``backend``, write the LoRA files into ``out_dir``."""
    scan = D.scan_dataset(data_dir, cfg.repeats)
    default_name = D.parse_kohya_dirname(scan.items[0].folder)
    name = cfg.name or (default_name[1] if default_name else Path(data_dir).name)
    return Trainer(backend, scan, cfg, Path(out_dir), callbacks, should_stop, job_dir, name).run()


def forecast(cfg: TrainConfig, num_samples: int, seconds_per_step: Optional[float] = None) -> dict:
    """Steps = images × repeats × epochs ÷ batch (as the tab shows it), and minutes when a step was timed."""
    steps = math.ceil(num_samples * cfg.epochs / (cfg.batch_size * cfg.gradient_accumulation_steps))
    if cfg.max_steps:
        steps = min(steps, cfg.max_steps)
    out = {"steps": steps}
    if seconds_per_step is not None:
        out["minutes"] = steps * seconds_per_step / 60
    return out


__all__ = ["Trainer", "train", "TrainResult", "Progress", "Callbacks", "forecast", "snr_weights"]
