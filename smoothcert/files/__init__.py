"""Results files: tab-separated, Cohen et al.'s columns first, then the settings and the raw statistics, so any run
can be analysed and re-certified later. columns.py: the columns and how a cell is written; writer.py: appending
rows, resuming a run, writing a whole file atomically; rows.py: reading a file back with every row checked;
lock.py: the lock that keeps two runs from writing one file.
"""
from .columns import (CERTIFY_COLUMNS, CONFIDENCE_FIRST, CONFIDENCE_LAST, PREDICT_COLUMNS, SOFT_COLUMNS,
                      check_output_path, confidence_columns, encode_counts, encode_scores, format_float, format_time)
from .lock import MAGIC, FileLock, writer_of
from .rows import Counts, check_row, parse_counts, parse_float, parse_int, read_table
from .writer import ResultsWriter, write_all

__all__ = ["CERTIFY_COLUMNS", "CONFIDENCE_FIRST", "CONFIDENCE_LAST", "Counts", "FileLock", "MAGIC", "PREDICT_COLUMNS",
           "ResultsWriter", "SOFT_COLUMNS", "check_output_path", "check_row", "confidence_columns", "encode_counts",
           "encode_scores", "format_float", "format_time", "parse_counts", "parse_float", "parse_int", "read_table",
           "write_all", "writer_of"]
