"""Base classifiers: the built-in architectures (architectures.py), loading and saving models (loading.py), and
the safety checks a .pt2 file passes before torch reads it (pt2zip.py opens the archive as torch will, pt2check.py
checks what it holds, pt2guard.py loads it under a guard). A new loader goes in loading.py (`load_model`'s specs).
"""
from .architectures import ARCHITECTURES, Normalize, build, cifar_resnet, digits_cnn
from .loading import StaticBatch, eval_mode, fingerprint, load_model, read_state_dict, save_model

__all__ = ["ARCHITECTURES", "Normalize", "StaticBatch", "build", "cifar_resnet", "digits_cnn", "eval_mode",
           "fingerprint", "load_model", "read_state_dict", "save_model"]
