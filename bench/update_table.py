"""Refresh the bottle table in BENCHMARKS.md from bench/results_bottle.jsonl."""

import re
import subprocess
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
table = subprocess.run([sys.executable, str(root / "bench" / "bottle.py"), "--table"], capture_output=True, text=True, check=True).stdout
doc = (root / "BENCHMARKS.md").read_text()
doc = re.sub(r"\| name \| family \|.*?\n\n+", lambda _: table.rstrip("\n") + "\n\n", doc, count=1, flags=re.S)
(root / "BENCHMARKS.md").write_text(doc)
