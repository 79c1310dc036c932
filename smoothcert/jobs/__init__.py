"""Jobs: running the Python API over a whole data set into results files, resumably. runner.py: the Job, the
executor that runs it here (distributed.RayExecutor runs it on Ray), the progress bar and the loop that writes one
row per input; datasets.py: certify, predict and certified confidence over a data set; recertification.py: a
results file recomputed from its stored statistics; latency.py: the n that fits a time budget; demo.py: the
built-in end-to-end job.
"""
from .datasets import certify_dataset, confidence_dataset, nested_paths, predict_dataset
from .latency import Latency, bench_latency
from .recertification import recertify
from .runner import Job, Progress, run_locally

__all__ = ["Job", "Latency", "Progress", "bench_latency", "certify_dataset", "confidence_dataset", "nested_paths",
           "predict_dataset", "recertify", "run_locally"]
