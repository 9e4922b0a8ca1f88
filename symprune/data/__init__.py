"""Calibration samples and evaluation token streams: text from the hub or from local files, or token ids."""

from symprune.data.corpora import DATASETS, calibration_ids, dataset, evaluation_ids, label
from symprune.data.splits import ASSETS_ENV

__all__ = ["ASSETS_ENV", "DATASETS", "calibration_ids", "dataset", "evaluation_ids", "label"]
