"""Where the small real exchange files for tests live (copied unchanged from ../shared/data/real;
provenance in data/real/README.md). Kept in the repo so a fresh clone's tests run anywhere."""

from pathlib import Path

REAL_DATA = Path(__file__).resolve().parent / "data" / "real"
