"""What a model gets and returns: the batch of visible stations' inputs and target positions
(:class:`GraphBatch`), the estimates at both (:class:`Prediction`), and the sizes a model is built
for (:class:`DataSizes`). Plain containers, below the features and the models that use them."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class GraphBatch:
    """One batch of model inputs.

    Attributes:
        x: (B, W, N_src, C_in) standardised inputs of the visible stations; 0 where unobserved.
        x_mask: (B, W, N_src, C_in) bool, True where observed.
        x_time: (B, W, 6) cyclic encodings of the input steps (see ``stgraph.data.encodings``).
        y_time: (B, H, 6) cyclic encodings of the output steps (for ``krige``, equal to x_time).
        pos_src: (N_src, 2) latitude/longitude in degrees of the visible stations.
        pos_tgt: (N_tgt, 2) latitude/longitude of the target stations (N_tgt may be 0).
        static_src: (N_src, S) static covariates or None; static_tgt: (N_tgt, S) or None.
        y_src: (B, H, N_src, C_out) standardised truth of the visible stations' outputs, or None.
            Set by the trainer only (teacher forcing, e.g. DCRNN's scheduled sampling); never at
            evaluation, and never for target stations.
        y_src_mask: (B, H, N_src, C_out) bool, True where ``y_src`` is observed.
        colocated_tgt: (B, W, N_tgt, C_a) standardised values of the protocol's co-located channels
            (``data.colocated_channels``: co-located pollutants the protocol declares observed at the
            target stations, AMLSG's hybrid stage) at the target stations over the input steps, 0
            where unobserved; None when the protocol declares none. Never a target channel.
        colocated_tgt_mask: (B, W, N_tgt, C_a) bool, True where ``colocated_tgt`` is observed.
        aggregate: (B, W, C_out) standardised mean of the target channels over the observed
            stations of the batch's universe (visible + targets) at each input step
            (``data.aggregate: mean``, AMLSG's downscaling: the city-level series is known), 0
            where none is observed; None otherwise. By design this is the one way the targets'
            values reach the model under that protocol.
        aggregate_mask: (B, W, C_out) bool, True where ``aggregate`` averages at least one station.
    """

    x: torch.Tensor
    x_mask: torch.Tensor
    x_time: torch.Tensor
    y_time: torch.Tensor
    pos_src: torch.Tensor
    pos_tgt: torch.Tensor
    static_src: torch.Tensor | None = None
    static_tgt: torch.Tensor | None = None
    y_src: torch.Tensor | None = None
    y_src_mask: torch.Tensor | None = None
    colocated_tgt: torch.Tensor | None = None
    colocated_tgt_mask: torch.Tensor | None = None
    aggregate: torch.Tensor | None = None
    aggregate_mask: torch.Tensor | None = None


@dataclass
class Prediction:
    """src: (B, H, N_src, C_out) at the visible stations; tgt: (B, H, N_tgt, C_out) at the targets.

    For the aligned tasks (``krige``, ``impute``: outputs at the input steps) ``src`` is the
    completed series of the visible stations: a genuine estimate wherever the input was unobserved
    (models may echo the input where it was observed). ``impute`` scores ``src`` at held-out cells.
    """

    src: torch.Tensor
    tgt: torch.Tensor
    aux: list[Prediction] = field(default_factory=list)
    """Further estimates of the same outputs that training also scores (e.g. GRIN's per-direction
    and first-stage imputations): the trainer adds each one's loss, same mask, weight 1."""
    samples_src: torch.Tensor | None = None
    """(S, B, H, N_src, C_out) standardised samples at the visible stations, or None."""
    samples_tgt: torch.Tensor | None = None
    """(S, B, H, N_tgt, C_out) standardised samples at the targets, or None. A probabilistic model
    returns S samples of both outputs (at least of the one its task scores) and makes ``src`` /
    ``tgt`` their median; evaluation then adds CRPS, the 90 % interval's coverage and the 5/50/95 %
    quantiles (:mod:`stgraph.engine.evaluate`). Point models leave both None."""
    std_tgt: torch.Tensor | None = None
    """(B, H, N_tgt, C_out) standardised predictive standard deviation at the targets, from models
    with a Gaussian posterior (``gp``) when asked (``StationModel.predict_std = True``, as
    ``stgraph reanalyse`` does), else None."""


@dataclass(frozen=True)
class TaskTraits:
    """What a model may know of the task it serves: the shape of the problem, never the task's
    name. The engine's task (:mod:`stgraph.engine.tasks`) owns its traits and hands them to the
    model in :class:`DataSizes`.

    Attributes:
        aligned: outputs at the input steps (``krige``, ``impute``, ``reconstruct``), not after them.
        has_targets: target stations exist (``pos_tgt``); ``impute`` has none (every station visible).
        scores_visible_cells: cells of the visible stations that the input lacks are scored (and
            trained on): ``impute``'s evaluation cells, ``reconstruct``'s removed cells; not in
            ``krige``, whose visible gaps are unscored.
        default_anchor: the starting estimate a model's ``anchor: auto`` means
            (:mod:`stgraph.models.anchors`): ``last``, ``idw`` or ``lerp-knn``.
    """

    aligned: bool
    has_targets: bool
    scores_visible_cells: bool
    default_anchor: str


# the traits of the four model-facing kinds of task; a new engine task presents one of them
KINDS: dict[str, TaskTraits] = {
    "forecast": TaskTraits(aligned=False, has_targets=True, scores_visible_cells=False, default_anchor="last"),
    "krige": TaskTraits(aligned=True, has_targets=True, scores_visible_cells=False, default_anchor="idw"),
    "impute": TaskTraits(aligned=True, has_targets=False, scores_visible_cells=True, default_anchor="lerp-knn"),
    "reconstruct": TaskTraits(aligned=True, has_targets=True, scores_visible_cells=True, default_anchor="lerp-knn"),
}
TASKS = tuple(KINDS)


@dataclass(frozen=True)
class DataSizes:
    """Sizes a model takes from the data (injected by the engine, never written in YAML).

    Attributes:
        in_channels: C_in, input channels per station and step.
        out_channels: C_out, predicted channels.
        target_channels: for each output channel, its index among the input channels.
        window: W, input steps; horizon: H, output steps (H = W for the aligned tasks).
        num_static: S, static covariates per station (0 if none).
        task: the kind of problem the model is given, one of :data:`KINDS`: ``forecast``
            (outputs follow the input window), ``krige``, ``impute`` or ``reconstruct`` (outputs
            at the input steps). Never inferred from H == W: a 24 h -> 24 h forecast is not
            kriging. Models declare the kinds they serve (``StationModel.tasks``) and otherwise
            ask the traits (:attr:`aligned`, :attr:`has_targets`, ...), never the name.
    """

    in_channels: int
    out_channels: int
    target_channels: tuple[int, ...]
    window: int
    horizon: int
    num_static: int = 0
    task: str = "forecast"

    def __post_init__(self) -> None:
        if self.task not in KINDS:
            raise ValueError(f"DataSizes.task must be one of {TASKS}, got {self.task!r}")
        if self.aligned and self.horizon != self.window:
            raise ValueError(f"task '{self.task}' outputs the input steps: horizon must equal window ({self.window})")

    @property
    def traits(self) -> TaskTraits:
        return KINDS[self.task]

    @property
    def aligned(self) -> bool:
        """Outputs at the input steps (:attr:`TaskTraits.aligned`)."""
        return self.traits.aligned

    @property
    def has_targets(self) -> bool:
        """Target stations exist (:attr:`TaskTraits.has_targets`)."""
        return self.traits.has_targets

    @property
    def scores_visible_cells(self) -> bool:
        """The visible stations' missing cells are scored (:attr:`TaskTraits.scores_visible_cells`)."""
        return self.traits.scores_visible_cells

    @property
    def default_anchor(self) -> str:
        """The starting estimate of ``anchor: auto`` (:attr:`TaskTraits.default_anchor`)."""
        return self.traits.default_anchor
