"""Sharing memories on the hub (``hub.py``): push through a stand-in HfApi, load from a local hub-style cache.

No network: the push goes to a recording stand-in of ``huggingface_hub.HfApi`` (the code path up to the hub
client), and ``hf://`` loading reads a cache laid out as ``huggingface_hub`` lays it out, with HF_HUB_OFFLINE.
"""

from __future__ import annotations

import pytest
import torch

from no_time_to_train import cli
from no_time_to_train.errors import InputError
from no_time_to_train.hub import MEMORY_FILE, model_card, parse_source, push_memory
from no_time_to_train.memory import ReferenceMemory


class FakeApi:
    """Records what would be sent to the hub."""

    def __init__(self, token=None):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        files = {}
        for op in operations:
            src = op.path_or_fileobj
            files[op.path_in_repo] = src if isinstance(src, bytes) else open(src, "rb").read()
        self.calls.append(("create_commit", repo_id, files, kwargs))
        return type("Info", (), {"commit_url": f"https://hub.example/{repo_id}/commit/abc"})()


@pytest.fixture
def memory_file(tmp_path):
    mem = ReferenceMemory(config={"points_per_side": 16, "encoder_size": 518},
                          encoder={"name_or_path": "facebook/dinov2-large", "model_type": "dinov2",
                                   "hidden_size": 4, "fingerprint": "f00d", "input_size": 518})
    mem.add_category("dog", 18)
    for k, (cat, neg) in enumerate([("dog", False), ("dog", False), ("cat", False), ("dog", True)]):
        mem.add(torch.arange(4.0) + k, 1.0, cat, None, negative=True if neg else None)
    return mem.save(tmp_path / "m.safetensors")


def test_push_sends_the_file_and_a_model_card_in_one_commit(memory_file):
    api = FakeApi()
    url = push_memory(memory_file, "me/dogs", private=True, api=api)
    assert url == "https://hub.example/me/dogs/commit/abc"
    (kind, repo, kwargs), (kind2, repo2, files, commit) = api.calls
    assert (kind, repo, kwargs["private"], kwargs["exist_ok"]) == ("create_repo", "me/dogs", True, True)
    assert kind2 == "create_commit" and repo2 == "me/dogs" and sorted(files) == ["README.md", MEMORY_FILE]
    assert files[MEMORY_FILE] == memory_file.read_bytes()
    card = files["README.md"].decode()
    assert card.startswith("---\nlibrary_name: no-time-to-train\n")
    assert "| dog | 18 | 2 | 1 |" in card and "| cat | 19 | 1 | 0 |" in card  # positives, negatives
    assert "`facebook/dinov2-large`" in card and "| input size | 518 |" in card
    assert "| `points_per_side` | `16` |" in card and "encoder_size" not in card.split("## Creation")[1]
    assert 'memory="hf://me/dogs"' in card
    assert commit["commit_message"] == "memory: 4 references of dog, cat"


def test_push_refuses_bad_input_before_sending(memory_file, tmp_path):
    api = FakeApi()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    with pytest.raises(InputError, match="not a no-time-to-train memory"):
        push_memory(bad, "me/x", api=api)
    with pytest.raises(InputError, match="expected user/name"):
        push_memory(memory_file, "justaname", api=api)
    assert api.calls == []


def test_cli_hub_push(memory_file, monkeypatch, capsys):
    from no_time_to_train import hub

    made = []
    monkeypatch.setattr("huggingface_hub.HfApi", lambda token=None: made.append(FakeApi(token)) or made[-1])
    assert cli.main(["hub", "push", str(memory_file), "me/dogs", "--message", "first"]) == 0
    assert made[0].calls[1][3]["commit_message"] == "first"
    assert 'load it with memory="hf://me/dogs"' in capsys.readouterr().out
    assert hub.is_hub_source("hf://me/dogs") and not hub.is_hub_source("m.safetensors")


def _cache(hub_dir, repo_id, files: dict, commit="0" * 40, ref="main"):
    """A Hugging Face hub cache entry: models--user--name/{refs/<ref>, snapshots/<commit>/<file>}."""
    root = hub_dir / ("models--" + repo_id.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    for name, data in files.items():
        p = root / "snapshots" / commit / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def test_segmenter_loads_hf_memory_from_the_cache(offline_empty_cache, memory_file, tmp_path):
    from no_time_to_train import ReferenceSegmenter

    _cache(tmp_path / "hub", "me/dogs", {MEMORY_FILE: memory_file.read_bytes(), "other/m.safetensors":
                                         memory_file.read_bytes()})
    seg = ReferenceSegmenter(memory="hf://me/dogs")
    assert seg.categories == ["dog", "cat"] and len(seg.memory) == 4
    assert torch.equal(seg.memory.vectors, ReferenceMemory.load(memory_file).vectors)
    assert ReferenceSegmenter(memory="hf://me/dogs/other/m.safetensors").categories == ["dog", "cat"]
    with pytest.raises(InputError, match="not in the Hugging Face cache and the hub cannot be reached"):
        ReferenceSegmenter(memory="hf://me/cats")


def test_cli_memory_hf_source_resolves_through_the_cache(offline_empty_cache, memory_file, tmp_path, capsys):
    _cache(tmp_path / "hub", "me/dogs", {MEMORY_FILE: memory_file.read_bytes()}, commit="1" * 40, ref="v1")
    args = cli.build_parser().parse_args(["label", "x.jpg", "--memory", "hf://me/dogs@v1", "-o", "d"])
    assert args.memory == "hf://me/dogs@v1"
    assert cli.main(["postprocess-memory", str(memory_file)]) == 0  # a plain path is untouched
    assert cli.main(["label", str(tmp_path / "missing.jpg"), "--memory", "hf://me/none", "-o",
                     str(tmp_path / "d")]) == 2
    assert "memory 'hf://me/none' is not in the Hugging Face cache" in capsys.readouterr().err


def test_parse_source():
    assert parse_source("hf://me/dogs") == ("me/dogs", MEMORY_FILE, None)
    assert parse_source("hf://me/dogs@v2/sub/x.safetensors") == ("me/dogs", "sub/x.safetensors", "v2")
    with pytest.raises(InputError, match="expected hf://user/repo"):
        parse_source("hf://dogs")
    card = model_card(ReferenceMemory(), "me/empty")
    assert "0 reference(s) of 0 categories" in card and "| (all the paper's) | |" in card
