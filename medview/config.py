"""User settings: window presets, recent files; JSON in the user's config folder.

Versioned with ``schema_version`` so a newer file is never misread by an older
app: unknown versions fall back to defaults (and the file is left untouched).
Writes are atomic (write a temporary file, then rename) so a crash or a kill
never leaves a half-written settings file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from platformdirs import user_cache_dir, user_config_dir, user_data_dir

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_RECENT = 10
DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
MAX_COMPUTE_THREADS = 256
RETRIEVE_METHODS = ("C-GET", "C-MOVE", "DICOMweb")
#: libgomp's own spin count when OMP_WAIT_POLICY is unset (its documentation): how long an idle OpenMP thread spins
LIBGOMP_DEFAULT_SPINCOUNT = "300000"

#: (center, width) in HU, the usual CT windows; users may change them in the settings file
DEFAULT_WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "Lung": (-600.0, 1500.0),
    "Abdomen": (40.0, 400.0),
    "Liver": (30.0, 150.0),
    "Bone": (400.0, 1800.0),
    "Brain": (40.0, 80.0),
}


def config_dir() -> Path:
    """Where settings live; ``MEDVIEW_CONFIG_DIR`` overrides (tests, portable installs)."""
    override = os.environ.get("MEDVIEW_CONFIG_DIR")
    return Path(override) if override else Path(user_config_dir("MedView", appauthor=False))


def data_dir() -> Path:
    """Where MedView keeps what it cannot rebuild (received studies, audit log); ``MEDVIEW_DATA_DIR`` overrides."""
    override = os.environ.get("MEDVIEW_DATA_DIR")
    return Path(override) if override else Path(user_data_dir("MedView", appauthor=False))


def cache_dir() -> Path:
    """Where MedView keeps what it can rebuild (ONNX graphs of the bundles); ``MEDVIEW_CACHE_DIR`` overrides."""
    override = os.environ.get("MEDVIEW_CACHE_DIR")
    return Path(override) if override else Path(user_cache_dir("MedView", appauthor=False))


@dataclass
class Settings:
    """Everything MedView remembers between sessions."""

    schema_version: int = SCHEMA_VERSION
    window_presets: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_WINDOW_PRESETS))
    recent_paths: list[str] = field(default_factory=list)
    last_directory: str = ""
    #: where models run: "auto" (CUDA, then MPS, then CPU), "cuda", "mps" or "cpu"
    device: str = "auto"
    #: CPU threads of the AI engine; 0 = the measured default (``medview.engine.device.default_compute_threads``)
    compute_threads: int = 0
    #: threads that decode a DICOM series; 0 = the measured default (``medview.io.dicom.decode.default_decode_threads``)
    decode_threads: int = 0
    #: the user's model folder (bundles imported by the Models dialog); "" = the default per-user folder
    model_folder: str = ""
    #: DICOM C-STORE receiver (PACS push to this workstation): off until the user enables it
    pacs_enabled: bool = False
    pacs_ae_title: str = "MEDVIEW"
    pacs_port: int = 11112
    #: the PACS the Query/retrieve dialog searches (C-FIND) and fetches from (C-GET); "" until the user enters it
    pacs_remote_ae_title: str = ""
    pacs_remote_host: str = ""
    pacs_remote_port: int = 104  # the port DICOM registered; many PACS use 11112 or 4242 instead
    #: how that PACS is spoken to: "C-GET" (on our association), "C-MOVE" (to our receiver) or "DICOMweb"
    pacs_remote_retrieve: str = "C-GET"
    #: its DICOMweb base URL, and the CA file to trust for HTTPS ("" = the system's), when it speaks DICOMweb
    pacs_remote_url: str = ""
    pacs_remote_ca_file: str = ""
    #: DIMSE over TLS to that PACS (verified against the CA file above, or the system's)
    pacs_remote_tls: bool = False

    def add_recent(self, path: Path | str) -> None:
        """Put ``path`` first in the recent list, without duplicates."""
        text = str(path)
        self.recent_paths = [text, *(p for p in self.recent_paths if p != text)][:MAX_RECENT]

    @classmethod
    def load(cls, folder: Path | None = None) -> Settings:
        """Read the settings file; any problem gives defaults and a log line, never a crash."""
        path = (folder or config_dir()) / "settings.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as error:
            log.warning("settings file %s unreadable (%s): using defaults", path, error)
            return cls()
        if not isinstance(raw, dict) or raw.get("schema_version") != SCHEMA_VERSION:
            log.warning(
                "settings file %s has schema %r, expected %s: using defaults",
                path,
                raw.get("schema_version") if isinstance(raw, dict) else None,
                SCHEMA_VERSION,
            )
            return cls()
        settings = cls()
        presets = raw.get("window_presets")
        if isinstance(presets, dict):
            settings.window_presets = {
                str(name): (float(value[0]), float(value[1]))
                for name, value in presets.items()
                if isinstance(value, list | tuple) and len(value) == 2 and float(value[1]) > 0
            }
        recent = raw.get("recent_paths")
        if isinstance(recent, list):
            settings.recent_paths = [str(p) for p in recent][:MAX_RECENT]
        settings.last_directory = str(raw.get("last_directory", ""))
        if raw.get("device") in DEVICE_CHOICES:
            settings.device = raw["device"]
        for key in ("compute_threads", "decode_threads"):
            threads = raw.get(key)
            if isinstance(threads, int) and not isinstance(threads, bool) and 0 <= threads <= MAX_COMPUTE_THREADS:
                setattr(settings, key, threads)
        settings.model_folder = str(raw.get("model_folder", ""))
        settings.pacs_enabled = raw.get("pacs_enabled") is True
        title = raw.get("pacs_ae_title")
        if isinstance(title, str) and 0 < len(title.strip()) <= 16:
            settings.pacs_ae_title = title.strip()
        port = raw.get("pacs_port")
        if isinstance(port, int) and 0 < port < 65536:
            settings.pacs_port = port
        remote_title = raw.get("pacs_remote_ae_title")
        if isinstance(remote_title, str) and len(remote_title.strip()) <= 16:
            settings.pacs_remote_ae_title = remote_title.strip()
        settings.pacs_remote_host = str(raw.get("pacs_remote_host", "")).strip()
        remote_port = raw.get("pacs_remote_port")
        if isinstance(remote_port, int) and 0 < remote_port < 65536:
            settings.pacs_remote_port = remote_port
        if raw.get("pacs_remote_retrieve") in RETRIEVE_METHODS:
            settings.pacs_remote_retrieve = raw["pacs_remote_retrieve"]
        settings.pacs_remote_url = str(raw.get("pacs_remote_url", "")).strip()
        settings.pacs_remote_ca_file = str(raw.get("pacs_remote_ca_file", "")).strip()
        settings.pacs_remote_tls = raw.get("pacs_remote_tls") is True
        return settings

    def user_models_dir(self) -> Path:
        """The folder bundles are imported into (``MEDVIEW_MODELS_DIR`` overrides, for tests and portable installs)."""
        override = os.environ.get("MEDVIEW_MODELS_DIR") or self.model_folder
        return Path(override) if override else data_dir() / "models"

    def model_folders(self) -> list[Path]:
        """Where bundles are looked for: the ones shipped with MedView first, then the user's."""
        return [resources_dir() / "models", self.user_models_dir()]

    def save(self, folder: Path | None = None) -> None:
        """Write atomically; failures are logged, the session goes on."""
        folder = folder or config_dir()
        path = folder / "settings.json"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".json.tmp")
            temporary.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except OSError as error:
            log.warning("could not save settings to %s: %s", path, error)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, e.g. a container's share), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def prepare_compute_environment() -> None:
    """Set what the numerical libraries read once, when they load: call before torch or ONNX Runtime is imported.

    OpenMP threads that wait sleep (``OMP_WAIT_POLICY=PASSIVE``) instead of
    spinning: beside two busy processes on 2 cores, torch's default spin-then-
    sleep made a Grad-CAM 13x and a skin photo 54x slower than the quiet run,
    passive waits 1.0-1.2x that of the best policy, quiet within 10%
    (``bench.thread_policy``, issue 23).  A process whose environment already
    chooses (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``) keeps its choice.
    ONNX Runtime's telemetry is off (``medview.engine.onnx_runtime`` explains).
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def resources_dir() -> Path:
    """The bundled resources (sample data, model bundles); ``MEDVIEW_RESOURCES`` overrides."""
    override = os.environ.get("MEDVIEW_RESOURCES")
    return Path(override) if override else Path(__file__).resolve().parents[1] / "resources"
