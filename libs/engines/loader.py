"""Find an engine by name among the entry points of `talkserve.engines`, build it and check it.

A package adds an engine by declaring, in its own pyproject.toml,

    [project.entry-points."talkserve.engines"]
    echomimic-v2 = "my_adapter.engine:create"

where `create(options: EngineOptions) -> Engine`. Installed next to talkserve, it is chosen
with TALKSERVE_<SERVICE>_ENGINE=echomimic-v2. talkserve's own pyproject.toml declares the
built-in `talkface` the same way; the images run talkserve from /app without installing its
distribution, so `talkface` is also known here by the same value when no metadata says so.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points

from libs.engines.protocol import JOB_KINDS, DeviceInfo, Engine, EngineConfigError, EngineOptions

log = logging.getLogger(__name__)

GROUP = "talkserve.engines"
BUILTIN = {"talkface": "libs.engines.talkface:create"}


def available() -> dict[str, EntryPoint]:
    """Every engine that can be named: the installed entry points, and the built-in ones."""
    found = {name: EntryPoint(name, value, GROUP) for name, value in BUILTIN.items()}
    found.update({ep.name: ep for ep in entry_points(group=GROUP)})
    return found


def load_engine(name: str, options: EngineOptions, job_kind: str) -> Engine:
    """Build engine `name` with `options` for a service that runs jobs of `job_kind`.

    Raises EngineConfigError when no such engine is installed, when its factory fails for a
    reason of configuration, or when what it built breaks the contract.
    """
    engines = available()
    if name not in engines:
        raise EngineConfigError(f"no engine {name!r} in the entry points {GROUP!r}; installed: "
                                f"{', '.join(sorted(engines))}")
    try:
        factory = engines[name].load()
    except (ImportError, AttributeError) as exc:
        raise EngineConfigError(f"engine {name!r} ({engines[name].value}) cannot be imported: {exc}") from exc
    engine = factory(options)
    check_engine(engine, job_kind)
    log.info("engine %s (%s) loaded on %s (%s) for %s jobs", name, engine.name, engine.device.kind,
             engine.device.name, job_kind)
    return engine


def check_engine(engine: object, job_kind: str) -> None:
    """What a service relies on before it offers a slot: the methods, a name, a device, the job kind."""
    if not isinstance(engine, Engine):
        missing = [a for a in ("name", "jobs", "device", "person_files", "generate", "redub", "train_person",
                               "generate_person") if not hasattr(engine, a)]
        raise EngineConfigError(f"{type(engine).__name__} is not a talkserve engine: it lacks {', '.join(missing)}")
    if not isinstance(engine.name, str) or not engine.name:
        raise EngineConfigError(f"{type(engine).__name__} has no name: every result must name its engine")
    if not isinstance(engine.device, DeviceInfo) or engine.device.kind not in ("cpu", "cuda"):
        raise EngineConfigError(f"engine {engine.name} does not say where it runs (device {engine.device!r})")
    unknown = set(engine.jobs) - set(JOB_KINDS)
    if unknown:
        raise EngineConfigError(f"engine {engine.name} lists unknown job kinds {sorted(unknown)}")
    if job_kind not in engine.jobs:
        raise EngineConfigError(f"engine {engine.name} does not run {job_kind} jobs (it runs "
                                f"{', '.join(sorted(engine.jobs)) or 'none'})")
