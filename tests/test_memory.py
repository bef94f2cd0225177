"""The allocator setting: a freed large tensor is reused instead of being mapped again."""

import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from hypernets.memory import keep_freed_memory
    assert keep_freed_memory()
weights = torch.zeros(16 * 2**20)
def faults_of_a_step():  # the temporaries of a training step: three 64 MB tensors, then freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    grad = torch.ones_like(weights); update = weights * grad + 1; del grad; (update * 2).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(min(faults_of_a_step() for _ in range(8)))
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], check=True, capture_output=True,
                         text=True).stdout
    return int(out.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_a_freed_large_tensor_is_reused_without_page_faults():
    mapped_again = _faults("default")
    kept = _faults("keep")
    assert mapped_again > 1000  # glibc maps and zeroes 64 MB afresh: thousands of page faults every step
    assert kept < mapped_again / 20


def test_importing_hypernets_keeps_freed_memory():
    probe = PROBE.replace('if sys.argv[1] == "keep":', 'import hypernets\nif False:')
    out = subprocess.run([sys.executable, "-c", probe, "x"], check=True, capture_output=True,
                         text=True).stdout
    assert int(out.split()[-1]) < 200


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_return_freed_memory_maps_large_blocks_inside_and_keeps_them_again_after():
    probe = PROBE.replace('if sys.argv[1] == "keep":', 'import hypernets\nif False:').replace(
        "print(min(faults_of_a_step() for _ in range(8)))",
        "from hypernets.memory import return_freed_memory\n"
        "with return_freed_memory():\n"
        "    inside = min(faults_of_a_step() for _ in range(8))\n"
        "print(inside, min(faults_of_a_step() for _ in range(8)))")
    out = subprocess.run([sys.executable, "-c", probe, "x"], check=True, capture_output=True,
                         text=True).stdout
    inside, after = map(int, out.split()[-2:])
    assert inside > 1000  # mapped and zeroed afresh, as with glibc's defaults
    assert after < 200
