"""The portable numerics of the smoke regression (hypernets.numerics), checked in fresh interpreters:
the environment must be in place before torch loads."""

import os
import subprocess
import sys

import pytest
import torch

from hypernets import numerics

PROBE = (
    "import hypernets, torch; "
    "print(torch.backends.cpu.get_cpu_capability(), torch.backends.mkldnn.enabled, "
    "torch._C._get_nnpack_enabled(), torch.get_num_threads())"
)


def _run(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if key not in numerics.PORTABLE_ENV}
    return subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=False)


def test_portable_mode_pins_every_dispatch():
    probe = _run(numerics.PORTABLE_ENV)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split()[:3] == ["AVX2", "False", "False"]


def test_native_mode_leaves_torch_alone():
    probe = _run({})
    assert probe.returncode == 0, probe.stderr
    capability, mkldnn, _, _ = probe.stdout.split()
    assert mkldnn == "True"
    assert capability in {"DEFAULT", "AVX2", "AVX512"}


@pytest.mark.parametrize("missing", ["ATEN_CPU_CAPABILITY", "MKL_CBWR"])
def test_a_partial_portable_environment_is_refused(missing):
    env = {key: value for key, value in numerics.PORTABLE_ENV.items() if key != missing}
    probe = _run(env)
    assert probe.returncode != 0
    assert missing in probe.stderr and numerics.PORTABLE_ENV_FLAG in probe.stderr


def test_portable_convolution_gives_the_same_result_as_native_within_rounding():
    """The portable kernels compute the same maths: only the rounding may differ."""
    script = (
        "import hypernets, torch; torch.manual_seed(0); "
        "x = torch.randn(8, 3, 16, 16); w = torch.randn(6, 3, 5, 5); "
        "y = torch.nn.functional.conv2d(x, w) @ torch.randn(12, 12); "
        "torch.save(y, __import__('sys').argv[1])"
    )
    outputs = []
    for index, env in enumerate((numerics.PORTABLE_ENV, {})):
        clean = {key: value for key, value in os.environ.items() if key not in numerics.PORTABLE_ENV}
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"hypernets-numerics-{os.getpid()}-{index}.pt")
        done = subprocess.run([sys.executable, "-c", script, path], env={**clean, **env}, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        outputs.append(torch.load(path))
        os.unlink(path)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)
