"""The reference memory: one vector per reference, grouped by category, and the class prototypes.

On disk it is a single ``.safetensors`` file: tensors ``vectors (N, D)`` float32 and ``weights (N,)``
(each reference's total patch-mask weight), ``prototypes (C, D)``; plus JSON metadata (categories, where
each reference came from, encoder identity, method config, library version) in the safetensors header.
With ViT-L a reference costs 4 KB of vector plus its metadata line; the original kept 5.6 MB per reference.
"""

from __future__ import annotations

import json
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from . import __version__
from .errors import InputError, MemoryMismatchError
from .resultstore import write_atomic
from .types import counts_text

FORMAT = "nttt-memory/1"


@dataclass
class ReferenceMemory:
    """Per-reference vectors ``(N, D)`` with their category and provenance.

    categories: ordered ``[{"name": str, "id": int}]`` (plus ``"auto_id": True`` where the id was assigned
    automatically, see :meth:`add_category`); a category's label index is its position.
    references: one metadata dict per row of ``vectors`` (``category`` name, ``source`` description).
    encoder: identity of the feature encoder the vectors come from and its input size (see
        ``ReferenceSegmenter.encoder_identity``).
    """

    categories: list[dict] = field(default_factory=list)
    vectors: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    weights: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    references: list[dict] = field(default_factory=list)
    encoder: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    # -- categories ------------------------------------------------------------------------------------
    @property
    def category_names(self) -> list[str]:
        return [c["name"] for c in self.categories]

    @property
    def category_ids(self) -> list[int | None]:
        """Each category's id, in label order: its dataset id, or the automatic one it was given when added
        (None only in a ``categories`` list written by hand)."""
        return [c.get("id") for c in self.categories]

    @property
    def dataset_categories(self) -> list[dict]:
        """The categories whose id comes from a dataset (not assigned automatically)."""
        return [c for c in self.categories if not c.get("auto_id")]

    def add_category(self, name: str, category_id: int | None = None) -> int:
        """Register a category (no-op if present) and return its label index.

        Every category has an id that never depends on the other categories: ``category_id`` (a dataset id),
        or, without one, an automatic id one above the largest id in the memory when it is added, marked
        ``auto_id`` and kept when other categories come or go. A later dataset id replaces an automatic one.
        Two categories never share an id: a ``category_id`` another category holds is refused.
        """
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"category name must be a non-empty string, got {name!r}")
        if category_id is not None and (not isinstance(category_id, numbers.Integral) or isinstance(category_id, bool)):
            raise InputError(f"category {name!r}: the category id must be an integer, got {category_id!r}")
        for i, c in enumerate(self.categories):
            if c["name"] == name:
                if category_id is not None and c.get("id") != category_id:
                    if c.get("id") is not None and not c.get("auto_id"):
                        raise InputError(f"category {name!r} already has id {c['id']}, not {category_id}")
                    self._check_id_free(int(category_id), name)
                    self.categories[i] = {"name": name, "id": int(category_id)}
                return i
        if category_id is None:
            self.categories.append({"name": name, "id": self._next_id(), "auto_id": True})
        else:
            self._check_id_free(int(category_id), name)
            self.categories.append({"name": name, "id": int(category_id)})
        return len(self.categories) - 1

    def _next_id(self) -> int:
        return max((c["id"] for c in self.categories if c.get("id") is not None), default=-1) + 1

    def _check_id_free(self, category_id: int, name: str) -> None:
        for c in self.categories:
            if c.get("id") == category_id and c["name"] != name:
                how = " (given automatically: it was added without an id)" if c.get("auto_id") else ""
                raise InputError(f"category id {category_id} of {name!r} is already the id of {c['name']!r}{how}; "
                                 f"give {c['name']!r} its own id with add_category or remove it first")

    def label_of(self, name: str) -> int:
        for i, c in enumerate(self.categories):
            if c["name"] == name:
                return i
        raise InputError(f"unknown category {name!r}; the memory holds: {', '.join(self.category_names) or 'nothing'}")

    def remove_category(self, name: str) -> int:
        """Drop a category and all its references. Returns the number of references removed."""
        self.label_of(name)
        removed = self._keep_rows([i for i, r in enumerate(self.references) if r["category"] != name])
        self.categories = [c for c in self.categories if c["name"] != name]
        return removed

    def remove_reference(self, row: int) -> str:
        """Drop one reference (a row); a category left without any reference goes too. Returns its category."""
        if not 0 <= row < len(self.references):
            raise InputError(f"no reference {row}: the memory holds {len(self.references)} (rows 0..{len(self.references) - 1})")
        category = self.references[row]["category"]
        self._keep_rows([i for i in range(len(self.references)) if i != row])
        if not any(r["category"] == category for r in self.references):
            self.categories = [c for c in self.categories if c["name"] != category]
        return category

    def _keep_rows(self, keep: list[int]) -> int:
        removed = len(self.references) - len(keep)
        self.vectors = self.vectors[keep] if keep else self.vectors[:0]
        self.weights = self.weights[keep]
        self.references = [self.references[i] for i in keep]
        return removed

    # -- references ------------------------------------------------------------------------------------
    def add(self, vector: torch.Tensor, weight: float, category: str, category_id: int | None = None, **source) -> None:
        """Append one reference vector ``(D,)`` of ``category``; ``source`` describes where it came from."""
        vector = vector.detach().float().cpu().reshape(1, -1)
        if not torch.isfinite(vector).all():
            raise InputError(f"reference of {category!r} ({source or 'no source'}) has a non-finite feature vector")
        if len(self.references) and vector.shape[1] != self.vectors.shape[1]:
            raise MemoryMismatchError(
                f"reference vector has {vector.shape[1]} dims but the memory holds {self.vectors.shape[1]}-dim vectors"
            )
        self.add_category(category, category_id)
        self.vectors = vector if not len(self.references) else torch.cat([self.vectors, vector])
        self.weights = torch.cat([self.weights.float(), torch.tensor([float(weight)])])
        self.references.append({"category": category, **{k: v for k, v in source.items() if v is not None}})

    def __len__(self) -> int:
        return len(self.references)

    def __repr__(self) -> str:
        """``ReferenceMemory(categories={dog: 2, cat: 1}, negatives={dog: 1}, encoder=... (dim 1024))``: the
        references per category (positive ones; negative ones apart)."""
        parts = [f"categories={counts_text(self.counts())}"]
        negatives = {k: v for k, v in self.counts(negative=True).items() if v}
        if negatives:
            parts.append(f"negatives={counts_text(negatives)}")
        enc = self.encoder
        if enc:
            parts.append(f"encoder={enc.get('name_or_path') or enc.get('model_type')} (dim {enc.get('hidden_size')})")
        return f"ReferenceMemory({', '.join(parts)})"

    def counts(self, negative: bool = False) -> dict[str, int]:
        """References per category (positive ones, or the negative examples with ``negative=True``)."""
        out = {n: 0 for n in self.category_names}
        for r in self.references:
            if bool(r.get("negative")) == negative:
                out[r["category"]] += 1
        return out

    def negatives(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Negative examples: label indices ``(M,)`` and L2-normalised vectors ``(M, D)`` (M may be 0)."""
        rows = [i for i, r in enumerate(self.references) if r.get("negative")]
        labels = torch.tensor([self.label_of(self.references[i]["category"]) for i in rows], dtype=torch.long)
        vectors = self.vectors[rows] if rows else torch.zeros(0, self.vectors.shape[1] if len(self) else 0)
        return labels, torch.nn.functional.normalize(vectors, dim=1)

    # -- prototypes ------------------------------------------------------------------------------------
    def prototypes(self, mode: str = "instance-mean") -> torch.Tensor:
        """L2-normalised class prototypes ``(C, D)`` in category order.

        ``"instance-mean"``: normalise(mean_k v_k), the paper's rule (METHOD.md 4). ``"pooled"``: every
        reference weighted by its total mask weight, i.e. all foreground patches count equally.
        """
        empty = [n for n, k in self.counts().items() if k == 0]
        if not self.categories:
            raise InputError("the memory has no categories yet: add references first")
        if empty:
            raise InputError(f"categories without references: {', '.join(empty)}; add references or remove them")
        rows = [i for i, r in enumerate(self.references) if not r.get("negative")]
        labels = torch.tensor([self.label_of(self.references[i]["category"]) for i in rows])
        c = len(self.categories)
        w = torch.ones(len(labels)) if mode == "instance-mean" else self.weights[rows].float()
        sums = torch.zeros(c, self.vectors.shape[1]).index_add_(0, labels, self.vectors[rows] * w[:, None])
        norm = torch.zeros(c).index_add_(0, labels, w)
        mean = sums / norm[:, None]
        return torch.nn.functional.normalize(mean, dim=1)

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the memory atomically (temp file + rename) and return the path."""
        tensors = {
            "vectors": self.vectors.contiguous().float(),
            "weights": self.weights.contiguous().float(),
        }
        if self.references and not any(k == 0 for k in self.counts().values()):
            tensors["prototypes"] = self.prototypes(self.config.get("prototype", "instance-mean")).contiguous()
        meta = {
            "format": FORMAT,
            "library_version": __version__,
            "categories": self.categories,
            "references": self.references,
            "encoder": self.encoder,
            "config": self.config,
        }
        return write_atomic(path, safetensors_bytes(tensors, metadata={"nttt": json.dumps(meta)}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ReferenceMemory":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"memory file {path} not found")
        try:
            tensors = load_file(str(path))

            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
            meta = json.loads(header["nttt"])
        except (SafetensorError, OSError, KeyError, ValueError) as exc:
            raise InputError(f"memory file {path} is not a no-time-to-train memory ({exc})") from exc
        if meta.get("format") != FORMAT:
            raise InputError(f"memory file {path} has format {meta.get('format')!r}, expected {FORMAT!r}")
        try:
            mem = cls(
                categories=_check_categories(meta["categories"]),
                vectors=tensors["vectors"],
                weights=tensors["weights"],
                references=meta["references"],
                encoder=meta.get("encoder", {}),
                config=meta.get("config", {}),
            )
            mem._check_integrity(tensors.get("prototypes"))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"memory file {path} is damaged or was edited by hand ({exc}); rebuild it "
                             f"(nttt fill-memory, or export it again from the app)") from None
        return mem

    def _check_integrity(self, prototypes: torch.Tensor | None) -> None:
        """Refuse tensors and metadata that do not agree (ValueError saying what is wrong)."""
        v, w = self.vectors, self.weights
        if not isinstance(self.references, list) or not all(isinstance(r, dict) for r in self.references):
            raise ValueError("'references' is not a list of records")
        if not isinstance(self.config, dict) or not isinstance(self.encoder, dict):
            raise ValueError("'config' and 'encoder' must be mappings")
        if v.dim() != 2 or w.shape != (v.shape[0],):
            raise ValueError(f"vectors {tuple(v.shape)} and weights {tuple(w.shape)} are not (N, D) and (N,)")
        if len(self.references) != v.shape[0]:
            raise ValueError(f"{v.shape[0]} vectors but {len(self.references)} reference records")
        bad = (~torch.isfinite(v).all(dim=1) | ~torch.isfinite(w) | (w < 0)).nonzero().flatten().tolist()
        if bad:
            raise ValueError(f"references {bad[:5]} have NaN/infinite vectors or invalid weights")
        names = set(self.category_names)
        unknown = sorted({repr(r.get("category")) for r in self.references if r.get("category") not in names})
        if unknown:
            raise ValueError(f"references of unknown categories {', '.join(unknown)}")
        if prototypes is not None:
            expected = self.prototypes(self.config.get("prototype", "instance-mean"))
            if prototypes.shape != expected.shape or not torch.allclose(prototypes, expected, atol=1e-5):
                raise ValueError("the stored prototypes do not match the stored vectors and categories")

    def check_encoder(self, encoder: dict) -> None:
        """Refuse to mix vectors from one encoder, or one input size, with features from another.

        ``encoder``: the current encoder's identity (``ReferenceSegmenter.encoder_identity``: ``describe()``
        plus ``input_size``). A memory written before sizes were recorded takes its config's ``encoder_size``.
        """
        if not self.encoder or not len(self):
            return
        mine, theirs = self.encoder.get("fingerprint"), encoder.get("fingerprint")
        if mine != theirs:
            raise MemoryMismatchError(
                f"this memory was built with encoder {_encoder_name(self.encoder)} (fingerprint {mine}), but the "
                f"current encoder is {_encoder_name(encoder)} (fingerprint {theirs}); rebuild the memory with the "
                "current encoder or load the original one"
            )
        size, current = self.encoder.get("input_size", self.config.get("encoder_size")), encoder.get("input_size")
        if isinstance(size, int) and isinstance(current, int) and size != current:
            raise MemoryMismatchError(
                f"this memory was built with encoder {_encoder_name(self.encoder)} at input size {size}, but the "
                f"current encoder input size is {current}; use --encoder-size {size} (Python: "
                f"MethodConfig(encoder_size={size})) or rebuild the memory at {current}"
            )


def _encoder_name(encoder: dict) -> str:
    """``name (model_type, dim D)`` of an encoder identity, for messages."""
    name = encoder.get("name_or_path") or encoder.get("model_type")
    return f"{name} ({encoder.get('model_type')}, dim {encoder.get('hidden_size')})"


def _check_categories(categories: object) -> list[dict]:
    """The categories of a memory file, checked: unique non-empty names, unique integer ids.

    Files written before every category had an id may hold ``"id": null``: such a category gets an automatic
    id here, above the file's dataset ids, as :meth:`ReferenceMemory.add_category` would give it.
    """
    if not isinstance(categories, list) or not all(isinstance(c, dict) for c in categories):
        raise ValueError("'categories' is not a list of {name, id} records")
    mem = ReferenceMemory()
    try:
        for c in sorted(categories, key=lambda c: c.get("id") is None):  # ids first, then the id-less
            if c.get("name") in mem.category_names:
                raise ValueError(f"category {c['name']!r} is listed twice")
            mem.add_category(c.get("name"), c.get("id"))
            if c.get("auto_id"):
                mem.categories[-1]["auto_id"] = True
    except InputError as exc:
        raise ValueError(str(exc)) from None
    by_name = {c["name"]: c for c in mem.categories}
    return [by_name[c["name"]] for c in categories]
