"""Adapters: one module per model family, registered in the ``vlground.adapters`` entry-point group."""
