"""The Python API as a researcher meets it (issue 7): safe randomness by default, clear errors, useful results."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from conftest import Threshold
from smoothcert import ABSTAIN, Gaussian, Laplace, Smooth, SmoothcertError


class Bins(nn.Module):
    """Votes for the bin of x[0] among 10 bins of width 1/3: its counts are a histogram of the noise, so two
    streams give equal counts with negligible probability (unlike two-class counts near 1,000 of 2,000)."""

    def forward(self, x):
        b = (x.reshape(len(x), -1)[:, 0] * 3 + 5).floor().clamp(0, 9).long()
        return nn.functional.one_hot(b, 10).to(x.dtype)


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def test_certify_in_a_loop_without_a_seed_gives_every_call_fresh_noise():
    smooth = Smooth(Bins(), Gaussian(1.0))
    x = torch.tensor([0.1])
    runs = [smooth.certify(x, 10, 2000, 0.01) for _ in range(3)]
    assert len({tuple(r.counts) for r in runs}) == 3
    assert len({r.seed for r in runs}) == 3
    again = smooth.certify(x, 10, 2000, 0.01, seed=runs[1].seed)   # the recorded seed reproduces it
    assert np.array_equal(again.counts, runs[1].counts) and again.radius == runs[1].radius


def test_certify_many_without_a_seed_gives_every_input_its_own_streams():
    smooth = Smooth(Bins(), Gaussian(1.0))
    c = list(smooth.certify_many(torch.zeros(4, 1), 10, 2000, 0.01))
    assert len({tuple(r.counts) for r in c}) == 4 and len({r.seed for r in c}) == 1


def test_seed_and_generator_together_are_refused():
    with pytest.raises(SmoothcertError, match="not both"):
        Smooth(Threshold(), Gaussian(1.0)).certify(torch.tensor([0.1]), 10, 100, 0.01, seed=1,
                                                     generator=torch.Generator())


def test_a_generator_drives_both_stages_and_continues_across_calls():
    smooth = Smooth(Threshold(), Gaussian(1.0))
    a = smooth.certify(torch.tensor([0.1]), 10, 150, 0.01, generator=torch.Generator().manual_seed(3))
    b = smooth.certify(torch.tensor([0.1]), 10, 150, 0.01, generator=torch.Generator().manual_seed(3))
    assert np.array_equal(a.counts, b.counts) and a.seed is None


def test_amp_on_the_cpu_says_once_what_it_does():
    with pytest.warns(UserWarning, match="emulated"):
        smooth = Smooth(Threshold(), Gaussian(1.0), amp=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = smooth.certify(torch.tensor([0.5]), 10, 200, 0.01, seed=0)
    assert c.counts.sum() == 200
    with pytest.raises(SmoothcertError, match="amp"):
        Smooth(Threshold(), Gaussian(1.0), amp="int8")


def test_smooth_switches_the_model_to_eval_mode_and_says_so():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    Smooth(model.train(), Gaussian(1.0))
    assert not model.training and "eval" in Smooth.__doc__


def test_an_abstained_certificate_keeps_the_candidate_and_the_reason():
    c = Smooth(Threshold(), Gaussian(1.0)).certify(torch.tensor([0.01]), 100, 100, 0.001, seed=0)
    assert c.abstained and c.prediction == ABSTAIN and c.candidate in (0, 1) and c.reason == "pA_lower < 1/2"
    m = Smooth(Threshold(), Gaussian(1.0)).certify(torch.tensor([0.01]), 100, 100, 0.001, seed=0,
                                                   certificate="margin")
    assert m.abstained and m.reason == "pA_lower <= pB_upper"
    ok = Smooth(Threshold(), Gaussian(1.0)).certify(torch.tensor([3.0]), 100, 100, 0.001, seed=0)
    assert ok.prediction == ok.candidate == 1 and ok.reason == ""


def test_a_numpy_input_gets_a_clear_error():
    with pytest.raises(SmoothcertError, match="torch.Tensor.*as_tensor"):
        Smooth(mlp(), Gaussian(0.25)).certify(np.zeros(64, np.float32), 10, 100, 0.01)


def test_cuda_on_a_machine_without_it_is_refused_when_smooth_is_built():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SmoothcertError, match="CUDA is not available"):
        Smooth(mlp(), Gaussian(0.25), device="cuda")


def test_noise_levels_may_be_zero_dim_tensors_or_numpy_scalars():
    assert Gaussian(torch.tensor(0.25)).sigma == 0.25 and isinstance(Gaussian(np.float32(0.5)).sigma, float)
    assert Laplace(torch.tensor(0.5)).lam == 0.5
    with pytest.raises(SmoothcertError, match="finite number > 0"):
        Gaussian(torch.tensor([0.25, 0.5]))


def test_a_batch_given_to_certify_points_to_certify_many():
    with pytest.raises(SmoothcertError, match="batch of 2 inputs.*certify_many"):
        Smooth(mlp(), Gaussian(0.25)).certify(torch.zeros(2, 64), 10, 100, 0.01)
    with pytest.raises(SmoothcertError, match="predict_many"):
        Smooth(mlp(), Gaussian(0.25)).predict(torch.zeros(2, 64), 100, 0.01)


def test_an_empty_batch_yields_nothing():
    smooth = Smooth(mlp(), Gaussian(0.25))
    assert list(smooth.certify_many(torch.zeros(0, 64), 10, 100, 0.01)) == []
    assert list(smooth.predict_many(torch.zeros(0, 64), 100, 0.01)) == []


def test_one_call_on_one_input_reuses_the_engine_and_probes_the_model_once():
    calls = []

    class Counting(Threshold):
        def forward(self, x):
            calls.append(x.shape[0])
            return super().forward(x)

    smooth = Smooth(Counting(), Gaussian(1.0))
    for _ in range(5):
        smooth.certify(torch.tensor([0.3]), 100, 100, 0.01, 1000, seed=0)
    assert calls.count(1) == 1 and len(smooth._samplers) == 1          # one probe for five calls


def test_a_fixed_batch_pt2_says_so_once_with_the_recipe(tmp_path, capsys):
    from smoothcert.models import load_model
    path = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(mlp().eval(), (torch.zeros(4, 64),)), str(path))
    model = load_model(str(path))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fixed batch size of 4" in err[0] and "dynamic_shapes" in err[0]
    assert model(torch.zeros(9, 64)).shape == (9, 10)
