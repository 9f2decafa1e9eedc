"""Running one job: the denoise loop (`runtime`), its schedule, conditioning, decode and MP4 writing.

Empty on purpose: `pipeline.generation.image` (Pillow only) is imported by the API process,
which must not pull torch in through this package.
"""
