"""mcts-agent: agentic tree search and self-reflection with language models."""

__version__ = "0.1.0"


def _let_vllm_scan_llvmlite() -> None:
    """vLLM's CPU workers rebind kernels by reading ``vars()`` of every object in every loaded
    module; llvmlite's lazy ``ffi.lib`` (loaded with numba, which our engine imports) answers
    that with a wrapped C function and the worker dies at start-up. An empty answer, cached
    where llvmlite keeps its lookups, makes ``vars(lib)`` a plain dict."""
    try:
        from llvmlite.binding import ffi
    except ImportError:  # no numba, nothing to fix
        return
    fntab = getattr(getattr(ffi, "lib", None), "_fntab", None)
    if isinstance(fntab, dict):
        fntab.setdefault("__dict__", {})


_let_vllm_scan_llvmlite()
