"""The panels of the screen: each draws one picture of the current plan (see ``render``) at its own width."""

from __future__ import annotations

from textual.widget import Widget

from . import render


class _AtWidth:
    """A rich renderable drawn at the width rich gives it, so that measuring and painting use the same width."""

    def __init__(self, draw):
        self.draw = draw

    def __rich_console__(self, console, options):
        yield self.draw(options.max_width)


class PlanView(Widget):
    """A panel that redraws one picture of the current ``Planned`` state whenever it changes or is resized."""

    DEFAULT_CSS = """
    PlanView { height: auto; }
    """

    def __init__(self, planned, **kwargs):
        super().__init__(**kwargs)
        self.planned = planned

    def show(self, planned) -> None:
        """Draw a new state (height may change with it)."""
        self.planned = planned
        self.refresh(layout=True)

    def draw(self, width: int):
        raise NotImplementedError  # each panel below says what it draws

    def render(self):
        return _AtWidth(self.draw)


class WhatFits(PlanView):
    """The largest batch and sequence that fit on this GPU, and the smallest catalogue GPU, per method."""

    def draw(self, width: int):
        return render.fits_panel(self.planned, width)


class Bars(PlanView):
    """Stacked component bars per method against the GPU's capacity line, verdict and peak phase."""

    def draw(self, width: int):
        return render.bars(self.planned, width)


class Timeline(PlanView):
    """Device memory at each phase of the step, per method, on one scale."""

    def draw(self, width: int):
        return render.timeline(self.planned, width)


class Components(PlanView):
    """The component table: bytes, GiB and share of the peak."""

    def draw(self, width: int):
        return render.component_table(self.planned, width)


class CommandLine(PlanView):
    """The ``vramplan plan`` command line of the current state, and the planner's notes."""

    def draw(self, width: int):
        return render.command_panel(self.planned)


class TitleBar(Widget):
    """Model, workload and GPU of the plan on screen; a warning while an input is invalid."""

    DEFAULT_CSS = """
    TitleBar { height: 1; }
    """

    def __init__(self, planned, **kwargs):
        super().__init__(**kwargs)
        self.planned = planned
        self.invalid = False

    def show(self, planned, invalid: bool) -> None:
        self.planned, self.invalid = planned, invalid
        self.refresh()

    def render(self):
        return render.title(self.planned, self.invalid)
