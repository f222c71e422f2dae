"""SAM2 video propagation of a changing set of tracks, streamed one frame at a time with a bounded memory.

A thin layer over transformers' ``Sam2VideoModel`` and its ``Sam2VideoInferenceSession``: tracks are added from
masks (a keyframe detection), refreshed with a new mask, removed when they end, and every frame is given to the
model as it is decoded (streaming: the session never holds the video). After each frame the session keeps only
what SAM2 attends to later:

- per track, the non-conditioning outputs of the last ``max(num_maskmem, max_object_pointers_in_encoder)``
  frames (7 and 16 for the official models: the memory bank and the object pointers), without their
  full-resolution masks (only needed to encode the frame's memory, which is done by then);
- per track, the ``max_cond_frames`` most recent conditioning frames (keyframe masks);
- no frames (the image features of the current frame only, in the model's one-frame cache).

The outputs are then exactly those of an unbounded session as long as a track has at most ``max_cond_frames``
conditioning frames; beyond that the oldest are forgotten (SAM2 itself attends to every conditioning frame,
which would grow without bound on a long video).

Frames: ``pixels`` is the frame squashed to the model's square (``image_size``², 1024²) and normalised, as the
image pipeline's proposer input; masks come out as low-res logits ``(K, S/4, S/4)`` in that square.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F


class Propagator:
    """Tracks of one video (or one backward pass) in a ``Sam2VideoModel`` session.

    model: a ``Sam2VideoModel``; reverse: propagate towards earlier frames (frame indices decrease);
    max_cond_frames: conditioning frames kept per track (see the module docstring).
    """

    def __init__(self, model, max_cond_frames: int = 3, reverse: bool = False):
        from transformers import Sam2VideoInferenceSession

        self.model = model
        self.reverse = reverse
        self.max_cond_frames = max_cond_frames
        param = next(model.parameters())
        self.session = Sam2VideoInferenceSession(inference_device=param.device, inference_state_device=param.device,
                                                 video_storage_device=param.device, dtype=param.dtype)
        cfg = model.config
        self.window = max(int(cfg.num_maskmem), int(cfg.max_object_pointers_in_encoder))

    @property
    def track_ids(self) -> list[int]:
        """The tracks in the session, in the model's object order."""
        return list(self.session.obj_ids)

    def __len__(self) -> int:
        return len(self.session.obj_ids)

    def add(self, frame: int, track_id: int, mask: torch.Tensor) -> None:
        """Start track ``track_id`` (or refresh it) on ``frame`` from ``mask`` ``(H, W)`` bool (any resolution; it is
        squashed to the model's ``S``² square, bilinear with antialiasing, and binarised at 0.5, as transformers'
        video processor does). Takes effect at the next :meth:`step` on ``frame``."""
        s = self.session
        idx = s.obj_id_to_idx(track_id)
        s.output_dict_per_obj[idx]["non_cond_frame_outputs"].pop(frame, None)  # a refresh replaces a tracked output
        s.frames_tracked_per_obj[idx].pop(frame, None)
        side = int(self.model.config.image_size)
        m = mask.to(s.inference_device)[None, None].float()
        if m.shape[-2:] != (side, side):
            m = F.interpolate(m, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
            m = (m >= 0.5).float()
        s.add_mask_inputs(idx, frame, m)
        if track_id not in s.obj_with_new_inputs:
            s.obj_with_new_inputs.append(track_id)

    def remove(self, track_ids) -> None:
        """Drop tracks (and all their memory) from the session; the others keep theirs."""
        s = self.session
        gone = set(track_ids)
        keep = [i for i in s.obj_ids if i not in gone]
        if len(keep) == len(s.obj_ids):
            return
        per_obj = ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj", "frames_tracked_per_obj")
        old = {name: getattr(s, name) for name in per_obj}
        old_idx = dict(s._obj_id_to_idx)
        s._obj_id_to_idx = OrderedDict((tid, i) for i, tid in enumerate(keep))
        s._obj_idx_to_id = OrderedDict((i, tid) for i, tid in enumerate(keep))
        s.obj_ids = keep
        for name in per_obj:
            setattr(s, name, {i: old[name][old_idx[tid]] for i, tid in enumerate(keep)})
        s.obj_with_new_inputs = [t for t in s.obj_with_new_inputs if t not in gone]

    @torch.inference_mode()
    def step(self, frame: int, pixels: torch.Tensor) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """Segment every track on ``frame`` (``pixels`` ``(3, S, S)`` normalised, the model's dtype and device).

        Returns the track ids, low-res mask logits ``(K, S/4, S/4)`` float32 and SAM2's object-presence logits
        ``(K,)`` float32 (positive: the object is visible). Then forgets what no later frame attends to.
        """
        if not len(self):
            h = self.model.prompt_encoder.mask_input_size[0]
            return [], torch.zeros((0, h, h)), torch.zeros((0,))
        out = self.model(inference_session=self.session, frame_idx=frame, frame=pixels, reverse=self.reverse)
        ids = list(out.object_ids)
        logits = out.pred_masks[:, 0].float()
        scores = out.object_score_logits.reshape(len(ids)).float()
        self._forget(frame)
        return ids, logits, scores

    def _forget(self, frame: int) -> None:
        s = self.session
        s.processed_frames = {}
        sign = -1 if self.reverse else 1
        for idx in range(len(s.obj_ids)):
            outputs = s.output_dict_per_obj[idx]
            for out in (*outputs["non_cond_frame_outputs"].values(), *outputs["cond_frame_outputs"].values()):
                out.pop("high_res_masks", None)
                # transformers (5.24) stores a mask prompt's object pointer as (1, 1, C), a tracked frame's as
                # (1, C); the memory attention stacks both, so give them one shape (the same values).
                out["object_pointer"] = out["object_pointer"].reshape(1, -1)
            old = [f for f in outputs["non_cond_frame_outputs"] if sign * (frame - f) >= self.window]
            for f in old:
                del outputs["non_cond_frame_outputs"][f]
            tracked = s.frames_tracked_per_obj[idx]
            for f in [f for f in tracked if sign * (frame - f) >= self.window]:
                del tracked[f]
            cond = sorted(outputs["cond_frame_outputs"], key=lambda f: sign * f)
            for f in cond[: max(0, len(cond) - self.max_cond_frames)]:
                del outputs["cond_frame_outputs"][f]
            s.mask_inputs_per_obj[idx].clear()

    def memory_frames(self) -> int:
        """Frame outputs held by the session, all tracks together (a bounded number; for tests and benchmarks)."""
        return sum(len(o["non_cond_frame_outputs"]) + len(o["cond_frame_outputs"])
                   for o in self.session.output_dict_per_obj.values())
