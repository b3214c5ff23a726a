"""Bridges to training frameworks; each module imports its framework itself, so the core needs none.

* :mod:`labelsmooth.integrations.lightning`: run the library's algorithms in a
  ``lightning.Trainer`` (``pip install labelsmooth[lightning]``).
* :mod:`labelsmooth.integrations.transformers`: smoothed causal-LM losses for
  Hugging Face's ``Trainer`` and models (``pip install labelsmooth[transformers]``).
"""

# Nothing is re-exported: each submodule imports its framework, so a star import stays free of them.
__all__: list[str] = []
