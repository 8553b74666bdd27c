"""The shapes world: a small, fully offline universe for running every study on a CPU.

``render`` draws any shapes prompt, ``dataset`` writes a "real" image dataset, ``classifier``
reads the attributes back (the CLIP-score analogue), and ``toy`` pretrains diffusers-class toy
models (VAE, CLIP text encoder, teacher and student U-Nets) on the rendered images.
"""
