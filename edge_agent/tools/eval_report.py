"""What ``edge-agent eval`` hands back: the side-by-side table and the predictions file."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

from edge_agent.tools.eval_metrics import REFERENCE_FEMALE_PRIOR, FemaleShare
from edge_agent.tools.evaluate import ADULT_AGE, MAX_AGE_FOR_MAE, Prediction, Scores


def write_predictions(path: Path, preds: Sequence[Prediction]) -> None:
    """``file,age,gender`` per image."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "age", "gender"])
        for p in preds:
            writer.writerow([p.file, f"{p.age:.1f}", p.gender])


def format_report(columns: dict[str, Scores], images: int, folder: Path) -> str:
    """The side-by-side table ``eval`` prints."""
    names = list(columns)

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    def yrs(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    lines = [f"{images} images from {folder}", ""]
    header = f"{'metric':<28}" + "".join(f"{n:>14}" for n in names)
    lines += [header, "-" * len(header)]

    def ms(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    def span(v: FemaleShare | None) -> str:
        return "n/a" if v is None else f"{100 * v.low:.1f}-{100 * v.high:.1f}%"

    def share(v: FemaleShare | None, field: str) -> str:
        return "n/a" if v is None else pct(float(getattr(v, field)))

    prior = f"{REFERENCE_FEMALE_PRIOR:g} prior"

    metrics: list[tuple[str, Callable[[Scores], str]]] = [
        ("gender accuracy (all)", lambda s: pct(s.gender_all)),
        (f"gender accuracy ({ADULT_AGE}+)", lambda s: pct(s.gender_adult)),
        ("gender balanced accuracy", lambda s: pct(s.gender_balanced)),
        ("age MAE, years (all)", lambda s: yrs(s.mae_all)),
        (f"age MAE, years (<= {MAX_AGE_FOR_MAE})", lambda s: yrs(s.mae_to_80)),
        ("age-group accuracy", lambda s: pct(s.age_group_acc)),
        ("gender confidence ECE", lambda s: pct(s.gender_ece)),
        ("age in 80% range (80+=80)", lambda s: pct(s.age_coverage)),
        ("ms per face, networks", lambda s: ms(s.network_ms)),
        ("ms per face, all estimation", lambda s: ms(s.face_ms)),
        ("images per second", lambda s: f"{s.images_per_s:.1f}"),
        ("female share, true", lambda s: share(s.female_share, "true")),
        ("female share, naive", lambda s: share(s.female_share, "naive")),
        (f"female share, EM ({prior})", lambda s: share(s.female_share, "corrected")),
        ("female share, EM 90% range", lambda s: span(s.female_share)),
    ]
    for label, fmt in metrics:
        lines.append(f"{label:<28}" + "".join(f"{fmt(columns[n]):>14}" for n in names))
    first = columns[names[0]]
    if first.decades:
        lines += ["", "per decade (n; gender accuracy / age MAE):"]
        header = f"{'ages':<8}{'n':>6}" + "".join(f"{n:>22}" for n in names)
        lines += [header, "-" * len(header)]
        for decade, (n, _, _) in first.decades.items():
            cells = "".join(
                f"{pct(acc) + ' / ' + yrs(err):>22}"
                for acc, err in (columns[k].decades[decade][1:] for k in names)
            )
            lines.append(f"{decade:<8}{n:>6}{cells}")
    return "\n".join(lines)
