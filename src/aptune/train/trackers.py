"""Experiment trackers (``train.report_to``): every metrics record of a run also goes to TensorBoard, MLflow or
Trackio, written offline into the run folder, so that the usual dashboards show aptune's runs.

* ``tensorboard``: event files in ``<output_dir>/tensorboard/`` (``tensorboard --logdir runs/x/tensorboard``);
  the config as hyperparameters.
* ``mlflow``: a file store in ``<output_dir>/mlruns/`` (experiment ``aptune``, the run named after the folder);
  the config as parameters. Recent MLflow keeps its file store in maintenance mode behind
  ``MLFLOW_ALLOW_FILE_STORE=true``, which aptune sets; reading the store needs it too.
* ``trackio``: its SQLite database in ``<output_dir>/trackio/`` (project ``aptune``); the config as the run's
  config. ``TRACKIO_DIR=runs/x/trackio trackio show`` opens it.

A record's scalars are named ``<event>/<key>`` (``train/loss``, ``eval/accuracy``, ``prune/density``), nested
values joined by ``/`` (``prune/ranks/<module>``, ``prune/kept/heads/<layer>``), at the record's step: the same
numbers as ``metrics.jsonl``. Nothing is sent anywhere: MLflow's telemetry is switched off before it is imported,
and Trackio runs with its Space, server and bucket settings unset and the Hub offline while it starts (it would
otherwise ask the Hub for the user's name).

The packages are optional (``pip install "aptune[track]"``) and imported only when a run asks for a tracker.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aptune.config import TRACKERS

INSTALL = 'pip install "aptune[track]"'
PROJECT = "aptune"  # MLflow's experiment and Trackio's project inside a run folder
# the module each tracker imports, and the folder of the run folder it writes
_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "trackio": "trackio"}
FOLDERS = {"tensorboard": "tensorboard", "mlflow": "mlruns", "trackio": "trackio"}


def check_trackers(names: list[str], key: str = "train.report_to") -> None:
    """Every name is a tracker aptune writes to and its package is installed; the error names the key, the value
    and the install command. Cheap (finds the packages, imports nothing): a run calls it before any work."""
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise ValueError(f"{key}={names!r}: unknown tracker {unknown[0]!r}; choose among {', '.join(TRACKERS)} "
                         f"(their packages: {INSTALL})")
    missing = [name for name in names if importlib.util.find_spec(_MODULES[name]) is None]
    if missing:
        raise ValueError(f"{key}={names!r}: {', '.join(missing)} is not installed; {INSTALL}")


def scalars(record: dict, section: str | None = None) -> dict[str, float]:
    """The numbers of one metrics record as ``<section>/<key>`` (the section: the record's ``event``, else
    ``train``), nested mappings flattened with ``/``; text, lists and nulls are left out, booleans are 0 or 1."""
    section = section or record.get("event") or "train"
    found: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}/{key}", item)
        elif isinstance(value, (int, float)):  # bool is an int
            found[prefix] = float(value)

    for key, value in record.items():
        if key not in ("event", "step"):
            walk(f"{section}/{key}", value)
    return found


def flat_config(config: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (``prune.density``) whose values are numbers, booleans or strings (lists
    and nulls as their JSON), the shape hyperparameter tables take."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return flat


class Trackers:
    """The trackers of one run. ``Trackers(names)`` checks them (:func:`check_trackers`); :meth:`open` starts
    them in the run folder; :meth:`log` sends one metrics record; :meth:`close` ends them (safe to repeat)."""

    def __init__(self, names: list[str]):
        check_trackers(names)
        self.names = list(dict.fromkeys(names))  # a name given twice is one tracker
        self.open_ones: list[Any] = []

    def open(self, run_dir: Path, config: dict, resumed_at: int | None = None) -> None:
        """Start every tracker in ``run_dir``; ``resumed_at``: the checkpoint step a resumed run continues from
        (TensorBoard hides what the stopped run logged after it; MLflow and Trackio continue the same run)."""
        name = Path(run_dir).resolve().name
        for tracker in self.names:
            self.open_ones.append(_OPENERS[tracker](Path(run_dir) / FOLDERS[tracker], name, config, resumed_at))

    def line(self, run_dir: Path) -> str:
        """Where the trackers write, for the run's output."""
        return "metrics also go to " + ", ".join(f"{name} ({Path(run_dir) / FOLDERS[name]})" for name in self.names)

    def log(self, record: dict, step: int) -> None:
        values = scalars(record)
        if values:
            for tracker in self.open_ones:
                tracker.log(values, step)

    def close(self, failed: bool = False) -> None:
        """End every open tracker, each even when another fails; ``failed``: the run failed (MLflow marks it so),
        and a tracker's own error would only hide the run's, so it is dropped."""
        errors = []
        while self.open_ones:
            try:
                self.open_ones.pop().close(failed)
            except Exception as error:  # noqa: BLE001 - the others still close
                errors.append(error)
        if errors and not failed:
            raise errors[0]


# ------------------------------------------------------------------------------------------ the trackers


class _TensorBoard:
    def __init__(self, folder: Path, name: str, config: dict, resumed_at: int | None):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # a resumed run hides the points past its checkpoint (metrics.jsonl keeps the checkpoint's step, as here)
        purge = resumed_at + 1 if resumed_at is not None else None
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge, flush_secs=10)
        if resumed_at is None:  # the config is in the first run's file already
            writer = self.writer._get_file_writer()
            for summary in hparams(flat_config(config), {}):
                writer.add_summary(summary)

    def log(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def close(self, failed: bool) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, folder: Path, name: str, config: dict, resumed_at: int | None):
        # before the first import of mlflow: its telemetry thread would report usage over the network, and recent
        # releases refuse its file store unless asked for it
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        self.Metric = Metric
        self.client = MlflowClient(tracking_uri=folder.resolve().as_uri())
        experiment = self.client.get_experiment_by_name(PROJECT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(PROJECT)
        earlier = [run for run in self.client.search_runs([experiment_id]) if run.info.run_name == name]
        if earlier:  # a resumed run continues its MLflow run
            self.run_id = earlier[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
            params = [Param(key, value if isinstance(value, str) else json.dumps(value))  # true, not True
                      for key, value in flat_config(config).items()]
            self.client.log_batch(self.run_id, params=params)

    def log(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self.Metric(k, v, now, step) for k, v in values.items()])

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


# Trackio's settings that send a run to a Hugging Face Space, a self-hosted server, a bucket or a data set
_TRACKIO_REMOTE = ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL", "TRACKIO_BUCKET_ID", "TRACKIO_DATASET_ID")


class _Trackio:
    def __init__(self, folder: Path, name: str, config: dict, resumed_at: int | None):
        folder = folder.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        # trackio writes from a thread of its own whenever its batch is due: its folder stays in place until close
        self.place = contextlib.ExitStack()
        self.place.enter_context(_trackio_dir(folder))
        try:
            with _trackio_offline(), contextlib.redirect_stdout(io.StringIO()):  # its banner is not aptune's output
                import trackio

                self.run = trackio.init(project=PROJECT, name=name, config=flat_config(config), resume="allow",
                                        embed=False, auto_log_gpu=False, auto_log_cpu=False)
        except BaseException:
            self.place.close()
            raise

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self, failed: bool) -> None:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.run.finish()  # waits for its writer thread: everything is in the database after this
            # no longer trackio's current run, which its exit handler would finish again (printing, at exit)
            from trackio import context_vars

            if context_vars.current_run.get() is self.run:
                context_vars.current_run.set(None)
        finally:
            self.place.close()


@contextlib.contextmanager
def _trackio_dir(folder: Path) -> Iterator[None]:
    """Trackio at ``folder`` inside the block. Trackio reads ``TRACKIO_DIR`` once, at its import, into module
    globals (``trackio.utils.TRACKIO_DIR``, ``MEDIA_DIR``, ``ARTIFACTS_DIR`` and the copies other trackio modules
    import), so an environment variable could place only the first run of a process; the globals of every loaded
    trackio module are pointed at ``folder`` instead, and back afterwards."""
    import trackio.utils

    home = trackio.utils.TRACKIO_DIR
    moves = {"TRACKIO_DIR": (home, folder), "MEDIA_DIR": (home / "media", folder / "media"),
             "ARTIFACTS_DIR": (home / "artifacts", folder / "artifacts")}
    _move_trackio_globals(moves)
    try:
        yield
    finally:  # modules trackio imported inside the block copied the moved values: they move back too
        _move_trackio_globals({attr: (there, here) for attr, (here, there) in moves.items()})


def _move_trackio_globals(moves: dict[str, tuple[Path, Path]]) -> None:
    """Every loaded trackio module's global ``attr`` that holds ``moves[attr][0]`` gets ``moves[attr][1]``."""
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "trackio" or module_name.startswith("trackio.")):
            continue
        for attr, (source, target) in moves.items():
            if getattr(module, attr, None) == source:
                setattr(module, attr, target)


@contextlib.contextmanager
def _trackio_offline() -> Iterator[None]:
    """While Trackio starts a run: no Space, server or bucket settings, and the Hub offline (its run asks the Hub
    for the user's name when a token is stored)."""
    import huggingface_hub.constants as hub

    saved = {key: os.environ.pop(key) for key in _TRACKIO_REMOTE if key in os.environ}
    offline, hub.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE, True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = offline
        os.environ.update(saved)


_OPENERS = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "trackio": _Trackio}
