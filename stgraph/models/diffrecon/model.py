"""DiffRecon: two-stage conditional diffusion that completes the visible stations and infers the
hidden ones, with S samples per estimate (Sun, Su, Wang et al., "From Incomplete Coarse-Grained
to Complete Fine-Grained: A Two-Stage Framework for Spatiotemporal Data Reconstruction").

The paper reconstructs a complete fine grid map from an incomplete coarse one. On stations the
coarse nodes are the visible stations (``batch.pos_src``) and the fine nodes the targets
(``batch.pos_tgt``); a grid is the same with cells as nodes.

* **Stage 1, Diffusion-C** (coarse completion): a conditional DDPM in CSDI's form (Tashiro et al.
  2021) over the visible stations' window of the target channel(s): only the cells to infer are
  noised; the observed cells, their mask, an interpolation of them (``guide``) and the
  calendar condition the noise predictor, :class:`~stgraph.models.diffrecon.coarse.CoarseDenoiser`
  (intra-map GNN ⊕ ST-PointFormer, eq. 13). Training: ε-prediction, masked MSE on the cells to infer
  that have a truth (the ``src`` loss terms' cells the input lacks; in ``krige``, whose visible gaps
  are not scored, a further ``self_mask`` fraction of the observed cells is hidden per batch and
  learned, CSDI's self-supervised masking). ``backbone="csdi"`` replaces that one-layer predictor by
  :class:`~stgraph.models.diffrecon.coarse.CSDICoarseDenoiser`: CSDI's gated residual body
  (``residual_layers`` × ``channels``, a time and a station transformer of ``residual_heads`` heads
  over the noisy state, ``step_dim`` step embedding; CSDI's 4 × 64 × 8 × 128) whose side
  information is the intra-map GNN ⊕ ST-PointFormer encoding of the conditions, computed once per
  batch (it does not see the noisy state), so sampling runs only the body at each step.
  ``pristi=True`` makes the body's layers PriSTI's (Liu et al. 2023): attention whose queries and
  keys are that conditional feature (which already holds the ``lerp-knn`` interpolation, PriSTI's
  interpolated input) and whose values are the noisy state, plus message passing over the visible
  stations' kNN graph (PriSTI's geography-aware spatial step).
* **Stage 2, Diffusion-F** (fine inference): a conditional DDPM over the target stations' window,
  conditioned on the completed coarse series through
  :class:`~stgraph.models.diffrecon.fine.FineDenoiser` (T-PatternNet per coarse node, carried
  to the fine nodes over the bipartite kNN graph, plus the IDW of the completed values at the fine
  node), which knows where each fine node is (``fine_position``: its lat/lon encoding in the
  visible stations' frame and its static covariates) and lets fine nodes exchange information after
  each block (``fine_mixing``: the paper's U-Net when the fine nodes fill a lattice, a kNN graph
  convolution over the fine stations otherwise; :mod:`stgraph.nn.fine_mixer`). Loss on the ``tgt``
  terms' cells.
* **Training schedule** (paper §IV-E): the first ``pretrain_fraction`` of the run's optimiser steps
  (:meth:`DiffRecon.set_training_budget`; a step counter buffer makes resume exact) trains the
  stages separately — stage 2 conditioned on the coarse truth (observed cells, plus the truth of the
  cells the task hides, masked-IDW fill elsewhere), the paper's "pseudo-complete coarse ground
  truth"; then joint fine-tuning end to end: stage 2 conditioned on stage 1's one-step estimate
  x̂0 = (x_τ - sqrt(1 - ᾱ_τ) ε̂) / sqrt(ᾱ_τ) of a noised completion (differentiable, so stage 2's loss
  reaches stage 1), observed cells kept. Until told its budget the model pre-trains. Ablations:
  ``pretrain=False`` (joint from step 0), ``joint=False`` (pre-training only), ``pointformer=False``
  (GNN only), ``tpatternnet=False`` (no T-PatternNet), ``stage2="idw"`` (no fine-grained diffusion:
  each stage-1 sample carried to the fine nodes by stage 2's guide, ``fine_guide``: IDW by default).
* **Sampling** (:meth:`DiffRecon.forward`, no gradient): stage 1 draws ``num_samples`` completions
  (``sampler`` ``ddim``/``ddpm``, ``sampling_steps``, ``eta``), observed cells fixed to their values;
  stage 2 draws one fine sample per completion. ``src`` / ``tgt`` are the samples' medians (the
  observed cells echo the input), ``samples_src`` / ``samples_tgt`` the (S, B, W, N, C) samples.
  For ``impute`` (no targets) only stage 1 runs.

Randomness. Sampling draws from a ``torch.Generator`` seeded with ``sample_seed`` at every forward
call, so a model's prediction of a batch is a deterministic function of its weights and the batch
(re-evaluating a run gives the same numbers; the noise depends on the call's shapes only). The
stations are put in a canonical order (by latitude, then longitude) before anything is drawn, so
each station's noise does not depend on the order the stations come in. Training draws its
diffusion steps, noise and self-supervised masks from a generator seeded by (``noise_seed`` buffer,
drawn from the global RNG when the model is built, like its weights; ``train_steps`` buffer): a
resumed run draws exactly what an uninterrupted one would.

Cost: ``benchmarks/step_time.py`` measures a training step (``benchmarks/results/step_time.md``).

Deviations from the paper, named:

* Graph adapter: grid U-Nets become a station-graph GNN (stage 1's intra-map encoder) and a
  per-node head after a bipartite coarse → fine carry (stage 2); ST-PointFormer and T-PatternNet
  differ from the paper as their modules say (per-cell output and cross-attention of every cell to
  the observed points; per-node series instead of the whole map as channels); see
  :mod:`stgraph.models.diffrecon.coarse` and :mod:`stgraph.models.diffrecon.fine`.
* Guide conditioning: stage 1 also gets an interpolation of the conditioning cells
  (``lerp-knn`` by default), stage 2 the IDW of the completed coarse values at each fine node, as
  extra input channels (PriSTI's finding); ``guide="none"`` removes stage 1's. On grids
  ``fine_guide="bicubic"`` makes stage 2's guide (and its skip's centre) the bicubic upsampling of
  the completed coarse map, the conditioning of SR3-style super-resolution diffusion and the
  ``bicubic`` baseline's interpolation: the IDW of the 4 nearest coarse cells is a worse fine
  estimate than bicubic upsampling (``benchmarks/results/era5_grid.md``), and the skip centres
  every sample on it.
* Pre-training's coarse truth: the paper downsamples the fine ground truth to a pseudo-complete
  coarse map; stations have no such aggregate, so it is the observed visible cells plus the truth of
  the cells the task hid, masked IDW elsewhere.
* Joint training: the paper trains end to end without saying how stage 1's output reaches stage 2
  differentiably; here it is stage 1's one-step x̂0 at a diffusion step drawn from the first
  ``joint_step_fraction`` of the schedule (a separate stage-1 pass from the one its own loss uses:
  at late steps x̂0 is mostly amplified noise, unlike the completions stage 2 sees at sampling).
* Skip around the guide (``skip``, on by default; ``skip=False`` is CSDI's plain ε-predictor): each
  stage's ε̂ is the network's output plus the ε of the exact denoiser under the prior
  x0 ~ N(guide, ``prior_std``²) (:meth:`DiffRecon.prior_eps`), the role EDM's c_skip plays (Karras
  et al. 2022). Its x̂0 tends to the guide at high noise, where a plain ε-predictor's x̂0 =
  (x_τ - sqrt(1 - ᾱ_τ) ε̂) / sqrt(ᾱ_τ) multiplies any error in ε̂ by up to sqrt((1 - ᾱ_T) / ᾱ_T) ≈ 170 on
  CSDI's schedule: without the skip, a briefly trained model sampled with 10 DDIM steps diverged (a
  synthetic impute check: scaled MAE 18 instead of 0.26). The untrained model samples the prior
  around the guide; the loss is unchanged (MSE on ε).
* ``edm_scaling`` (off by default; with ``skip``) completes EDM's preconditioning: the network's
  output is multiplied by s(t) = σ sqrt(ᾱ_t) / sqrt(ᾱ_t σ² + 1 - ᾱ_t) (:meth:`DiffRecon.net_scale`),
  so it moves x̂0 by at most σ = ``prior_std`` times its output at any step, and the loss is the MSE
  of (ε̂ - ε) / s(t), EDM's weight 1 / c_out²: the same as CSDI's at low noise, and at high noise a
  regression of the conditional mean around the guide instead of an ε error the loss barely counts.
  Why: with the skip alone, the ERA5 grid's trained stage 2 had a small ε error at the last step
  that x̂0 = (x_T - sqrt(1 - ᾱ_T) ε̂) / sqrt(ᾱ_T) turned into 23-25 K (test and val periods; the
  skip alone: 0.47 K), and its samples started from there (fine MAE 1.0 K given the true coarse map;
  ``benchmarks/results/diffrecon_stage2_probe_skip_only.md``).
* The loss is CSDI's masked MSE on ε (``train.loss`` does not apply), stage 1 and stage 2 summed
  with equal weight. Static covariates reach stage 2 only (the fine nodes'); ``colocated_tgt`` and
  ``aggregate`` are not used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stgraph.diffusion import SAMPLERS, SCHEDULES, NoiseSchedule, repeat_for_samples, sample
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.diffrecon.coarse import CoarseDenoiser, CSDICoarseDenoiser
from stgraph.models.diffrecon.fine import CARRIES, FINE_GUIDES, FineCondition, FineDenoiser, guide_to_fine
from stgraph.nn.intra_map_gnn import IntraMapGraph, intra_map_graph
from stgraph.ops.idw import masked_idw
from stgraph.ops.lerp import lerp_knn
from stgraph.ops.losses import masked_mse
from stgraph.ops.neighbours import canonical_order
from stgraph.ops.quantiles import sample_quantiles

GUIDES = ("lerp-knn", "idw", "none")
STAGE2 = ("diffusion", "idw")
BACKBONES = ("gnn", "csdi")
VALIDATION_OFFSET = 10**12  # validation draws' streams start beyond any training step


@dataclass
class DiffReconParams:
    d_model: int = 32  # width of both denoisers (with backbone "csdi": of stage 1's conditioning encoders)
    backbone: str = "gnn"  # stage 1: "gnn" (intra-map GNN ⊕ ST-PointFormer over the noisy state) or "csdi"
    channels: int = 64  # backbone "csdi": residual channels (CSDI: 64)
    residual_layers: int = 4  # backbone "csdi": gated residual layers (CSDI: 4)
    residual_heads: int = 8  # backbone "csdi": heads of its time and station transformers (CSDI: 8)
    pristi: bool = False  # backbone "csdi": PriSTI's layers (conditional feature as attention queries/keys + MPNN)
    heads: int = 4  # ST-PointFormer attention heads
    num_layers: int = 1  # ST-PointFormer self/cross layers, GNN blocks per level, TimesBlocks, head blocks
    gnn_k: int = 4  # neighbours in the visible stations' kNN graph (intra-map GNN)
    cheb_k: int = 2  # Chebyshev terms per graph convolution
    gnn_levels: int = 1  # graph U-Net depth (1: stacked graph convolutions)
    step_dim: int = 32  # width of the sinusoidal diffusion-step table
    diffusion_steps: int = 50  # T (CSDI: 50)
    beta_start: float = 1e-4  # CSDI's schedule
    beta_end: float = 0.5
    schedule: str = "quad"  # "quad" (CSDI) or "linear"
    sampler: str = "ddim"  # "ddim" or "ddpm" (all T steps)
    sampling_steps: int = 10  # DDIM steps (ignored by ddpm)
    eta: float = 0.0  # DDIM stochasticity (0: deterministic given x_T)
    num_samples: int = 10  # S at evaluation
    sample_seed: int = 0  # the sampling generator's seed, at every forward call
    guide: str = "lerp-knn"  # stage 1's guide channel: "lerp-knn", "idw" or "none"
    guide_tau: float = 8.0  # lerp-knn gap scale (steps)
    guide_k: int = 3  # lerp-knn neighbours
    idw_power: float = 2.0  # IDW power (stage 1's "idw" guide, pre-training fill, stage 2's guide and carry)
    self_mask: float = 0.2  # krige: fraction of observed visible cells hidden and learned per batch (CSDI)
    pointformer: bool = True  # False: the "no ST-PointFormer" ablation (GNN only)
    stage2: str = "diffusion"  # "diffusion" or "idw" (ablation: IDW of each stage-1 sample)
    fine_k: int = 4  # coarse neighbours per fine node
    carry: str = "idw"  # coarse -> fine weights: "idw" or "attention"
    fine_guide: str = "idw"  # stage 2's guide, skip centre and stage2="idw" ablation: "idw" or "bicubic" (grids)
    tpatternnet: bool = True  # False: the "no T-PatternNet" ablation (coarse embeddings carried as they are)
    fine_position: bool = True  # stage 2: each fine node's position (and static covariates) as input
    fine_mixing: bool = True  # stage 2: fine nodes exchange information (U-Net on a lattice, kNN GNN otherwise)
    top_k: int = 2  # T-PatternNet periods per block
    num_kernels: int = 3  # T-PatternNet inception kernels
    pretrain: bool = True  # False: joint training from step 0 (ablation)
    joint: bool = True  # False: pre-training only (ablation)
    pretrain_fraction: float = 0.5  # share of the run's optimiser steps spent pre-training
    joint_step_fraction: float = 0.2  # joint training: stage 1's x̂0 from steps in the first fraction of T
    skip: bool = True  # ε̂ = prior ε (x0 ~ N(guide, prior_std²)) + network; False: the network alone (CSDI)
    prior_std: float = 1.0  # the skip's prior spread around the guide (standardised units)
    edm_scaling: bool = False  # with skip: network output × EDM's c_out (in ε terms), loss weighted to match
    val_noise_levels: int = 0  # validation: 0 = one drawn step per window; n = each window at n spread steps


@dataclass
class CoarseInputs:
    """Stage 1's view of a batch (coarse = visible stations).

    Attributes:
        x: (B, W, N, C) target channels, 0 where unobserved. mask: (B, W, N, C) bool observed.
        node_feats: (B, W, N, E) other input channels and their masks, or None.
        time_enc: (B, W, 6). pos: (N, 2). graph: the intra-map graph of the N stations.
    """

    x: torch.Tensor
    mask: torch.Tensor
    node_feats: torch.Tensor | None
    time_enc: torch.Tensor
    pos: torch.Tensor
    graph: IntraMapGraph


class DiffRecon(StationModel):
    """Args:
        sizes: data-derived sizes (task ``krige``, ``impute`` or ``reconstruct``). params: :class:`DiffReconParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns src (B, W, N_src, C_out),
    tgt (B, W, N_tgt, C_out) and their samples (S, B, W, N, C_out).
    """

    tasks = frozenset({"krige", "impute", "reconstruct"})
    has_training_loss = True

    def __init__(self, sizes: DataSizes, params: DiffReconParams | None = None):
        super().__init__(sizes)
        p = self.params = params or DiffReconParams()
        self._check(sizes, p)
        self.learns_interpolation = p.stage2 == "diffusion"
        c = sizes.out_channels
        self.other_channels = [i for i in range(sizes.in_channels) if i not in set(sizes.target_channels)]
        self.schedule = NoiseSchedule(p.diffusion_steps, p.beta_start, p.beta_end, p.schedule)
        coarse_args = (
            c, 2 * len(self.other_channels), p.d_model, p.heads, p.num_layers, p.cheb_k, p.gnn_levels,
            p.diffusion_steps, p.step_dim, sizes.window, p.pointformer,
        )  # fmt: skip
        if p.backbone == "csdi":
            self.coarse = CSDICoarseDenoiser(
                *coarse_args, p.channels, p.residual_layers, p.residual_heads, conditional=p.pristi
            )
        else:
            self.coarse = CoarseDenoiser(*coarse_args)
        self.fine = None
        if p.stage2 == "diffusion":
            self.fine = FineDenoiser(
                c, p.d_model, p.num_layers, p.top_k, p.num_kernels, p.diffusion_steps, p.step_dim, p.fine_k, p.carry,
                p.idw_power, tpatternnet=p.tpatternnet, position=p.fine_position, mixing=p.fine_mixing,
                num_static=sizes.num_static, window=sizes.window, guide=p.fine_guide,
            )  # fmt: skip
        self.register_buffer("noise_seed", torch.randint(0, 2**31 - 1, (), dtype=torch.long))
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
        self._budget: int | None = None
        self._validation_draw: int | None = None  # set by validation_loss
        self._validation_step: int | None = None  # validation_loss: the diffusion step every window is scored at

    @staticmethod
    def _check(sizes: DataSizes, p: DiffReconParams) -> None:
        if sizes.task not in DiffRecon.tasks:
            raise ValueError(f"DiffRecon: task must be one of {sorted(DiffRecon.tasks)}, got {sizes.task!r}")
        for name in ("d_model", "heads", "num_layers", "gnn_k", "cheb_k", "gnn_levels", "diffusion_steps",
                     "num_samples", "fine_k", "top_k", "num_kernels", "guide_k", "channels", "residual_layers",
                     "residual_heads"):  # fmt: skip
            if getattr(p, name) < 1:
                raise ValueError(f"DiffRecon: {name} must be >= 1, got {getattr(p, name)}")
        for name, value, allowed in (
            ("schedule", p.schedule, SCHEDULES),
            ("sampler", p.sampler, SAMPLERS),
            ("guide", p.guide, GUIDES),
            ("stage2", p.stage2, STAGE2),
            ("carry", p.carry, CARRIES),
            ("fine_guide", p.fine_guide, FINE_GUIDES),
            ("backbone", p.backbone, BACKBONES),
        ):
            if value not in allowed:
                raise ValueError(f"DiffRecon: {name} must be one of {allowed}, got {value!r}")
        if p.sampler == "ddim" and not 1 <= p.sampling_steps <= p.diffusion_steps:
            raise ValueError(f"DiffRecon: sampling_steps must be in 1..diffusion_steps={p.diffusion_steps}")
        if not 0.0 <= p.eta <= 1.0:
            raise ValueError(f"DiffRecon: eta must be in [0, 1], got {p.eta}")
        for name in ("self_mask", "pretrain_fraction"):
            if not 0.0 <= getattr(p, name) < 1.0:
                raise ValueError(f"DiffRecon: {name} must be in [0, 1), got {getattr(p, name)}")
        if not p.prior_std > 0:
            raise ValueError(f"DiffRecon: prior_std must be positive, got {p.prior_std}")
        if not 0.0 < p.joint_step_fraction <= 1.0:
            raise ValueError(f"DiffRecon: joint_step_fraction must be in (0, 1], got {p.joint_step_fraction}")
        if p.edm_scaling and not p.skip:
            raise ValueError("DiffRecon: edm_scaling=True needs skip=True (it scales the network around the skip)")
        if p.val_noise_levels < 0:
            raise ValueError(f"DiffRecon: val_noise_levels must be >= 0, got {p.val_noise_levels}")
        if not (p.pretrain or p.joint):
            raise ValueError("DiffRecon: pretrain and joint cannot both be False (nothing would train)")
        if p.d_model % p.heads:
            raise ValueError(f"DiffRecon: d_model={p.d_model} must be divisible by heads={p.heads}")
        if p.backbone == "csdi" and p.channels % p.residual_heads:
            raise ValueError(f"DiffRecon: channels={p.channels} must be divisible by residual_heads={p.residual_heads}")
        if p.pristi and p.backbone != "csdi":
            raise ValueError("DiffRecon: pristi=True needs backbone='csdi' (PriSTI's layers are CSDI's, conditioned)")
        if p.step_dim < 4 or p.step_dim % 2:
            raise ValueError(f"DiffRecon: step_dim must be even and >= 4, got {p.step_dim}")

    # ---- training schedule -------------------------------------------------------------------------

    def set_training_budget(self, total_steps: int) -> None:
        self._budget = int(total_steps)

    def phase(self) -> str:
        """``"pretrain"`` (stages trained separately) or ``"joint"`` at the current training step
        (during :meth:`validation_loss`: the phase it scores in)."""
        p = self.params
        if self._validation_draw is not None:
            return "joint" if p.joint else "pretrain"
        if not p.pretrain:
            return "joint"
        if not p.joint or self._budget is None:
            return "pretrain"
        return "pretrain" if int(self.train_steps) < round(p.pretrain_fraction * self._budget) else "joint"

    # ---- shared pieces -------------------------------------------------------------------------------

    def coarse_inputs(self, batch: GraphBatch) -> CoarseInputs:
        """Stage 1's inputs of ``batch``: target channels, other channels as node features, graph."""
        tc = list(self.sizes.target_channels)
        x, m = batch.x[..., tc], batch.x_mask[..., tc]
        feats = None
        if self.other_channels:
            xo, mo = batch.x[..., self.other_channels], batch.x_mask[..., self.other_channels]
            feats = torch.cat([torch.where(mo, xo, torch.zeros_like(xo)), mo.to(xo.dtype)], -1)
        graph = intra_map_graph(batch.pos_src.detach().cpu(), k=self.params.gnn_k, levels=self.params.gnn_levels)
        return CoarseInputs(
            torch.where(m, x, torch.zeros_like(x)), m, feats, batch.x_time.to(x.dtype), batch.pos_src, graph
        )

    def guide(self, cond: torch.Tensor, cond_mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """(B, W, N, C) stage 1's guide channel: ``guide`` of the conditioning cells
        (observed cells keep their values; 0 for ``none``)."""
        p = self.params
        if p.guide == "none":
            return torch.zeros_like(cond)
        if p.guide == "lerp-knn":
            return lerp_knn(cond, cond_mask, pos, p.guide_tau, p.guide_k)
        fill, _ = masked_idw(cond, cond_mask, pos, pos, p.idw_power, exclude_self=True)
        return torch.where(cond_mask, cond, fill)

    def prior_eps(self, x_t: torch.Tensor, t: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """The ε of the exact denoiser under the prior x0 ~ N(centre, σ² I), σ = ``prior_std``:
        sqrt(1 - ᾱ_t) (x_t - sqrt(ᾱ_t) centre) / (ᾱ_t σ² + 1 - ᾱ_t), whose x̂0 is the posterior mean
        centre + sqrt(ᾱ_t) σ² (x_t - sqrt(ᾱ_t) centre) / (ᾱ_t σ² + 1 - ᾱ_t); 0 without ``skip``.
        x_t, centre (B', ...); t (B',)."""
        if not self.params.skip:
            return torch.zeros_like(x_t)
        ab = self.schedule.alpha_bars.to(x_t.device)[t].view(-1, *([1] * (x_t.dim() - 1)))
        scale = ((1.0 - ab).sqrt() / (ab * self.params.prior_std**2 + 1.0 - ab)).to(x_t.dtype)
        return scale * (x_t - ab.sqrt().to(x_t.dtype) * centre)

    def net_scale(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor | float:
        """The factor on the network's ε output at steps t (B',), shaped to broadcast over ``like``:
        1 without ``edm_scaling``; with it s(t) = σ sqrt(ᾱ_t) / sqrt(ᾱ_t σ² + 1 - ᾱ_t), σ = ``prior_std``,
        EDM's c_out in ε terms: the network moves x̂0 by c_out(t) = σ sqrt(1 - ᾱ_t) / sqrt(ᾱ_t σ² +
        1 - ᾱ_t) ≤ σ times its output, instead of sqrt((1 - ᾱ_t) / ᾱ_t) (≈ 170 at CSDI's last step)."""
        if not self.params.edm_scaling:
            return 1.0
        ab = self.schedule.alpha_bars.to(like.device)[t].view(-1, *([1] * (like.dim() - 1)))
        sd = self.params.prior_std
        return (sd * ab.sqrt() / (ab * sd**2 + 1.0 - ab).sqrt()).to(like.dtype)

    def eps_loss(self, eps_hat: torch.Tensor, eps: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """CSDI's masked MSE on ε; with ``edm_scaling`` on (ε̂ - ε) / s(t), the network's own scale (EDM's
        loss weight 1 / c_out², uniform over noise levels in the network's output units; s(t) ≈ 1 at
        low noise, so there it is CSDI's loss)."""
        s = self.net_scale(t, eps)
        return masked_mse(eps_hat / s, eps / s, mask)

    def coarse_eps(self, ci: CoarseInputs, x_t, t, cond, cond_mask, guide, points, reps: int = 1) -> torch.Tensor:
        """Stage 1's ε̂ for x_t (reps·B, W, N, C); the (B, ...) conditions are tiled ``reps`` times
        (``points``: :meth:`CoarseDenoiser.encode_points` of the untiled conditions)."""
        tile = (lambda v: v) if reps == 1 else (lambda v: None if v is None else repeat_for_samples(v, reps))
        guide = tile(guide)
        net = self.coarse(
            x_t, t, tile(cond), tile(cond_mask), guide, tile(ci.time_enc), tile(ci.node_feats), ci.graph, points
        )
        return self.net_scale(t, x_t) * net + self.prior_eps(x_t, t, guide)

    def fine_eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: FineCondition) -> torch.Tensor:
        """Stage 2's ε̂ for x_t (B', W, N_f, C) given its condition (centred on the IDW guide)."""
        return self.net_scale(t, x_t) * self.fine(x_t, t, cond) + self.prior_eps(x_t, t, cond.guide)

    def condition_coarse(self, ci: CoarseInputs, cond: torch.Tensor, cond_mask: torch.Tensor, guide: torch.Tensor):
        """Stage 1's step-independent conditioning of the (B, W, N, C) conditions, computed once per
        batch (ST-PointFormer's encoded points; with backbone "csdi" the whole side information)."""
        return self.coarse.condition(cond, cond_mask, guide, ci.time_enc, ci.node_feats, ci.pos, ci.graph)

    # ---- training ------------------------------------------------------------------------------------

    def _generator(self) -> torch.Generator:
        draw = int(self.train_steps) if self._validation_draw is None else VALIDATION_OFFSET + self._validation_draw
        return torch.Generator().manual_seed(int(self.noise_seed) * 1_000_003 + draw)

    def validation_loss(self, batch: GraphBatch, terms: list[tuple], loss_fn=None, draw: int = 0) -> torch.Tensor:
        """:meth:`training_loss` with its diffusion steps, noise and masks drawn from a stream of
        ``draw`` that no training step uses; the step counter is unchanged. Always in the joint
        phase's form when the model trains jointly (stage 2 conditioned on stage 1's estimate, as
        at sampling), whatever the training phase, so checkpoints of both phases are scored on one
        scale (scored in the pre-training form, stage 2 conditioned on the coarse truth looks
        better than any joint checkpoint can, and selection would never keep joint training).

        ``val_noise_levels`` = n > 0 scores every window at n diffusion steps evenly spaced over
        0..T-1 (all T when n >= T) and averages, as CSDI's ``calc_loss_valid`` does over every
        step: with one drawn step per window, a validation set of a few windows measures the
        model at a few noise levels only, and ε-MSE differs by orders of magnitude between them."""
        saved = self.train_steps.clone()
        levels = self.validation_steps()
        try:
            total = 0.0
            for k, step in enumerate(levels):
                self._validation_draw = draw if step is None else draw * len(levels) + k
                self._validation_step = step
                total = total + self.training_loss(batch, terms, loss_fn)
            return total / len(levels)
        finally:
            self._validation_draw, self._validation_step = None, None
            self.train_steps.copy_(saved)

    def validation_steps(self) -> list[int | None]:
        """The diffusion steps every validation window is scored at (``[None]``: one drawn per window)."""
        n, t = self.params.val_noise_levels, self.params.diffusion_steps
        if n == 0:
            return [None]
        if n >= t:
            return list(range(t))
        return sorted({round(i * (t - 1) / (n - 1)) for i in range(n)}) if n > 1 else [t // 2]

    def _diffusion_steps(self, b: int, g: torch.Generator) -> torch.Tensor:
        """(b,) the diffusion steps of a loss: drawn (training, and validation by default) or the
        one :meth:`validation_loss` fixed (drawn anyway, so the stream's later draws do not move)."""
        t = self.schedule.sample_timesteps(b, g)
        return t if self._validation_step is None else torch.full_like(t, self._validation_step)

    def training_loss(self, batch: GraphBatch, terms: list[tuple], loss_fn=None) -> torch.Tensor:
        """Stage 1's ε loss at the cells to infer plus stage 2's at the targets (see the module
        docstring); ``loss_fn`` is not used (CSDI's masked MSE on ε). One call = one optimiser step."""
        p, sched, sizes = self.params, self.schedule, self.sizes
        g = self._generator()
        ci = self.coarse_inputs(batch)
        x, m = ci.x, ci.mask
        dev = x.device

        def randn(shape):
            return torch.randn(shape, generator=g).to(dev, x.dtype)

        truth, known = x, m
        for which, y, mask, weight in terms:
            if which == "src" and weight:
                truth, known = torch.where(mask, y.to(x.dtype), truth), known | mask
        cond_mask = m
        if not sizes.scores_visible_cells and p.self_mask > 0:  # krige: CSDI's self-supervised masking
            cond_mask = m & ~(torch.rand(m.shape, generator=g) < p.self_mask).to(dev)
        cond = torch.where(cond_mask, x, torch.zeros_like(x))
        truth = torch.where(known, truth, torch.zeros_like(truth))  # CSDI: unknown cells diffuse from 0
        guide = self.guide(cond, cond_mask, ci.pos)
        points = self.condition_coarse(ci, cond, cond_mask, guide)  # shared by both stage-1 passes
        b = x.size(0)

        def noised(t, eps):
            return torch.where(cond_mask, torch.zeros_like(truth), sched.q_sample(truth, t.to(dev), eps))

        t1 = self._diffusion_steps(b, g)
        eps1 = randn(x.shape)
        loss = self.eps_loss(
            self.coarse_eps(ci, noised(t1, eps1), t1.to(dev), cond, cond_mask, guide, points),
            eps1,
            known & ~cond_mask,
            t1.to(dev),
        )

        fine_terms = [(y, mask) for which, y, mask, weight in terms if which == "tgt" and weight]
        if self.fine is not None and sizes.has_targets:
            if batch.pos_tgt.size(0) == 0 or not fine_terms:
                raise ValueError(
                    "DiffRecon: stage 2 learns from hidden training stations given as targets (loss terms on "
                    "'tgt'); this batch has none (train.node_masking: sample keeps them among the visible "
                    "stations: use node_masking: batch)"
                )
            if self.phase() == "joint":  # stage 1's differentiable one-step x̂0 of a lightly noised completion
                tc = torch.randint(0, max(1, round(p.joint_step_fraction * sched.num_steps)), (b,), generator=g)
                x_tc = noised(tc, randn(x.shape))
                x0 = sched.predict_x0(
                    x_tc, tc.to(dev), self.coarse_eps(ci, x_tc, tc.to(dev), cond, cond_mask, guide, points)
                )
                completed = torch.where(cond_mask, cond, x0)
            else:  # pre-training: the coarse truth, masked-IDW fill where none is known
                fill, _ = masked_idw(truth, known, ci.pos, ci.pos, p.idw_power, exclude_self=True)
                completed = torch.where(known, truth, fill)
            y_f = torch.zeros_like(fine_terms[0][0], dtype=x.dtype)
            m_f = torch.zeros_like(fine_terms[0][1])
            for y, mask in fine_terms:
                y_f, m_f = torch.where(mask, y.to(x.dtype), y_f), m_f | mask
            cond_f = self.fine.condition(completed, ci.time_enc, ci.pos, batch.pos_tgt, batch.static_tgt)
            t2 = self._diffusion_steps(b, g)
            eps2 = randn(y_f.shape)
            loss = loss + self.eps_loss(
                self.fine_eps(sched.q_sample(y_f, t2.to(dev), eps2), t2.to(dev), cond_f), eps2, m_f, t2.to(dev)
            )
        with torch.no_grad():
            self.train_steps += 1
        return loss

    # ---- sampling ------------------------------------------------------------------------------------

    def _sample(self, eps_model, shape, num_samples: int, generator: torch.Generator, infer_mask=None, like=None):
        p = self.params
        return sample(
            eps_model, self.schedule, shape, sampler=p.sampler, steps=p.sampling_steps if p.sampler == "ddim" else None,
            eta=p.eta, num_samples=num_samples, generator=generator, infer_mask=infer_mask, dtype=like.dtype,
            device=like.device,
        )  # fmt: skip

    @torch.no_grad()
    def sample_fine(self, completed, time_enc, pos_src, pos_tgt, static_tgt, generator: torch.Generator):
        """Stage 2 alone: one fine draw for each coarse completion.

        ``completed`` (S, B, W, N_src, C) coarse maps in canonical station order (stage 1's samples,
        or any coarse field, e.g. the true one); ``time_enc`` (B, W, E); ``pos_src`` (N_src, 2);
        ``pos_tgt`` (N_tgt, 2); ``static_tgt`` (N_tgt, F) or None. Returns (S, B, W, N_tgt, C),
        scaled units. Without T-PatternNet's stage (the ``fine=False`` ablation): the IDW of each
        completion. Consumes ``generator`` exactly as :meth:`forward` does after stage 1.
        """
        p = self.params
        s, b, w, _, c = completed.shape
        flat = completed.flatten(0, 1)  # (S·B, W, N_src, C), sample-major
        if self.fine is None:
            return guide_to_fine(flat, pos_src, pos_tgt, p.fine_guide, p.fine_k, p.idw_power).unflatten(0, (s, b))
        cond = self.fine.condition(flat, repeat_for_samples(time_enc, s), pos_src, pos_tgt, static_tgt)
        shape = (s * b, w, pos_tgt.size(0), c)
        drawn = self._sample(lambda x_t, t: self.fine_eps(x_t, t, cond), shape, 1, generator, like=flat)
        return drawn[0].unflatten(0, (s, b))

    @torch.no_grad()
    def forward(self, batch: GraphBatch) -> Prediction:
        p, s = self.params, self.params.num_samples
        order_src, order_tgt = canonical_order(batch.pos_src), canonical_order(batch.pos_tgt)
        canon = GraphBatch(
            x=batch.x[:, :, order_src], x_mask=batch.x_mask[:, :, order_src], x_time=batch.x_time,
            y_time=batch.y_time, pos_src=batch.pos_src[order_src], pos_tgt=batch.pos_tgt[order_tgt],
            static_tgt=None if batch.static_tgt is None else batch.static_tgt[order_tgt],
        )  # fmt: skip
        ci = self.coarse_inputs(canon)
        x, m = ci.x, ci.mask
        b, w, _, c = x.shape
        g = torch.Generator(device=x.device).manual_seed(p.sample_seed)
        if m.all():  # nothing to infer at the visible stations
            completed = x.expand(s, *x.shape)
        else:
            guide = self.guide(x, m, ci.pos)
            points = self.condition_coarse(ci, x, m, guide)  # the observed points, encoded once

            def eps1(x_t, t):
                return self.coarse_eps(ci, x_t, t, x, m, guide, points, reps=s)

            drawn = self._sample(eps1, x.shape, s, g, infer_mask=~m, like=x)  # (S, B, W, N, C)
            completed = torch.where(m, x, drawn)
        nf = canon.pos_tgt.size(0)
        if nf == 0:
            fine = x.new_zeros(s, b, w, 0, c)
        else:
            fine = self.sample_fine(completed, ci.time_enc, ci.pos, canon.pos_tgt, canon.static_tgt, g)
        samples_src = completed[:, :, :, torch.argsort(order_src)]
        samples_tgt = fine[:, :, :, torch.argsort(order_tgt)]
        median = sample_quantiles(samples_src, (0.5,))[0], sample_quantiles(samples_tgt, (0.5,))[0]
        return Prediction(median[0], median[1], samples_src=samples_src, samples_tgt=samples_tgt)
