"""The memory artifact: prototypes, persistence, size, encoder identity, editing."""

import json

import numpy as np
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


def test_input_size_mismatch_is_refused_naming_both_sizes():
    mem = _memory()
    mem.encoder = dict(ENC, input_size=592)
    mem.check_encoder(dict(ENC, input_size=592))
    with pytest.raises(MemoryMismatchError, match=r"input size 592.*input size is 448.*--encoder-size 592"):
        mem.check_encoder(dict(ENC, input_size=448))
    # a memory written before sizes were recorded: its config's encoder_size stands in
    mem.encoder, mem.config = dict(ENC), {"encoder_size": 518}
    mem.check_encoder(dict(ENC, input_size=518))
    with pytest.raises(MemoryMismatchError, match=r"input size 518.*input size is 592"):
        mem.check_encoder(dict(ENC, input_size=592))


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


def test_id_less_category_gets_its_own_stable_id_above_the_others(tmp_path):
    from no_time_to_train import Detections

    mem = _memory()  # dog 18, cat 17
    mem.add(torch.tensor([0.0, 0, 0, 1]), 1.0, "my mug")  # added in the app: no dataset id
    assert mem.category_ids == [18, 17, 19] and mem.categories[2]["auto_id"] is True
    assert [c["name"] for c in mem.dataset_categories] == ["dog", "cat"]
    # the COCO export keeps the dataset ids (it used to switch every category to its label index)
    dets = Detections(np.zeros((3, 2, 2), bool), np.zeros((3, 4), np.float32), np.array([0.9, 0.8, 0.7], np.float32),
                      np.array([0, 1, 2]), mem.category_names, mem.category_ids)
    assert [r["category_id"] for r in dets.to_coco(1)] == [18, 17, 19]
    # ids never depend on the other categories: removing or adding one changes no other id
    mem.remove_category("dog")
    mem.add(torch.tensor([1.0, 1, 0, 0]), 1.0, "my cup")
    assert mem.category_ids == [17, 19, 20]
    back = ReferenceMemory.load(mem.save(tmp_path / "m.safetensors"))
    assert back.category_ids == [17, 19, 20] and back.categories[1] == {"name": "my mug", "id": 19, "auto_id": True}


def test_category_ids_never_collide():
    mem = _memory()
    mem.add(torch.ones(4), 1.0, "my mug")  # auto id 19
    with pytest.raises(InputError, match=r"category id 19 of 'horse' is already the id of 'my mug' \(given automatically"):
        mem.add(torch.ones(4), 1.0, "horse", 19)
    with pytest.raises(InputError, match="category id 17 of 'bird' is already the id of 'cat'"):
        mem.add_category("bird", 17)
    with pytest.raises(InputError, match="already has id 18, not 5"):
        mem.add_category("dog", 5)
    with pytest.raises(InputError, match="must be an integer"):
        mem.add_category("bird", "16")
    assert mem.add_category("my mug", 44) == 2  # a dataset id replaces the automatic one
    assert mem.categories[2] == {"name": "my mug", "id": 44}
    assert ReferenceMemory().add_category("first") == 0 and ReferenceMemory().category_ids == []


def _edit_header(path, edit):
    """Rewrite a memory file's JSON header with ``edit(meta)`` (what a hand edit does), tensors unchanged."""
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["nttt"])
    tensors = load_file(str(path))
    out = edit(meta, tensors)
    tensors = out if isinstance(out, dict) and "vectors" in out else tensors  # edits may return new tensors
    save_file(tensors, str(path), metadata={"nttt": json.dumps(meta)})


def test_old_files_without_ids_get_automatic_ids_above_the_dataset_ids(tmp_path):
    path = _memory().save(tmp_path / "m.safetensors")

    def drop_dog_id(meta, tensors):
        meta["categories"][0]["id"] = None  # as written before every category had an id
        meta["categories"][1]["id"] = 0

    _edit_header(path, drop_dog_id)
    mem = ReferenceMemory.load(path)
    assert mem.category_names == ["dog", "cat"] and mem.category_ids == [1, 0]
    assert mem.categories[0]["auto_id"] and not mem.categories[1].get("auto_id")


@pytest.mark.parametrize("edit,message", [
    (lambda m, t: t["vectors"].__setitem__((1, 2), float("nan")), r"references \[1\] have NaN/infinite vectors"),
    (lambda m, t: t["vectors"].__setitem__((0, 0), float("inf")), r"references \[0\] have NaN/infinite"),
    (lambda m, t: t["weights"].__setitem__(2, -1.0), r"references \[2\] have .* invalid weights"),
    (lambda m, t: {**t, "weights": t["weights"][:2]}, r"are not \(N, D\) and \(N,\)"),
    (lambda m, t: m["references"].pop(), "3 vectors but 2 reference records"),
    (lambda m, t: m["references"][0].update(category="cow"), "unknown categories 'cow'"),
    (lambda m, t: m["references"][1].update(category="cat"), "stored prototypes do not match"),
    (lambda m, t: m["categories"].append(dict(m["categories"][0])), "listed twice"),
    (lambda m, t: m["categories"][1].update(id=18), "already the id of 'dog'"),
    (lambda m, t: m["categories"][1].update(name=""), "non-empty string"),
    (lambda m, t: m.update(categories={"dog": 18}), "not a list of"),
    (lambda m, t: m.update(references=None), "not a list of records"),
    (lambda m, t: m.pop("references"), "'references'"),
])
def test_damaged_or_hand_edited_memory_is_refused_naming_the_file(tmp_path, edit, message):
    path = _memory().save(tmp_path / "m.safetensors")
    _edit_header(path, edit)
    with pytest.raises(InputError, match=rf"memory file .*m\.safetensors is damaged or was edited by hand \(.*{message}"):
        ReferenceMemory.load(path)


def test_repr_counts_per_category_negatives_and_encoder():
    mem = _memory()
    mem.add(torch.tensor([0.0, 0, 0, 1]), 1.0, "dog", 18, negative=True)
    mem.encoder["name_or_path"] = "facebook/dinov2-large"
    assert repr(mem) == ("ReferenceMemory(categories={dog: 2, cat: 1}, negatives={dog: 1}, "
                         "encoder=facebook/dinov2-large (dim 4))")
    assert repr(ReferenceMemory()) == "ReferenceMemory(categories={})"
