"""State / action normalisation statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from memorywam_ros.runtime.normalization import DEFAULT_STD_FLOOR, Normalizer


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    states = rng.normal(0.3, 0.8, (500, 14))
    actions = rng.normal(-0.2, 0.5, (50, 16, 14))  # action chunks: stats over every step
    states[:, 6] = 0.04  # a gripper that never moves
    actions[..., 13] = 1.0
    return states, actions


def test_stats_and_round_trip() -> None:
    states, actions = data()
    norm = Normalizer.from_arrays(states, actions)
    assert norm.state_dim == norm.action_dim == 14 and norm.action.count == 800
    np.testing.assert_allclose(norm.state.mean, states.mean(0))
    np.testing.assert_allclose(norm.action.max, actions.reshape(-1, 14).max(0))
    z = norm.normalize_action(actions)
    assert z.shape == actions.shape and z.dtype == np.float64
    moving = np.arange(13)
    np.testing.assert_allclose(z[..., moving].reshape(-1, 13).mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z[..., moving].reshape(-1, 13).std(0), 1, atol=1e-12)
    np.testing.assert_allclose(norm.denormalize_action(z), actions, atol=1e-12)
    zs = norm.normalize_state(states[:3])
    np.testing.assert_allclose(zs[:, 0], (states[:3, 0] - states[:, 0].mean()) / states[:, 0].std())


def test_constant_dimension_uses_floor() -> None:
    states, actions = data()
    norm = Normalizer.from_arrays(states, actions)
    assert norm.state.std[6] < 1e-12 and norm.state.min[6] == norm.state.max[6] == 0.04
    # a 1 mm deviation of the constant gripper stays a small input thanks to the floor
    x = states[0].copy()
    x[6] += 1e-3
    assert np.isfinite(norm.normalize_state(x)).all()
    assert norm.normalize_state(x)[6] == pytest.approx(1e-3 / DEFAULT_STD_FLOOR)
    assert norm.denormalize_action(np.zeros(14))[13] == pytest.approx(1.0)
    custom = Normalizer.from_arrays(states, actions, std_floor=0.5)
    assert custom.normalize_state(x)[6] == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="std_floor"):
        Normalizer.from_arrays(states, actions, std_floor=0)


def test_json_round_trip(tmp_path: Path) -> None:
    states, actions = data(1)
    norm = Normalizer.from_arrays(states, actions, std_floor=0.02)
    path = tmp_path / "normalization.json"
    norm.to_json(path)
    back = Normalizer.from_json(path)
    assert back.std_floor == 0.02 and back.action.count == norm.action.count
    for a, b in ((norm.state, back.state), (norm.action, back.action)):
        for field in ("mean", "std", "min", "max"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(back.normalize_state(states), norm.normalize_state(states))
    ident = Normalizer.identity(14, 14)
    ident.to_json(path)
    np.testing.assert_array_equal(Normalizer.from_json(path).normalize_action(actions), actions)


def test_torch_inputs_keep_type_dtype() -> None:
    states, actions = data()
    norm = Normalizer.from_arrays(torch.from_numpy(states), actions)
    a32 = torch.from_numpy(actions[0]).float()
    z = norm.normalize_action(a32)
    assert isinstance(z, torch.Tensor) and z.dtype == torch.float32
    torch.testing.assert_close(norm.denormalize_action(z), a32, atol=1e-5, rtol=0)
    np.testing.assert_allclose(z.numpy(), norm.normalize_action(actions[0]), atol=1e-5)
    z32 = norm.normalize_state(states.astype(np.float32))
    assert z32.dtype == np.float32


def test_wrong_dim_and_bad_data() -> None:
    states, actions = data()
    norm = Normalizer.from_arrays(states, actions)
    with pytest.raises(ValueError, match=r"state: expected shape \(\.\.\., 14\), got \(13,\)"):
        norm.normalize_state(np.zeros(13))
    with pytest.raises(ValueError, match=r"action: expected shape \(\.\.\., 14\)"):
        norm.denormalize_action(torch.zeros(16, 7))
    with pytest.raises(ValueError, match="action"):
        norm.normalize_action(np.float64(1.0))
    bad = states.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="states: contains NaN"):
        Normalizer.from_arrays(bad, actions)
    with pytest.raises(ValueError, match="no samples"):
        Normalizer.from_arrays(np.zeros((0, 14)), actions)
    with pytest.raises(ValueError, match="format"):
        Normalizer.from_dict({"format_version": 99})
