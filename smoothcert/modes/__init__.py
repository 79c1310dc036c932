"""The modes: one module per way of spending samples, each a function of the Smooth it runs for, yielding one
result per input (outcomes.py): fixed n (fixed.py: CERTIFY and PREDICT), several n in one pass (nested.py),
input-specific n (input_n.py), early stopping at a target radius (target.py), soft certificates (soft.py) and
certified confidence (confidence.py). They share one loop (common.py: seeds, streams, sampling groups) and one
grouping table (grouping.py). A new mode is one module here, one verb on Smooth and one row of GROUPING.
"""
from .grouping import GROUPING, group_size
from .outcomes import Certificate, Confidence, Prediction

__all__ = ["Certificate", "Confidence", "GROUPING", "Prediction", "group_size"]
