"""Students: MLP and NatureCNN trunks, the three heads, squash + rescale, input normalisation, a
save / load round trip that needs no pickle, the shared builders, and seeding without global state."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces
from safetensors.torch import load_file

from policykd.errors import PolicyKDError
from policykd.learn.students import (
    LEGACY_WEIGHTS_FILE,
    LOG_STD_MAX,
    WEIGHTS_FILE,
    Student,
    action_space_for,
    head_fields,
    head_output,
    make_head,
    make_student,
    mlp,
    nature_cnn,
    seeded_weights,
)

VECTOR_OBS = spaces.Box(-np.inf, np.inf, (4,), np.float32)
IMAGE_OBS = spaces.Box(0, 255, (4, 84, 84), np.uint8)
SAC_BOX = spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32))


def seeded(teacher_kind: str, observation_space, action_space, **kwargs) -> Student:
    torch.manual_seed(0)
    return make_student(teacher_kind, observation_space, action_space, **kwargs)


def random_obs(n: int = 5, dim: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_mlp_shapes_and_parameter_count():
    student = seeded("categorical", VECTOR_OBS, spaces.Discrete(2), hidden_sizes=(64, 32))
    out = student(torch.as_tensor(random_obs()))
    assert out.kind == "discrete" and out.logits.shape == (5, 2)
    assert student.n_params == (4 * 64 + 64) + (64 * 32 + 32) + (32 * 2 + 2)
    assert not student.config.image
    assert student.act(random_obs()).shape == (5,)


def test_nature_cnn_shapes_and_width_multiplier():
    from stable_baselines3.common.torch_layers import NatureCNN

    full = seeded("categorical", IMAGE_OBS, spaces.Discrete(6), cnn_width=1.0)
    half = seeded("categorical", IMAGE_OBS, spaces.Discrete(6), cnn_width=0.5)
    assert full.config.image and half.config.image
    frames = np.random.default_rng(0).integers(0, 256, (2, 4, 84, 84), dtype=np.uint8)
    for student in (full, half):
        assert student(torch.as_tensor(frames)).logits.shape == (2, 6)
        assert student.act(frames).shape == (2,)
    # width 1.0 is SB3's NatureCNN (512 features) plus a linear head
    sb3_params = sum(p.numel() for p in NatureCNN(IMAGE_OBS, features_dim=512).parameters())
    assert full.n_params == sb3_params + 512 * 6 + 6
    assert half.n_params < full.n_params / 2


def test_images_are_scaled_not_normalised():
    student = seeded("categorical", IMAGE_OBS, spaces.Discrete(3), cnn_width=0.25)
    frames = torch.full((1, 4, 84, 84), 255, dtype=torch.uint8)
    with torch.no_grad():
        expected = student.head(student.trunk(torch.ones(1, 4, 84, 84)))
        assert torch.allclose(student(frames).logits, expected)


@pytest.mark.parametrize(
    ("teacher_kind", "action_space", "head", "fields"),
    [
        ("categorical", spaces.Discrete(3), "discrete", {"logits": (5, 3)}),
        ("q_values", spaces.Discrete(3), "discrete", {"logits": (5, 3)}),
        ("quantiles", spaces.Discrete(3), "discrete", {"logits": (5, 3)}),
        ("gaussian", SAC_BOX, "gaussian", {"mean": (5, 2), "log_std": (5, 2)}),
        ("squashed_gaussian", SAC_BOX, "gaussian", {"mean": (5, 2), "log_std": (5, 2)}),
        ("deterministic", SAC_BOX, "deterministic", {"action": (5, 2)}),
    ],
)
def test_head_matches_the_teacher_kind(teacher_kind, action_space, head, fields):
    student = seeded(teacher_kind, VECTOR_OBS, action_space)
    out = student(torch.as_tensor(random_obs()))
    assert student.config.head == out.kind == head
    for name in ("logits", "mean", "log_std", "action"):
        tensor = getattr(out, name)
        assert (tensor.shape if tensor is not None else None) == fields.get(name)
    assert student.config.squash == (teacher_kind == "squashed_gaussian")
    actions = student.act(random_obs(), deterministic=False, rng=np.random.default_rng(0))
    assert actions.shape == ((5,) if head == "discrete" else (5, 2))
    assert student.config.action_space.contains(actions[0].astype(student.config.action_space.dtype))


def _set_head_bias(student: Student, bias: list[float]) -> None:
    with torch.no_grad():
        student.head.weight.zero_()
        student.head.bias.copy_(torch.tensor(bias))


def test_squashed_gaussian_actions_are_tanh_then_rescaled():
    student = seeded("squashed_gaussian", VECTOR_OBS, SAC_BOX)
    _set_head_bias(student, [0.5, -1.0, 0.0, 0.0])  # mean (0.5, -1.0), log_std 0
    actions = student.act(random_obs())
    low, high = SAC_BOX.low, SAC_BOX.high
    expected = low + (np.tanh([0.5, -1.0]) + 1) / 2 * (high - low)
    np.testing.assert_allclose(actions, np.tile(expected, (5, 1)), rtol=1e-6)
    # far out, the squash saturates at the bounds instead of leaving them
    _set_head_bias(student, [50.0, -50.0, 1.0, 1.0])
    sampled = student.act(random_obs(200, seed=1), deterministic=False, rng=np.random.default_rng(0))
    assert (sampled >= low).all() and (sampled <= high).all()
    np.testing.assert_allclose(student.act(random_obs()), np.tile([2.0, 0.0], (5, 1)), atol=1e-5)


def test_gaussian_actions_are_clipped_and_deterministic_ones_rescaled():
    gaussian = seeded("gaussian", VECTOR_OBS, SAC_BOX)
    _set_head_bias(gaussian, [5.0, -3.0, 0.0, 0.0])
    np.testing.assert_allclose(gaussian.act(random_obs()), np.tile([2.0, 0.0], (5, 1)))
    deterministic = seeded("deterministic", VECTOR_OBS, SAC_BOX)
    _set_head_bias(deterministic, [0.0, 0.5])
    expected = SAC_BOX.low + (np.array([0.0, np.tanh(0.5)]) + 1) / 2 * (SAC_BOX.high - SAC_BOX.low)
    np.testing.assert_allclose(deterministic.act(random_obs()), np.tile(expected, (5, 1)), rtol=1e-6)


@pytest.mark.parametrize(
    ("teacher_kind", "observation_space", "action_space"),
    [
        ("categorical", VECTOR_OBS, spaces.Discrete(2)),
        ("squashed_gaussian", VECTOR_OBS, SAC_BOX),
        ("deterministic", VECTOR_OBS, SAC_BOX),
        ("q_values", IMAGE_OBS, spaces.Discrete(6)),
    ],
)
def test_save_load_round_trip_without_pickle(teacher_kind, observation_space, action_space, tmp_path):
    mean, std = np.array([1.0, -2.0, 0.5, 3.0]), np.array([2.0, 0.5, 1.0, 4.0])
    student = seeded(teacher_kind, observation_space, action_space, cnn_width=0.25, obs_mean=mean, obs_std=std)
    student.save(tmp_path)
    state = load_file(tmp_path / WEIGHTS_FILE)  # safetensors: plain tensors, no pickle
    assert state.keys() == student.state_dict().keys()
    assert json.loads((tmp_path / "student.json").read_text())["head"] == student.config.head
    loaded = Student.load(tmp_path)
    assert loaded.config == student.config and not loaded.training
    for name, value in student.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    if observation_space is IMAGE_OBS:
        obs = np.random.default_rng(0).integers(0, 256, (3, 4, 84, 84), dtype=np.uint8)
    else:
        obs = random_obs(16)
    np.testing.assert_array_equal(loaded.act(obs), student.eval().act(obs))


def test_input_normalisation_is_part_of_the_saved_student(tmp_path):
    mean, std = np.array([1.0, -2.0, 0.5, 3.0]), np.array([2.0, 0.5, 1.0, 4.0])
    student = seeded("categorical", VECTOR_OBS, spaces.Discrete(2), obs_mean=mean, obs_std=std)
    obs = torch.as_tensor(random_obs())
    with torch.no_grad():
        normalised = (obs - torch.as_tensor(mean, dtype=torch.float32)) / torch.as_tensor(std, dtype=torch.float32)
        assert torch.allclose(student(obs).logits, student.head(student.trunk(normalised)))
    student.save(tmp_path)
    state = load_file(tmp_path / WEIGHTS_FILE)
    np.testing.assert_allclose(state["obs_mean"].numpy(), mean)
    np.testing.assert_allclose(state["obs_std"].numpy(), std)
    loaded = Student.load(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(obs).logits, student(obs).logits)


@pytest.mark.parametrize("damage", ["garbage weights", "truncated weights", "no config", "bad config"])
def test_a_damaged_student_folder_is_a_user_error(damage, tmp_path):
    seeded("categorical", VECTOR_OBS, spaces.Discrete(2)).save(tmp_path)
    weights, config = tmp_path / WEIGHTS_FILE, tmp_path / "student.json"
    if damage == "garbage weights":
        weights.write_bytes(b"not a torch file at all")
    elif damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "no config":
        config.unlink()
    else:
        config.write_text('{"head": "discrete"}')
    with pytest.raises(PolicyKDError, match="is not a policykd student"):
        Student.load(tmp_path)


def test_the_same_weights_give_the_same_bytes_and_a_student_pt_folder_still_loads(tmp_path):
    """Reproducible files (issue 16): equal students are byte-identical on disk, other weights are
    not; a folder of the torch-state-dict era (``student.pt``) loads, and saving over it leaves one file."""
    students = [seeded("categorical", VECTOR_OBS, spaces.Discrete(2), obs_mean=np.ones(4), obs_std=np.ones(4))]
    students += [seeded("categorical", VECTOR_OBS, spaces.Discrete(2), obs_mean=np.ones(4), obs_std=np.ones(4))]
    with torch.no_grad():
        students.append(seeded("categorical", VECTOR_OBS, spaces.Discrete(2)))
        students[2].head.bias.add_(1e-6)
    for i, student in enumerate(students):
        student.save(tmp_path / str(i))
    files = [(tmp_path / str(i) / WEIGHTS_FILE).read_bytes() for i in range(3)]
    assert files[0] == files[1] and files[0] != files[2]

    old = tmp_path / "old"
    old.mkdir()
    (old / "student.json").write_bytes((tmp_path / "0" / "student.json").read_bytes())
    torch.save(students[0].state_dict(), old / LEGACY_WEIGHTS_FILE)
    loaded = Student.load(old)
    for name, value in students[0].state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    loaded.save(old)
    assert sorted(p.name for p in old.iterdir()) == ["student.json", WEIGHTS_FILE]
    assert (old / WEIGHTS_FILE).read_bytes() == files[0]


def test_unsupported_spaces_and_sizes_are_user_errors():
    with pytest.raises(PolicyKDError, match="Box observations"):
        make_student("categorical", spaces.Discrete(5), spaces.Discrete(2))
    with pytest.raises(PolicyKDError, match="positive"):
        make_student("categorical", VECTOR_OBS, spaces.Discrete(2), hidden_sizes=(0,))
    with pytest.raises(PolicyKDError, match="teacher kind"):
        make_student("mystery", VECTOR_OBS, spaces.Discrete(2))


def test_a_seed_gives_the_weights_of_manual_seed_and_leaves_the_global_rng_alone():
    for observation_space, kwargs in ((VECTOR_OBS, {}), (IMAGE_OBS, {"cnn_width": 0.25})):
        expected = seeded("gaussian", observation_space, SAC_BOX, **kwargs).state_dict()  # manual_seed(0), then build
        torch.manual_seed(123)
        state = torch.get_rng_state()
        student = make_student("gaussian", observation_space, SAC_BOX, seed=0, **kwargs)
        assert torch.equal(torch.get_rng_state(), state), "seed= must not touch the caller's global RNG"
        assert all(torch.equal(student.state_dict()[name], value) for name, value in expected.items())
    # seed=None draws from the global RNG as it stands, and advances it
    torch.manual_seed(0)
    state = torch.get_rng_state()
    unseeded = make_student("categorical", VECTOR_OBS, spaces.Discrete(2))
    assert not torch.equal(torch.get_rng_state(), state)
    assert torch.equal(
        unseeded.head.weight, make_student("categorical", VECTOR_OBS, spaces.Discrete(2), seed=0).head.weight
    )


def test_seeded_weights_restores_the_rng_even_on_error():
    state = torch.get_rng_state()
    with pytest.raises(RuntimeError):
        with seeded_weights(5):
            torch.rand(3)
            raise RuntimeError("building failed")
    assert torch.equal(torch.get_rng_state(), state)
    with seeded_weights(5):
        first = torch.rand(3)
    with seeded_weights(5):
        assert torch.equal(torch.rand(3), first)


def test_shared_builders_shapes():
    trunk = mlp([4, 16, 8])
    assert [type(m).__name__ for m in trunk] == ["Linear", "ReLU", "Linear", "ReLU"]
    assert trunk(torch.zeros(3, 4)).shape == (3, 8) and len(mlp([4])) == 0
    cnn, n_features = nature_cnn((4, 84, 84), 0.5)
    assert n_features == 256 and cnn(torch.zeros(2, 4, 84, 84)).shape == (2, 256)
    for head, fields in (("discrete", {"logits": (3, 5)}), ("gaussian", {"mean": (3, 5), "log_std": (3, 5)})):
        out = head_output(head, make_head(8, head, 5)(torch.zeros(3, 8)))
        assert out.kind == head and {k: getattr(out, k).shape for k in fields} == fields
    action = head_output("deterministic", torch.full((3, 2), 50.0)).action
    assert torch.allclose(action, torch.ones(3, 2))  # tanh: in [-1, 1]
    log_std = head_output("gaussian", torch.tensor([[0.0, 100.0]])).log_std
    assert log_std.item() == LOG_STD_MAX


def test_head_fields_follow_the_teacher_kind_and_the_action_space():
    assert head_fields("q_values", spaces.Discrete(3)) == {
        "head": "discrete",
        "action_dim": 3,
        "action_low": (),
        "action_high": (),
        "squash": False,
    }
    fields = head_fields("squashed_gaussian", SAC_BOX)
    assert fields["head"] == "gaussian" and fields["squash"] and fields["action_dim"] == 2
    assert fields["action_low"] == (-2.0, 0.0) and fields["action_high"] == (2.0, 10.0)
    assert action_space_for(fields["head"], 2, fields["action_low"], fields["action_high"]) == SAC_BOX
    assert head_fields("deterministic", SAC_BOX)["head"] == "deterministic"
    with pytest.raises(
        PolicyKDError, match=r"task .A.: action space MultiBinary\(2\) is not supported \(Discrete or Box\)"
    ):
        head_fields("categorical", spaces.MultiBinary(2), where="task 'A': ")
