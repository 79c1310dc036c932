"""smoothcert: certified robustness of neural-network classifiers by randomized smoothing."""
from .certificates import ABSTAIN
from .errors import SmoothcertError
from .noises import Gaussian, Laplace
from .smooth import Certificate, Prediction, Smooth

__all__ = ["ABSTAIN", "Certificate", "Gaussian", "Laplace", "Prediction", "Smooth", "SmoothcertError"]
__version__ = "0.1.0"
