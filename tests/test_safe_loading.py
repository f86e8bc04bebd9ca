"""Files from others are data, not code: crafted SB3 zips, ``vecnormalize.pkl`` files, recipes and
``config.yml`` files whose payload would create a marker file are refused in one line naming the
global and ``--trust-pickles``, and the marker never appears; every shipped expert still loads and
acts exactly as SB3's own unpickling makes it act; ``trust_pickles=True`` loads a trusted custom class."""

from __future__ import annotations

import base64
import json
import os
import pickle
import sys
import zipfile
from collections import OrderedDict, deque
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from policykd.data.envs import EnvRecipe, check_wrappers, make_vec_env
from policykd.data.safe_pickle import read_sb3_zip, restricted_loads, zip_data
from policykd.data.teachers import _CUSTOM_OBJECTS, load_teacher
from policykd.errors import PolicyKDError
from policykd.zoo.presets import ZOO_DIR

SHIPPED = sorted(path for path in ZOO_DIR.glob("*/*_[0-9]*") if path.is_dir() and any(path.glob("*.zip")))
TRUST = "--trust-pickles"


def _crafted(module: str, name: str, *args: object) -> bytes:
    """A protocol-4 pickle that calls ``module.name(*args)`` (GLOBAL + REDUCE), written by hand so
    that any "module.name", dotted ones included, can be named."""
    return b"\x80\x04c" + f"{module}\n{name}\n".encode() + pickle.dumps(args, protocol=2)[2:-1] + b"R."


def _payloads(marker: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (pickle that would create ``marker``, the global the refusal must name)."""
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": (_crafted("os", "system", f"touch '{marker}'"), "os.system"),
        "posix.system": (_crafted("posix", "system", f"touch '{marker}'"), "posix.system"),
        "builtins.exec": (_crafted("builtins", "exec", touch), "builtins.exec"),
        "builtins.eval": (_crafted("builtins", "eval", touch), "builtins.eval"),
        "dotted through an allowed module": (
            _crafted("stable_baselines3.common.save_util", "os.system", f"touch '{marker}'"),
            "stable_baselines3.common.save_util.os.system",
        ),
        "numpy.memmap creates a file": (
            _crafted("numpy", "memmap", str(marker), "uint8", "w+", 0, (1,)),
            "numpy.memmap",
        ),
    }


PAYLOAD_NAMES = list(_payloads(Path("m")))


def _assert_refused(excinfo: pytest.ExceptionInfo, global_name: str, marker: Path) -> None:
    message = str(excinfo.value)
    assert "\n" not in message and global_name in message and TRUST in message, message
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOAD_NAMES)
def test_payloads_are_real(payload, tmp_path) -> None:
    """The control: plain pickle runs each payload, so the refusals below prove something."""
    marker = tmp_path / "ran"
    data, _ = _payloads(marker)[payload]
    pickle.loads(data)  # the point of the control: plain pickle runs it
    assert marker.exists()


@pytest.mark.parametrize("payload", PAYLOAD_NAMES)
def test_restricted_loads_refuses_payloads(payload, tmp_path) -> None:
    marker = tmp_path / "ran"
    data, global_name = _payloads(marker)[payload]
    with pytest.raises(PolicyKDError) as excinfo:
        restricted_loads(data, "crafted.pkl")
    _assert_refused(excinfo, global_name, marker)


@pytest.mark.parametrize(
    ("module", "name", "fragment"),
    [
        ("torch.nn.modules.activation", "ReLU", "may name this class, never build it"),  # named, not called
        ("stable_baselines3.common.policies", "ActorCriticPolicy", "may name this class, never build it"),
        ("torch", "load", "torch.load"),
        ("numpy", "load", "numpy.load"),
        ("numpy.f2py.__main__", "main", "numpy.f2py.__main__.main"),  # importing a __main__ runs it
        ("gymnasium.spaces.box", "Box.__init__", "Box.__init__"),
        ("collections", "namedtuple", "collections.namedtuple"),
    ],
)
def test_restricted_loads_refuses_calls_outside_the_allow_list(module, name, fragment) -> None:
    with pytest.raises(PolicyKDError, match="refused to unpickle") as excinfo:
        restricted_loads(_crafted(module, name), "crafted.pkl")
    assert fragment in str(excinfo.value) and TRUST in str(excinfo.value)


def test_restricted_loads_refuses_changing_shared_objects() -> None:
    """BUILD on a class or an enum member would change it for every later user; BUILD setting
    ``__class__`` would turn data into another class."""
    from stable_baselines3.common.type_aliases import TrainFrequencyUnit

    on_class = b"\x80\x02cgymnasium.spaces.box\nBox\n}X\x05\x00\x00\x00lowerK\x01sb."
    unit = b"cstable_baselines3.common.type_aliases\nTrainFrequencyUnit\n(Vstep\ntR"
    on_member = b"\x80\x02" + unit + b"}X\x05\x00\x00\x00lowerK\x01sb."
    slots = b"N}X\t\x00\x00\x00__class__cgymnasium.spaces.box\nBox\ns\x86"  # (None, {"__class__": Box})
    dunder = b"\x80\x02cstable_baselines3.common.running_mean_std\nRunningMeanStd\n)\x81" + slots + b"b."
    for data, fragment in ((on_class, "'Box'"), (on_member, "TrainFrequencyUnit.STEP"), (dunder, "a change")):
        with pytest.raises(PolicyKDError, match=fragment):
            restricted_loads(data, "crafted.pkl")
    assert not hasattr(gym.spaces.Box, "lower") and not hasattr(TrainFrequencyUnit.STEP, "lower")


def _allowed_objects() -> dict[str, object]:
    from stable_baselines3.common.noise import NormalActionNoise
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.running_mean_std import RunningMeanStd
    from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

    box = gym.spaces.Box(-1.0, 2.0, (3, 2), np.float32, seed=3)
    box.sample()  # a generator state that is not the seed's
    return {
        "arrays": [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros((2, 2), np.uint8), np.array([True])],
        "scalars": (np.float64(1.5), np.int64(-3), np.float32(2.0)),
        "spaces": gym.spaces.Dict(
            {
                "box": box,
                "discrete": gym.spaces.Discrete(4, start=1, seed=1),
                "multi": gym.spaces.MultiDiscrete([2, 3]),
                "binary": gym.spaces.MultiBinary(5),
                "tuple": gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Box(0, 1, (1,)))),
            }
        ),
        "containers": (OrderedDict(a=1, b=[2.0, None]), deque([{"r": 1.0, "l": 3}], maxlen=100), {1, 2}),
        "sb3 data": (TrainFreq(4, TrainFrequencyUnit.STEP), NormalActionNoise(np.zeros(2), 0.1 * np.ones(2))),
        "statistics": RunningMeanStd(shape=(3,)),
        "classes": {"policy": ActorCriticPolicy, "act": torch.nn.ReLU, "opt": torch.optim.Adam},
    }


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple, deque)) and not hasattr(a, "_fields"):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, gym.spaces.Space):  # equal spaces with the same generator state (None: never seeded)
        states = [None if s._np_random is None else s._np_random.bit_generator.state for s in (a, b)]
        children = list(a.spaces.values()) if isinstance(a, gym.spaces.Dict) else getattr(a, "spaces", [])
        others = list(b.spaces.values()) if isinstance(b, gym.spaces.Dict) else getattr(b, "spaces", [])
        return a == b and states[0] == states[1] and all(_same(x, y) for x, y in zip(children, others))
    if hasattr(a, "__dict__") and not isinstance(a, type):
        return type(a) is type(b) and _same(vars(a), vars(b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("protocol", [2, 3, 4, 5, "cloudpickle"])
@pytest.mark.parametrize("what", list(_allowed_objects()))
def test_restricted_loads_reads_what_experts_hold(what, protocol) -> None:
    import cloudpickle

    obj = _allowed_objects()[what]
    data = cloudpickle.dumps(obj) if protocol == "cloudpickle" else pickle.dumps(obj, protocol=protocol)
    assert _same(obj, restricted_loads(data, "honest.pkl"))


# -- SB3 zips ----------------------------------------------------------------------------------------


def _with_entry(zip_path: Path, out: Path, key: str, payload: bytes) -> Path:
    """A copy of an SB3 zip whose ``data`` JSON holds ``payload`` as the cloudpickled ``key``."""
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            content = src.read(name)
            if name == "data":
                data = json.loads(content)
                data[key] = {":type:": "<class 'object'>", ":serialized:": base64.b64encode(payload).decode()}
                content = json.dumps(data).encode()
            dst.writestr(name, content)
    return out


@pytest.mark.parametrize("key", ["observation_space", "policy_kwargs", "action_noise", "ep_info_buffer"])
@pytest.mark.parametrize("payload", PAYLOAD_NAMES)
def test_crafted_zip_is_refused(sb3_expert, tmp_path, payload, key) -> None:
    """Whichever entry holds it, used by policykd or not, the payload never runs."""
    _, good = sb3_expert("ppo", "CartPole-v1")
    marker = tmp_path / "ran"
    data, global_name = _payloads(marker)[payload]
    evil = _with_entry(good, tmp_path / "evil.zip", key, data)
    with pytest.raises(PolicyKDError) as excinfo:
        load_teacher(evil, env_id="CartPole-v1")
    _assert_refused(excinfo, global_name, marker)
    assert f"evil.zip (data entry '{key}')" in str(excinfo.value)


def test_schedules_are_replaced_unread(sb3_expert, tmp_path) -> None:
    """As today: schedule entries are replaced (SB3's custom_objects), so whatever they hold never runs."""
    _, good = sb3_expert("ppo", "CartPole-v1")
    marker = tmp_path / "ran"
    evil = _with_entry(good, tmp_path / "evil.zip", "lr_schedule", _payloads(marker)["os.system"][0])
    assert load_teacher(evil, env_id="CartPole-v1").kind == "categorical"
    assert not marker.exists()


def test_crafted_zip_through_the_cli(sb3_expert, tmp_path, capsys) -> None:
    """The issue's case: ``policykd evaluate evil.zip --env CartPole-v1`` ran the payload and exited 0."""
    from policykd.cli import main

    _, good = sb3_expert("ppo", "CartPole-v1")
    marker = tmp_path / "ran"
    evil = _with_entry(good, tmp_path / "evil.zip", "observation_space", _payloads(marker)["os.system"][0])
    with pytest.raises(SystemExit) as excinfo:
        main(["evaluate", str(evil), "--env", "CartPole-v1", "--episodes", "1"])
    err = capsys.readouterr().err
    assert excinfo.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "os.system" in err and TRUST in err and "Traceback" not in err
    assert not marker.exists()


class TinyExtractor(BaseFeaturesExtractor):
    """A custom class no allow-list knows: loads only when the user trusts the file."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 8) -> None:
        super().__init__(observation_space, features_dim)
        self.linear = torch.nn.Linear(int(np.prod(observation_space.shape)), features_dim)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(observations))


def test_custom_class_needs_trust(tmp_path) -> None:
    from stable_baselines3 import PPO

    kwargs = {"features_extractor_class": TinyExtractor}
    model = PPO("MlpPolicy", "CartPole-v1", policy_kwargs=kwargs, seed=0, device="cpu")
    model.save(tmp_path / "custom.zip")
    with pytest.raises(PolicyKDError) as excinfo:
        load_teacher(tmp_path / "custom.zip", env_id="CartPole-v1")
    message = str(excinfo.value)
    assert f"{TinyExtractor.__module__}.TinyExtractor" in message and TRUST in message and "\n" not in message
    teacher = load_teacher(tmp_path / "custom.zip", env_id="CartPole-v1", trust_pickles=True)
    assert isinstance(teacher.policy.features_extractor, TinyExtractor)
    obs = np.random.default_rng(0).uniform(-1, 1, (8, 4)).astype(np.float32)
    np.testing.assert_array_equal(teacher.act(obs), model.predict(obs, deterministic=True)[0])


class _SystemCall:
    """Pickles as ``os.system(command)``, inside a torch.save file too."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("form", ["bare pickle", "torch.save"])
def test_policy_weights_are_read_weights_only(sb3_expert, tmp_path, form) -> None:
    """A policy.pth that pickles a call is refused by torch.load(weights_only=True), trusted or not."""
    import io

    _, good = sb3_expert("ppo", "CartPole-v1")
    marker = tmp_path / "ran"
    weights = io.BytesIO()
    if form == "torch.save":
        torch.save({"action_net.weight": _SystemCall(f"touch '{marker}'")}, weights)
    else:
        weights.write(_payloads(marker)["os.system"][0])
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, weights.getvalue() if name == "policy.pth" else src.read(name))
    for trust in (False, True):
        with pytest.raises(PolicyKDError, match="weights_only=True") as excinfo:
            load_teacher(evil, env_id="CartPole-v1", trust_pickles=trust)
        message = str(excinfo.value)
        assert "policy.pth" in message and len(message) < 300 and "\n" not in message
        assert form != "torch.save" or f"{os.system.__module__}.system" in message
    assert not marker.exists()


# -- vecnormalize.pkl --------------------------------------------------------------------------------


def _save_vecnormalize(path: Path, env_id: str) -> object:
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    vecnormalize = VecNormalize(DummyVecEnv([lambda: gym.make(env_id)]), clip_obs=4.0)
    vecnormalize.obs_rms.mean = np.linspace(-0.5, 0.5, vecnormalize.observation_space.shape[0])
    vecnormalize.obs_rms.var = np.linspace(0.5, 2.0, vecnormalize.observation_space.shape[0])
    vecnormalize.save(path)
    return vecnormalize


@pytest.mark.parametrize("payload", PAYLOAD_NAMES)
def test_crafted_vecnormalize_is_refused(sb3_expert, zoo_run_dir, tmp_path, payload) -> None:
    _, zip_path = sb3_expert("ppo", "CartPole-v1")
    run_dir = zoo_run_dir(tmp_path, "ppo", "CartPole-v1", zip_path, config={"normalize": True})
    marker = tmp_path / "ran"
    data, global_name = _payloads(marker)[payload]
    (run_dir / "CartPole-v1" / "vecnormalize.pkl").write_bytes(data)
    with pytest.raises(PolicyKDError) as excinfo:
        load_teacher(run_dir)
    _assert_refused(excinfo, global_name, marker)
    assert "vecnormalize.pkl" in str(excinfo.value)


def test_vecnormalize_and_gsde_expert_loads(sb3_expert, zoo_run_dir, tmp_path) -> None:
    """An SB3 model saved here with VecNormalize + gSDE, as rl-zoo lays it out: it loads through the
    allow-list and labels exactly what SB3 computes on the normalised observations."""
    model, zip_path = sb3_expert("ppo", "Pendulum-v1", use_sde=True)
    config = OrderedDict([("normalize", "dict(norm_obs=True, norm_reward=False)"), ("use_sde", True)])
    run_dir = zoo_run_dir(tmp_path, "ppo", "Pendulum-v1", zip_path, config=config, ordered=True)
    vecnormalize = _save_vecnormalize(run_dir / "Pendulum-v1" / "vecnormalize.pkl", "Pendulum-v1")
    teacher = load_teacher(run_dir)
    assert teacher.kind == "gaussian" and teacher.policy.use_sde and teacher.normalizer is not None
    obs = np.random.default_rng(2).uniform([-1, -1, -8], [1, 1, 8], (16, 3)).astype(np.float32)
    normalized = vecnormalize.normalize_obs(obs)  # type: ignore[attr-defined]
    with torch.no_grad():
        obs_tensor = model.policy.obs_to_tensor(normalized)[0]
        dist = model.policy.get_distribution(obs_tensor).distribution
        value = model.policy.predict_values(obs_tensor).flatten()
    out = teacher(obs)
    torch.testing.assert_close(out.mean, dist.mean)
    torch.testing.assert_close(out.log_std, dist.stddev.log())
    torch.testing.assert_close(out.value, value)
    np.testing.assert_allclose(teacher.act(obs), model.predict(normalized, deterministic=True)[0], rtol=1e-6)


# -- env wrappers named by recipes -------------------------------------------------------------------


@pytest.fixture
def evil_module(tmp_path, monkeypatch) -> tuple[str, Path]:
    """An importable module whose import creates a marker file: ``(module name, marker)``."""
    marker = tmp_path / "imported"
    (tmp_path / "evil_wrappers.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nimport gymnasium\n\n\nclass Wrapper(gymnasium.Wrapper):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evil_wrappers", raising=False)
    return "evil_wrappers", marker


@pytest.mark.parametrize(
    "env_wrapper",
    ["os.system", ["evil_wrappers.Wrapper"], [{"evil_wrappers.Wrapper": {}}], {"evil_wrappers.Wrapper": None}],
)
def test_recipe_wrapper_outside_the_allow_list_is_refused(evil_module, env_wrapper) -> None:
    _, marker = evil_module
    recipe = EnvRecipe("CartPole-v1", env_wrapper=env_wrapper)
    with pytest.raises(PolicyKDError) as excinfo:
        make_vec_env(recipe, 1, 0)
    named = "os.system" if env_wrapper == "os.system" else "evil_wrappers.Wrapper"
    _assert_refused(excinfo, named, marker)


def test_recipes_from_files_cannot_trust_themselves(evil_module) -> None:
    """A recipe.json or ONNX metadata cannot set ``trusted``: it is not an __init__ argument."""
    _, marker = evil_module
    data = {"env_id": "CartPole-v1", "env_wrapper": ["evil_wrappers.Wrapper"], "trusted": True}
    with pytest.raises(TypeError):
        EnvRecipe(**data)  # what a loader that splats JSON does
    with pytest.raises(PolicyKDError, match="recipe.json"):
        EnvRecipe.from_json(data, "recipe.json")
    del data["trusted"]
    recipe = EnvRecipe.from_json(data, "recipe.json")
    assert not recipe.trusted and "trusted" not in recipe.trusting().to_json()
    with pytest.raises(PolicyKDError, match="evil_wrappers.Wrapper"):
        make_vec_env(recipe, 1, 0)
    assert not marker.exists()


def _student_with_recipe(folder: Path, recipe: dict) -> Path:
    from policykd.learn.students import make_student

    env = gym.make("CartPole-v1")
    make_student("categorical", env.observation_space, env.action_space, hidden_sizes=(8,)).save(folder)
    (folder / "recipe.json").write_text(json.dumps(recipe))
    return folder


def test_student_recipe_naming_a_wrapper_through_the_cli(evil_module, tmp_path, capsys) -> None:
    """``policykd evaluate <student>`` whose recipe.json names a wrapper: refused in one line, exit 2;
    with --trust-pickles it is imported and played. A recipe.json claiming trust is refused."""
    from policykd.cli import main

    name, marker = evil_module
    recipe = {"env_id": "CartPole-v1", "env_wrapper": [f"{name}.Wrapper"]}
    student = _student_with_recipe(tmp_path / "student", recipe)
    for argv, fragment in (
        ([str(student)], f"{name}.Wrapper"),
        ([str(_student_with_recipe(tmp_path / "claims", {**recipe, "trusted": True}))], "does not hold an env recipe"),
    ):
        with pytest.raises(SystemExit) as excinfo:
            main(["evaluate", *argv, "--episodes", "1"])
        err = capsys.readouterr().err
        assert excinfo.value.code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err
    assert not marker.exists()
    main(["evaluate", str(student), "--episodes", "1", TRUST])
    assert "return" in capsys.readouterr().out and marker.exists()


@pytest.mark.parametrize("data", [[], "CartPole-v1", {"env_wrapper": None}, {"env_id": 3}])
def test_from_json_refuses_what_is_not_a_recipe(data) -> None:
    with pytest.raises(PolicyKDError, match="does not hold an env recipe"):
        EnvRecipe.from_json(data, "policy.onnx")


def test_recipe_env_id_naming_a_module_is_not_imported(evil_module) -> None:
    """gymnasium imports the module of a ``module:EnvId`` id in make(); the id is refused before."""
    name, marker = evil_module
    with pytest.raises(PolicyKDError, match="unknown environment"):
        make_vec_env(EnvRecipe.from_json({"env_id": f"{name}:Evil-v0"}, "recipe.json"), 1, 0)
    assert not marker.exists() and name not in sys.modules


def test_trusted_recipe_imports_its_wrapper(evil_module) -> None:
    _, marker = evil_module
    recipe = EnvRecipe("CartPole-v1", env_wrapper=["evil_wrappers.Wrapper"]).trusting()
    assert recipe.trusted and recipe == EnvRecipe("CartPole-v1", env_wrapper=["evil_wrappers.Wrapper"])
    venv = make_vec_env(recipe, 1, 0)
    try:
        assert type(venv.envs[0]).__name__ == "Wrapper"
    finally:
        venv.close()
    assert marker.exists()  # imported: the user said they trust it


def test_wrapper_class_given_in_python_is_used() -> None:
    recipe = EnvRecipe("CartPole-v1", env_wrapper=[{gym.wrappers.TimeLimit: {"max_episode_steps": 2}}])
    venv = make_vec_env(recipe, 1, 0)
    try:
        venv.reset()
        venv.step(np.zeros(1, dtype=np.int64))
        assert venv.step(np.zeros(1, dtype=np.int64))[2].all()
    finally:
        venv.close()


@pytest.mark.parametrize(
    ("env_wrapper", "allowed"),
    [
        ("stable_baselines3.common.atari_wrappers.AtariWrapper", True),
        ([{"gymnasium.wrappers.TimeLimit": {"max_episode_steps": 10}}], True),
        (["gymnasium.wrappers.common.OrderEnforcing"], True),
        (["sb3_contrib.common.wrappers.TimeFeatureWrapper"], True),
        (["rl_zoo3.wrappers.HistoryWrapper"], True),
        (None, True),
        (["gymnasium.wrappers.RecordVideo"], False),  # writes files
        (["gymnasium.wrappers.HumanRendering"], False),  # opens a window
        (["gymnasium.wrappers._private"], False),
        (["rl_zoo3.wrappers.__main__.X"], False),  # importing a __main__ runs it
        (["gymnasium.wrappersx.Evil"], False),
        (["stable_baselines3.common.monitor.Monitor"], False),
        (["AtariWrapper"], False),
        ([3], False),
        ([{"a.B": {}, "c.D": {}}], False),
    ],
)
def test_wrapper_allow_list(env_wrapper, allowed) -> None:
    if allowed:
        check_wrappers(env_wrapper, "config.yml")
    else:
        with pytest.raises(PolicyKDError, match=f"config.yml names the env wrapper .*{TRUST}"):
            check_wrappers(env_wrapper, "config.yml")


# -- rl-zoo folders ----------------------------------------------------------------------------------


def test_zoo_config_naming_a_wrapper_is_refused_at_load(sb3_expert, zoo_run_dir, evil_module, tmp_path) -> None:
    name, marker = evil_module
    _, zip_path = sb3_expert("ppo", "CartPole-v1")
    run_dir = zoo_run_dir(tmp_path / "zoo", "ppo", "CartPole-v1", zip_path, config={"env_wrapper": [f"{name}.Wrapper"]})
    with pytest.raises(PolicyKDError) as excinfo:
        load_teacher(run_dir)
    _assert_refused(excinfo, f"{name}.Wrapper", marker)
    assert "config.yml" in str(excinfo.value)
    teacher = load_teacher(run_dir, trust_pickles=True)  # the user trusts this folder
    assert teacher.recipe.trusted
    make_vec_env(teacher.recipe, 1, 0).close()
    assert marker.exists()


def test_evil_zoo_config_is_refused(sb3_expert, zoo_run_dir, tmp_path) -> None:
    _, zip_path = sb3_expert("ppo", "CartPole-v1")
    run_dir = zoo_run_dir(tmp_path, "ppo", "CartPole-v1", zip_path)
    marker = tmp_path / "ran"
    (run_dir / "CartPole-v1" / "config.yml").write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    for trust in (False, True):  # YAML never builds python objects, trusted or not
        with pytest.raises(PolicyKDError) as excinfo:
            load_teacher(run_dir, trust_pickles=trust)
        message = str(excinfo.value)
        assert "os.system" in message and "config.yml" in message and "\n" not in message
    assert not marker.exists()
    (run_dir / "CartPole-v1" / "config.yml").write_text(yaml.dump({"env_kwargs": {"x": "!!python/name:os.system"}}))
    assert load_teacher(run_dir, env_id="CartPole-v1").recipe.env_kwargs == {"x": "!!python/name:os.system"}


# -- every shipped expert ----------------------------------------------------------------------------


@pytest.mark.parametrize("run_dir", SHIPPED, ids=[f"{p.parent.name}/{p.name}" for p in SHIPPED])
def test_shipped_expert_reads_as_sb3_reads_it(run_dir, recwarn) -> None:
    """Every entry of every shipped zip unpickles through the allow-list to what SB3's own
    json_to_data gives, with no entry left out, and policy.pth to SB3's state dict."""
    from stable_baselines3.common.save_util import json_to_data, load_from_zip_file

    zip_path = next(run_dir.glob("*.zip"))
    text = zipfile.ZipFile(zip_path).read("data").decode()
    ours = zip_data(text, _CUSTOM_OBJECTS, source=str(zip_path))
    theirs = json_to_data(text, _CUSTOM_OBJECTS)
    assert ours.keys() == theirs.keys() and not [w for w in recwarn if "deserialize" in str(w.message)]
    for key in theirs.keys() - _CUSTOM_OBJECTS.keys():
        assert _same(theirs[key], ours[key]), key
    _, state = read_sb3_zip(zip_path, _CUSTOM_OBJECTS)
    _, params, _ = load_from_zip_file(zip_path, device="cpu", custom_objects=_CUSTOM_OBJECTS)
    assert state.keys() == params["policy"].keys()
    assert all(torch.equal(state[k], params["policy"][k]) for k in state)


def _probe(teacher) -> np.ndarray:
    space = teacher.observation_space
    rng = np.random.default_rng(0)
    if space.dtype == np.uint8:
        return rng.integers(0, 256, (2, *space.shape), dtype=np.uint8)
    return rng.uniform(np.maximum(space.low, -3), np.minimum(space.high, 3), (8, *space.shape)).astype(np.float32)


@pytest.mark.parametrize("run_dir", SHIPPED, ids=[f"{p.parent.name}/{p.name}" for p in SHIPPED])
def test_shipped_expert_acts_as_before(run_dir) -> None:
    """Loaded through the allow-list, every shipped expert (Atari ones too) labels and acts exactly
    as when loaded with SB3's own unpickling (trust_pickles=True, the loading before issue 16)."""
    safe, trusted = load_teacher(run_dir), load_teacher(run_dir, trust_pickles=True)
    assert (safe.kind, safe.algo, safe.recipe, safe.exploration_rate) == (
        trusted.kind,
        trusted.algo,
        trusted.recipe,
        trusted.exploration_rate,
    )
    assert (safe.normalizer is None) == (trusted.normalizer is None)
    if safe.normalizer is not None:
        np.testing.assert_array_equal(safe.normalizer.mean, trusted.normalizer.mean)
        np.testing.assert_array_equal(safe.normalizer.var, trusted.normalizer.var)
    obs = _probe(safe)
    out, expected = safe(obs), trusted(obs)
    for field in out._fields:
        if isinstance(getattr(out, field), torch.Tensor):
            assert torch.equal(getattr(out, field), getattr(expected, field)), field
    np.testing.assert_array_equal(safe.act(obs), trusted.act(obs))
    stochastic = [t.act(obs, deterministic=False, rng=np.random.default_rng(1)) for t in (safe, trusted)]
    np.testing.assert_array_equal(*stochastic)


# -- the option ---------------------------------------------------------------------------------------


def _job_config(command: str) -> type:
    from policykd.jobs.config import CollectConfig, DistillConfig
    from policykd.jobs.drivers import DriversConfig
    from policykd.jobs.sweep import SweepConfig

    return {"collect": CollectConfig, "distill": DistillConfig, "sweep": SweepConfig, "compare-drivers": DriversConfig}[
        command
    ]


@pytest.mark.parametrize("command", ["collect", "distill", "evaluate", "sweep", "compare-drivers"])
def test_trust_pickles_option_reaches_the_job(command) -> None:
    from policykd.cli import _experiment_config, _parser

    extra = {"collect": ["--out", "b.npz"], "evaluate": ["agents/ppo/CartPole-v1_1"]}.get(command, [])
    for argv, expected in (([command, *extra], False), ([command, *extra, TRUST], True)):
        args = _parser().parse_args(argv)
        if command == "evaluate":
            assert args.trust_pickles is expected
        else:
            config_class = _job_config(command)
            if command == "collect":
                from policykd.cli_options import config_values

                config = config_class(**config_values(args, config_class))
            else:
                config = _experiment_config(args, config_class)
            assert config.trust_pickles is expected
