"""Checkpoints of hypernets.training.fit: a fingerprint of the run, a content hash, safe loading."""

import hashlib
import io
import os
import re

import numpy as np
import pytest
import torch

from hypernets import training
from hypernets.likelihoods import Gaussian
from hypernets.methods import MAP, BayesByBackprop
from hypernets.targets import get_target
from hypernets.training import fit


def _toy(seed=0, n=20):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=gen) * 8 - 4
    return x, x**3 + 3 * torch.randn(n, 1, generator=gen)


def _map(seed=0, **kwargs):
    return MAP(get_target("toy_bbh"), Gaussian(3.0), generator=torch.Generator().manual_seed(seed),
               **kwargs)


RUN = {"batch_size": 8, "progress": False}


def _written(path, epochs=2, **kwargs):
    """A checkpoint of a 2-epoch run of the toy MAP (3 steps per epoch)."""
    x, y = _toy()
    fit(_map(), x, y, epochs=epochs, checkpoint=path, **{**RUN, **kwargs})
    return path


def _payload(path):
    header, payload = path.read_bytes().split(b"\n", 1)
    return header, payload


def _rewrite(path, payload):
    """Store ``payload`` under a correct header, as anyone who can write the file could."""
    digest = hashlib.sha256(payload).hexdigest()
    path.write_bytes(b"%s %d sha256=%s bytes=%d\n" % (training.CHECKPOINT_MAGIC,
                     training.CHECKPOINT_FORMAT, digest.encode(), len(payload)) + payload)


def _params(method):
    return [p.detach().clone() for p in method.parameters()]


def test_checkpoint_holds_only_what_a_weights_only_load_accepts(tmp_path):
    path = _written(tmp_path / "ck.pt")
    header, payload = _payload(path)
    assert header.startswith(b"hypernets-checkpoint 1 sha256=")
    state = torch.load(io.BytesIO(payload), weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 6 and len(state["history"]) == 2
    assert state["fingerprint"]["batch_size"] == 8
    assert state["fingerprint"]["lr"] == [MAP.default_lr]
    assert sorted(os.listdir(tmp_path)) == ["ck.pt"]  # the temporary file was renamed


def test_evaluation_numbers_from_numpy_are_stored_and_resumed(tmp_path):
    x, y = _toy()

    def evaluate(method):
        return {"score": np.float64(0.25), "flag": np.bool_(True), "count": np.int64(3)}

    fit(_map(), x, y, epochs=1, evaluate=evaluate, checkpoint=tmp_path / "ck.pt", **RUN)
    history = fit(_map(), x, y, epochs=2, evaluate=evaluate, checkpoint=tmp_path / "ck.pt",
                  resume=True, **RUN)
    assert history[0]["score"] == 0.25 and history[0]["flag"] is True and history[0]["count"] == 3


def test_resume_with_the_default_lr_spelled_out_is_the_same_run(tmp_path):
    path = _written(tmp_path / "ck.pt")  # lr=None: the method's default
    history = fit(_map(), *_toy(), epochs=3, lr=MAP.default_lr, checkpoint=path, resume=True,
                  **RUN)
    assert [r["epoch"] for r in history] == [1, 2, 3]


def test_resume_by_steps_equals_uninterrupted_run(tmp_path):
    x, y = _toy()
    straight = _map()
    fit(straight, x, y, steps=10, **RUN)
    fit(_map(), x, y, steps=6, checkpoint=tmp_path / "ck.pt", **RUN)  # two whole epochs
    resumed = _map(seed=5)
    history = fit(resumed, x, y, steps=10, checkpoint=tmp_path / "ck.pt", resume=True, **RUN)
    assert [r["step"] for r in history] == [3, 6, 9, 10]
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resume_of_a_finished_run_trains_nothing(tmp_path):
    path = _written(tmp_path / "ck.pt", epochs=None, steps=5)  # ends one step into epoch 2
    method = _map(seed=5)
    history = fit(method, *_toy(), steps=5, checkpoint=path, resume=True, **RUN)
    assert [r["step"] for r in history] == [3, 5]
    state = torch.load(io.BytesIO(_payload(path)[1]), weights_only=True)
    for a, b in zip(method.state_dict().values(), state["method"].values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_partial_epoch_cannot_be_extended(tmp_path):
    path = _written(tmp_path / "ck.pt", epochs=None, steps=5)
    with pytest.raises(ValueError, match=r"stopped 2 of 3 steps into epoch 2 .*Delete it"):
        fit(_map(), *_toy(), steps=8, checkpoint=path, resume=True, **RUN)


def test_checkpoint_longer_than_the_requested_run_is_refused(tmp_path):
    path = _written(tmp_path / "ck.pt", epochs=3)
    with pytest.raises(ValueError, match=r"already trained 9 steps \(3 epochs\), more than the 6"):
        fit(_map(), *_toy(), epochs=2, checkpoint=path, resume=True, **RUN)


def _shifted(tensor):
    tensor = tensor.clone()
    tensor[7, 0] += 1e-3
    return tensor


def _transform(xb, generator):
    return xb


# Each changes one thing against the run that wrote the checkpoint (toy x, y; the toy MAP;
# batch_size 8; the default lr; seed 0; no transform) and names the fields that must differ.
OTHER_RUNS = {
    "other x": (dict(x=_shifted), {"x.sha256"}),
    "other y": (dict(y=_shifted), {"y.sha256"}),
    "fewer examples": (dict(x=lambda x: x[:16], y=lambda y: y[:16]),
                       {"x.shape", "x.sha256", "y.shape", "y.sha256", "steps_per_epoch"}),
    "batch size": (dict(batch_size=10), {"batch_size", "steps_per_epoch"}),
    "batch size, same steps per epoch": (dict(batch_size=9), {"batch_size"}),
    "lr": (dict(lr=2e-3), {"lr"}),
    "seed": (dict(seed=1), {"seed"}),
    "transform": (dict(transform=_transform), {"transform"}),
    "method setting": (dict(method=lambda: _map(prior_std=2.0)), {"method_settings.prior_std"}),
    "method": (dict(method=lambda: BayesByBackprop(get_target("toy_bbh"), Gaussian(3.0))),
               None),
    "likelihood": (dict(method=lambda: MAP(get_target("toy_bbh"), Gaussian(2.0))),
                   {"likelihood_settings.noise_std"}),
}


@pytest.mark.parametrize("change", list(OTHER_RUNS))
def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, change):
    path = _written(tmp_path / "ck.pt")
    before = path.read_bytes()
    x, y = _toy()
    overrides, fields = OTHER_RUNS[change]
    overrides = dict(overrides)
    method = overrides.pop("method", _map)()
    x = overrides.pop("x", lambda t: t)(x)
    y = overrides.pop("y", lambda t: t)(y)
    initial = _params(method)
    with pytest.raises(ValueError, match="was written by another run") as raised:
        fit(method, x, y, epochs=4, checkpoint=path, resume=True, **{**RUN, **overrides})
    message = str(raised.value)
    assert str(path) in message and "delete it" in message
    named = set(re.findall(r"^  (\S+): expected .*, found ", message, flags=re.M))
    if fields is None:  # another method class: its class and parameters differ
        assert "method" in named and any(name.startswith("parameters") for name in named)
    else:
        assert named == fields
    assert path.read_bytes() == before  # left as it was
    for a, b in zip(initial, method.parameters()):
        assert torch.equal(a, b)  # nothing was loaded or trained


def test_mismatch_message_gives_expected_and_found_values(tmp_path):
    path = _written(tmp_path / "ck.pt")
    with pytest.raises(ValueError) as raised:
        fit(_map(), *_toy(), epochs=4, checkpoint=path, resume=True,
            **{**RUN, "lr": 2e-3, "seed": 3})
    message = str(raised.value)
    assert "2 field(s)" in message
    assert "  lr: expected [0.002], found [0.001]" in message
    assert "  seed: expected 3, found 0" in message


@pytest.mark.parametrize("keep, problem", [
    (0, "is empty"),
    (10, "does not start with the hypernets checkpoint header"),
    (40, "header line is damaged"),
    (-1, "is truncated: it holds"),
    (-1000, "is truncated: it holds"),
])
def test_truncated_checkpoint_names_the_file(tmp_path, keep, problem):
    path = _written(tmp_path / "ck.pt")
    raw = path.read_bytes()
    path.write_bytes(raw[:keep])
    with pytest.raises(ValueError, match=re.escape(problem)) as raised:
        fit(_map(), *_toy(), epochs=4, checkpoint=path, resume=True, **RUN)
    assert str(path) in str(raised.value)
    assert "delete it to start the run over" in str(raised.value)


@pytest.mark.parametrize("where", [0.1, 0.5, 0.99])
def test_flipped_bit_is_refused(tmp_path, where):
    path = _written(tmp_path / "ck.pt")
    raw = bytearray(path.read_bytes())
    start = raw.index(b"\n") + 1
    raw[start + int(where * (len(raw) - start))] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is corrupt: its content does "
                                         "not match the SHA-256"):
        fit(_map(), *_toy(), epochs=4, checkpoint=path, resume=True, **RUN)


def test_plain_torch_file_is_refused(tmp_path):
    path = tmp_path / "ck.pt"
    torch.save({"epoch": 1}, path)  # what fit wrote before checkpoints had a header
    with pytest.raises(ValueError, match="plain torch file, written by an older version"):
        fit(_map(), *_toy(), epochs=4, checkpoint=path, resume=True, **RUN)


class _Payload:
    """Unpickling this runs ``os.mkdir(marker)``: code carried by a shared file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_code_in_a_checkpoint_is_not_run(tmp_path):
    path = _written(tmp_path / "ck.pt")
    state = torch.load(io.BytesIO(_payload(path)[1]), weights_only=True)
    marker = tmp_path / "code-ran"
    state["history"][0]["loss"] = _Payload(marker)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    _rewrite(path, buffer.getvalue())
    with pytest.raises(ValueError, match="weights-only load refuses"):
        fit(_map(), *_toy(), epochs=4, checkpoint=path, resume=True, **RUN)
    assert not marker.exists()


def test_inconsistent_progress_is_refused(tmp_path):
    path = _written(tmp_path / "ck.pt")
    state = torch.load(io.BytesIO(_payload(path)[1]), weights_only=True)
    state["step"] = 9  # epoch 2 of 3 steps each cannot end at step 9
    buffer = io.BytesIO()
    torch.save(state, buffer)
    _rewrite(path, buffer.getvalue())
    with pytest.raises(ValueError, match=r"is corrupt: its epoch \(2\), step \(9\)"):
        fit(_map(), *_toy(), epochs=4, checkpoint=path, resume=True, **RUN)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = _written(tmp_path / "ck.pt", epochs=1)
    before = path.read_bytes()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(training.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        fit(_map(), *_toy(), epochs=2, checkpoint=path, resume=True, **RUN)
    assert path.read_bytes() == before
    monkeypatch.undo()
    history = fit(_map(), *_toy(), epochs=1, checkpoint=path, resume=True, **RUN)
    assert [r["epoch"] for r in history] == [1]


@pytest.mark.parametrize("every_s, writes", [(0.0, 4), (3600.0, 1)])
def test_checkpoints_of_short_epochs_are_coalesced_but_the_last_is_written(tmp_path, monkeypatch,
                                                                          every_s, writes):
    written = []
    real = training.write_verified
    monkeypatch.setattr(training, "write_verified",
                        lambda path, state, **kw: (written.append(state["epoch"]), real(path, state, **kw)))
    x, y = torch.randn(8, 1), torch.randn(8, 1)
    method = MAP(get_target("toy_bbh"), Gaussian(1.0))
    training.fit(method, x, y, epochs=4, batch_size=8, checkpoint=tmp_path / "c.pt",
                 checkpoint_every_s=every_s, progress=False)
    assert len(written) == writes and written[-1] == 4
