"""Optional packages that diffusers and transformers import whenever they are installed, though this project
never uses them: hidden from both, so that a worker start does not pay for importing them.

peft (pulled in by diffusers' hooks) and scikit-learn (by transformers' generation utilities) are among the
largest imports of a start that imports diffusers and transformers (see docs/benchmarks.md, 'Packages instead of
torch.compile'). Both libraries treat them as optional: they ask ``importlib.util.find_spec``, which answers
None for a name that ``sys.modules`` maps to None, and then go on without them.
"""

from __future__ import annotations

import sys

UNUSED_PACKAGES = ("peft", "sklearn")


def hide_unused_packages() -> list[str]:
    """Marks each unused package that is not imported yet as absent (an import of it then fails at once);
    returns the ones hidden. One already imported, e.g. by an application running the backend in-process, is
    left alone. For the worker's own process, before diffusers and transformers are imported."""
    hidden = [name for name in UNUSED_PACKAGES if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    return hidden
