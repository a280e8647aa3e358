"""Checks of a model folder before a backend loads it, so that a wrong or damaged folder is
named in one line (what is wrong, and what to do) instead of surfacing as a tokenizer or
deserialisation error deep inside transformers or a vLLM worker.

Pure Python: the weights are not read, only the sizes their ``safetensors`` headers promise.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import NoReturn

from ..errors import ModelLoadError

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own bound on a header


def looks_local(model: str | Path) -> bool:
    """Whether ``model`` names a local folder rather than a hub id: it exists, is a ``Path``,
    or is written as a path (absolute, ``./``, ``../``, ``~``)."""
    return isinstance(model, Path) or Path(model).exists() or str(model).startswith(
        ("/", ".", "~"))


def check_model_folder(folder: str | Path) -> Path:
    """Return ``folder`` as a ``Path`` if it holds a loadable model; raise ModelLoadError
    naming what is missing or damaged otherwise."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise ModelLoadError(f"model folder {folder} does not exist: pass a folder saved with "
                             "save_pretrained")
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is a file, not a model folder: pass the folder that "
                             "holds its config.json")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} is not a model folder (no config.json): pass a folder "
                             "saved with save_pretrained")
    weights = sorted(p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern))
    if not weights:
        raise ModelLoadError(f"{folder} has a config.json but no weights (no *.safetensors or "
                             "pytorch_model*.bin): save the model there with save_pretrained, "
                             "or copy its weight files too")
    for path in weights:
        if path.suffix == ".safetensors":
            _check_safetensors(path)
    _check_shards(folder)
    return folder


def _check_safetensors(path: Path) -> None:
    """Raise ModelLoadError if ``path`` is shorter or longer than its header says (a cut copy,
    an interrupted save) or its header is unreadable."""
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(8)
        header_len = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < header_len <= min(size - 8, _MAX_HEADER_BYTES):
            _damaged(path, f"{size} bytes, too short for its header")
        try:
            header = json.loads(file.read(header_len))
            end = max((int(t["data_offsets"][1]) for k, t in header.items()
                       if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError) as err:
            _damaged(path, f"unreadable header: {type(err).__name__}")
    expected = 8 + header_len + end
    if size != expected:
        _damaged(path, f"{size} bytes where its header promises {expected}")


def _check_shards(folder: Path) -> None:
    """Raise ModelLoadError if a sharded checkpoint's index names a file that is not there."""
    for index in folder.glob("*.index.json"):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            _damaged(index, f"unreadable index: {type(err).__name__}")
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise ModelLoadError(f"{index} lists weight files that are missing ("
                                 f"{', '.join(missing[:3])}): copy the whole model folder")


def _damaged(path: Path, detail: str) -> NoReturn:
    raise ModelLoadError(f"{path} is truncated or corrupt ({detail}): copy or save the model "
                         "again")
