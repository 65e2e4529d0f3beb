"""Failed fine-tuning runs: the rule that marks them, so that the fits can leave them out.

Fine-tuning a BERT-like model on a small target fails on some seeds: the run learns nothing and ends at the
majority class (Mosbach et al. 2021, "On the stability of fine-tuning BERT"; Dodge et al. 2020). Averaged in,
one such run moves its (k, draw) model's mean by several points. The rule reads what every fine-tuning run
records in its ``metrics.json``:

- ``chance``: the score, in the target's metric on its validation split, of a prediction that learnt nothing of
  the target (``evaluation.chance_score``): the best constant class (classification), the best constant answer
  position (multiple choice), a constant value (regression: correlation 0), the empty answer (span: 0 unless
  the split has unanswerable questions), the lead-3 baseline (summarization: what a BART that has not learnt to
  summarise produces, it copies the document's start);
- ``loss_start``, ``loss_end``: the model's plain loss on the first 256 examples of its training data
  (``stages.PROBE``), in eval mode, before the first update and after the last;
- ``loss_chance``: on those examples, the loss of the best prediction that ignores the input (the entropy of the
  labels' frequencies for classification and multiple choice, their variance for regression; none for span and
  summarization). A new head's first predictions can cost more than that, so a run that only learns the label
  frequencies (ends at the majority class) would otherwise look as if its loss fell.

A run failed when both hold:
- its loss did not fall: ``loss_end >= LOSS_KEPT * min(loss_start, loss_chance)`` (less than 10 % below the lower
  of its start and the chance loss);
- its score is at chance: ``value <= chance + MARGIN`` (at most 0.05 above it, in the metric's own units, all
  of which run from 0 to 1 here: the noise of a small validation split, and the few tokens that arbitrary
  spans or summaries share with the answer).

Either alone is not enough: a run can score near chance after real training (pre-finetuning may hurt a target
that much, and leaving such runs out would hide the dip the study measures), and a run whose head was carried
over from pre-finetuning may start at a low loss that falls little while it scores well. A run without these
fields (written before they were recorded) is not marked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LOSS_KEPT = 0.9   # the training loss fell by less than 10 % of its start
MARGIN = 0.05     # "at chance": at most this far above the chance score, in the metric's units
FIELDS = ("chance", "loss_start", "loss_end", "loss_chance")


def failed(table: pd.DataFrame) -> pd.Series:
    """Which runs of ``table`` (columns value, chance, loss_start, loss_end and optionally loss_chance; without the
    others nothing is marked) the rule marks as failed, as a boolean Series."""
    if not set(FIELDS[:3]) <= set(table.columns):
        return pd.Series(False, index=table.index)
    chance, start, end, floor = (pd.to_numeric(table[f], errors="coerce").to_numpy(float) if f in table
                                 else np.full(len(table), np.nan) for f in FIELDS)
    value = pd.to_numeric(table["value"], errors="coerce").to_numpy(float)
    with np.errstate(invalid="ignore"):
        marked = (end >= LOSS_KEPT * np.fmin(start, floor)) & (value <= chance + MARGIN)
    return pd.Series(marked, index=table.index)  # NaN anywhere compares False: not marked
