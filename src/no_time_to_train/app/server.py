"""The Gradio page of ``nttt serve``: make references with a few clicks, segment images, export the results.

The page has three tabs:

* **References**: upload an image and click on the object. Each click prompts SAM2 at once and the mask is
  shown over the image (blue), the clicks as green (positive) / red (negative) dots. "Box (two corners)" mode
  makes a box from two clicks on opposite corners (Gradio's image reports clicks, not drags). A mask image
  can be uploaded instead. Name the category and press "Add reference". Every reference in the memory is
  shown as a thumbnail, grouped by category; a category or a single reference can be removed.
* **Segment**: upload target images and press "Segment". Overlays show each detection in its category's
  colour with name and score; the score slider filters the cached detections without recomputing them.
* **Review** (in the *Segment* tab): pick a segmented image and click on it: reject a detection (it becomes a negative reference of
  its category), accept one (a positive reference), or click an object the method missed (SAM2 makes its mask
  from the click; it becomes a reference and an object of the reviewed image). "Re-segment" runs the images
  again with the updated memory and outlines what changed (yellow: new, red: gone); the reviewed images can
  be downloaded as a dataset (COCO, YOLO, Label Studio, CVAT).
* **Export / load**: the memory file (``.safetensors``), the COCO results JSON, the mask PNGs (zip); a saved
  memory file can be loaded to continue.

The state lives in one :class:`~no_time_to_train.app.session.Workspace` per server, shared by every tab of
the browser (a local, single-user tool); the reference being drawn is per tab.
"""

from __future__ import annotations

import inspect
import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402  (a Gradio dependency)

from ..errors import InputError, NtttError  # noqa: E402
from ..runlock import RunLock  # noqa: E402
from .session import BOX, CLICK_MODES, POSITIVE, REVIEW_ACTIONS, TABLE_COLUMNS, Draft, Workspace, draft_view, user_message  # noqa: E402

log = logging.getLogger(__name__)

GRADIO_MAJOR = int(gr.__version__.split(".")[0])

INTRO = """# no-time-to-train
Training-free reference-based instance segmentation (SAM2 + DINOv2). **1.** Make a few references: upload an
image, click on an object, name its category, *Add reference*. **2.** Segment new images. **3.** Export."""

CSS = """
#ref-image img { cursor: crosshair; }
"""


def _theme():
    """Gradio's default look with local fonts only (the page works without internet access)."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def _supported(component, **kwargs) -> dict:
    """The keyword arguments that this Gradio version's ``component`` accepts (the API moves between majors)."""
    params = inspect.signature(component.__init__).parameters
    return {k: v for k, v in kwargs.items() if k in params}


def _log_unexpected(exc: BaseException) -> None:
    """Log the traceback of a failure that is not the user's mistake (a user mistake is an NtttError)."""
    if not isinstance(exc, NtttError):
        log.error("app action failed", exc_info=exc)


def _fail(exc: BaseException):
    """Show an error in the page (a toast that must be closed), keeping the app alive.

    The server log gets a traceback only for unexpected failures, once (Gradio is told not to print one).
    """
    _log_unexpected(exc)
    raise gr.Error(user_message(exc), **_supported(gr.Error, print_exception=False)) from exc


def _warn(exc: BaseException) -> None:
    """Show a problem in the page as a warning toast and carry on."""
    _log_unexpected(exc)
    gr.Warning(user_message(exc))


def build_app(segmenter, *, workdir=None, score_threshold: float | None = None, autosave: bool = False) -> gr.Blocks:
    """The app's ``gr.Blocks`` over ``segmenter`` (a ReferenceSegmenter; its memory is the app's memory).

    workdir: where exports are written (default: a new temporary folder). score_threshold: the slider's
    starting value (default: the config's ``score_threshold``, else 0.3). autosave: keep the memory in
    ``workdir`` after every change (see :class:`Workspace`). The workspace is ``app.workspace``.
    """
    ws = Workspace(segmenter, workdir=workdir, autosave=autosave)
    if score_threshold is None:
        score_threshold = segmenter.config.score_threshold if segmenter.config.score_threshold is not None else 0.3

    # -- reference outputs -----------------------------------------------------------------------------
    def draft_outputs(draft: Draft):
        return draft, draft_view(draft), draft.describe()

    def memory_outputs():
        cats = ws.categories
        return (ws.gallery(), ws.summary(),
                gr.update(choices=cats, value=cats[0] if cats else None), None, "")

    def on_upload(path):
        try:
            draft = ws.new_draft(path)
        except Exception as exc:
            _fail(exc)
        return draft_outputs(draft)

    def on_clear_image():
        return draft_outputs(Draft())

    def on_click(draft: Draft, mode: str, evt: gr.SelectData):
        if draft is None or draft.image is None:
            _fail(InputError("upload a reference image first"))
        x, y = evt.index[0], evt.index[1]
        try:
            ws.click(draft, x, y, mode)
        except Exception as exc:  # e.g. SAM2 found nothing: keep the click, say so
            _warn(exc)
        return draft_outputs(draft)

    def on_undo(draft: Draft):
        try:
            ws.undo(draft)
        except Exception as exc:
            _warn(exc)
        return draft_outputs(draft)

    def on_clear_prompts(draft: Draft):
        draft.clear_prompts()
        return draft_outputs(draft)

    def on_mask(draft: Draft, path):
        try:
            ws.set_mask(draft, path)
        except Exception as exc:
            _fail(exc)
        return draft_outputs(draft)

    def on_add(draft: Draft, category: str, negative: bool, progress=gr.Progress()):
        progress(0.1, desc="encoding the reference with DINOv2")
        try:
            ws.add_reference(draft, category, negative)
        except Exception as exc:
            _fail(exc)
        gr.Info(f"added a reference of {category.strip()!r}")
        return (*draft_outputs(draft), *memory_outputs())

    def on_remove_category(name):
        if not name:
            _fail(InputError("choose a category to remove"))
        try:
            n = ws.remove_category(name)
        except Exception as exc:
            _fail(exc)
        gr.Info(f"removed {name!r} ({n} reference(s))")
        return memory_outputs()

    def on_gallery_select(evt: gr.SelectData):
        caption = (evt.value or {}).get("caption") if isinstance(evt.value, dict) else None
        return evt.index, f"Selected: **{caption or f'reference {evt.index + 1}'}**"

    def on_remove_reference(position):
        if position is None:
            _fail(InputError("click a thumbnail in the gallery first, then remove it"))
        try:
            category = ws.remove_reference(ws.gallery_index(int(position)))
        except Exception as exc:
            _fail(exc)
        gr.Info(f"removed a reference of {category!r}")
        return memory_outputs()

    # -- segmentation outputs --------------------------------------------------------------------------
    def results_outputs(threshold: float):
        shown, total = ws.counts(threshold)
        if not ws.results:
            status = "No results yet: upload target images and press *Segment*."
        else:
            status = (f"{len(ws.results)} image(s): {shown} of {total} detection(s) score above "
                      f"{threshold:.2f}.")
            if ws.stale:
                status += " **The references changed since: press *Segment* again to update.**"
        table = pd.DataFrame(ws.table(threshold), columns=TABLE_COLUMNS)
        return ws.overlays(threshold), table, status

    def on_segment(files, threshold, progress=gr.Progress()):
        paths = [getattr(f, "name", f) for f in (files or [])]
        try:
            errors = ws.segment(paths, progress=lambda frac, desc: progress(frac, desc=desc))
        except Exception as exc:
            _fail(exc)
        for msg in errors:
            gr.Warning(f"skipped {msg}")
        return results_outputs(threshold)

    def on_threshold(threshold):
        return results_outputs(threshold)

    # -- review ----------------------------------------------------------------------------------------
    def review_outputs(index, threshold: float, message: str = ""):
        names = [r.name for r in ws.results]
        if not names:
            return gr.update(choices=[], value=None), None, "No results yet: segment some images first."
        index = min(int(index or 0), len(names) - 1)
        text = (message + "\n\n" if message else "") + ws.review_summary(threshold)
        return gr.update(choices=[(n, i) for i, n in enumerate(names)], value=index), ws.review_view(index, threshold), text

    def on_review_click(index, action, category, threshold, evt: gr.SelectData):
        try:
            message = ws.review(int(index or 0), evt.index[0], evt.index[1], action, category, threshold)
        except Exception as exc:
            _fail(exc)
        return (*review_outputs(index, threshold, message), *memory_outputs())

    def on_resegment(index, threshold, progress=gr.Progress()):
        try:
            changes = ws.resegment(progress=lambda frac, desc: progress(frac, desc=desc))
        except Exception as exc:
            _fail(exc)
        message = "Re-segmented: " + ", ".join(f"{c['image']} +{c['added']} / -{c['removed']}" for c in changes)
        return (*review_outputs(index, threshold, message), *results_outputs(threshold))

    def on_export_dataset(formats, threshold):
        try:
            return str(ws.export_dataset(formats or ["coco"], threshold))
        except Exception as exc:
            _fail(exc)

    # -- export / load ---------------------------------------------------------------------------------
    def on_save_memory():
        try:
            return str(ws.save_memory())
        except Exception as exc:
            _fail(exc)

    def on_export_results(threshold):
        try:
            return str(ws.export_results(threshold))
        except Exception as exc:
            _fail(exc)

    def on_export_masks(threshold, progress=gr.Progress()):
        progress(0.0, desc="writing mask PNGs")
        try:
            return str(ws.export_masks(threshold))
        except Exception as exc:
            _fail(exc)

    def on_load_memory(file, threshold):
        if file is None:
            return (*memory_outputs(), *results_outputs(threshold))
        try:
            n = ws.load_memory(getattr(file, "name", file))
        except Exception as exc:
            _fail(exc)
        gr.Info(f"loaded a memory of {n} reference(s)")
        return (*memory_outputs(), *results_outputs(threshold))

    def on_load(threshold):
        return (*memory_outputs(), *results_outputs(threshold))

    # -- layout ----------------------------------------------------------------------------------------
    blocks_kwargs = {"title": "no-time-to-train"}
    if GRADIO_MAJOR < 6:  # Gradio 6 takes the theme and CSS in launch()
        blocks_kwargs.update(theme=_theme(), css=CSS)
    with gr.Blocks(**blocks_kwargs) as demo:
        draft_state = gr.State(Draft())
        selected = gr.State(None)
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab("1. References", id="references"):
                with gr.Row():
                    with gr.Column(scale=3):
                        ref_image = gr.Image(label="Reference image: click on the object", type="filepath",
                                             sources=["upload", "clipboard"], elem_id="ref-image",
                                             height=480)
                        draft_info = gr.Markdown(Draft().describe(), elem_id="draft-info")
                    with gr.Column(scale=2):
                        mode = gr.Radio(list(CLICK_MODES), value=POSITIVE, label="A click adds",
                                        elem_id="click-mode",
                                        info=f"'{BOX}': click one corner, then the opposite one")
                        with gr.Row():
                            undo_btn = gr.Button("Undo click", elem_id="undo", size="sm")
                            clear_btn = gr.Button("Clear prompts", elem_id="clear-prompts", size="sm")
                        mask_btn = gr.UploadButton("…or upload a mask image", file_types=["image"],
                                                   elem_id="mask-upload", size="sm")
                        category = gr.Textbox(label="Category", placeholder="e.g. dog", elem_id="category")
                        negative = gr.Checkbox(label="Negative example (something this category is not)",
                                               value=False, elem_id="negative")
                        add_btn = gr.Button("Add reference", variant="primary", elem_id="add-reference")
                summary = gr.Markdown(ws.summary(), elem_id="memory-summary")
                gallery = gr.Gallery(label="References in the memory (grouped by category; click one to "
                                     "select it)", columns=8, height=200, allow_preview=False,
                                     elem_id="ref-gallery", object_fit="contain", interactive=False,
                                     **_supported(gr.Gallery, fit_columns=False))
                with gr.Row():
                    remove_choice = gr.Dropdown(label="Category", choices=[], elem_id="remove-choice",
                                                scale=2)
                    remove_cat_btn = gr.Button("Remove category", elem_id="remove-category", variant="stop",
                                               scale=1)
                    with gr.Column(scale=1, min_width=160):
                        remove_ref_btn = gr.Button("Remove selected reference", elem_id="remove-reference")
                        selected_info = gr.Markdown("", elem_id="selected-reference")
            with gr.Tab("2. Segment", id="segment"):
                with gr.Row():
                    with gr.Column(scale=1):
                        targets = gr.File(label="Target images", file_count="multiple", file_types=["image"],
                                          elem_id="targets")
                        run_btn = gr.Button("Segment", variant="primary", elem_id="segment")
                        threshold = gr.Slider(0.0, 1.0, value=float(score_threshold), step=0.01,
                                              label="Show detections scoring above", elem_id="threshold")
                        seg_status = gr.Markdown(elem_id="segment-status")
                    with gr.Column(scale=2):
                        overlays = gr.Gallery(label="Detections", columns=2, height="auto", elem_id="overlays",
                                              object_fit="contain", interactive=False)
                table = gr.Dataframe(headers=TABLE_COLUMNS, label="Detections", interactive=False,
                                     elem_id="detections")
                with gr.Accordion("Review: correct the results, teach the memory, export a dataset", open=True,
                                  elem_id="review"):
                    with gr.Row():
                        with gr.Column(scale=3):
                            review_image = gr.Image(label="Click a detection to reject or accept it, or a missed "
                                                    "object to add it", interactive=False, elem_id="review-image",
                                                    height=480)
                        with gr.Column(scale=2):
                            review_pick = gr.Dropdown(label="Image", choices=[], elem_id="review-pick")
                            review_action = gr.Radio(list(REVIEW_ACTIONS), value=REVIEW_ACTIONS[0],
                                                     label="A click", elem_id="review-action")
                            review_category = gr.Textbox(label="Category of a missed object",
                                                         elem_id="review-category")
                            resegment_btn = gr.Button("Re-segment with the updated memory", variant="primary",
                                                      elem_id="resegment")
                            review_info = gr.Markdown(elem_id="review-info")
                            dataset_formats = gr.CheckboxGroup(["coco", "yolo", "labelstudio", "cvat"],
                                                               value=["coco"], label="Dataset formats",
                                                               elem_id="dataset-formats")
                            dataset_btn = gr.Button("Reviewed images as a dataset (.zip)", elem_id="export-dataset")
                            dataset_file = gr.File(label="Dataset", elem_id="dataset-file", interactive=False)
            with gr.Tab("3. Export / load", id="export"):
                gr.Markdown("Results use the score threshold of the *Segment* tab. The mask zip holds "
                            "`masks/<image>.png` (16-bit: 0 background, i = i-th detection of that image in "
                            "`results.json`) and `results.json`.")
                with gr.Row():
                    with gr.Column():
                        save_btn = gr.Button("Memory file (.safetensors)", elem_id="save-memory")
                        memory_file = gr.File(label="Memory", elem_id="memory-file", interactive=False)
                    with gr.Column():
                        results_btn = gr.Button("COCO results (.json)", elem_id="export-results")
                        results_file = gr.File(label="Results", elem_id="results-file", interactive=False)
                    with gr.Column():
                        masks_btn = gr.Button("Mask PNGs (.zip)", elem_id="export-masks")
                        masks_file = gr.File(label="Masks", elem_id="masks-file", interactive=False)
                load_file = gr.File(label="Load a memory file to continue (replaces the current memory)",
                                    file_types=[".safetensors"], elem_id="load-memory")

            with gr.Tab("4. Video", id="video"):
                gr.Markdown("Track the memory's categories through a short clip: keyframes run the image pipeline, "
                            "SAM2's video memory follows each instance between them (README, *Video*). Long videos: "
                            "`nttt track`.")
                with gr.Row():
                    with gr.Column(scale=1):
                        clip_in = gr.File(label="Video clip", file_types=["video"], elem_id="video-in")
                        track_btn = gr.Button("Track", variant="primary", elem_id="track")
                        video_status = gr.Markdown(elem_id="video-status")
                        video_json = gr.File(label="Tracks (YouTube-VIS JSON)", elem_id="video-results",
                                             interactive=False)
                    with gr.Column(scale=2):
                        video_out = gr.Video(label="Tracks", elem_id="video-out", interactive=False)

        draft_out = [draft_state, ref_image, draft_info]
        memory_out = [gallery, summary, remove_choice, selected, selected_info]
        results_out = [overlays, table, seg_status]
        review_out = [review_pick, review_image, review_info]

        ref_image.upload(on_upload, [ref_image], draft_out)
        ref_image.clear(on_clear_image, None, draft_out)
        ref_image.select(on_click, [draft_state, mode], draft_out)
        undo_btn.click(on_undo, [draft_state], draft_out)
        clear_btn.click(on_clear_prompts, [draft_state], draft_out)
        mask_btn.upload(on_mask, [draft_state, mask_btn], draft_out)
        # a memory change marks the shown results as out of date (see results_outputs)
        add_btn.click(on_add, [draft_state, category, negative], draft_out + memory_out) \
            .success(on_threshold, [threshold], results_out, show_progress="hidden")
        category.submit(on_add, [draft_state, category, negative], draft_out + memory_out) \
            .success(on_threshold, [threshold], results_out, show_progress="hidden")
        remove_cat_btn.click(on_remove_category, [remove_choice], memory_out) \
            .success(on_threshold, [threshold], results_out, show_progress="hidden")
        gallery.select(on_gallery_select, None, [selected, selected_info])
        remove_ref_btn.click(on_remove_reference, [selected], memory_out) \
            .success(on_threshold, [threshold], results_out, show_progress="hidden")

        run_btn.click(on_segment, [targets, threshold], results_out) \
            .success(lambda i, t: review_outputs(i, t), [review_pick, threshold], review_out)
        threshold.change(on_threshold, [threshold], results_out, trigger_mode="always_last",
                         show_progress="hidden")

        review_pick.change(lambda i, t: review_outputs(i, t), [review_pick, threshold], review_out)
        threshold.change(lambda i, t: review_outputs(i, t), [review_pick, threshold], review_out,
                         trigger_mode="always_last", show_progress="hidden")
        review_image.select(on_review_click, [review_pick, review_action, review_category, threshold],
                            review_out + memory_out)
        resegment_btn.click(on_resegment, [review_pick, threshold], review_out + results_out)
        dataset_btn.click(on_export_dataset, [dataset_formats, threshold], [dataset_file])

        save_btn.click(on_save_memory, None, [memory_file])
        results_btn.click(on_export_results, [threshold], [results_file])
        masks_btn.click(on_export_masks, [threshold], [masks_file])
        load_file.upload(on_load_memory, [load_file, threshold], memory_out + results_out)
        demo.load(on_load, [threshold], memory_out + results_out)

        def on_track(path, progress=gr.Progress()):
            if not path:
                raise gr.Error("upload a video clip first")
            try:
                run = ws.track_video(path, progress=progress)
            except Exception as exc:
                _fail(exc)
            return str(run.mp4), str(run.results), run.summary

        track_btn.click(on_track, [clip_in], [video_out, video_json, video_status])

    demo.workspace = ws
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, block: bool = True, **kwargs):
    """Start the app's web server (``block=False`` returns once it is up, for tests and notebooks)."""
    opts = dict(server_name=host, server_port=port, show_error=True, prevent_thread_lock=not block,
                allowed_paths=[str(demo.workspace.workdir)], quiet=not block)
    if GRADIO_MAJOR >= 6:
        opts.update(theme=_theme(), css=CSS)
    opts.update(kwargs)
    demo.queue()
    return demo.launch(**opts)


def serve(args) -> int:
    """``nttt serve``: load the models and the memory, then run the app until interrupted.

    The memory is ``--memory`` if given, else the one autosaved in ``--workdir`` by the last server (unless
    ``--fresh``). One server per working folder (a lock names the one already running).
    """
    from ..cli import _method_config
    from ..distributed import resolve_device
    from ..models.checkpoints import check_models
    from ..predictor import ReferenceSegmenter
    from ..runtime import runtime_kwargs

    config = _method_config(args)
    device = resolve_device(args.device)
    with RunLock(args.workdir, f"app folder {args.workdir} (--workdir)"):
        if not args.export_dir:  # both missing models named at once, before loading
            check_models(sam2=args.sam2, encoder=args.encoder)
        seg = ReferenceSegmenter(sam2=args.sam2, encoder=args.encoder, device=device, dtype=args.dtype,
                                 config=config, memory=args.memory, **runtime_kwargs(args))
        log.info("loading the models (proposer %s, encoder %s) on %s", args.sam2 or "default",
                 args.encoder or "default", device)
        seg.encoder  # a bad checkpoint, or a memory from another encoder, fails now rather than in the page
        seg.proposer
        demo = build_app(seg, workdir=args.workdir, autosave=True)
        ws = demo.workspace
        if args.fresh:
            if ws.set_aside_autosave():
                log.info("starting with an empty memory; the last one was kept as %s", ws.previous_path)
        elif args.memory is not None:
            if ws.autosave_path.exists():
                log.warning("starting with %s; the autosaved memory %s will be replaced at the first change",
                            args.memory, ws.autosave_path)
        elif ws.restore():
            log.info("restored %d reference(s) from %s (--fresh starts empty)", len(ws.memory), ws.autosave_path)
        log.info("the app is at http://%s:%s (Ctrl+C stops it)", args.host, args.port)
        launch(demo, host=args.host, port=args.port, block=True)
    return 0
