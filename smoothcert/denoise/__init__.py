"""Denoised smoothing: certify a classifier that was never trained under noise by putting a denoiser in front of
it (Salman et al. 2020; Carlini et al. 2023). The base classifier is `Denoised(classifier, denoiser)`, i.e.
classifier(denoiser(x + noise)), so every certificate holds for it unchanged.

    dncnn.py      the built-in DnCNN and the DENOISERS registry (build_denoiser)
    compose.py    Denoised (the composition), probe_denoiser, load_denoiser (a spec, as --denoiser takes it)
    training.py   train_denoiser: the MSE, stability and MSE-then-stability objectives, the classifier frozen
    diffusion.py  DiffusionDenoiser (one-step denoising at t*) and load_diffusion (a local diffusers folder)
"""
from .compose import Denoised, load_denoiser, probe_denoiser
from .diffusion import DiffusionDenoiser, diffusion_timestep, load_diffusion
from .dncnn import DENOISERS, DnCNN, build_denoiser, dncnn
from .training import OBJECTIVES, DenoiserEpochLog, train_denoiser

__all__ = ["DENOISERS", "Denoised", "DenoiserEpochLog", "DiffusionDenoiser", "DnCNN", "OBJECTIVES", "build_denoiser",
           "diffusion_timestep", "dncnn", "load_denoiser", "load_diffusion", "probe_denoiser", "train_denoiser"]
