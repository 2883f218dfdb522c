"""What the shipped models are known to do on gender, measured on fairface_dev.

Written by ``python bench/population_shares.py --write-reference`` from the default
model set's calibrated outputs on ``faces/fairface_dev`` (FairFace, Kärkkäinen and Joo,
CC BY 4.0: the one set here whose licence allows fitting what ships). The hub's
corrected gender shares (``cloud_hub.queries.shares``) take EM's reference prior and
the interval's confusion counts from it. Do not edit by hand: run the bench again.
"""

from __future__ import annotations

from typing import Final

from edge_agent.shares import Correction

GENDER_REFERENCE: Final = Correction(
    attribute="gender",
    classes=("female", "male"),
    hard=((96, 39), (26, 109)),
    soft=((96.368, 38.632), (28.325, 106.675)),
    fitted_on="fairface_dev",
    model_set="dlib-mixed",
)
