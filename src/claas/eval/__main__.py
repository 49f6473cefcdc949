"""``python -m claas.eval preference=concise steps=16 ...`` (Hydra overrides)."""

from __future__ import annotations

import sys

from claas.eval.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main())
