"""smoothcert: certified robustness of neural-network classifiers by randomized smoothing."""
from .analysis import Summary, export_csv, export_dataframe, export_json, load_results, summarize
from .certificates import ABSTAIN
from .errors import SmoothcertError
from .noises import Gaussian, Laplace, Uniform
from .modes.outcomes import Certificate, Prediction
from .smooth import Smooth

__all__ = ["ABSTAIN", "Certificate", "Gaussian", "Laplace", "Prediction", "Smooth", "SmoothcertError", "Summary",
           "Uniform", "export_csv", "export_dataframe", "export_json", "load_results", "summarize"]
__version__ = "0.1.0"
