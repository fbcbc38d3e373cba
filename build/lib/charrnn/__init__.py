"""charrnn: character-level recurrent language models (LSTM, GRU, RNN), trained with truncated BPTT.

The Python API (`charrnn.train`, `charrnn.load`) lives in `charrnn.api`; it is imported on first use,
so `import charrnn` stays cheap (no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from charrnn.api import Beam, CharModel, Score, fit, load, train

__version__ = "0.2.0"
__all__ = ["Beam", "CharModel", "Score", "fit", "load", "train"]


def __getattr__(name: str) -> Any:
    """Import the API lazily (PEP 562): torch loads only when a name of `__all__` is first used."""
    if name in __all__:
        from charrnn import api

        return getattr(api, name)
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")
