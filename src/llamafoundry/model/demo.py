"""The built-in demo model: a tiny Llama-architecture chat model that llamafoundry trains and ships.

`llamafoundry serve` without `--model` serves it, so a newcomer gets a working endpoint in seconds, offline.
`tools/train_demo_model.py` reproduces the file; `docs/demo-model.md` is its model card.
"""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL_NAME = "llamafoundry-demo"
DEMO_MODEL_PROVIDER = "llamafoundry"

_DEMO_MODEL_FILE = Path(__file__).parent / "data" / f"{DEMO_MODEL_NAME}.gguf"


def demo_model_path() -> Path:
    """The packaged demo model GGUF (package data, a few MB).

    Raises:
        FileNotFoundError: the package was installed without its data files.
    """
    if not _DEMO_MODEL_FILE.is_file():
        raise FileNotFoundError(
            f"the built-in demo model is missing from the installed package ({_DEMO_MODEL_FILE}); reinstall "
            "llamafoundry, or serve your own model with `llamafoundry serve --model PATH.gguf`"
        )
    return _DEMO_MODEL_FILE
