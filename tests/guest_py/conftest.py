"""Unit tests of the guest runtime's Python side: no daemon, no container. The SDK is imported from
this checkout's python/ directory."""

import sys
from pathlib import Path

PYTHON_DIR = Path(__file__).resolve().parents[2] / "python"
if str(PYTHON_DIR) not in sys.path:
    sys.path.insert(0, str(PYTHON_DIR))
