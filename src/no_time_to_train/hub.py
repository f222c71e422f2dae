"""Share a memory on the Hugging Face hub: ``nttt hub push MEMORY REPO_ID`` and ``memory="hf://user/repo"``.

A pushed repo holds ``memory.safetensors`` (the file ``save_memory`` writes, unchanged) and a generated
``README.md`` model card: categories with their reference counts, the encoder and its input size, and the
method settings the memory was made with. Loading goes through ``huggingface_hub.hf_hub_download``, so the
normal cache, ``HF_HUB_OFFLINE`` and tokens apply.

``hf://`` sources: ``hf://user/repo``, ``hf://user/repo@revision`` (a branch, tag or commit) and
``hf://user/repo/path/in/repo.safetensors`` (another file than ``memory.safetensors``). Light at import (the
``nttt`` parser imports it): torch comes with the functions that need it.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

from . import __version__
from .errors import InputError

PREFIX = "hf://"
MEMORY_FILE = "memory.safetensors"


def is_hub_source(source: object) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


def parse_source(source: str) -> tuple[str, str, str | None]:
    """``hf://user/repo[@revision][/file]`` -> ``(repo_id, filename, revision)``."""
    rest = source[len(PREFIX):]
    parts = rest.split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise InputError(f"memory {source!r}: expected hf://user/repo (or hf://user/repo@revision, "
                         "hf://user/repo/file.safetensors)")
    repo, revision = parts[1], None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    filename = "/".join(parts[2:]) or MEMORY_FILE
    return f"{parts[0]}/{repo}", filename, revision


def download_memory(source: str) -> Path:
    """The local path of a hub memory (downloaded into the Hugging Face cache, or found there when offline)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id, filename, revision = parse_source(source)
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, library_name="no-time-to-train",
                                    library_version=__version__))
    except LocalEntryNotFoundError as exc:
        raise InputError(f"memory {source!r} is not in the Hugging Face cache and the hub cannot be reached "
                         f"(offline, or HF_HUB_OFFLINE=1): connect once to download it, or download "
                         f"{filename} of {repo_id} and pass the file") from exc
    except HfHubHTTPError as exc:
        raise InputError(f"memory {source!r}: the hub refused {filename} of {repo_id} ({exc}); check the repo "
                         "id, the revision and your token (huggingface-cli login) for a private repo") from exc


def model_card(memory, repo_id: str) -> str:
    """The README.md of a pushed memory (a :class:`~no_time_to_train.memory.ReferenceMemory`): metadata header,
    categories, encoder, settings, usage."""
    from .config import MethodConfig

    counts, negatives = memory.counts(), memory.counts(negative=True)
    enc = memory.encoder or {}
    config = memory.config or {}
    defaults = MethodConfig().to_dict()
    changed = {k: v for k, v in config.items() if defaults.get(k, v) != v or k not in defaults}
    rows = "\n".join(f"| {c['name']} | {c.get('id', '')} | {counts[c['name']]} | {negatives[c['name']]} |"
                     for c in memory.categories)
    settings = "\n".join(f"| `{k}` | `{v}` |" for k, v in sorted(changed.items())) or "| (all the paper's) | |"
    return f"""---
library_name: no-time-to-train
tags:
- no-time-to-train
- reference-memory
- few-shot
- instance-segmentation
---

# {repo_id}

A reference memory of [no-time-to-train](https://pypi.org/project/no-time-to-train/) (training-free,
reference-based instance segmentation, after "No Time to Train!", arXiv 2507.02798): one feature vector per
reference instance, {len(memory)} reference(s) of {len(memory.categories)} categor{'y' if len(memory.categories) == 1 else 'ies'}.
It holds no model weights and no images.

```python
from no_time_to_train import ReferenceSegmenter
seg = ReferenceSegmenter(memory="hf://{repo_id}", encoder="{enc.get('name_or_path') or 'facebook/dinov2-large'}")
detections = seg.predict("image.jpg")
```

or `nttt predict --memory hf://{repo_id} IMAGES -o out` / `nttt label --memory hf://{repo_id} IMAGES -o dataset`.

## Categories

| category | id | references | negative references |
|---|---|---|---|
{rows}

## Encoder

The memory only works with the encoder it was made with (the library checks the fingerprint) at the same input size.

| | |
|---|---|
| model | `{enc.get('name_or_path') or 'unknown'}` |
| type | `{enc.get('model_type')}` |
| feature size | {enc.get('hidden_size')} |
| input size | {enc.get('input_size', config.get('encoder_size'))} |
| fingerprint | `{enc.get('fingerprint')}` |

## Creation settings

Method settings that differ from the paper's defaults (MethodConfig):

| setting | value |
|---|---|
{settings}

Written by no-time-to-train {__version__} on {datetime.date.today().isoformat()}.
"""


def push_memory(path: str | os.PathLike, repo_id: str, *, private: bool = False, token: str | None = None,
                revision: str | None = None, commit_message: str | None = None, api: Any = None) -> str:
    """Upload a memory file and its model card to the model repo ``repo_id`` (created if missing) in one commit.

    Returns the commit URL. ``api``: a ``huggingface_hub.HfApi`` (default: a new one with ``token``).
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    from .memory import ReferenceMemory

    path = Path(path)
    memory = ReferenceMemory.load(path)  # a bad file is refused before anything is sent
    if not len(memory):
        raise InputError(f"memory file {path} holds no references: nothing to share")
    if "/" not in repo_id or repo_id.startswith(PREFIX):
        raise InputError(f"repo id {repo_id!r}: expected user/name (or organisation/name)")
    api = api or HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    card = model_card(memory, repo_id).encode("utf-8")
    info = api.create_commit(repo_id, [CommitOperationAdd(MEMORY_FILE, str(path)),
                                       CommitOperationAdd("README.md", card)],
                             commit_message=commit_message or f"memory: {len(memory)} references of "
                             f"{', '.join(memory.category_names)}", repo_type="model", revision=revision)
    return str(getattr(info, "commit_url", info))


# -- command line ---------------------------------------------------------------------------------------
def cmd_hub_push(args) -> int:
    url = push_memory(args.memory, args.repo_id, private=args.private, token=args.token, revision=args.revision,
                      commit_message=args.message)
    print(f"pushed {args.memory} to {args.repo_id}: {url}\nload it with memory=\"hf://{args.repo_id}\"")
    return 0


def add_hub_parser(subparsers) -> Any:
    """Add ``hub push`` to the ``nttt`` sub-parsers; returns the ``hub`` parser."""
    hub = subparsers.add_parser("hub", help="share memories on the Hugging Face hub")
    sub = hub.add_subparsers(dest="hub_command", required=True, metavar="{push}")
    p = sub.add_parser("push", help="upload a memory file with a generated model card",
                       description="Upload MEMORY as memory.safetensors to the model repo REPO_ID (created if "
                       "missing) with a model card; load it anywhere with memory=\"hf://REPO_ID\" or "
                       "--memory hf://REPO_ID. Uses your hub login (huggingface-cli login) or --token.")
    p.add_argument("memory", type=Path, help="memory file (.safetensors)")
    p.add_argument("repo_id", help="user/name or organisation/name")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--token", help="hub token (default: your login)")
    p.add_argument("--revision", help="branch to commit to (default: main)")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=cmd_hub_push)
    return hub
