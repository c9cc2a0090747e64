"""keep_freed_memory: torch's freed activations are reused instead of faulted in again.

Checked by counting page faults (not by timing) in fresh processes, since the settings
are process-wide and must be made before torch is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from anomaly.training import allocator

pytestmark = pytest.mark.slow  # starts torch processes

CHILD = r"""
import json, resource, sys
import anomaly.training  # before torch, as the training side does
from anomaly.training.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
import torch
from torch import nn
net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()).eval()
x = torch.rand(8, 3, 256, 256)  # 67 MB activations, freed after each pass as in training
with torch.no_grad():
    first = net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        out = net(x)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"kept": kept, "faults": faults, "same": bool(torch.equal(first, out))}))
"""


def _run(mode: str, env: dict[str, str] | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_activations_are_reused_not_faulted_in_again() -> None:
    glibc_default = _run("default", {"THP_MEM_ALLOC_ENABLE": "0"})
    kept = _run("keep")
    assert kept["kept"] is True and glibc_default["kept"] is False
    # 4 passes of three 67 MB activations: glibc's default maps each afresh (4 kB per fault)
    assert glibc_default["faults"] > 4 * 3 * (67 << 20) // 4096 // 2
    assert kept["faults"] < glibc_default["faults"] / 20
    assert kept["same"] and glibc_default["same"]


def test_a_users_own_huge_page_setting_wins() -> None:
    assert _run("keep", {"THP_MEM_ALLOC_ENABLE": "0"})["kept"] is False


def test_is_idempotent_and_a_no_op_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator.sys, "platform", "win32")
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    first = allocator.keep_freed_memory()
    assert allocator.keep_freed_memory() is first


RELEASE_CHILD = r"""
import json, os
import anomaly
from anomaly.training.allocator import keep_freed_memory, release_freed_memory
keep_freed_memory()
import torch

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

big = torch.ones(64, 1 << 20)  # 256 MB, touched
pinned = torch.ones(1 << 20)  # a later block keeps the freed one from being the heap's top
del big
held = rss_mb()
released = release_freed_memory()
print(json.dumps({"held": held, "after": rss_mb(), "released": released}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_gives_kept_memory_back() -> None:
    out = subprocess.run([sys.executable, "-c", RELEASE_CHILD], capture_output=True, text=True, check=True).stdout
    kept = json.loads(out.strip().splitlines()[-1])
    assert kept["released"] is True
    assert kept["held"] - kept["after"] > 200  # MB: the freed 256 MB block left the process
    off = subprocess.run(
        [sys.executable, "-c", RELEASE_CHILD],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "THP_MEM_ALLOC_ENABLE": "0"},
    ).stdout
    assert json.loads(off.strip().splitlines()[-1])["released"] is False  # nothing kept, nothing to do
