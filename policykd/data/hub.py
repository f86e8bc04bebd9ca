"""Resolve a Hugging Face hub id (``sb3/ppo-CartPole-v1``) to a local rl-zoo folder.

The files are fetched with ``huggingface_hub.hf_hub_download``, which serves them from the local
cache when it holds them (always, with ``HF_HUB_OFFLINE=1``), so the same code works on a machine
without network once the cache is filled. The files are then laid out the way rl-zoo lays out its
own runs, ``<algo>/<EnvId>_1/<EnvId>.zip`` + ``<EnvId>/config.yml`` (+ ``vecnormalize.pkl``), and
loaded like any zoo folder: so a download's pickles go through the same allow-list
(policykd.data.safe_pickle) and its ``config.yml`` names env wrappers from the same allow-list.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from policykd.errors import PolicyKDError

# The env part starts with a letter or digit, so that no id names "." or ".." as a folder.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/(?P<algo>[a-z0-9]+)-(?P<env>[A-Za-z0-9][\w.-]*)$")
DEFAULT_HUB_DIR = Path.home() / ".cache" / "policykd" / "hub"


@contextlib.contextmanager
def _quiet_hub_logs() -> Iterator[None]:
    """huggingface_hub logs a warning for each retry of a failed request (a dozen lines without
    network); what failed is raised as one PolicyKDError instead."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def is_hub_id(source: str) -> bool:
    return bool(_HUB_ID.match(source)) and not source.endswith(".zip")


def env_id_from_name(env_part: str) -> str:
    """The hub and rl-zoo write ``ALE/Pong-v5`` as ``ALE-Pong-v5`` (huggingface_sb3.EnvironmentName)."""
    return "ALE/" + env_part[4:] if env_part.startswith("ALE-") else env_part


def resolve_hub_id(repo_id: str, *, hub_dir: Path | None = None) -> Path:
    """Download (or read from cache) an SB3 hub repo and return its rl-zoo-style folder."""
    match = _HUB_ID.match(repo_id)
    if match is None:
        raise PolicyKDError(f"{repo_id!r} is not a hub id like 'sb3/ppo-CartPole-v1'")
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:
        raise PolicyKDError("loading from the hub needs huggingface_hub: pip install 'policykd[zoo]'") from None
    algo, env_part = match["algo"], match["env"]
    env_id = env_id_from_name(env_part)
    model_name = f"{algo}-{env_part}"

    def fetch(filename: str, required: bool) -> Path | None:
        try:
            with _quiet_hub_logs():  # one line on failure, not a warning per retry
                return Path(hf_hub_download(repo_id=repo_id, filename=filename, library_name="policykd"))
        except (EntryNotFoundError, LocalEntryNotFoundError) as err:
            if required:
                raise PolicyKDError(
                    f"cannot get {filename} of {repo_id} from the hub or its local cache ({type(err).__name__}); "
                    "check the id, the network, or HF_HUB_CACHE"
                ) from None
            return None
        except Exception as err:  # noqa: BLE001 - network errors come in many types
            if required:
                raise PolicyKDError(f"cannot get {repo_id} from the hub: {err}") from None
            return None

    model_zip = fetch(f"{model_name}.zip", required=True)
    env_name = env_id.replace("/", "-")
    run_dir = (hub_dir or DEFAULT_HUB_DIR) / repo_id.split("/")[0] / algo / f"{env_name}_1"
    params_dir = run_dir / env_name
    params_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_zip, run_dir / f"{env_name}.zip")
    # hub file -> where rl_zoo3.load_from_hub puts it. A file the repo lacks is removed here, so an
    # earlier resolution (another revision) leaves nothing stale behind.
    optional_files = {
        "config.yml": "config.yml",
        "env_kwargs.yml": "env_kwargs.yml",
        "vec_normalize.pkl": "vecnormalize.pkl",
    }
    for hub_name, local_name in optional_files.items():
        downloaded = fetch(hub_name, required=False)
        if downloaded is None:
            (params_dir / local_name).unlink(missing_ok=True)
        else:
            shutil.copyfile(downloaded, params_dir / local_name)
    return run_dir
