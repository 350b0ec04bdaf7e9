"""The panels of the screen: each draws one picture of the current plan (see ``render``) at its own width."""

from __future__ import annotations

from rich.cells import cell_len
from textual.widget import Widget
from textual.widgets import Checkbox

from . import render


class PlanView(Widget):
    """A panel that redraws one picture of the current ``Planned`` state whenever it changes or is resized."""

    DEFAULT_CSS = """
    PlanView { height: auto; }
    """

    def __init__(self, planned, **kwargs):
        super().__init__(**kwargs)
        self.planned = planned
        self._drawn = (None, 0, None)  # (planned, width, picture): show() measures what render() paints

    def get_content_height(self, container, viewport, width: int) -> int:
        """The height of the picture drawn at the width the layout gives (the one it will be painted at)."""
        return self._height(self._picture(width), width) if width else 0

    def show(self, planned) -> None:
        """Draw a new state; lay the screen out again only when the panel's height changes (a layout of the
        whole screen costs more than drawing every panel)."""
        self.planned = planned
        width = self.content_size.width
        if width and self._height(self._picture(width), width) == self.content_size.height:
            self.refresh()
            return
        self.clear_cached_dimensions()
        self.refresh(layout=True)

    def draw(self, width: int):
        raise NotImplementedError  # each panel below says what it draws

    def _height(self, picture, width: int) -> int:
        """Lines the picture takes at this width (wrapping only when a line is wider: wrapping is slow)."""
        lines = picture.plain.split("\n")
        if all(cell_len(line) <= width for line in lines):
            return len(lines)
        return len(picture.wrap(self.app.console, width))

    def _picture(self, width: int):
        planned, drawn_width, picture = self._drawn
        if planned is not self.planned or drawn_width != width:
            picture = self.draw(width)
            self._drawn = (self.planned, width, picture)
        return picture

    def render(self):
        return self._picture(self.content_size.width or 80)


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
        return render.title(self.planned, self.invalid, self.size.width or 80)


class OnOff(Checkbox):
    """A checkbox marked X when on and blank when off, so that its state reads without colour."""

    @property
    def _button(self):
        self.BUTTON_INNER = "X" if self.value else " "
        return super()._button
