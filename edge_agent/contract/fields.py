"""What every payload model is built from: a strict, frozen base and bounded field types.

Every payload carries ``schema_version`` (:data:`CONTRACT_VERSION`), rejects unknown
fields and bounds every string, list and number, so a hostile or broken sender cannot
make a receiver store more than the contract allows.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

CONTRACT_VERSION: Final = 1

# Free-text fields: printable ASCII only (no NUL, which PostgreSQL cannot store).
PRINTABLE: Final = r"^[\x20-\x7e]+$"

Reason = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
ModelName = Annotated[str, StringConstraints(pattern=PRINTABLE, max_length=32)]
ModelVersion = Annotated[str, StringConstraints(pattern=PRINTABLE, max_length=64)]
Label = Annotated[str, StringConstraints(pattern=PRINTABLE, min_length=1, max_length=64)]
Message = Annotated[str, StringConstraints(pattern=PRINTABLE, min_length=1, max_length=1024)]
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
# What a device says it estimated with: ``PersonEvent.models`` and ``DeviceStatus.models``.
ModelVersions = Annotated[
    dict[ModelName, ModelVersion], Field(max_length=8, description="Model name -> version.")
]


class StrictModel(BaseModel):
    """A payload or part of one: unknown fields rejected, immutable, strings bounded."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=256)
