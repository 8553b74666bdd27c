import pytest
import torch

from kd_core.errors import KDError
from kd_core.train.diffusion import PREDICTION_TYPES, Diffusion, sample_posterior
from kd_core.world.toy import SCHEDULE

CONFIG = {k: v for k, v in SCHEDULE.items() if k != "set_alpha_to_one"}


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(6, 4, 8, 8, generator=gen), gen


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
def test_target_of_every_prediction_type(kind):
    d = Diffusion({**CONFIG, "prediction_type": kind})
    z0, gen = _batch()
    b = d.draw(z0, gen)
    a = d.alphas_cumprod[b.t].view(-1, 1, 1, 1)
    torch.testing.assert_close(b.noisy, a.sqrt() * z0 + (1 - a).sqrt() * b.noise)  # the forward process
    expected = {"epsilon": b.noise, "v_prediction": a.sqrt() * b.noise - (1 - a).sqrt() * z0, "sample": z0}[kind]
    torch.testing.assert_close(b.target, expected)


def test_draws_are_a_function_of_the_generator_noise_first():
    d = Diffusion(CONFIG)
    z0, _ = _batch()
    a, b = d.draw(z0, torch.Generator().manual_seed(3)), d.draw(z0, torch.Generator().manual_seed(3))
    assert torch.equal(a.noisy, b.noisy) and torch.equal(a.t, b.t)
    gen = torch.Generator().manual_seed(3)
    assert torch.equal(a.noise, torch.randn(z0.shape, generator=gen))
    assert torch.equal(a.t, torch.randint(0, 1000, (6,), generator=gen))
    half = a[1::2]  # one process's share of the batch
    assert torch.equal(half.noisy, a.noisy[1::2]) and torch.equal(half.target, a.target[1::2])


def test_unknown_prediction_type_and_bad_gamma_are_one_line_errors():
    with pytest.raises(KDError, match="prediction_type is 'flow'; training supports epsilon, v_prediction, sample"):
        Diffusion({**CONFIG, "prediction_type": "flow"})
    with pytest.raises(KDError, match="snr_gamma is 0"):
        Diffusion(CONFIG, snr_gamma=0)


@pytest.mark.parametrize(("kind", "divide"), [("epsilon", lambda s: s), ("v_prediction", lambda s: s + 1),
                                              ("sample", lambda s: torch.ones_like(s))])
def test_min_snr_gamma_weights_of_every_prediction_type(kind, divide):
    """Hang et al. 2023: min(SNR, gamma) on the x0 error, divided by SNR for epsilon and SNR + 1 for v."""
    d = Diffusion({**CONFIG, "prediction_type": kind}, snr_gamma=5.0)
    t = torch.tensor([0, 100, 500, 999])
    a = d.alphas_cumprod[t]
    snr = a / (1 - a)
    torch.testing.assert_close(d.weights(t), torch.minimum(snr, torch.tensor(5.0)) / divide(snr))
    assert Diffusion(CONFIG).weights(t) is None  # plain MSE


def test_loss_is_the_weighted_mean_of_per_example_mse():
    d = Diffusion(CONFIG, snr_gamma=5.0)
    z0, gen = _batch()
    b = d.draw(z0, gen)
    pred = torch.zeros_like(b.target)
    loss, per = d.loss(pred, b)
    torch.testing.assert_close(per, (b.target**2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(loss, (d.weights(b.t) * per).mean())
    plain, _ = Diffusion(CONFIG).loss(pred, b)
    torch.testing.assert_close(plain, per.mean())


def test_posterior_draw():
    mean, std = torch.zeros(1000), torch.full((1000,), 2.0)
    z = sample_posterior(mean, std, torch.Generator().manual_seed(0))
    assert abs(z.std().item() - 2.0) < 0.15 and abs(z.mean().item()) < 0.15
