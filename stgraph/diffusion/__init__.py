"""Conditional denoising diffusion (CSDI-style): noise schedule, diffusion-step embedding, samplers."""

from stgraph.diffusion.embedding import DiffusionStepEmbedding, diffusion_step_table
from stgraph.diffusion.samplers import (
    SAMPLERS,
    ddim_step_stats,
    ddim_timesteps,
    ddpm_step_stats,
    repeat_for_samples,
    sample,
    sample_ddim,
    sample_ddpm,
)
from stgraph.diffusion.schedule import SCHEDULES, NoiseSchedule

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "DiffusionStepEmbedding",
    "NoiseSchedule",
    "ddim_step_stats",
    "ddim_timesteps",
    "ddpm_step_stats",
    "diffusion_step_table",
    "repeat_for_samples",
    "sample",
    "sample_ddim",
    "sample_ddpm",
]
