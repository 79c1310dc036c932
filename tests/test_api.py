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


# -- state kept between calls must not leak into the next call (regressions) ----------------------------------

class Ring(nn.Module):
    """Class 0 inside the unit ball, class 1 outside: at x = 0 in 4 dimensions, Gaussian noise of sigma 0.05 votes 0
    every time and sigma 2 votes 1 almost every time (P(|N(0, 4 I_4)| < 1) = P(chi2_4 < 1/4) < 0.01)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        r = x.norm(dim=1)
        return torch.stack([1.0 - r, r - 1.0], 1) + 0 * self.w


def test_reassigning_the_noise_or_the_model_of_a_smooth_rebuilds_its_engine():
    x = torch.zeros(4)
    fresh = Smooth(Ring(), Gaussian(2.0)).certify(x, 100, 1000, 0.001, 100, seed=1)
    swept = Smooth(Ring(), Gaussian(0.05))
    swept.certify(x, 100, 1000, 0.001, 100, seed=0)
    swept.noise = Gaussian(2.0)                  # a sigma sweep on one Smooth: the old engine drew sigma 0.05
    again = swept.certify(x, 100, 1000, 0.001, 100, seed=1)
    assert list(again.counts) == list(fresh.counts) and again.radius == fresh.radius
    swept.model = Threshold()                    # likewise for the model
    assert list(swept.certify(torch.tensor([0.3]), 10, 100, 0.01, 100, seed=0).counts) == list(
        Smooth(Threshold(), Gaussian(2.0)).certify(torch.tensor([0.3]), 10, 100, 0.01, 100, seed=0).counts)


def test_a_shared_generator_carries_no_noise_from_one_call_to_the_next():
    g = torch.Generator().manual_seed(0)
    Smooth(Ring(), Gaussian(0.05)).certify(torch.zeros(4), 1, 1, 0.001, 100, generator=g)   # drew a piece of 100
    c = Smooth(Ring(), Gaussian(2.0)).certify(torch.zeros(4), 10, 88, 0.001, 100, generator=g)
    assert c.counts[1] >= 80 and c.counts_selection[1] >= 8          # sigma 2's votes, not sigma 0.05's leftovers
    wider = Smooth(Ring(), Gaussian(0.05))
    wider.certify(torch.zeros(4), 1, 1, 0.001, 100, generator=g)
    assert wider.certify(torch.zeros(6), 1, 1, 0.001, 100, generator=g).counts.sum() == 1   # another shape: no crash


def test_nested_n_with_a_used_generator_reads_every_n():
    g = torch.Generator().manual_seed(0)
    smooth = Smooth(Threshold(), Gaussian(1.0))
    smooth.certify(torch.tensor([0.3]), 10, 50, 0.01, 64, generator=g)
    (row,) = smooth.certify_nested(torch.tensor([[0.3]]), 10, [50, 100], 0.01, 64, generator=g)
    assert [int(c.counts.sum()) for c in row] == [50, 100]


def test_two_threads_on_one_smooth_do_not_share_a_batch():
    import threading
    import time
    entered, first = threading.Event(), []

    class Slow(Threshold):
        """The first full batch of thread A waits 0.5 s between being filled and being read."""

        def forward(self, x):
            if x.shape[0] == 50 and threading.current_thread().name == "A" and not first:
                first.append(1)
                entered.set()
                time.sleep(0.5)
            return super().forward(x)

    smooth, out = Smooth(Slow(), Gaussian(0.01)), {}
    a = threading.Thread(name="A", target=lambda: out.setdefault(
        "A", smooth.certify(torch.tensor([-1.0]), 10, 40, 0.01, 50, seed=0)))
    b = threading.Thread(name="B", target=lambda: (entered.wait(5), out.setdefault(
        "B", smooth.certify(torch.tensor([1.0]), 10, 40, 0.01, 50, seed=1))))
    smooth.certify(torch.tensor([1.0]), 10, 40, 0.01, 50, seed=2)     # probe and engine built beforehand
    a.start(), b.start(), a.join(), b.join()
    assert list(out["A"].counts) == [40, 0] and list(out["B"].counts) == [0, 40]


def test_a_plain_function_is_a_model():
    smooth = Smooth(lambda x: torch.cat([-x, x], dim=1), Gaussian(0.1))
    assert smooth.certify(torch.tensor([1.0]), 10, 100, 0.01, 100, seed=0).prediction == 1
    assert smooth.model_id().startswith("sha256:")


def test_a_sweep_of_batch_sizes_keeps_one_engine():
    smooth = Smooth(Threshold(), Gaussian(1.0))
    for n in (10, 100, 1000):
        smooth.certify(torch.tensor([0.3]), 10, n, 0.01, 10 + n, seed=0)     # bench-latency's pattern
    assert list(smooth._samplers) == [1010]


def test_an_error_raised_by_the_model_while_sampling_is_one_line():
    class RaisesOnBatches(Threshold):
        def forward(self, x):
            if x.shape[0] > 1:                   # the one-input probe passes; noisy batches fail
                raise RuntimeError("boom\nsecond line")
            return super().forward(x)

    with pytest.raises(SmoothcertError, match=r"^the model raised RuntimeError on noisy samples: boom$"):
        Smooth(RaisesOnBatches(), Gaussian(0.1)).certify(torch.tensor([1.0]), 10, 100, 0.01, 100, seed=0)
