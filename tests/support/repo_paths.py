"""Where things are, for tests in any tier (so moving a test file never breaks a path)."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
SUPPORT = TESTS / "support"
