"""The memory artifact: prototypes, persistence, size, encoder identity, editing."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from no_time_to_train import InputError, MemoryMismatchError, ReferenceMemory

ENC = {"model_type": "dinov2", "hidden_size": 4, "fingerprint": "abc"}


def _memory():
    mem = ReferenceMemory(encoder=dict(ENC))
    mem.add(torch.tensor([2.0, 0, 0, 0]), 10.0, "dog", 18, image="a.jpg")
    mem.add(torch.tensor([0.0, 1, 0, 0]), 30.0, "dog", 18, image="b.jpg")
    mem.add(torch.tensor([0.0, 0, 3, 0]), 5.0, "cat", 17, image="c.jpg")
    return mem


def test_prototype_is_normalised_mean_of_instance_vectors():
    p = _memory().prototypes("instance-mean")
    assert torch.allclose(p[0], F.normalize(torch.tensor([1.0, 0.5, 0, 0]), dim=0))
    assert torch.allclose(p[1], torch.tensor([0.0, 0, 1, 0]))


def test_pooled_prototype_weights_references_by_mask_mass():
    p = _memory().prototypes("pooled")
    assert torch.allclose(p[0], F.normalize(torch.tensor([20.0, 30, 0, 0]), dim=0))


def test_save_load_round_trip(tmp_path):
    mem = _memory()
    path = mem.save(tmp_path / "m.safetensors")
    back = ReferenceMemory.load(path)
    assert back.category_names == ["dog", "cat"] and back.category_ids == [18, 17]
    assert torch.equal(back.vectors, mem.vectors) and torch.equal(back.weights, mem.weights)
    assert back.references[1] == {"category": "dog", "image": "b.jpg"}
    assert back.encoder == ENC
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["nttt"])
        assert torch.allclose(f.get_tensor("prototypes"), mem.prototypes())
    assert meta["format"] == "nttt-memory/1" and "library_version" in meta


def test_size_per_reference_at_vit_l_is_under_8kb(tmp_path):
    mem = ReferenceMemory(encoder=dict(ENC, hidden_size=1024))
    for c in range(20):
        for k in range(30):
            mem.add(torch.randn(1024), 1.0, f"category-{c}", c, image=f"train2017/{c:012d}{k:02d}.jpg",
                    image_id=100000 + k, annotation_id=9000000 + k)
    path = mem.save(tmp_path / "m.safetensors")
    per_ref = path.stat().st_size / len(mem)
    assert per_ref <= 8 * 1024, per_ref


def test_add_after_load_and_remove_category(tmp_path):
    path = _memory().save(tmp_path / "m.safetensors")
    mem = ReferenceMemory.load(path)
    mem.add(torch.tensor([0.0, 0, 0, 1]), 1.0, "bird")
    assert mem.counts() == {"dog": 2, "cat": 1, "bird": 1}
    assert mem.remove_category("dog") == 2
    assert mem.category_names == ["cat", "bird"] and len(mem) == 2
    assert torch.equal(mem.vectors[0], torch.tensor([0.0, 0, 3, 0]))
    with pytest.raises(InputError, match="unknown category 'dog'"):
        mem.remove_category("dog")


def test_remove_single_reference():
    mem = _memory()
    assert mem.remove_reference(0) == "dog"
    assert mem.counts() == {"dog": 1, "cat": 1} and mem.references[0]["image"] == "b.jpg"
    assert mem.remove_reference(1) == "cat" and mem.category_names == ["dog"]  # last cat gone: category too
    with pytest.raises(InputError, match="no reference 5"):
        mem.remove_reference(5)


def test_encoder_mismatch_is_refused():
    mem = _memory()
    mem.check_encoder(dict(ENC))
    with pytest.raises(MemoryMismatchError, match="rebuild the memory"):
        mem.check_encoder(dict(ENC, fingerprint="zzz"))


def test_bad_memory_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        ReferenceMemory.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="not a no-time-to-train memory"):
        ReferenceMemory.load(bad)


def test_prototypes_need_references():
    mem = ReferenceMemory()
    with pytest.raises(InputError, match="no categories"):
        mem.prototypes()
    mem.add_category("empty")
    mem.add(torch.ones(4), 1.0, "full")
    with pytest.raises(InputError, match="without references: empty"):
        mem.prototypes()


def test_dimension_mismatch_and_non_finite_vectors():
    mem = _memory()
    with pytest.raises(MemoryMismatchError):
        mem.add(torch.ones(5), 1.0, "dog")
    with pytest.raises(InputError, match="non-finite"):
        mem.add(torch.tensor([float("nan"), 0, 0, 0]), 1.0, "dog")


def test_repr_counts_per_category_negatives_and_encoder():
    mem = _memory()
    mem.add(torch.tensor([0.0, 0, 0, 1]), 1.0, "dog", 18, negative=True)
    mem.encoder["name_or_path"] = "facebook/dinov2-large"
    assert repr(mem) == ("ReferenceMemory(categories={dog: 2, cat: 1}, negatives={dog: 1}, "
                         "encoder=facebook/dinov2-large (dim 4))")
    assert repr(ReferenceMemory()) == "ReferenceMemory(categories={})"
