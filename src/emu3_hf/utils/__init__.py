"""Small utilities: video export."""
