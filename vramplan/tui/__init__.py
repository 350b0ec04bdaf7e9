"""The terminal UI of ``vramplan MODEL --gpu G``: LoRA vs QLoRA at a glance, every knob editable in place.

``state`` turns the knobs into plans without importing textual (the benchmark and tests use it directly);
``app`` and ``widgets`` draw them. Only ``vramplan.cli`` starts the app, and only on a terminal.
"""
