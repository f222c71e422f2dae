"""Video: find the memory's categories in a video and follow every instance (README, "Video").

source (frames, read lazily) -> track (the algorithm; propagate: SAM2 video sessions; tracker: identities and
rules) -> outputs (YouTube-VIS JSON, PNGs, MP4) -> ytvis_eval (video and per-frame AP); job: the resumable run
over many videos; config: TrackConfig.
"""
