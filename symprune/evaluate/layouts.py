"""Converters from a local file's layout to the one an lm-eval task reads from the hub.

A local task (``eval.zeroshot.local``) names one of these as its ``layout``; it
becomes the task's ``process_docs`` (replacing the stock one, if any), so the
stock prompt, choices and metrics apply unchanged to the converted documents.
Each takes and returns a ``datasets.Dataset`` of one split.
"""

from __future__ import annotations

from typing import Callable

import datasets
from lm_eval.tasks.hellaswag.utils import preprocess as hellaswag_preprocess

from symprune.errors import ConfigError


def boolq_answer(docs: datasets.Dataset) -> datasets.Dataset:
    """BoolQ dev as published (``answer``: bool) → the hub's ``label`` (0 = no, 1 = yes)."""
    return docs.map(lambda doc: {"label": int(doc["answer"])})


def _choice_lists(question: dict) -> dict[str, list[str]]:
    return {
        "text": [choice["text"] for choice in question["choices"]],
        "label": [choice["label"] for choice in question["choices"]],
    }


def openbookqa_nested(docs: datasets.Dataset) -> datasets.Dataset:
    """OpenBookQA as published (``question: {stem, choices: [{text, label}]}``) → the hub's
    ``question_stem`` and ``choices: {text: [...], label: [...]}``."""
    return docs.map(
        lambda doc: {"question_stem": doc["question"]["stem"], "choices": _choice_lists(doc["question"])},
        remove_columns=["question"],
    )


def arc_nested(docs: datasets.Dataset) -> datasets.Dataset:
    """ARC as published (``question: {stem, choices: [{text, label}]}``) → the hub's
    ``question`` (the stem) and ``choices: {text: [...], label: [...]}``."""
    return docs.map(
        lambda doc: {"question": doc["question"]["stem"], "choices": _choice_lists(doc["question"])},
        remove_columns=["question"],
    )


HELLASWAG_RECORD_LINES = 6  # "activity_label: context", the gold index, four endings


def hellaswag_lines(docs: datasets.Dataset) -> datasets.Dataset:
    """HellaSwag as a text file of 6-line records (read with ``dataset_path: text``, one row per
    line) → the documents lm-eval's own ``process_docs`` makes from the hub's rows: ``query``,
    ``choices`` and ``label``, each text cleaned by lm-eval's HellaSwag ``preprocess``.

    One difference to the stock task remains: the file joins the context's two parts as they are,
    where lm-eval capitalises the first letter of the second part (``ctx_b``).
    """
    lines = docs["text"]
    if len(lines) % HELLASWAG_RECORD_LINES:
        raise ValueError(f"a HellaSwag text file has 6 lines per item; this one has {len(lines)} lines")
    records = [
        {
            "query": hellaswag_preprocess(lines[start]),
            "choices": [hellaswag_preprocess(ending) for ending in lines[start + 2 : start + HELLASWAG_RECORD_LINES]],
            "label": int(lines[start + 1]),
        }
        for start in range(0, len(lines), HELLASWAG_RECORD_LINES)
    ]
    return datasets.Dataset.from_list(records)


LAYOUTS: dict[str, Callable[[datasets.Dataset], datasets.Dataset]] = {
    "boolq_answer": boolq_answer,
    "openbookqa_nested": openbookqa_nested,
    "arc_nested": arc_nested,
    "hellaswag_lines": hellaswag_lines,
}


def layout(name: str) -> Callable[[datasets.Dataset], datasets.Dataset]:
    if name not in LAYOUTS:
        raise ConfigError(f"unknown local task layout '{name}'; valid layouts: {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[name]
