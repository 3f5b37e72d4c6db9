"""The bundled demo: its data and tiny CLIP models (``build``), the analyses it runs (``run``)."""
