"""Small utilities shared across the package: atomic writers (``atomic``) and video export (``video_export``).

Argument normalisation (``as_list``) lives in :mod:`emu3_hf.processing.arguments`, where the exportable processor
can import it.
"""
