"""Hyper-parameter ranges a model declares for tuning (``stgraph tune``).

A model class lists the hyper-parameters worth searching and their ranges in its own file, as
``search_space = {"hidden_channels": IntRange(16, 128, log=True), ...}``; the tuner
(:mod:`stgraph.bench.tune`) asks Optuna for a value of each, with the same trial budget for
every model. Names must be fields of the model's params dataclass (a test holds every model to it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IntRange:
    """An integer in [low, high]; ``log``: sampled on a log scale."""

    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class FloatRange:
    """A float in [low, high]; ``log``: sampled on a log scale."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """One of ``values``."""

    values: tuple


Range = IntRange | FloatRange | Choice
