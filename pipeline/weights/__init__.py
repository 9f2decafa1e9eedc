"""The model's weights: what the components are (`registry`), where the files are (`locate`), how they
are pinned (`lock`), checked (`inspect`) and loaded (`loader`, `single_file`), and the tiny model.

Empty on purpose: each module is imported on its own (`lock` and `checkpoint_config` need no torch).
"""
