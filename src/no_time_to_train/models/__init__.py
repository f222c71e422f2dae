"""Frozen backbones: SAM2 (proposals, prompts) and DINOv2 (patch features), and their checkpoint loading."""
